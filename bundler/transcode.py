"""Re-encoding a tensor to another codec as a stream of bounded chunks.

Three stages run at once, each on its own thread: one reads a chunk of rows (float32 in a
file is mapped, float32 in an array used in place, anything else decoded into a reused
buffer),
one encodes it with the compiled kernels (on all cores, without the GIL), and the caller
writes the result. Each stage holds a few reused buffers, so memory is a few chunks
whatever the tensor's size and the disk, not Python, sets the pace.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bundler.bundle import ArraySource, FileSource, Source, Tensor
from bundler.codecs import Codec
from bundler.errors import BundlerIOError, FormatError, NonFiniteError

#: Values encoded per chunk: enough that the parallel kernels' start-up cost is amortized
#: (smaller chunks halve their throughput), small enough that the chunks in flight stay
#: a few tens of MiB.
CHUNK_VALUES = 2 << 20
#: Chunks a stage may finish before the next stage takes them.
DEPTH = 2
#: Buffers each stage cycles through: the one it fills, the queued ones, the one the next
#: stage is using.
RING = DEPTH + 2

#: Linux's MAP_POPULATE (read the window in at mmap time); elsewhere float32 is read with
#: plain reads into reused buffers.
_POPULATE = getattr(mmap, "MAP_POPULATE", None)

_DONE = object()


class Buffers:
    """The reused chunk buffers of one conversion.

    Sharing one set between the tensors of a bundle keeps the process's memory flat: fresh
    multi-MiB buffers per tensor make the C allocator raise its mmap threshold and keep
    freed chunks. Tensors sharing a set must be streamed one after another (as every
    writer does).
    """

    def __init__(self) -> None:
        self._slots: dict[str, list[np.ndarray | None]] = {}

    def take(self, kind: str, i: int, shape: tuple[int, int], dtype: Any) -> np.ndarray:
        """Buffer `i` (of RING) of `kind`, as a C-contiguous array of `shape` and `dtype`."""
        dtype = np.dtype(dtype)
        need = shape[0] * shape[1] * dtype.itemsize
        slots = self._slots.setdefault(kind, [None] * RING)
        buf = slots[i % RING]
        if buf is None or buf.size < need:
            buf = slots[i % RING] = np.empty(need, np.uint8)
        return buf[:need].view(dtype).reshape(shape)


class TranscodeSource(Source):
    """A tensor's values re-encoded to another codec, produced chunk by chunk on demand."""

    def __init__(
        self,
        tensor: Tensor,
        target: Codec,
        buffers: Buffers | None = None,
        chunk_values: int = CHUNK_VALUES,
    ):
        self.tensor = tensor
        self.target = target
        self.buffers = buffers
        self.chunk_values = chunk_values

    def raw(self) -> np.ndarray:
        return self.target.encode(self.tensor.numpy()).reshape(-1)

    def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
        """The encoded bytes in chunks of whole rows (`chunk_bytes` is not used: the chunk
        size is set by `chunk_values`, which keeps the kernels efficient)."""
        t, target = self.tensor, self.target
        if len(t.shape) < 2 or target.facts.flat or t.codec.facts.flat or t.n_values == 0:
            # aprender's flat codecs span the whole tensor; 1-D tensors are small
            yield from super().iter_raw(chunk_bytes)
            return
        n = t.shape[-1]
        total_rows = math.prod(t.shape[:-1])
        step = max(1, min(total_rows, self.chunk_values // n))
        spans = [(start, min(step, total_rows - start)) for start in range(0, total_rows, step)]
        dst_row = target.facts.row_bytes(n)
        buffers = self.buffers or Buffers()

        def encode(i: int, values: np.ndarray) -> np.ndarray:
            start, rows = spans[i]
            out = buffers.take("encoded", i, (rows, dst_row), np.uint8)
            try:
                target.encode(values, out=out)
            except NonFiniteError as exc:
                raise _locate(exc, t, target, start) from None
            return out.reshape(-1)

        with _Stages(_values(t, spans, buffers), encode) as results:
            yield from results


def _values(t: Tensor, spans: list[tuple[int, int]], buffers: Buffers) -> Iterator[np.ndarray]:
    """The float32 values of each span of rows, in reused buffers."""
    n = t.shape[-1]
    src = t.source
    stored_dtype = t.codec.facts.numpy_dtype
    if (
        isinstance(src, ArraySource)
        and src.array.flags.c_contiguous
        and stored_dtype is not None
        and src.array.dtype == np.dtype(stored_dtype)
    ):  # the array holds the tensor's values as they are: encode from it in place
        rows = src.array.reshape(-1, n)
        for start, count in spans:
            yield rows[start : start + count]
        return
    decoded = np.dtype(t.codec.kernel().out_dtype)  # float32, or float64 for f64

    def values(i: int) -> np.ndarray:
        return buffers.take(f"values-{decoded}", i, (spans[i][1], n), decoded)

    if isinstance(src, FileSource) and t.codec.facts.numpy_dtype == "<f4" and not src.big_endian:
        if _POPULATE is not None:
            yield from _map_floats(src, spans, n)
        else:
            yield from _read_floats(src, spans, values)
        return
    src_row = t.codec.facts.row_bytes(n)
    chunks = t.iter_raw(spans[0][1] * src_row)
    for i, (_, count) in enumerate(spans):
        raw = next(chunks)
        yield t.codec.decode(raw, shape=(count, n), out=values(i))


def _map_floats(src: FileSource, spans: list[tuple[int, int]], n: int) -> Iterator[np.ndarray]:
    """float32 rows mapped from the file, one window per chunk, with no copy.

    Each window is mapped with MAP_POPULATE, so this thread (not the encoder) waits for
    the disk and takes the page faults; a window is unmapped when its ring slot comes
    round again, so at most RING chunks are resident whatever the tensor's size.
    """
    held: list[tuple[mmap.mmap, np.ndarray] | None] = [None] * RING
    try:
        with open(src.path, "rb") as f:
            fd = f.fileno()
            for i, (start, count) in enumerate(spans):
                begin = src.offset + start * n * 4
                end = begin + count * n * 4
                size = os.fstat(fd).st_size
                if size < end:  # mapping past the end would fault, not fail
                    raise FormatError(src.path, size, "file ends inside tensor data")
                _release(held, i % RING)
                base = begin - begin % mmap.ALLOCATIONGRANULARITY
                window = mmap.mmap(
                    fd, end - base, flags=mmap.MAP_SHARED | _POPULATE,
                    prot=mmap.PROT_READ, offset=base,
                )  # fmt: skip
                rows = np.frombuffer(window, np.float32, count * n, begin - base)
                held[i % RING] = (window, rows)
                yield rows.reshape(count, n)
    except OSError as exc:
        raise BundlerIOError(f"{src.path}: {exc.strerror or exc}") from None
    finally:
        for slot in range(RING):
            _release(held, slot)


def _release(held: list, slot: int) -> None:
    if held[slot] is None:
        return
    window, rows = held[slot]
    held[slot] = None
    del rows
    # mmap refuses to close while an array still views it (the encoder's last chunks when
    # the reader finishes first): the mapping then goes when that array does
    with contextlib.suppress(BufferError):
        window.close()


def _read_floats(
    src: FileSource, spans: list[tuple[int, int]], values: Callable[[int], np.ndarray]
) -> Iterator[np.ndarray]:
    """float32 rows read from the file straight into the buffers the encoder takes."""
    try:
        with open(src.path, "rb", buffering=0) as f:
            f.seek(src.offset)
            for i, (start, _) in enumerate(spans):
                view = values(i)
                got = f.readinto(memoryview(view).cast("B"))
                if got != view.nbytes:
                    at = src.offset + start * view.shape[1] * 4 + (got or 0)
                    raise FormatError(src.path, at, "file ends inside tensor data")
                yield view
    except OSError as exc:
        raise BundlerIOError(f"{src.path}: {exc.strerror or exc}") from None


def _locate(exc: NonFiniteError, t: Tensor, target: Codec, start: int) -> NonFiniteError:
    """The error of a chunk, with the index in the whole tensor and the tensor's name."""
    row, col = exc.index[0] if len(exc.index) > 1 else 0, exc.index[-1]
    index = (*np.unravel_index(start + row, t.shape[:-1]), col)
    index = tuple(int(i) for i in index)
    return NonFiniteError(
        f"tensor {t.name!r}: {target.name} cannot encode {exc.value} at index {index}: "
        "block codecs need finite values",
        index,
        exc.value,
    )


class _Stages:
    """Runs `produce` on one thread and `transform` on another, each up to DEPTH items
    ahead; iterating gives the transformed items in order. Leaving the `with` block early
    (an error, a closed generator) stops both threads."""

    def __init__(self, produce: Iterator[Any], transform: Callable[[int, Any], Any]):
        self.stop = threading.Event()
        self.inbox: queue.Queue = queue.Queue(DEPTH)
        self.outbox: queue.Queue = queue.Queue(DEPTH)
        self.threads = [
            threading.Thread(
                target=self._run_produce, args=(produce,), name="bundler-read", daemon=True
            ),
            threading.Thread(
                target=self._run_transform, args=(transform,), name="bundler-encode", daemon=True
            ),
        ]

    def __enter__(self) -> Iterator[Any]:
        for thread in self.threads:
            thread.start()
        return self._results()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _put(self, box: queue.Queue, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                box.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, box: queue.Queue) -> Any:
        while not self.stop.is_set():
            try:
                return box.get(timeout=0.05)
            except queue.Empty:
                continue
        return _DONE, None

    def _run_produce(self, produce: Iterator[Any]) -> None:
        try:
            for item in produce:
                if not self._put(self.inbox, (item, None)):
                    return
            self._put(self.inbox, (_DONE, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(self.inbox, (_DONE, exc))

    def _run_transform(self, transform: Callable[[int, Any], Any]) -> None:
        i = 0
        while True:
            item, error = self._get(self.inbox)
            if item is _DONE:
                self._put(self.outbox, (_DONE, error))
                return
            try:
                result = transform(i, item)
            except BaseException as exc:
                self._put(self.outbox, (_DONE, exc))
                return
            if not self._put(self.outbox, (result, None)):
                return
            i += 1

    def _results(self) -> Iterator[Any]:
        while True:
            item, error = self._get(self.outbox)
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
