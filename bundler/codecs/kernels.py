"""Loading the kernel modules: the `Kernel` pair a family module exports, importing it on
first use, the compiler's first call (said on stderr when it compiles, with a progress
bar on a terminal), the collector paused while the compiler builds its objects, and how
many threads the compiled kernels use.

Nothing here imports the compiler: numpy kernels (floats, aprender's) never load it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from bundler.errors import UsageError

#: The compiled parallel loops run on OpenMP's threads, which by default spin for a while
#: after each loop, waiting for the next. A conversion runs one loop per chunk, so on cores
#: shared with other work the spinning takes the CPU the work needs (SmolLM2 as float32 to
#: Q8_0 on two threads: 2.6-3.0 s of CPU spinning, 1.7-1.9 s not). Set before the OpenMP
#: runtime loads (it reads the variable once); a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Kernel(NamedTuple):
    """The compiled pair of a codec family module.

    `encode(src, dst, importance=None)` takes a C-contiguous 2-D source chunk (float32 for
    block codecs, any numeric dtype for element types) and its uint8 destination rows, and
    returns how many blocks held a NaN or infinity (0 when the codec stores them), or
    -(1 + i) when the block starting at flat value i is one the C library aborts on. Kernels
    of codecs whose facts say `takes_importance` also take `importance`: one contiguous
    float32 weight per column, the same for every row (None: the reference quantizer);
    the others are only ever called with two arguments. `decode(raw, dst)` fills
    `dst` (dtype `out_dtype`) from C-contiguous uint8 rows.

    A flat codec with a tensor-wide header (its `header_bytes`) streams through two more:
    `header_encoder()` makes an object that is given every chunk of values (`add`), then
    gives the header (`header()`) and each chunk's bytes (`encode(values, out)`);
    `header_decoder(header)` gives a function `(body, shape, out)` decoding one chunk.
    """

    encode: Any
    decode: Any
    out_dtype: Any = np.float32
    float_input: bool = True
    header_encoder: Any = None
    header_decoder: Any = None


def import_kernels(module_name: str) -> dict[str, Kernel]:
    """The KERNELS table of a kernel module, imported with the cyclic collector paused,
    each kernel's first call announced when it compiles (see `first_call`)."""
    with collector_paused():
        kernels = importlib.import_module(module_name).KERNELS
    return {
        name: k._replace(
            encode=first_call(k.encode, f"{name} encoder"),
            decode=first_call(k.decode, f"{name} decoder"),
        )
        for name, k in kernels.items()
    }


@functools.cache
def announced(module_name: str, label: str, threaded: bool = True) -> Any:
    """A kernel module whose compiled functions are each wrapped by `first_call`, so that
    their compilation is announced ("the affine kernels") and the thread count applies
    (`threaded`; a module without parallel loops skips that per-call setting); for families
    called function by function rather than through a `Kernel` pair."""
    from types import SimpleNamespace

    with collector_paused():
        module = importlib.import_module(module_name)
    from numba.core.dispatcher import Dispatcher

    return SimpleNamespace(
        **{
            name: first_call(f, label, threaded) if isinstance(f, Dispatcher) else f
            for name, f in vars(module).items()
            if not name.startswith("__")
        }
    )


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off within the block (back on if it was on)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------- compilation

#: Functions compiled in this process, per kernel label ("q4_k encoder").
COMPILED: Counter[str] = Counter()
#: True while `bundler warmup` compiles (the notice then gives no hint to run it).
AHEAD_OF_TIME = [False]
#: Labels whose compilation this process has announced (one line per label, not per function).
_ANNOUNCED: set[str] = set()
#: First calls run one at a time, so that one compilation is announced once.
_FIRST_CALLS = threading.RLock()
#: The reporters of the first calls in progress, innermost last (only it reports).
_REPORTERS: list[Any] = []


class _CompileReporter:
    """Listens to the compiler's `numba:compile` events during one first call: the first
    one prints the one-line notice, each finished function advances the progress bar."""

    def __init__(self, label: str):
        self.label = label
        self.count = 0
        self.announced = False
        self.bar: Any = None  # a tqdm bar on a terminal

    def on_start(self, event: Any) -> None:
        if _REPORTERS[-1] is not self:  # a nested first call (a weighted encoder) reports it
            return
        if not self.announced and self.label not in _ANNOUNCED:
            self.announced = True
            _ANNOUNCED.add(self.label)
            hint = "" if AHEAD_OF_TIME[0] else " (`bundler warmup` compiles them ahead)"
            print(
                f"bundler: compiling the {self.label} kernels once, cached in "
                f"{_cache_dir(event.data)}{hint}",
                file=sys.stderr,
                flush=True,
            )
            if sys.stderr.isatty():
                from tqdm import tqdm

                self.bar = tqdm(desc=f"compiling {self.label}", unit=" functions", leave=False)

    def on_end(self, event: Any) -> None:
        if _REPORTERS[-1] is not self:
            return
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@functools.cache
def _listener_type() -> type:
    """`_CompileReporter` as one of the compiler's event listeners."""
    from numba.core.event import Listener

    return type("CompileListener", (_CompileReporter, Listener), {})


def _cache_dir(data: Any) -> str:
    try:
        return str(data["dispatcher"].stats.cache_path)
    except Exception:  # a dispatcher without a disk cache
        return "memory only"


@contextlib.contextmanager
def compiling(label: str) -> Iterator[None]:
    """Within the block, compilations by the kernels are announced under `label` and
    counted in COMPILED[label]; the collector is paused meanwhile.

    Importing the compiler, and the first call of a kernel (when it compiles or loads its
    cached machine code), create a few hundred thousand objects; letting the collector
    trace them over and over while they are made costs about a third of a second. When the
    compiler is not loaded yet, it is listened to from the moment a `Compiled` kernel
    without a native entry loads it (`listen_if_pending`).
    """
    with _FIRST_CALLS, collector_paused():
        if "numba" in sys.modules:
            reporter = _start_reporting(label)
            try:
                yield
            finally:
                _stop_reporting(reporter)
            return
        slot: list = [label, None]
        _PENDING.append(slot)
        try:
            yield
        finally:
            _PENDING.remove(slot)
            if slot[1] is not None:
                _stop_reporting(slot[1])


#: First calls in progress that began with the compiler not loaded: [label, reporter once
#: a kernel of theirs loads it].
_PENDING: list[list] = []
_PENDING_LOCK = threading.Lock()


def listen_if_pending() -> None:
    """Before a kernel runs through numba: the innermost first call in progress that began
    without the compiler starts announcing compilations (once)."""
    with _PENDING_LOCK:
        if _PENDING and _PENDING[-1][1] is None:
            _PENDING[-1][1] = _start_reporting(_PENDING[-1][0])


def _start_reporting(label: str) -> Any:
    from numba.core import event

    reporter = _listener_type()(label)
    _REPORTERS.append(reporter)
    event.register("numba:compile", reporter)
    return reporter


def _stop_reporting(reporter: Any) -> None:
    from numba.core import event

    event.unregister("numba:compile", reporter)
    _REPORTERS.remove(reporter)
    reporter.close()
    COMPILED[reporter.label] += reporter.count


def first_call(fn: Any, label: str, threaded: bool = True) -> Any:
    """`fn` run with the thread count in effect for the calling thread (when `threaded`);
    its first call inside `compiling(label)`."""
    done = [False]

    def call(*args: Any) -> Any:
        if threaded:
            apply_threads()
        if done[0]:
            return fn(*args)
        with compiling(label):
            result = fn(*args)
            done[0] = True
        return result

    return call


def with_weighted(reference: Any, weighted: Any, name: str) -> Any:
    """Codec `name`'s Kernel `encode(src, dst, importance=None)`: `reference(src, dst)`, or,
    given importance weights, `weighted(src, dst, importance)`; the first call of each (and
    so its compilation) is announced on its own ("q4_k encoder", "q4_k weighted encoder"),
    whichever comes first."""
    reference = first_call(reference, f"{name} encoder")
    weighted = first_call(weighted, f"{name} weighted encoder")

    def encode(src: np.ndarray, dst: np.ndarray, importance: np.ndarray | None = None) -> int:
        return reference(src, dst) if importance is None else weighted(src, dst, importance)

    return encode


# ---------------------------------------------------------------- threads

#: The count `set_threads` chose for the whole process (None: the compiler's default, all
#: cores), and the count `kernel_threads` chose for one thread.
_PROCESS_THREADS: list[int | None] = [None]
_THREAD = threading.local()


def set_threads(n: int | None) -> int:
    """Set how many threads the compiled kernels use, from any thread of the process
    (None: all cores); returns the count."""
    most = _max_threads()
    count = most if n is None else int(n)
    if not 1 <= count <= most:
        raise UsageError(f"threads must be 1..{most}, got {n}")
    _PROCESS_THREADS[0] = count
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(count)  # for compiled code this thread calls directly
    return count


def thread_count() -> int:
    """How many threads the kernels use: as `set_threads` set it, else all cores (as the
    compiler counts them)."""
    return _PROCESS_THREADS[0] or _max_threads()


@contextlib.contextmanager
def kernel_threads(n: int) -> Iterator[None]:
    """Within the block, kernels called from this thread use `n` threads."""
    before = getattr(_THREAD, "count", None)
    _THREAD.count = n
    try:
        yield
    finally:
        _THREAD.count = before


class Compiled:
    """A compiled kernel named by its module and function, or by a factory there and the
    factory's arguments: run from its native entry when it has one for the arguments'
    types (the compiler is then never loaded, see `native`), else through numba, which
    then records the entry for the next process."""

    def __init__(self, module: str, function: str, *factory_args: Any):
        self.module, self.function, self.factory_args = module, function, factory_args
        self.name = f"{module}:{function}{factory_args if factory_args else ''}"
        self._dispatcher: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Compiled({self.name})"

    def dispatcher(self) -> Any:
        """numba's dispatcher of the kernel (importing its module, and so numba)."""
        if self._dispatcher is None:
            with self._lock, collector_paused():  # not _FIRST_CALLS: workers come here
                if self._dispatcher is None:
                    found = getattr(importlib.import_module(self.module), self.function)
                    self._dispatcher = found(*self.factory_args) if self.factory_args else found
        return self._dispatcher

    def __call__(self, *args: Any) -> Any:
        from bundler.codecs import native

        loaded = native.find(self.name, args)
        if loaded is not None:
            try:
                return loaded(*args)
            except native.Raised:
                pass  # numba runs it again, and raises as it does
        dispatcher = self.dispatcher()
        listen_if_pending()
        result = dispatcher(*args)
        native.record(self.name, dispatcher, args)
        return result


#: Workers of `split_run`, made on first use (as many as the compiler's threads).
_POOL: list[Any] = []
#: Fewest blocks a thread is given by default (below it, splitting costs more than it
#: saves).
_MIN_SPLIT = 64


def split_run(kernel: Any, count: int, *args: Any, min_split: int = _MIN_SPLIT) -> int:
    """`kernel(*args, lo, hi)` over 0 .. count cut into one contiguous range per thread
    in effect (the calling thread takes the first), each of at least `min_split` items,
    for nogil kernels that are not parallel loops themselves; returns the sum of the
    results (a kernel returning nothing counts 0)."""
    threads = min(_effective_threads(), max(1, count // min_split))
    if threads <= 1:
        return int(kernel(*args, 0, count) or 0)
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        with _FIRST_CALLS:
            if not _POOL:
                _POOL.append(ThreadPoolExecutor(_max_threads(), "bundler-kernel"))
    bounds = [count * i // threads for i in range(threads + 1)]
    rest = [_POOL[0].submit(kernel, *args, bounds[i], bounds[i + 1]) for i in range(1, threads)]
    total = int(kernel(*args, bounds[0], bounds[1]) or 0)
    return total + sum(int(f.result() or 0) for f in rest)


def range_kernel(
    encoder: Any,
    decoder: Any,
    block_size: int,
    type_size: int,
    *decode_args: Any,
    encode_args: tuple = (),
) -> Kernel:
    """The `Kernel` of compiled functions over block ranges, run on the threads in effect:
    `encoder(src, dst, weights, n, *encode_args, lo, hi) -> non-finite blocks` (flattened
    rows of n values; the registry's checked per-column float32 weights, or an empty array
    for none) and `decoder(raw, out, *decode_args, lo, hi)`."""
    none = np.empty(0, np.float32)

    def encode(src: np.ndarray, dst: np.ndarray, importance: Any = None) -> int:
        weights = none if importance is None else importance
        flat = src.reshape(-1)
        n = src.shape[-1]
        count = flat.size // block_size
        return split_run(encoder, count, flat, dst.reshape(-1), weights, n, *encode_args)

    def decode(raw: np.ndarray, dst: np.ndarray) -> None:
        flat = raw.reshape(-1)
        split_run(decoder, flat.size // type_size, flat, dst.reshape(-1), *decode_args)

    return Kernel(encode, decode)


def _effective_threads() -> int:
    """The thread count in effect for the calling thread."""
    if "numba" not in sys.modules:  # native kernels: the count is bundler's alone
        return _wanted() or _max_threads()
    import numba

    apply_threads()
    return numba.get_num_threads()


def _max_threads() -> int:
    """The compiler's thread count (NUMBA_NUM_THREADS, else the cores this process may
    use), read the compiler's way without loading it."""
    if "numba" in sys.modules:
        import numba

        return numba.config.NUMBA_NUM_THREADS
    value = os.environ.get("NUMBA_NUM_THREADS")
    if value:
        return int(value)
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(cores) if cores else os.cpu_count() or 1)


def _wanted() -> int | None:
    """The count `kernel_threads` set for this thread, else `set_threads`'s (None: unset)."""
    return getattr(_THREAD, "count", None) or _PROCESS_THREADS[0]


def apply_threads() -> None:
    """Set the compiler's thread count for the calling thread to the one in effect."""
    # the compiler's own setting is per thread: a thread it has not seen uses all cores
    want = _wanted()
    if want is None or "numba" not in sys.modules:  # numpy kernels have no thread setting
        return
    import numba  # waits while another thread is still importing it

    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
