import sys

from bundler.cli import run

sys.exit(run())
