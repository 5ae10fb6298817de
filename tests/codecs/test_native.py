"""Native kernel entries: a later process encodes without loading the compiler, with the
bytes numba's kernels give, on one thread or two; damaged or switched-off entries fall
back to numba."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit, prange

from bundler.codecs import native

#: Every codec whose encoder runs from an entry (legacy, K-quant, float element codecs,
#: i-quants, ternary and low-bit, FP4; those ending in "+w" are given importance weights,
#: as the lowest-bit i-quants need).
NATIVE = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1")
NATIVE += ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k", "f16", "bf16")
NATIVE += ("iq4_nl", "iq4_xs", "iq3_s", "iq3_xxs+w", "iq2_xxs+w", "iq2_xs+w", "iq2_s+w")
NATIVE += ("iq1_s+w", "iq1_m+w", "tq1_0", "tq2_0", "q1_0", "q2_0", "mxfp4", "nvfp4")

#: Encodes a real weight (MiniLM's first feed-forward matrix, flattened to rows of 256) with
#: each codec on two threads and on one, saves the bytes, and says whether numba was loaded.
SCRIPT = """
import json, sys
import numpy as np
from safetensors.numpy import load_file
import bundler
from bundler.codecs import set_threads

names = sys.argv[2].split(",")
weights = load_file(sys.argv[1])
x = weights["encoder.layer.0.intermediate.dense.weight"].reshape(-1, 256)
x = np.concatenate([x, x[:1100] * 3e4]).astype(np.float32)  # F16 overflow, 1,024+ rows
w = (np.abs(x[:, :256]).mean(axis=0) + 0.1).astype(np.float32)
out = {}
for threads in (2, 1):
    set_threads(threads)
    for name in names:
        codec, weighted = name.removesuffix("+w"), name.endswith("+w")
        out[f"{name}-{threads}"] = bundler.encode(x, codec, importance=w if weighted else None)
np.savez(sys.argv[3], **out)
print(json.dumps({"numba": "numba" in sys.modules, "llvmlite": "llvmlite" in sys.modules}))
"""


def _encode_all(minilm, out, env, names=NATIVE):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(minilm), ",".join(names), str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), dict(np.load(out))


@pytest.fixture
def store(tmp_path):
    """A process environment with an empty entry store of its own (numba's cache as usual)."""
    env = {k: v for k, v in os.environ.items() if k != native.ENV_SWITCH}
    env[native.ENV_DIR] = str(tmp_path / "store")
    return env


def _root(env):
    return Path(env[native.ENV_DIR])


def _kernel_entries(root):
    """The description files of the kernels' entries under `root` (not the runtime's)."""
    return [p for p in Path(root).rglob("*.json") if p.stem != native._RUNTIME_KEY]


def _entries(env):
    return [json.loads(p.read_text()) for p in _kernel_entries(_root(env))]


def test_a_later_process_encodes_without_numba_and_gives_numbas_bytes(
    minilm_safetensors, tmp_path, store
):
    first, jit = _encode_all(minilm_safetensors, tmp_path / "jit.npz", store)
    assert first["numba"]
    made = {e["key"].split("|")[0] for e in _entries(store)}
    assert any("encode_symmetric" in k for k in made) and any("q6_k" in k for k in made)
    later, loaded = _encode_all(minilm_safetensors, tmp_path / "native.npz", store)
    assert not later["numba"] and not later["llvmlite"]  # loaded by bundler's own loader
    assert loaded.keys() == jit.keys()
    for key in jit:
        assert np.array_equal(loaded[key], jit[key]), key
        name = key.split("-")[0]
        assert np.array_equal(loaded[key], loaded[f"{name}-1"]), key  # threads agree


def test_switched_off_entries_are_neither_made_nor_read(minilm_safetensors, tmp_path, store):
    _encode_all(minilm_safetensors, tmp_path / "a.npz", store, ("q4_0",))
    off = {**store, native.ENV_SWITCH: "0"}
    state, _ = _encode_all(minilm_safetensors, tmp_path / "b.npz", off, ("q4_0",))
    assert state["numba"]
    empty = {**off, native.ENV_DIR: str(tmp_path / "other")}
    _encode_all(minilm_safetensors, tmp_path / "c.npz", empty, ("q4_0",))
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("damage", ["truncated object", "flipped byte", "not json", "list"])
def test_a_damaged_entry_is_never_loaded_and_is_written_anew(
    minilm_safetensors, tmp_path, store, damage
):
    _, jit = _encode_all(minilm_safetensors, tmp_path / "jit.npz", store, ("q8_0",))
    (entry,) = [p for p in _root(store).rglob("*.json") if "encode_q8" in p.read_text()]
    obj = entry.with_suffix(".o")
    good = obj.read_bytes()
    if damage == "truncated object":
        obj.write_bytes(good[: len(good) // 2])
    elif damage == "flipped byte":
        obj.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    else:
        entry.write_text("{" if damage == "not json" else "[1, 2]")
    state, again = _encode_all(minilm_safetensors, tmp_path / "again.npz", store, ("q8_0",))
    assert state["numba"]  # the damaged entry was not used
    assert all(np.array_equal(again[k], jit[k]) for k in jit)
    assert obj.read_bytes() == good  # and the numba run wrote it anew
    state, _ = _encode_all(minilm_safetensors, tmp_path / "last.npz", store, ("q8_0",))
    assert not state["numba"]


def test_a_damaged_runtime_object_is_never_loaded_and_is_built_anew(
    minilm_safetensors, tmp_path, store
):
    _, jit = _encode_all(minilm_safetensors, tmp_path / "jit.npz", store, ("q4_k",))
    _encode_all(minilm_safetensors, tmp_path / "native.npz", store, ("q4_k",))
    (runtime,) = _root(store).rglob(f"{native._RUNTIME_KEY}.o")
    good = runtime.read_bytes()
    runtime.write_bytes(good[:64] + bytes([good[64] ^ 0xFF]) + good[65:])
    state, again = _encode_all(minilm_safetensors, tmp_path / "again.npz", store, ("q4_k",))
    assert not state["numba"] and state["llvmlite"]  # llvmlite built the runtime again
    assert runtime.read_bytes() == good
    assert all(np.array_equal(again[k], jit[k]) for k in jit)
    state, _ = _encode_all(minilm_safetensors, tmp_path / "last.npz", store, ("q4_k",))
    assert not state["llvmlite"]


def test_llvms_loader_runs_an_entry_as_bundlers_does(tmp_path, monkeypatch):
    """The loader kept for objects of other machines (through llvmlite) on a real entry."""
    monkeypatch.setenv(native.ENV_DIR, str(tmp_path))
    x = np.arange(1000, dtype=np.float64)
    assert _range_sum(x, 10, 900) == x[10:900].sum()
    native.record(f"{__name__}:_range_sum", _range_sum, (x, 10, 900))
    (entry,) = _kernel_entries(tmp_path)
    spec = json.loads(entry.read_text())
    address = native._engine_address(entry.with_suffix(".o").read_bytes(), spec)
    kernel = native._Native(address, spec["args"], spec["returns"])
    assert kernel(x, 10, 900) == native.find(f"{__name__}:_range_sum", (x, 10, 900))(x, 10, 900)
    assert kernel(x, 10, 900) == x[10:900].sum()


@njit(cache=True, parallel=True)
def _parallel_sum(x):
    total = 0.0
    for i in prange(x.size):
        total += x[i]
    return total


@njit(cache=True, nogil=True)
def _range_sum(x, lo, hi):
    total = 0.0
    for i in range(lo, hi):
        total += x[i]
    return total


def test_a_parallel_kernel_gets_no_entry_and_a_range_kernel_does(tmp_path, monkeypatch):
    monkeypatch.setenv(native.ENV_DIR, str(tmp_path))
    x = np.arange(1000, dtype=np.float64)
    for name, kernel, args in (
        ("parallel", _parallel_sum, (x,)),
        ("range", _range_sum, (x, 3, 900)),
    ):
        kernel(*args)
        native.record(f"{__name__}:{name}", kernel, args)
    keys = [json.loads(p.read_text())["key"] for p in _kernel_entries(tmp_path)]
    assert keys == [f"{__name__}:range|<f81Cw1,i,i"]  # a prange loop needs numba's scheduler
    assert len(list(tmp_path.rglob(f"{native._RUNTIME_KEY}.o"))) == 1  # made with the first
    loaded = native.find(f"{__name__}:range", (x, 3, 900))
    assert loaded(x, 3, 900) == _range_sum(x, 3, 900) == sum(range(3, 900))


def _numba_object(kernel, args):
    """The object code numba's cache holds for `kernel` called with `args`."""
    kernel(*args)
    sig = tuple(kernel.typeof_pyval(a) for a in args)
    codegen = kernel.overloads[sig].target_context.codegen()
    data = kernel._cache._cache_file.load(kernel._cache._index_key(sig, codegen))
    return data[0][2][0]


def _symbols(obj):
    """(offset of each symbol entry, its name's offset in the string table, that table's
    start) of an ELF64 object."""
    shoff = struct.unpack_from("<Q", obj, 0x28)[0]
    size, count = struct.unpack_from("<HH", obj, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * size) for i in range(count)]
    (symtab,) = [sec for sec in sections if sec[1] == 2]
    strtab = sections[symtab[6]][4]
    entries = range(symtab[4], symtab[4] + symtab[5], symtab[9])
    return [(at, struct.unpack_from("<I", obj, at)[0], strtab) for at in entries]


def test_numbas_symbol_names_are_renamed_in_place_and_a_shared_name_refuses_the_object():
    obj = _numba_object(_range_sum, (np.arange(10.0), 0, 10))
    renamed, needs = native._privatized(obj)
    assert len(renamed) == len(obj)
    before = [n for n in _undefined(obj) if n.startswith(("NRT_", "numba_"))]
    assert before  # the Python wrapper's helpers
    assert sorted(needs) == sorted(_undefined(renamed)) == needs
    assert not any(n.startswith(("NRT_", "numba_")) for n in needs)
    assert {n.replace("BNK_", "NRT_", 1).replace("bndlr_", "numba_", 1) for n in needs} >= set(
        before
    )
    # another symbol's name starting inside one to rename: renaming would change it too
    symbols = _symbols(obj)
    target = next(name for _, name, base in symbols if _name(obj, base + name) in before)
    at = next(at for at, name, _ in symbols if name and name != target)
    shared = bytearray(obj)
    struct.pack_into("<I", shared, at, target + 1)
    assert native._privatized(bytes(shared))[1] is None
    assert native._privatized(b"MZ" + obj[2:])[1] is None  # not ELF: no entry


def _name(obj, start):
    return obj[start : obj.index(b"\0", start)].decode()


def _undefined(obj):
    return sorted(
        {
            _name(obj, base + name)
            for at, name, base in _symbols(obj)
            if name and struct.unpack_from("<H", obj, at + 6)[0] == 0
        }
    )


@njit(cache=True, nogil=True)
def _checked_count(x, lo, hi):
    if hi > x.size:
        raise ValueError("range past the end")
    return hi - lo


def test_a_kernel_that_raises_natively_raises_through_numba(tmp_path, monkeypatch):
    from bundler.codecs.kernels import Compiled

    monkeypatch.setenv(native.ENV_DIR, str(tmp_path))
    x = np.zeros(100, np.float32)
    kernel = Compiled(__name__, "_checked_count")
    assert kernel(x, 10, 90) == 80  # through numba, which records the entry
    loaded = native.find(kernel.name, (x, 10, 90))
    assert loaded is not None and loaded(x, 10, 90) == 80
    with pytest.raises(native.Raised):
        loaded(x, 0, 101)
    with pytest.raises(ValueError, match="range past the end"):
        kernel(x, 0, 101)


def test_decoding_runs_from_entries_too(minilm_safetensors, tmp_path, store):
    code = (
        "import sys, numpy as np, bundler\n"
        "x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)\n"
        "for name in ('q4_0', 'q5_1', 'q8_0', 'q4_k', 'q6_k', 'f16'):\n"
        "    np.save(f'{sys.argv[1]}-{name}.npy', bundler.decode(bundler.encode(x, name), name))\n"
        "print('numba' in sys.modules)\n"
    )
    runs = []
    for where in ("jit", "native"):
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / where)],
            env=store, capture_output=True, text=True, check=True, timeout=900,
        )  # fmt: skip
        runs.append(done.stdout.strip())
    assert runs == ["True", "False"]
    for name in ("q4_0", "q5_1", "q8_0", "q4_k", "q6_k", "f16"):
        jit, loaded = (np.load(tmp_path / f"{w}-{name}.npy") for w in ("jit", "native"))
        assert np.array_equal(jit.view(np.uint32), loaded.view(np.uint32)), name


def test_arguments_of_kinds_entries_do_not_hold_have_no_key():
    a = np.zeros(8, np.float32)
    assert native.arg_key((a, 3, 2.5, True, np.float32(1))) == "<f41Cw1,i,f,b,<f4"
    assert native.arg_key((a[::2],)) == "<f41Aw1"
    assert native.arg_key(((1, 2),)) is None
    assert native.arg_key((None,)) is None
    assert native.arg_key((1 << 64,)) is None


#: Affine schemes whose every kernel runs from an entry: MinMax rows (groups, channels),
#: blocks down the first axis, the general quantizer (per tensor), and the extremes, MSE
#: (many slices, and few: a tensor) and entropy searches, 4, 8 and 16 bits.
AFFINE = ("int4:g128", "int4:g32:asym", "int8:channel", "int8:channel1", "int8:tensor")
AFFINE += ("int4:g128:asym:mse", "int8:tensor:mse", "int8:channel:entropy", "int4:g64:entropy")
AFFINE += ("int16:channel:p99.9", "int8:tensor:meanstd3:f16")

AFFINE_SCRIPT = """
import json, sys
import numpy as np
from safetensors.numpy import load_file
import bundler
from bundler.codecs import set_threads

x = load_file(sys.argv[1])["encoder.layer.0.intermediate.dense.weight"]  # (1536, 384)
out = {}
for threads in (2, 1):
    set_threads(threads)
    for spec in sys.argv[2].split(","):
        e = bundler.codec(spec).encode(x)
        out[f"{spec}-{threads}-codes"] = e.codes
        out[f"{spec}-{threads}-scale"] = e.scale
        if e.zero_point is not None:
            out[f"{spec}-{threads}-zero"] = e.zero_point
np.savez(sys.argv[3], **out)
print(json.dumps({"numba": "numba" in sys.modules}))
"""


def test_affine_kernels_run_from_entries_with_numbas_results(minilm_safetensors, tmp_path, store):
    def run(where):
        done = subprocess.run(
            [sys.executable, "-c", AFFINE_SCRIPT, str(minilm_safetensors), ",".join(AFFINE),
             str(tmp_path / where)],
            env=store, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])["numba"], dict(np.load(tmp_path / where))

    (first, jit), (later, loaded) = run("jit.npz"), run("native.npz")
    assert first and not later
    assert loaded.keys() == jit.keys() and len(jit) >= 2 * 2 * len(AFFINE)
    for key in jit:
        assert loaded[key].dtype == jit[key].dtype
        assert np.array_equal(loaded[key].view(np.uint8), jit[key].view(np.uint8)), key
        spec, _, part = key.split("-")
        assert np.array_equal(loaded[key], loaded[f"{spec}-1-{part}"]), key  # threads agree


VECTORS_SCRIPT = """
import json, sys
import numpy as np
from safetensors.numpy import load_file
from bundler.codecs import vectors

x = load_file(sys.argv[1])["embeddings.word_embeddings.weight"][:4000]  # real rows of 384
out = {}
for scheme in vectors.Scheme:
    q = vectors.quantize(x, scheme)
    out[f"{scheme.value}-data"] = q.data
    out[f"{scheme.value}-scale"] = q.scale
    out[f"{scheme.value}-min"] = q.min
    out[f"{scheme.value}-values"] = vectors.dequantize(q)
np.savez(sys.argv[2], **out)
print(json.dumps({"numba": "numba" in sys.modules}))
"""


def test_vector_kernels_run_from_entries_with_numbas_results(minilm_safetensors, tmp_path, store):
    def run(where):
        done = subprocess.run(
            [sys.executable, "-c", VECTORS_SCRIPT, str(minilm_safetensors), str(tmp_path / where)],
            env=store, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])["numba"], dict(np.load(tmp_path / where))

    (first, jit), (later, loaded) = run("jit.npz"), run("native.npz")
    assert first and not later
    assert loaded.keys() == jit.keys() and len(jit) == 16
    for key in jit:
        assert np.array_equal(loaded[key].view(np.uint8), jit[key].view(np.uint8)), key


def test_every_module_with_compiled_kernels_is_in_the_entries_fingerprint():
    package = Path(native.__file__).parents[1]
    compiled = {p for p in package.rglob("*.py") if "@njit" in p.read_text()}
    assert compiled  # the scan finds kernels at all
    assert compiled <= set(native.sources())  # an edit to any starts a new entry folder


def test_error_statistics_run_from_entries_with_numbas_sums(minilm_safetensors, tmp_path, store):
    code = (
        "import json, sys\nimport numpy as np\nfrom safetensors.numpy import load_file\n"
        "from bundler.codecs import set_threads\nfrom bundler.stats import error_stats\n"
        "x = load_file(sys.argv[1])['encoder.layer.0.intermediate.dense.weight']\n"
        "y = (x + np.float32(1e-3) * np.sign(x)).astype(np.float64)\nout = []\n"
        "for threads in (2, 1):\n    set_threads(threads)\n"
        "    out.append(error_stats(x, y, 1).as_dict())\n"
        "print(json.dumps({'numba': 'numba' in sys.modules, 'stats': out}))\n"
    )
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code, str(minilm_safetensors)],
            env=store, capture_output=True, text=True, check=True, timeout=900,
        )  # fmt: skip
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    assert [r["numba"] for r in runs] == [True, False]
    assert runs[0]["stats"] == runs[1]["stats"]  # the same sums, bit for bit
    assert runs[1]["stats"][0] == runs[1]["stats"][1]  # whatever the thread count


def test_an_object_bundlers_loader_refuses_is_loaded_by_llvms(tmp_path, monkeypatch):
    from bundler.codecs import elfload

    monkeypatch.setenv(native.ENV_DIR, str(tmp_path))
    x = np.arange(1000, dtype=np.float64)
    name = f"{__name__}:refused"
    _range_sum(x, 5, 700)
    native.record(name, _range_sum, (x, 5, 700))

    def refuse(obj, resolve):
        raise elfload.Unsupported("another machine's object")

    monkeypatch.setattr(elfload, "load", refuse)
    monkeypatch.setattr(native, "_LOADED", {})
    loaded = native.find(name, (x, 5, 700))
    assert loaded is not None and loaded(x, 5, 700) == sum(range(5, 700))
