"""Crash-safe output: write to a temporary file beside the target, then rename into place.

A writer holds an exclusive `flock` on its temporary file until the rename, so a later
run can tell a partial file left by a killed writer (nobody holds it: removed) from one
still being written (locked: left alone), whatever became of the writer's process id.
The files of a multi-file output (a split GGUF, a sharded SafeTensors checkpoint) are
renamed together at the end, inside `output_group`.

Without `force` the final step is a hard link from the temporary name, which fails when
the target exists: of two writers racing to one new path exactly one succeeds, the other
gets `OutputExistsError`, whatever happened between their start-up checks. A file system
without hard links falls back on an exclusive create of the final name.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

from bundler.errors import BundlerError, BundlerIOError, FormatError, OutputExistsError

try:
    import fcntl
except ImportError:  # not POSIX: fall back on whether the writer's process id still runs
    fcntl = None  # type: ignore[assignment]

#: Prefix of the temporary files; a later run removes strays left by a killed one.
TEMP_PREFIX = ".bundler-partial-"
#: Prefix of a temporary file for the instant before it is locked.
STAGING_PREFIX = ".bundler-staging-"

#: Finished files of the open `output_group` waiting for their rename: (temporary, final
#: path, lock descriptor, may replace).
_GROUP: contextvars.ContextVar[list[tuple[str, str, int | None, bool]] | None] = (
    contextvars.ContextVar("bundler_output_group", default=None)
)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    force: bool = True,
    check: Callable[[str], None] | None = None,
) -> Iterator[BinaryIO]:
    """Open a temporary file in `path`'s directory; on success it replaces `path`.

    On any error (or KeyboardInterrupt) the temporary file is removed and `path` is left
    as it was. With `force=False` an existing `path` raises `OutputExistsError`, checked
    at the start and again, atomically, when the file is put in place. `check(temporary
    path)` runs on the finished file before it is put in place (a reader that re-parses
    it); what it raises aborts the write.
    """
    path = os.fspath(path)
    if not force and os.path.exists(path):
        raise OutputExistsError(path)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_partials(directory, os.path.basename(path))
    try:
        prefix = f"{TEMP_PREFIX}{os.path.basename(path)}.{os.getpid()}."
        # created under a name no clean-up scans, locked, then renamed: a concurrent
        # writer's `remove_stale_partials` never sees it unlocked
        fd, staging = tempfile.mkstemp(prefix=STAGING_PREFIX, dir=directory)
        # the lock lives as long as any descriptor of this open file: keep one past the rename
        lock = _lock(fd)
        tmp = os.path.join(directory, prefix + os.path.basename(staging)[len(STAGING_PREFIX) :])
        os.rename(staging, tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would
        os.fchmod(fd, 0o666 & ~_umask())
    except OSError as exc:
        raise BundlerIOError(f"{path}: cannot create output: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        if check is not None:
            try:
                check(tmp)
            except FormatError as exc:
                raise FormatError(
                    path, exc.offset, f"not written: the file would not read back: {exc.problem}"
                ) from None
        group = _GROUP.get()
        if group is None:
            _place(tmp, path, force)
        else:  # renamed with the rest of the group; the group holds the lock until then
            group.append((tmp, path, lock, force))
            lock = None
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, BundlerError):
            raise BundlerIOError(f"{path}: write failed: {exc.strerror or exc}") from None
        raise
    finally:
        if lock is not None:
            os.close(lock)


@contextlib.contextmanager
def output_group(entry: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Files written with `atomic_output` inside the block appear together: each keeps its
    temporary name until the block ends without error, then all are renamed into place
    (`entry`, the file a reader opens first, last of all); on an error all are removed.
    Inside another group the outer one decides."""
    if _GROUP.get() is not None:
        yield
        return
    pending: list[tuple[str, str, int | None, bool]] = []
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        _discard(pending)
        raise
    finally:
        _GROUP.reset(token)
    last = os.path.abspath(entry) if entry is not None else None
    pending.sort(key=lambda item: os.path.abspath(item[1]) == last)
    for i, (tmp, path, lock, force) in enumerate(pending):
        try:
            _place(tmp, path, force)
        except BaseException:
            _discard(pending[i:])
            raise
        if lock is not None:
            os.close(lock)


def replace_whole(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a small cache file whole or not at all: a temporary file beside it (named for
    this process and thread) renamed over it. No lock: writers racing to one cache file
    write the same bytes."""
    import threading

    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _place(tmp: str, path: str, force: bool) -> None:
    """Rename `tmp` to `path`; without `force`, fail (OutputExistsError) if `path` exists."""
    try:
        if force:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputExistsError(path) from None
        except OSError:  # no hard links here: claim the name exclusively, then replace it
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except FileExistsError:
                raise OutputExistsError(path) from None
            os.replace(tmp, path)
            return
        os.unlink(tmp)
    except OSError as exc:
        if isinstance(exc, (OutputExistsError, BundlerIOError)):
            raise
        raise BundlerIOError(f"{path}: cannot rename into place: {exc.strerror}") from None


def _discard(pending: list[tuple[str, str, int | None, bool]]) -> None:
    for tmp, _, lock, _ in pending:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if lock is not None:
            with contextlib.suppress(OSError):
                os.close(lock)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_partials(directory: str, name: str) -> None:
    """Delete temporary files a killed earlier write of `name` left in `directory`."""
    prefix = TEMP_PREFIX + name + "."
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.startswith(prefix) and _owner_gone(entry.path):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _lock(fd: int) -> int | None:
    """A second descriptor holding an exclusive lock on `fd`'s file (None without flock)."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.dup(fd)
    except OSError:  # a file system without locks: the process-id check remains
        return None


def _owner_gone(path: str) -> bool:
    """True when no writer holds this partial file any more."""
    if fcntl is not None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:
            pass  # no locks on this file system
        finally:
            os.close(fd)
    return _pid_gone(path)


def _pid_gone(path: str) -> bool:
    """True when the process whose id the partial file's name holds no longer runs."""
    try:
        pid = int(os.path.basename(path).rsplit(".", 2)[-2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
