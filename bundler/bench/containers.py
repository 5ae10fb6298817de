"""`bundler bench containers`: GGUF open/list speed and rewrite memory, beside the `gguf` package.

(a) Open the SmolLM2 GGUF and list its metadata (keys, types, values) and tensors (names,
    shapes, types): bundler vs `gguf.GGUFReader`, medians of several runs.
(b) Rewrite a generated GGUF of `--size-gib` GiB and of 0.25 GiB, each in a fresh
    subprocess: wall time, tracemalloc peak and resident-set high-water growth, for
    bundler (read + streaming write) and for the gguf package (GGUFReader + GGUFWriter).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bundler.errors import UsageError

SMALL_GIB = 0.25
TENSOR_BYTES = 64 << 20
ROW = 4096
VOCAB = 49152
GIB = 1 << 30


# ------------------------------------------------------------------------------ (a) open + list


def list_with_bundler(path: str) -> int:
    """Open and list everything the way a user would; returns how many items were listed."""
    import bundler

    b = bundler.open(path)
    items = [(k, v.type, v.item_type, v.value) for k, v in b.metadata.typed_items()]
    items += [(t.name, t.shape, t.codec.name) for t in b.tensors.values()]
    return len(items)


def list_with_gguf(path: str) -> int:
    import gguf

    r = gguf.GGUFReader(path)
    items = [(f.name, f.types, f.contents()) for f in r.fields.values()]
    items += [(t.name, tuple(t.shape), t.tensor_type) for t in r.tensors]
    return len(items)


def _median_seconds(fn: Callable[[], Any], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


# ------------------------------------------------------------------------------ (b) rewrite


def _generated_source_class():
    from bundler.bundle import Source

    class PatternSource(Source):
        """Deterministic bytes streamed from one reused buffer (never the whole tensor)."""

        def __init__(self, nbytes: int, seed: int):
            self.nbytes = nbytes
            self.seed = seed

        def raw(self) -> np.ndarray:
            return np.concatenate(list(self.iter_raw(8 << 20)))

        def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
            buf = np.random.default_rng(self.seed).integers(0, 256, chunk_bytes, dtype=np.uint8)
            left = self.nbytes
            while left:
                n = min(left, chunk_bytes)
                yield buf[:n]
                left -= n

    return PatternSource


def generate(path: str, size_gib: float) -> int:
    """Write a GGUF of about `size_gib` GiB: llama-like metadata with a 49,152-token vocabulary
    and Q8_0 matrices of 64 MiB; returns its size."""
    from bundler.bundle import Bundle, Metadata, Tensor, ValueType
    from bundler.codecs import get
    from bundler.containers import gguf

    source = _generated_source_class()
    q8 = get("q8_0")
    row_bytes = q8.facts.row_bytes(ROW)
    md = Metadata()
    md.set("general.architecture", "llama", ValueType.STRING)
    md.set("general.name", f"generated {size_gib} GiB", ValueType.STRING)
    md.set("llama.context_length", 2048, ValueType.UINT32)
    md.set(
        "tokenizer.ggml.tokens",
        [f"tok{i}" for i in range(VOCAB)],
        ValueType.ARRAY,
        ValueType.STRING,
    )
    md.set("tokenizer.ggml.token_type", np.ones(VOCAB, np.int32), ValueType.ARRAY, ValueType.INT32)
    bundle = Bundle(md)
    total = int(size_gib * GIB)
    i = 0
    while total > 0:
        rows = max(1, min(TENSOR_BYTES, total) // row_bytes)
        shape = (rows, ROW)
        bundle.add(Tensor(f"blk.{i}.ffn_up.weight", shape, q8, source(rows * row_bytes, i)))
        total -= rows * row_bytes
        i += 1
    gguf.write(bundle, path)
    return os.path.getsize(path)


def _rewrite_bundler(src: str, dst: str) -> None:
    import bundler

    bundler.open(src).save(dst)


def _rewrite_gguf(src: str, dst: str) -> None:
    import gguf

    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch=arch)
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        sub = f.types[1] if len(f.types) > 1 else None
        w.add_key_value(f.name, f.contents(), f.types[0], sub_type=sub)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


_REWRITERS = {"bundler": _rewrite_bundler, "gguf": _rewrite_gguf}


def _reset_peak_rss() -> int:
    """Reset the resident high-water mark to the current size (Linux: clear_refs 5) and
    return that size; elsewhere return the high-water mark so far."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmHWM")
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    try:
        return _status_bytes("VmHWM")
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise ValueError(field)


def _worker(which: str, src: str, dst: str, trace: bool) -> dict[str, float]:
    """Run one rewrite in this (fresh) process and measure it: RSS growth is the resident
    high-water mark during the rewrite minus the resident size before it."""
    import tracemalloc

    import gguf  # noqa: F401  (imports are not part of the measurement)

    import bundler  # noqa: F401

    base_rss = _reset_peak_rss()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    _REWRITERS[which](src, dst)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    return {"seconds": seconds, "tracemalloc_peak": peak, "rss_growth": _peak_rss() - base_rss}


def _measure(which: str, src: str, dst: str) -> dict[str, float]:
    """Time and RSS from one run, tracemalloc peak from a second (it slows allocation)."""
    out: dict[str, float] = {}
    for trace in (False, True):
        # start each run with no dirty pages, so one run's writeback does not slow the next
        os.sync()
        cmd = [sys.executable, "-m", "bundler.bench.containers", which, src, dst]
        cmd += ["--trace"] if trace else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{which} rewrite failed: {done.stderr[-2000:]}")
        got = json.loads(done.stdout)
        if trace:
            out["tracemalloc_peak"] = got["tracemalloc_peak"]
        else:
            out.update(seconds=got["seconds"], rss_growth=got["rss_growth"])
        os.unlink(dst)
    return out


# ------------------------------------------------------------------------------ driver


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)


def run(size_gib: float = 2.0, gguf_rewrite: bool = True) -> dict[str, Any]:
    """Open + list a real GGUF with bundler and gguf.GGUFReader, then rewrite generated GGUF
    files of 0.25 GiB and `size_gib` GiB with each (fresh process each)."""
    if not 0 < size_gib <= 64:
        raise UsageError(f"--size-gib must be in (0, 64], got {size_gib}")
    from bundler import assets

    smollm2 = str(assets.smollm2_gguf())
    sizes = sorted({SMALL_GIB, size_gib})
    steps = 2 + len(sizes) * (2 + int(gguf_rewrite))
    result: dict[str, Any] = {}
    with _progress(steps) as bar:
        bar.set_description("open bundler")
        list_with_bundler(smollm2)  # warm: imports and compiled schemas
        ours, ours_runs = _median_seconds(lambda: list_with_bundler(smollm2), 7)
        bar.update()
        bar.set_description("open gguf")
        ref, ref_runs = _median_seconds(lambda: list_with_gguf(smollm2), 3)
        bar.update()
        result["open"] = {
            "file": os.path.basename(smollm2),
            "items": list_with_bundler(smollm2),
            "bundler_seconds": ours,
            "gguf_seconds": ref,
            "bundler_runs": ours_runs,
            "gguf_runs": ref_runs,
            "speedup": ref / ours,
        }
        rewrites = []
        with tempfile.TemporaryDirectory(prefix="bundler-bench-") as tmp:
            for gib in sizes:
                src = os.path.join(tmp, f"in-{gib}.gguf")
                dst = os.path.join(tmp, f"out-{gib}.gguf")
                bar.set_description(f"generate {gib} GiB")
                size = generate(src, gib)
                bar.update()
                row: dict[str, Any] = {"size_gib": gib, "bytes": size}
                for which in ("bundler", "gguf") if gguf_rewrite else ("bundler",):
                    bar.set_description(f"rewrite {gib} GiB with {which}")
                    row[which] = _measure(which, src, dst)
                    bar.update()
                os.unlink(src)
                rewrites.append(row)
        result["rewrite"] = rewrites
    return result


if __name__ == "__main__":
    # worker mode: python -m bundler.bench.containers {bundler,gguf} SRC DST [--trace]
    which, src, dst = sys.argv[1:4]
    print(json.dumps(_worker(which, src, dst, "--trace" in sys.argv[4:])))
