"""Compiled scan of a GGUF string array's lengths (formats/gguf.md): where each string
begins. Called by `values`, from its native entry (`bundler.codecs.native`), so a read
loads no compiler; a token list of 49,152 strings is scanned in well under a millisecond
against about 20 ms one `struct.unpack_from` a string.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def string_starts(data, at, most, big_endian, starts, end):  # pragma: no cover - compiled
    """starts[i] = where string i from byte `at` of `data` (uint8) begins, after its 8-byte
    length, for up to `most` strings (at most len(starts)) lying wholly in `data`; end[0] =
    where the last of them ends. Returns how many: the scan stops before a string whose
    length or bytes run past the end of `data`."""
    n_data = data.shape[0]
    count = 0
    most = min(most, starts.shape[0])
    while count < most and n_data - at >= 8:
        n = np.uint64(0)
        for b in range(8):
            byte = np.uint64(data[at + (7 - b if big_endian else b)])
            n |= byte << np.uint64(8 * b)
        if n > np.uint64(n_data - at - 8):
            break
        at += 8
        starts[count] = at
        at += np.int64(n)
        count += 1
    end[0] = at
    return count


@njit(cache=True, nogil=True)
def joined_text(data, starts, stop, out):  # pragma: no cover - compiled
    """out = the strings of `data` beginning at `starts` (each after its 8-byte length, the
    next one's length or `stop` ending it), a NUL between each two. Returns the bytes
    written, or -1 when a string holds a NUL (the text would not split back into them)."""
    at = 0
    n = starts.shape[0]
    for i in range(n):
        if i > 0:
            out[at] = 0
            at += 1
        end = starts[i + 1] - 8 if i + 1 < n else stop
        for j in range(starts[i], end):
            byte = data[j]
            if byte == 0:
                return -1
            out[at] = byte
            at += 1
    return at


@njit(cache=True, nogil=True)
def laid_out(text, begins, lengths, big_endian, out):  # pragma: no cover - compiled
    """out = each string of `text` (from begins[i], lengths[i] bytes) after its length as
    8 bytes of the byte order, in order. Returns the bytes written."""
    at = 0
    for i in range(begins.shape[0]):
        n = lengths[i]
        for b in range(8):
            shift = np.uint64(8 * (7 - b if big_endian else b))
            out[at + b] = np.uint8((np.uint64(n) >> shift) & np.uint64(0xFF))
        at += 8
        s = begins[i]
        for j in range(n):
            out[at + j] = text[s + j]
        at += n
    return at
