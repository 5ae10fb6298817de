"""`bundler.vectors`: the embedding-vector schemes (the package bundler.codecs.vectors)."""

from bundler.codecs.vectors import *  # noqa: F403
from bundler.codecs.vectors import __all__  # noqa: F401
