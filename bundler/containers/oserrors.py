"""The operating system's errors while a reader opens and reads a file, as bundler's typed
errors naming the file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bundler.errors import BundlerError, BundlerIOError, FileNotFound, FormatError


@contextmanager
def reading(path: str, what: str, io_prefix: str = "") -> Iterator[None]:
    """Within the block, a missing file is `FileNotFound`, a directory is a `FormatError`
    ("is a directory, not `what`") and any other OS error a `BundlerIOError` (its message
    after `path: ` starts with `io_prefix`); bundler's own errors pass through."""
    try:
        yield
    except BundlerError:
        raise
    except FileNotFoundError:
        raise FileNotFound(path) from None
    except IsADirectoryError:
        raise FormatError(path, None, f"is a directory, not {what}") from None
    except OSError as exc:
        raise BundlerIOError(f"{path}: {io_prefix}{exc.strerror or exc}") from None
