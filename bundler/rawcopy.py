"""Copy a tensor's stored bytes into an output file unchanged.

When the bytes are a little-endian byte range of a file, the kernel copies them
(`copy_file_range`, else `sendfile`), so none pass through Python; any other source, or a
kernel copy that fails (EXDEV, ENOSYS, EINVAL, ...), streams them a chunk at a time.
Either way memory use is fixed, whatever the tensor's size.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from bundler.bundle import CHUNK_BYTES, FileSource, Tensor

#: Most bytes one kernel call is asked for (the kernel may move fewer).
_STEP = 1 << 30


def copy_raw(
    tensor: Tensor, f: BinaryIO, limit: int | None = None, chunk_bytes: int = CHUNK_BYTES
) -> int:
    """Write `tensor`'s stored bytes at `f`'s position, as they are; return how many.

    Streaming stops at the first chunk past `limit` bytes (the count returned then exceeds
    `limit`, and that chunk is not written). A file source shorter than its range raises
    the same `FormatError` on either path.
    """
    done = _kernel_copy(tensor.source, f)
    if done is not None:
        return done
    written = 0
    for chunk in tensor.iter_raw(chunk_bytes):
        data = np.ascontiguousarray(chunk).reshape(-1)
        if data.dtype != np.uint8:
            data = data.view(np.uint8)
        written += data.size
        if limit is not None and written > limit:
            break
        f.write(memoryview(data))
    return written


def _kernel_copy(src: object, f: BinaryIO) -> int | None:
    """Copy a plain file range into `f` in the kernel; None (with `f` where it was) when
    this source or output cannot be copied so, or the kernel refuses."""
    # exact type: a subclass may change the bytes it gives
    if type(src) is not FileSource or src.big_endian or src.nbytes == 0:
        return None
    try:
        dst = f.fileno()
    except (OSError, ValueError, AttributeError):
        return None  # not a real file
    f.flush()
    start = f.tell()
    try:
        fd = os.open(src.path, os.O_RDONLY)
    except OSError:
        return None  # the streaming path reports it
    try:
        if os.fstat(fd).st_size < src.offset + src.nbytes:
            return None  # truncated: the streaming path says where, as it always has
        for copy in (_copy_file_range, _sendfile):
            try:
                if copy(fd, dst, src.offset, start, src.nbytes):
                    f.seek(start + src.nbytes)
                    return src.nbytes
            except OSError:
                pass  # each way writes from `start`, over what a failed one left
        f.seek(start)
        return None
    finally:
        os.close(fd)


def _copy_file_range(src: int, dst: int, src_at: int, dst_at: int, n: int) -> bool:
    """Copy `n` bytes with explicit offsets; False when unavailable or short."""
    if not hasattr(os, "copy_file_range"):
        return False
    done = 0
    while done < n:
        got = os.copy_file_range(
            src, dst, min(n - done, _STEP), offset_src=src_at + done, offset_dst=dst_at + done
        )
        if got <= 0:
            return False  # the file shrank under us, or a file system that reports no size
        done += got
    return True


def _sendfile(src: int, dst: int, src_at: int, dst_at: int, n: int) -> bool:
    """Copy `n` bytes writing at `dst`'s own position (set to `dst_at`); False when
    unavailable or short."""
    if not hasattr(os, "sendfile"):
        return False
    os.lseek(dst, dst_at, os.SEEK_SET)
    done = 0
    while done < n:
        got = os.sendfile(dst, src, src_at + done, min(n - done, _STEP))
        if got <= 0:
            return False
        done += got
    return True
