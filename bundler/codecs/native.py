"""Compiled kernels run without the compiler: the machine code numba cached for a kernel,
kept beside its cache with a description of its arguments, then loaded in later processes
by bundler's own object loader (`elfload`, x86-64; LLVM's through llvmlite on other
machines) and called through ctypes (importing numba costs every command 0.25 s, loading
its cached kernel 0.1 s more, setting up LLVM's loader 0.1 s and 30 MiB; this, a
millisecond a kernel).

A kernel's entry is made by the first process that runs it through numba (`record`), from
the object code numba's own cache holds for that signature: the same machine code, so the
same bytes. Later processes look the entry up by the kernel's name and their arguments'
types (`find`). Entries live in a folder per fingerprint of everything the machine code
depends on (the codec sources, numba's and llvmlite's installs, the CPU, the Python), so a
change to any of them starts a new folder.

The calling convention is numba's own for a compiled function: `status = f(retptr,
excinfo, *args)` with each array argument as its seven fields (meminfo, parent, item count,
item size, data, shape, strides) and scalars as they are. Arrays are passed without a
meminfo, so the kernel never frees them. Kernels that allocate get numba's two runtime
functions for it from `_RUNTIME` (same layout of the memory header; compiled once into
the store's `runtime` entry); a kernel whose object needs any other symbol of numba's (a
parallel loop's scheduler, say) gets no entry and stays with numba. A kernel that raises
(a non-zero status) is run again through numba, which raises as it always did.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

#: Set to 0 to run every kernel through numba (the entries are then neither read nor made).
ENV_SWITCH = "BUNDLER_NATIVE_KERNELS"
#: Where the entries are kept, when set (else beside numba's cache, see `store_dir`).
ENV_DIR = "BUNDLER_NATIVE_DIR"

#: numba's runtime functions a kernel calls to allocate and free arrays, implemented here:
#: a memory header (reference count, destructor, its data, the data pointer, size, external
#: allocator: numba's `NRT_MemInfo`) in front of the aligned data, freed whole.
_RUNTIME = r"""
declare ptr @malloc(i64)
declare void @free(ptr)

define ptr @BNK_MemInfo_alloc_aligned(i64 %size, i32 %align) {
entry:
  %a0 = zext i32 %align to i64
  %small = icmp ult i64 %a0, 1
  %a = select i1 %small, i64 1, i64 %a0
  %room = add i64 %size, 48
  %twice = shl i64 %a, 1
  %total = add i64 %room, %twice
  %base = call ptr @malloc(i64 %total)
  %failed = icmp eq ptr %base, null
  br i1 %failed, label %none, label %made
none:
  ret ptr null
made:
  %b = ptrtoint ptr %base to i64
  %after = add i64 %b, 48
  %am1 = sub i64 %a, 1
  %up = add i64 %after, %am1
  %mask = xor i64 %am1, -1
  %at = and i64 %up, %mask
  %data = inttoptr i64 %at to ptr
  store i64 1, ptr %base
  %f1 = getelementptr i8, ptr %base, i64 8
  store ptr null, ptr %f1
  %f2 = getelementptr i8, ptr %base, i64 16
  store ptr null, ptr %f2
  %f3 = getelementptr i8, ptr %base, i64 24
  store ptr %data, ptr %f3
  %f4 = getelementptr i8, ptr %base, i64 32
  store i64 %size, ptr %f4
  %f5 = getelementptr i8, ptr %base, i64 40
  store ptr null, ptr %f5
  ret ptr %base
}

define void @BNK_MemInfo_call_dtor(ptr %mi) {
entry:
  call void @free(ptr %mi)
  ret void
}

define void @BNK_Free(ptr %p) {
entry:
  call void @free(ptr %p)
  ret void
}
"""
_RUNTIME_NAMES = ("BNK_MemInfo_alloc_aligned", "BNK_MemInfo_call_dtor", "BNK_Free")

#: numba's symbol prefixes, and the same-length ones an entry's object names instead: the
#: names LLVM resolves are one table for the whole process, where numba registers its own
#: under the originals, so an entry must not claim those (numba's code would get ours).
_PRIVATE = {b"NRT_": b"BNK_", b"numba_": b"bndlr_"}

#: numba's helpers that only its Python wrapper and its exception paths call (never a
#: kernel that returns normally): given a stand-in returning 0, so that an object naming
#: them loads. An exception path returns a non-zero status, and the call is redone by numba.
_ERROR_PATH = (
    "bndlr_do_raise",
    "bndlr_gil_ensure",
    "bndlr_gil_release",
    "bndlr_unpickle",
    "bndlr_runtime_build_excinfo_struct",
    "BNK_adapt_ndarray_from_python",
    "BNK_adapt_ndarray_to_python_acqref",
)
#: The runtime with a stand-in for each of those (0 in the return register, whatever the
#: declared result: x86-64 and AArch64 both return integers and pointers there).
_RUNTIME += "".join(f"define i64 @{name}() {{\nentry:\n  ret i64 0\n}}\n" for name in _ERROR_PATH)

_ARRAY_FIELDS = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)

_LOCK = threading.RLock()
#: Loaded kernels by entry key (None: looked for, no usable entry).
_LOADED: dict[str, Any] = {}
#: Entry keys recorded (or found unrecordable) by this process.
_RECORDED: set[str] = set()
_STATE: dict[str, Any] = {}


def enabled() -> bool:
    """Whether kernels run from their entries (BUNDLER_NATIVE_KERNELS is not 0)."""
    return os.environ.get(ENV_SWITCH, "1") != "0"


def arg_key(args: tuple) -> str | None:
    """The types of `args` as numba's dispatcher tells them apart, in a string; None when
    an argument is of a kind entries do not hold (a tuple, None, an object)."""
    parts = []
    for a in args:
        if isinstance(a, np.ndarray):
            f = a.flags
            layout = "C" if f.c_contiguous else "F" if f.f_contiguous else "A"
            parts.append(
                f"{a.dtype.str}{a.ndim}{layout}{'w' if f.writeable else 'r'}{int(f.aligned)}"
            )
        elif isinstance(a, (bool, np.bool_)):
            parts.append("b")
        elif isinstance(a, int):
            if not -(1 << 63) <= a < 1 << 63:
                return None
            parts.append("i")
        elif isinstance(a, float):
            parts.append("f")
        elif isinstance(a, np.generic) and a.dtype.kind in "iuf":
            parts.append(a.dtype.str)
        else:
            return None
    return ",".join(parts)


def find(name: str, args: tuple) -> Any:
    """The loaded kernel `name` (a module path and function, with a factory's arguments)
    for arguments like `args`, or None when it has no usable entry."""
    key = arg_key(args)
    if key is None or not enabled():
        return None
    full = f"{name}|{key}"
    try:
        return _LOADED[full]
    except KeyError:
        pass
    with _LOCK:
        if full not in _LOADED:
            _LOADED[full] = _load(full)
        return _LOADED[full]


def record(name: str, dispatcher: Any, args: tuple) -> None:
    """Make the entry of `dispatcher` (numba's, just called with `args`) under `name`,
    from numba's cache, unless it exists or cannot be made; never fails the caller."""
    key = arg_key(args)
    if key is None or not enabled():
        return
    full = f"{name}|{key}"
    with _LOCK:
        if full in _RECORDED or _LOADED.get(full) is not None:
            return
        _RECORDED.add(full)
        with contextlib.suppress(Exception):  # an entry is an optimisation, never an error
            _write_entry(_entry_path(full), full, dispatcher, args)
            _LOADED.pop(full, None)  # the next call looks again, and finds the new entry


# ---------------------------------------------------------------- the store


def store_dir() -> Path:
    """The folder of this installation's entries: under BUNDLER_NATIVE_DIR, else beside
    numba's cache (NUMBA_CACHE_DIR), else in bundler's cache folder (`cachedir.cache_dir`)."""
    from bundler.cachedir import cache_dir

    base = os.environ.get(ENV_DIR) or os.environ.get("NUMBA_CACHE_DIR")
    root = Path(base) if base else cache_dir()
    return root / "native-kernels" / _fingerprint()


#: Compiled kernels outside `bundler/codecs`, and the modules whose constants they use.
_OTHER_SOURCES = ("stats.py", "stats_kernel.py", "containers/gguf/strings_kernel.py")


def sources() -> list[Path]:
    """The source files the machine code of every kernel depends on: all of
    `bundler/codecs` and `_OTHER_SOURCES`."""
    codecs = Path(__file__).parent
    return [*sorted(codecs.rglob("*.py")), *(codecs.parent / name for name in _OTHER_SOURCES)]


def _fingerprint() -> str:
    """A hash of what the machine code depends on: the kernel sources (`sources`: names, sizes and
    times), numba's and llvmlite's installed modules, the CPU and the Python."""
    if "fingerprint" in _STATE:
        return _STATE["fingerprint"]
    import importlib.util

    h = hashlib.sha256()
    root = Path(__file__).parents[1]
    for p in sources():
        st = p.stat()
        h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for package in ("numba", "llvmlite"):
        spec = importlib.util.find_spec(package)
        origin = Path(spec.origin) if spec and spec.origin else None
        st = origin.stat() if origin else None
        h.update(f"{package}:{origin}:{st and st.st_size}:{st and st.st_mtime_ns}\n".encode())
    for var in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_OPT", "NUMBA_BOUNDSCHECK"):
        h.update(f"{var}={os.environ.get(var)}\n".encode())
    h.update(_cpu_identity().encode())
    h.update(f"{sys.version}:{sys.platform}\n".encode())
    _STATE["fingerprint"] = h.hexdigest()[:24]
    return _STATE["fingerprint"]


#: The lines of /proc/cpuinfo that say which CPU this is and what it can do (x86, Arm).
_CPU_KEYS = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags",
             "CPU implementer", "CPU architecture", "CPU variant", "CPU part",
             "Features")  # fmt: skip


def _cpu_identity() -> str:
    """The CPU's model and features, which the machine code is compiled for: from
    /proc/cpuinfo where there is one (no LLVM to load), else as LLVM sees them."""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
        fields = [line for line in lines if line.split(":")[0].strip() in _CPU_KEYS]
        if fields:
            return "\n".join(fields)
    import llvmlite.binding as ll

    return f"{ll.get_host_cpu_name()}:{ll.get_host_cpu_features().flatten()}\n"


def _entry_path(full: str) -> Path:
    return store_dir() / hashlib.sha256(full.encode()).hexdigest()[:32]


def _write_entry(path: Path, full: str, dispatcher: Any, args: tuple) -> None:
    sig = tuple(dispatcher.typeof_pyval(a) for a in args)
    cres = dispatcher.overloads[sig]
    cache = dispatcher._cache
    data = cache._cache_file.load(cache._index_key(sig, cres.target_context.codegen()))
    if data is None:
        return
    (_, kind, (obj, _bitcode)), fndesc, *_, reload_init, _envs = data
    spec = _arg_spec(sig)
    returns = _scalar_name(cres.signature.return_type)
    if kind != "object" or reload_init or spec is None or returns is None:
        return
    obj, needs = _privatized(obj)
    if needs is None or not all(_provided(n) for n in needs):
        return
    entry = {"key": full, "symbol": fndesc.llvm_func_name, "args": spec, "returns": returns}
    _write_object(path, {**entry, "needs": needs}, obj)
    _runtime_object()  # made now, while LLVM is loaded anyway, not by the first later process


def _arg_spec(sig: tuple) -> list | None:
    """Each argument as ["array", ndim] or a scalar's name; None for another kind."""
    from numba.core import types

    spec: list = []
    for t in sig:
        if isinstance(t, types.Array):
            spec.append(["array", t.ndim])
        elif (name := _scalar_name(t)) is not None and name != "none":
            spec.append(name)
        else:
            return None
    return spec


def _scalar_name(t: Any) -> str | None:
    from numba.core import types

    name = str(types.unliteral(t))  # a kernel returning a constant: its literal's type
    return name if name == "none" or _ctype(name) is not None else None


def _ctype(name: str) -> Any:
    """The ctypes type of numba's scalar type `name` (numpy's names: int64, float32, bool,
    ...); None for any other."""
    try:
        return np.ctypeslib.as_ctypes_type(np.dtype(name))
    except (TypeError, ValueError, NotImplementedError):
        return None


def _provided(name: str) -> bool:
    """Whether a symbol the object needs is found in this process (C library, Python),
    implemented here, or only on numba's error paths."""
    return name in _RUNTIME_NAMES or name in _ERROR_PATH or _in_process(name)


def _in_process(name: str) -> bool:
    from bundler.codecs.elfload import process_symbol

    return process_symbol(name) is not None


def _privatized(obj: bytes) -> tuple[bytes, list[str] | None]:
    """The ELF64 little-endian relocatable object `obj` with the names of numba's symbols
    it uses but does not define renamed (`_PRIVATE`), and the sorted names it uses but
    does not define; None for them when the object is not of that kind or a renamed name's
    bytes are shared with another name in the string table."""
    import struct

    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        return obj, None
    (shoff,) = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", obj, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    out = bytearray(obj)
    needs: set[str] = set()
    for _n, kind, _f, _a, off, size, link, _i, _al, entsize in sections:
        if kind != 2:  # SHT_SYMTAB
            continue
        base = sections[link][4]
        starts = {struct.unpack_from("<I", obj, at)[0] for at in range(off, off + size, entsize)}
        if link == shstrndx:
            starts |= {sec[0] for sec in sections}
        spans = [(s, obj.index(b"\0", base + s) - base) for s in starts]
        for at in range(off, off + size, entsize):
            st_name, _info, _other, shndx = struct.unpack_from("<IBBH", obj, at)
            if shndx != 0 or not st_name:
                continue
            start = base + st_name
            end = obj.index(b"\0", start)
            name = obj[start:end]
            for old, new in _PRIVATE.items():
                if name.startswith(old):
                    if any(
                        a != st_name and a < st_name + len(old) and b > st_name for a, b in spans
                    ):
                        return obj, None  # bytes shared with another name
                    out[start : start + len(old)] = new
                    name = new + name[len(old) :]
            needs.add(name.decode())
    return bytes(out), sorted(needs)


# ---------------------------------------------------------------- loading


def _load(full: str) -> Any:
    """The kernel of entry `full`, or None (no entry, a damaged one, one that does not
    load here: the kernel then runs through numba, which writes the entry anew)."""
    try:
        entry, obj = _read_checked(_entry_path(full), full)
        return _Native(_address(obj, entry), entry["args"], entry["returns"])
    except Exception:
        return None


def _read_checked(path: Path, key: str) -> tuple[dict, bytes]:
    """The description and object of the entry at `path` (`.json`, `.o`); ValueError when
    it is another's or damaged: machine code is never loaded unchecked."""
    entry = json.loads(path.with_suffix(".json").read_bytes())
    obj = path.with_suffix(".o").read_bytes()
    if entry["key"] != key or entry["sha256"] != hashlib.sha256(obj).hexdigest():
        raise ValueError(f"{path}: another entry's, or damaged")
    return entry, obj


def _write_object(path: Path, entry: dict, obj: bytes) -> None:
    """Write an entry's object and its description (with the object's SHA-256)."""
    from bundler.atomic import replace_whole

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_whole(path.with_suffix(".o"), obj)
    entry = {**entry, "sha256": hashlib.sha256(obj).hexdigest()}
    replace_whole(path.with_suffix(".json"), json.dumps(entry).encode())


def _address(obj: bytes, entry: dict) -> int:
    """The address of the entry's function once its object is loaded: by bundler's own
    loader (`elfload`), else (an object it does not place: another machine's) by LLVM's."""
    from bundler.codecs import elfload

    try:
        address = elfload.load(obj, _resolve).get(entry["symbol"])
    except elfload.Unsupported:
        return _engine_address(obj, entry)
    if not address:
        raise LookupError(entry["symbol"])
    return address


def _resolve(name: str) -> int | None:
    """The address of a symbol an object needs: the runtime's (`_RUNTIME`), else the
    process's."""
    from bundler.codecs import elfload

    if "runtime_symbols" not in _STATE:
        _STATE["runtime_symbols"] = elfload.load(_runtime_object(), elfload.process_symbol)
    return _STATE["runtime_symbols"].get(name) or elfload.process_symbol(name)


#: The runtime's entry: its object compiled from `_RUNTIME`, beside the kernels' entries.
_RUNTIME_KEY = "runtime"


def _runtime_object() -> bytes:
    """The runtime (`_RUNTIME`) as an object file, an entry of this installation's store
    compiled once by llvmlite and read back checked (compiled again when damaged)."""
    path = store_dir() / _RUNTIME_KEY
    with contextlib.suppress(OSError, ValueError, KeyError):
        return _read_checked(path, _RUNTIME_KEY)[1]
    ll = _llvm()
    module = ll.parse_assembly(_RUNTIME)
    module.triple = ll.get_process_triple()
    target = ll.Target.from_default_triple()
    obj = target.create_target_machine(reloc="static", codemodel="large").emit_object(module)
    _write_object(path, {"key": _RUNTIME_KEY}, obj)
    return obj


def _engine_address(obj: bytes, entry: dict) -> int:
    ll = _llvm()
    engine = ll.create_mcjit_compiler(ll.parse_assembly(""), _STATE["machine"])
    engine.add_object_file(ll.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    address = engine.get_function_address(entry["symbol"])
    if not address:
        raise LookupError(entry["symbol"])
    _STATE.setdefault("engines", []).append(engine)  # the code lives as long as its engine
    return address


def _llvm() -> Any:
    """llvmlite's binding, set up once: native target, and the runtime's functions given
    to LLVM's loader."""
    import llvmlite.binding as ll

    if "machine" in _STATE:
        return ll
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    target = ll.Target.from_default_triple()
    _STATE["machine"] = target.create_target_machine(
        cpu=ll.get_host_cpu_name(), features=ll.get_host_cpu_features().flatten(), opt=2
    )
    runtime = ll.parse_assembly(_RUNTIME)
    runtime.triple = target.triple
    engine = ll.create_mcjit_compiler(runtime, _STATE["machine"])
    engine.finalize_object()
    for name in (*_RUNTIME_NAMES, *_ERROR_PATH):
        ll.add_symbol(name, engine.get_function_address(name))
    _STATE["runtime"] = engine
    return ll


class _Native:
    """One loaded kernel: called with numpy arrays and scalars as numba's would be; returns
    its result, or raises `Raised` when the kernel took an exception path."""

    def __init__(self, address: int, spec: list, returns: str):
        argtypes: list = [ctypes.c_void_p, ctypes.c_void_p]
        for s in spec:
            if isinstance(s, list):
                argtypes += [*_ARRAY_FIELDS, *(ctypes.c_int64,) * (2 * s[1])]
            else:
                argtypes.append(_ctype(s))
        self.fn = ctypes.CFUNCTYPE(ctypes.c_int32, *argtypes)(address)
        self.result = _ctype(returns) or ctypes.c_int64  # "none": a slot never read
        self.returns_none = returns == "none"

    def __call__(self, *args: Any) -> Any:
        flat: list = []
        for a in args:
            if isinstance(a, np.ndarray):
                flat += [None, None, a.size, a.itemsize, a.ctypes.data, *a.shape, *a.strides]
            else:
                flat.append(a)
        out = self.result()
        excinfo = ctypes.c_void_p()
        status = self.fn(ctypes.byref(out), ctypes.byref(excinfo), *flat)
        if status != 0:
            raise Raised(status)
        return None if self.returns_none else out.value


class Raised(Exception):
    """A native kernel returned through an exception path (numba's status `status`)."""
