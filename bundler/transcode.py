"""Re-encoding a tensor to another codec as a stream of bounded chunks.

Three stages run at once: a reader thread takes a chunk of rows (float32 in a file is
mapped, float32 in an array used in place, anything else decoded into a reused buffer),
a pool of encoder threads, one per kernel thread, each encode a whole chunk with the
compiled kernels (single-threaded, without the GIL), and the caller writes the results in
order. Whole chunks per thread keep every core busy while the reader and the writer take
their turns (a kernel split across all cores waits for its slowest part). Each stage
holds a few reused buffers, so memory is a few chunks per core whatever the tensor's
size, and the disk, not Python, sets the pace.
"""

from __future__ import annotations

import collections
import contextlib
import math
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bundler.bundle import ArraySource, FileSource, Source, Tensor
from bundler.codecs import Codec, kernel_threads, thread_count
from bundler.errors import BundlerIOError, NonFiniteError, TruncatedError, UsageError

#: Values encoded per chunk at most: enough that a kernel call's start-up cost is amortized.
CHUNK_VALUES = 2 << 20
#: Bytes of float32 values all chunks in flight may hold together; on many cores the chunks
#: shrink to stay within it.
IN_FLIGHT_BYTES = 64 << 20
#: Chunks the reader may finish before an encoder takes them.
DEPTH = 2


def ring_size(workers: int) -> int:
    """Buffers each stage cycles through with `workers` encoders: every chunk from the
    one the writer holds to the one the reader is filling (the encoders hold one each,
    plus one queued per pool, and the reader's queue holds DEPTH)."""
    return workers + DEPTH + 3


#: Linux's MAP_POPULATE (read the window in at mmap time); elsewhere float32 is read with
#: plain reads into reused buffers.
_POPULATE = getattr(mmap, "MAP_POPULATE", None)

_DONE = object()


def chunk_values_for(workers: int) -> int:
    """Values per chunk with `workers` encoders: CHUNK_VALUES, or fewer so that the chunks
    in flight stay within IN_FLIGHT_BYTES."""
    return max(1 << 16, min(CHUNK_VALUES, IN_FLIGHT_BYTES // 4 // ring_size(workers)))


class Buffers:
    """The reused chunk buffers of one conversion.

    Sharing one set between the tensors of a bundle keeps the process's memory flat: fresh
    multi-MiB buffers per tensor make the C allocator raise its mmap threshold and keep
    freed chunks. Tensors sharing a set must be streamed one after another (as every
    writer does).
    """

    def __init__(self, ring: int | None = None) -> None:
        self.ring = ring
        self._slots: dict[str, list[np.ndarray | None]] = {}

    def take(self, kind: str, i: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Buffer `i` (of `ring`) of `kind`, as a C-contiguous array of `shape` and `dtype`."""
        if self.ring is None:
            self.ring = ring_size(thread_count())
        dtype = np.dtype(dtype)
        need = math.prod(shape) * dtype.itemsize
        slots = self._slots.setdefault(kind, [None] * self.ring)
        buf = slots[i % self.ring]
        if buf is None or buf.size < need:
            buf = slots[i % self.ring] = np.empty(need, np.uint8)
        return buf[:need].view(dtype).reshape(shape)


class TranscodeSource(Source):
    """A tensor's values re-encoded to another codec, produced chunk by chunk on demand."""

    def __init__(
        self,
        tensor: Tensor,
        target: Codec,
        buffers: Buffers | None = None,
        chunk_values: int | None = None,
        importance: np.ndarray | None = None,
    ):
        self.tensor = tensor
        self.target = target
        self.buffers = buffers
        self.chunk_values = chunk_values
        #: importance weights per column (times the experts of a 3-D tensor), used by a
        #: block codec; None encodes without
        self.importance = importance if target.facts.takes_importance else None

    def raw(self) -> np.ndarray:
        values = self.tensor.numpy()
        if self.importance is None:
            return self.target.encode(values).reshape(-1)
        n = values.shape[-1]
        rows = values.reshape(-1, n)
        out = np.empty(self.target.encoded_shape(rows.shape), np.uint8)
        per_expert = _rows_per_expert(self.tensor.shape)
        for e, first in enumerate(range(0, len(rows), per_expert)):
            part = slice(first, first + per_expert)
            self.target.encode(rows[part], out=out[part], importance=self._weights(e, n))
        return out.reshape(-1)

    def _weights(self, expert: int, n: int) -> np.ndarray:
        return self.importance[expert * n : (expert + 1) * n]

    def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
        """The encoded bytes in chunks of whole blocks (`chunk_bytes` is not used: the chunk
        size is set by `chunk_values`, by default `chunk_values_for` the kernel threads).

        A chunk is whole rows when a row fits, else a run of whole blocks of both codecs
        (the blocks of a tensor follow each other across rows, in the values and in the
        encoded bytes alike), so a long row or a large 1-D tensor streams too, and so do
        aprender's AprQ4 blocks, laid over the flattened tensor; AprQ8's tensor-wide scale
        comes from a first pass over the values."""
        t, target = self.tensor, self.target
        if t.n_values == 0:
            return
        for codec in (t.codec, target):  # before counting threads: a compiled one says how
            if codec.facts.kernels:
                codec.kernel()
        workers = thread_count()
        chunk_values = self.chunk_values or chunk_values_for(workers)
        if self.importance is None:
            spans = _spans(t, target, chunk_values)
        else:
            spans = _expert_spans(t, chunk_values)
        buffers = self.buffers or Buffers(ring_size(workers))
        if target.facts.header_bytes:
            yield from _with_header(t, target, spans, buffers)
            return
        n = t.shape[-1] if t.shape else 1
        per_expert = _rows_per_expert(t.shape) * n

        def encode(i: int, values: np.ndarray) -> np.ndarray:
            out = buffers.take("encoded", i, target.encoded_shape(values.shape), np.uint8)
            try:
                if self.importance is None:
                    target.encode(values, out=out)
                else:
                    weights = self._weights(spans[i][0] // per_expert, n)
                    target.encode(values, out=out, importance=weights)
            except NonFiniteError as exc:
                raise _locate(exc, t, target, spans[i][0], values.shape[-1]) from None
            return out.reshape(-1)

        if len(spans) == 1:  # one chunk: encoded here, on all cores, with no stage threads
            with contextlib.closing(_values(t, spans, buffers)) as values:
                yield encode(0, next(values))
            return

        def encode_alone(i: int, values: np.ndarray) -> np.ndarray:
            with kernel_threads(1):  # one chunk per core
                return encode(i, values)

        with _Stages(_values(t, spans, buffers), encode_alone, workers) as results:
            yield from results


def _with_header(
    t: Tensor, target: Codec, spans: list[Span], buffers: Buffers
) -> Iterator[np.ndarray]:
    """The bytes of `t` in a codec with a tensor-wide header, from two passes over the
    values: one for the header, one for the chunks."""
    encoder = target.kernel().header_encoder()
    with contextlib.closing(_values(t, spans, buffers)) as chunks:
        for (start, _, _), values in zip(spans, chunks, strict=True):
            try:
                encoder.add(values)
            except NonFiniteError as exc:
                raise _locate(exc, t, target, start, values.shape[-1]) from None
    yield encoder.header()
    with contextlib.closing(_values(t, spans, buffers)) as chunks:
        for i, values in enumerate(chunks):
            yield encoder.encode(values, buffers.take("encoded", i, (values.size,), np.uint8))


#: (first value, value count, chunk shape) of each chunk of a tensor.
Span = tuple[int, int, tuple[int, int]]


def _spans(t: Tensor, target: Codec, chunk_values: int) -> list[Span]:
    """The chunks of `t`: whole rows when one fits in `chunk_values`, else (or when a codec
    is laid over the flattened tensor) runs of values that are whole blocks of both codecs;
    a flat codec's partial last block ends the last run."""
    n, total = t.shape[-1] if t.shape else 1, t.n_values
    if n <= chunk_values and not (t.codec.facts.flat or target.facts.flat):
        step, width = chunk_values // n * n, n
    else:
        unit = math.lcm(t.codec.facts.block_size, target.facts.block_size)
        step = width = max(unit, chunk_values // unit * unit)
    spans = []
    for start in range(0, total, step):
        count = min(step, total - start)
        shape = (count // width, width) if count % width == 0 else (1, count)
        spans.append((start, count, shape))
    return spans


def _rows_per_expert(shape: tuple[int, ...]) -> int:
    """Rows sharing one importance vector: a 3-D (or more) tensor's second-last axis
    (llama.cpp's ne1; ne2 counts the experts), else every row."""
    if len(shape) >= 3:
        return max(1, shape[-2])
    return max(1, math.prod(shape[:-1]))


def _expert_spans(t: Tensor, chunk_values: int) -> list[Span]:
    """Chunks of whole rows that never cross from one expert's rows to the next (each
    expert has its own importance weights); a row longer than `chunk_values` is a chunk."""
    n = t.shape[-1]
    per_expert = _rows_per_expert(t.shape)
    step = max(1, min(per_expert, chunk_values // n))
    spans = []
    for first in range(0, t.n_values // n, per_expert):
        for row in range(first, first + per_expert, step):
            count = min(step, first + per_expert - row)
            spans.append((row * n, count * n, (count, n)))
    return spans


def _values(t: Tensor, spans: list[Span], buffers: Buffers) -> Iterator[np.ndarray]:
    """The float32 values of each span, in reused buffers."""
    src = t.source
    stored_dtype = t.codec.facts.numpy_dtype
    if (
        isinstance(src, ArraySource)
        and src.array.flags.c_contiguous
        and stored_dtype is not None
        and src.array.dtype == np.dtype(stored_dtype)
    ):  # the array holds the tensor's values as they are: encode from it in place
        flat = src.array.reshape(-1)
        for start, count, shape in spans:
            yield flat[start : start + count].reshape(shape)
        return
    decoded = np.dtype(t.codec.kernel().out_dtype)  # float32, or float64 for f64

    def values(i: int) -> np.ndarray:
        return buffers.take(f"values-{decoded}", i, spans[i][2], decoded)

    if isinstance(src, FileSource) and t.codec.facts.numpy_dtype == "<f4" and not src.big_endian:
        if _POPULATE is not None:
            ring = buffers.ring or ring_size(thread_count())
            yield from _map_floats(src, spans, ring, populate=len(spans) > 1)
        else:
            yield from _read_floats(src, spans, values)
        return
    head = t.codec.facts.header_bytes
    sizes = [t.codec.facts.nbytes((count,)) - head for _, count, _ in spans]
    raws = _regrouped(
        t.iter_raw(sizes[0] + head), [head, *sizes] if head else sizes,
        lambda i, n: buffers.take("raw", i, (n,), np.uint8), f"tensor {t.name!r}",
    )  # fmt: skip
    decode = t.codec.kernel().header_decoder(next(raws).copy()) if head else None
    for i, raw in enumerate(raws):
        if decode is None:
            yield t.codec.decode(raw, shape=spans[i][2], out=values(i))
        else:
            yield decode(raw, spans[i][2], values(i))


def _regrouped(
    chunks: Iterator[np.ndarray],
    sizes: list[int],
    buffer: Callable[[int, int], np.ndarray],
    what: str,
) -> Iterator[np.ndarray]:
    """The bytes of `chunks` in pieces of `sizes`: a piece a chunk holds whole is a view of
    it, any other is assembled in `buffer(i, size)` (copied before the next chunk is read,
    since a source may reuse its chunk buffer). A source that ends early is a UsageError
    naming `what`."""
    pending, at = np.empty(0, np.uint8), 0
    for i, size in enumerate(sizes):
        if pending.size - at >= size:
            yield pending[at : at + size]
            at += size
            continue
        piece = buffer(i, size).reshape(-1)
        filled = 0
        while filled < size:
            if at == pending.size:
                chunk = next(chunks, None)
                if chunk is None:
                    raise UsageError(f"{what}: its source ends {sum(sizes[i:]) - filled:,} "
                                     "bytes short of what its shape needs")  # fmt: skip
                pending, at = chunk.reshape(-1), 0
            take = min(size - filled, pending.size - at)
            piece[filled : filled + take] = pending[at : at + take]
            filled, at = filled + take, at + take
        yield piece


def _map_floats(
    src: FileSource, spans: list[Span], ring: int, populate: bool = True
) -> Iterator[np.ndarray]:
    """float32 rows mapped from the file, one window per chunk, with no copy.

    With `populate` each window is mapped with MAP_POPULATE, so this thread (the reader
    of a pipeline, not the encoders) waits for the disk and takes the page faults;
    without, the encoders' threads take them as they read, each its own share (a tensor
    of one chunk, encoded by every core while nothing else runs: 8% less wall time on
    SmolLM2 to Q4_0). A window is unmapped when its ring slot comes round again, so at
    most `ring` chunks are resident whatever the tensor's size.
    """
    held: list[tuple[mmap.mmap, np.ndarray] | None] = [None] * ring
    try:
        with open(src.path, "rb") as f:
            fd = f.fileno()
            for i, (start, count, shape) in enumerate(spans):
                begin = src.offset + start * 4
                end = begin + count * 4
                size = os.fstat(fd).st_size
                if size < end:  # mapping past the end would fault, not fail
                    raise TruncatedError(src.path, size, "file ends inside tensor data")
                _release(held, i % ring)
                base = begin - begin % mmap.ALLOCATIONGRANULARITY
                window = mmap.mmap(
                    fd, end - base, flags=mmap.MAP_SHARED | (_POPULATE if populate else 0),
                    prot=mmap.PROT_READ, offset=base,
                )  # fmt: skip
                rows = np.frombuffer(window, np.float32, count, begin - base)
                held[i % ring] = (window, rows)
                yield rows.reshape(shape)
    except OSError as exc:
        raise BundlerIOError(f"{src.path}: {exc.strerror or exc}") from None
    finally:
        for slot in range(ring):
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
    src: FileSource, spans: list[Span], values: Callable[[int], np.ndarray]
) -> Iterator[np.ndarray]:
    """float32 rows read from the file straight into the buffers the encoder takes."""
    try:
        with open(src.path, "rb", buffering=0) as f:
            f.seek(src.offset)
            for i, (start, _, _) in enumerate(spans):
                view = values(i)
                got = f.readinto(memoryview(view).cast("B"))
                if got != view.nbytes:
                    at = src.offset + start * 4 + (got or 0)
                    raise TruncatedError(src.path, at, "file ends inside tensor data")
                yield view
    except OSError as exc:
        raise BundlerIOError(f"{src.path}: {exc.strerror or exc}") from None


def _locate(
    exc: NonFiniteError, t: Tensor, target: Codec, start: int, width: int
) -> NonFiniteError:
    """The error of a chunk (values from `start`, rows of `width`), with the index in the
    whole tensor and the tensor's name."""
    row, col = exc.index[0] if len(exc.index) > 1 else 0, exc.index[-1]
    index = tuple(int(i) for i in np.unravel_index(start + row * width + col, t.shape))
    return NonFiniteError(
        f"tensor {t.name!r}: {target.name} cannot encode {exc.value} at index {index}: "
        "block codecs need finite values",
        index,
        exc.value,
    )


class _Stages:
    """Runs `produce` on a reader thread, up to DEPTH items ahead, and `transform` on a
    pool of `workers` threads, one item each; iterating gives the transformed items in
    order. Leaving the `with` block early (an error, a closed generator) stops them all."""

    def __init__(self, produce: Iterator[Any], transform: Callable[[int, Any], Any], workers: int):
        self.stop = threading.Event()
        self.inbox: queue.Queue = queue.Queue(DEPTH)
        self.transform = transform
        self.workers = workers
        self.reader = threading.Thread(
            target=self._run_produce, args=(produce,), name="bundler-read", daemon=True
        )
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="bundler-encode")

    def __enter__(self) -> Iterator[Any]:
        self.reader.start()
        return self._results()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.reader.join()

    def _run_produce(self, produce: Iterator[Any]) -> None:
        try:
            for item in produce:
                if not self._put((item, None)):
                    return
            self._put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put((_DONE, exc))

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.inbox.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _next(self, wait: bool) -> tuple[Any, BaseException | None]:
        """The reader's next (item, error); (None, None) when `wait` is false and none is
        ready yet."""
        while not self.stop.is_set():
            try:
                return self.inbox.get(timeout=0.05) if wait else self.inbox.get_nowait()
            except queue.Empty:
                if not wait:
                    return None, None
        return _DONE, None

    def _results(self) -> Iterator[Any]:
        # one item per worker plus one more in the pool, so no worker waits on the writer
        pending: collections.deque = collections.deque()
        i, finished = 0, False
        while True:
            while not finished and len(pending) <= self.workers:
                item, error = self._next(wait=not pending)
                if error is not None:
                    raise error
                if item is None:
                    break
                if item is _DONE:
                    finished = True
                    break
                pending.append(self.pool.submit(self.transform, i, item))
                i += 1
            if not pending:
                return
            yield pending.popleft().result()
