"""The structure-aware header fuzzer (tests/containers/fuzz.py) over every format's
conformance files: every case is a typed refusal or a correct read, and every `convert`
output of a case that reads reopens with the same tensors. A fixed seed runs in CI; the
`fuzz` marker runs ten times as many cases."""

from __future__ import annotations

import collections
import os
import random

import pytest

import bundler
from bundler.containers.gguf import format as gguf_format
from tests.containers import fuzz

#: Cases per format in the default run, and with `-m fuzz`.
CASES = 150
LONG_CASES = 1500
#: Per-case tracemalloc peak allowed (the seeds are a few KiB).
PEAK_BYTES = 64 << 20
FORMATS = ("gguf", "gguf-split", "safetensors", "safetensors-index", "apr")


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory) -> dict[str, list]:
    found = fuzz.seeds()
    split_dir = tmp_path_factory.mktemp("split")
    source = bundler.open(fuzz.CONFORMANCE / "gguf" / "alignment_64.gguf")
    gguf_format.write(source, split_dir / "split.gguf", split_max_tensors=1)
    found["gguf-split"] = sorted(split_dir.glob("*-00001-of-*.gguf"))
    found["safetensors-index"] = [fuzz.CONFORMANCE / "safetensors" / "sharded"]
    assert all(found[f] for f in FORMATS), found
    return found


def _fuzz(fmt: str, count: int, seed: int, seed_files, tmp_path) -> collections.Counter:
    rng = random.Random(f"{fmt}:{seed}")
    outcomes: collections.Counter = collections.Counter()
    failures = []
    slowest = 0.0
    for i in range(count):
        seed_path = rng.choice(seed_files[fmt])
        case_dir = tmp_path / f"c{i}"
        case_dir.mkdir()
        path = fuzz.make_case(fmt, seed_path, rng, case_dir, i)
        got = fuzz.run_case(path, case_dir)
        outcomes[got.kind] += 1
        slowest = max(slowest, got.seconds)
        if got.kind in ("untyped", "silent-accept", "convert-unreadable"):
            failures.append((i, seed_path.name, got.kind, got.detail[:300]))
        if got.peak_bytes > PEAK_BYTES:
            failures.append((i, seed_path.name, "memory", got.peak_bytes))
    print(f"\nfuzz {fmt}: {count} cases, {dict(outcomes)}, slowest {slowest:.2f} s")
    assert not failures, failures[:10]
    return outcomes


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_headers_are_typed_refusals_or_correct_reads(fmt, seed_files, tmp_path):
    outcomes = _fuzz(fmt, CASES, 18, seed_files, tmp_path)
    assert sum(n for k, n in outcomes.items() if k.startswith("refused")) > 0


@pytest.mark.fuzz
@pytest.mark.parametrize("fmt", FORMATS)
def test_long_fuzz_run(fmt, seed_files, tmp_path):
    seed = int(os.environ.get("BUNDLER_FUZZ_SEED", "1"))
    _fuzz(fmt, LONG_CASES, seed, seed_files, tmp_path)
