"""Loads an x86-64 ELF relocatable object (a compiled kernel's machine code) into memory of
this process and gives its symbols' addresses: what a linker and a dynamic loader would do
for one object, without either (nor LLVM, whose loader costs a command 0.1-0.2 s to set up
and 30 MiB of memory).

The object's allocated sections are copied into one anonymous mapping, code first; its
common symbols get zeroed room after them; its relocations are applied; then the code pages
are made read-and-execute and the rest stay read-write. Only the relocation kinds of LLVM's
static and large code models are applied (absolute and PC-relative, 64 and 32 bits); any
other, an undefined symbol the caller cannot resolve, or a 32-bit value that does not fit
raises `Unsupported`, and nothing is kept. Mappings live as long as the process.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable

import numpy as np

EM_X86_64 = 62

_SHDR = np.dtype(
    [("name", "<u4"), ("type", "<u4"), ("flags", "<u8"), ("addr", "<u8"), ("offset", "<u8"),
     ("size", "<u8"), ("link", "<u4"), ("info", "<u4"), ("addralign", "<u8"),
     ("entsize", "<u8")]
)  # fmt: skip
_SYM = np.dtype(
    [("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"),
     ("size", "<u8")]
)  # fmt: skip
_RELA = np.dtype([("offset", "<u8"), ("info", "<u8"), ("addend", "<i8")])

_SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS = 2, 4, 8
_SHF_ALLOC, _SHF_EXECINSTR = 0x2, 0x4
_SHN_UNDEF, _SHN_ABS, _SHN_COMMON = 0, 0xFFF1, 0xFFF2
#: Relocation kinds (System V x86-64 psABI, table 4.9): (bytes written, PC-relative,
#: signed when 32 bits).
_KINDS = {1: (8, False, False), 24: (8, True, False), 2: (4, True, True), 4: (4, True, True),
          10: (4, False, False), 11: (4, False, True)}  # fmt: skip
_PAGE = 4096
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20

#: Every mapping made, kept so that the code stays valid for the process's life.
_MAPPINGS: list[tuple[int, int]] = []


class Unsupported(Exception):
    """The object cannot be loaded here (its kind, a relocation, an unresolved symbol)."""


def load(obj: bytes, resolve: Callable[[str], int | None]) -> dict[str, int]:
    """Load the object `obj`; the addresses of its global and weak symbols by name.
    `resolve(name)` gives the address of a symbol the object uses but does not define."""
    sections, symbols, names = _parse(obj)
    loaded = _loaded_sections(sections)
    offsets, code_size, size = _layout(sections, loaded, symbols)
    base = _map(size)
    try:
        addresses = _symbol_addresses(symbols, names, offsets, base, resolve)
        image = np.zeros(size, np.uint8)
        for i in loaded:
            s = sections[i]
            if s["type"] != _SHT_NOBITS:
                start = offsets[("section", i)]
                image[start : start + s["size"]] = np.frombuffer(
                    obj, np.uint8, s["size"], s["offset"]
                )
        _relocate(obj, sections, loaded, offsets, base, addresses, image)
        ctypes.memmove(base, image.ctypes.data, size)
        _protect(base, code_size, _PROT_READ | _PROT_EXEC)
    except BaseException:
        _LIBC.munmap(ctypes.c_void_p(base), ctypes.c_size_t(size))
        raise
    _MAPPINGS.append((base, size))
    return {
        names[i]: int(addresses[i])
        for i in range(len(symbols))
        if symbols[i]["info"] >> 4 in (1, 2) and symbols[i]["shndx"] != _SHN_UNDEF
    }


def _parse(obj: bytes) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Section headers, the symbol table and the symbols' names of `obj`."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise Unsupported("not a 64-bit little-endian ELF object")
    kind, machine = struct.unpack_from("<HH", obj, 0x10)
    if kind != 1 or machine != EM_X86_64:
        raise Unsupported(f"ELF type {kind}, machine {machine}: not an x86-64 relocatable")
    (shoff,) = struct.unpack_from("<Q", obj, 0x28)
    (shnum,) = struct.unpack_from("<H", obj, 0x3C)
    sections = np.frombuffer(obj, _SHDR, shnum, shoff)
    tables = np.flatnonzero(sections["type"] == _SHT_SYMTAB)
    if len(tables) != 1:
        raise Unsupported(f"{len(tables)} symbol tables")
    table = sections[tables[0]]
    symbols = np.frombuffer(obj, _SYM, int(table["size"]) // _SYM.itemsize, table["offset"])
    strings = int(sections[table["link"]]["offset"])
    names = [obj[strings + n : obj.index(b"\0", strings + n)].decode() for n in symbols["name"]]
    return sections, symbols, names


def _loaded_sections(sections: np.ndarray) -> list[int]:
    """The sections copied into memory, code first (call-frame tables are left out: no
    unwinder ever walks these frames)."""
    alloc = [
        i for i, s in enumerate(sections) if s["flags"] & _SHF_ALLOC and s["type"] != 0x70000001
    ]
    return sorted(alloc, key=lambda i: not sections[i]["flags"] & _SHF_EXECINSTR)


def _layout(sections: np.ndarray, loaded: list[int], symbols: np.ndarray) -> tuple[dict, int, int]:
    """Each loaded section's and common symbol's offset in the mapping, the size of the
    code part (whole pages) and of the whole."""
    offsets: dict = {}
    at = code_size = 0
    for i in loaded:
        s = sections[i]
        if not s["flags"] & _SHF_EXECINSTR and not code_size:
            code_size = at = max(_PAGE, _round_up(at, _PAGE))  # data from the next page on
        at = _round_up(at, max(1, int(s["addralign"])))
        offsets[("section", i)] = at
        at += int(s["size"])
    if not code_size:
        code_size = at = max(_PAGE, _round_up(at, _PAGE))
    for k in np.flatnonzero(symbols["shndx"] == _SHN_COMMON):
        at = _round_up(at, max(1, int(symbols[k]["value"])))  # a common symbol's alignment
        offsets[("common", int(k))] = at
        at += int(symbols[k]["size"])
    return offsets, code_size, max(_PAGE, _round_up(at, _PAGE))


def _symbol_addresses(symbols, names, offsets, base, resolve) -> np.ndarray:
    """Every symbol's address (0 where none is needed: the null symbol, file names)."""
    out = np.zeros(len(symbols), np.uint64)
    for k, sym in enumerate(symbols):
        shndx, kind = int(sym["shndx"]), sym["info"] & 0xF
        if k == 0 or kind == 4:  # the null symbol, STT_FILE
            continue
        if shndx == _SHN_UNDEF:
            address = resolve(names[k])
            if not address:
                raise Unsupported(f"unresolved symbol {names[k]}")
            out[k] = address
        elif shndx == _SHN_ABS:
            out[k] = sym["value"]
        elif shndx == _SHN_COMMON:
            out[k] = base + offsets[("common", k)]
        elif ("section", shndx) in offsets:
            out[k] = base + offsets[("section", shndx)] + int(sym["value"])
    return out


def _relocate(obj, sections, loaded, offsets, base, addresses, image) -> None:
    """Apply every relocation of the loaded sections to `image` (to be copied to `base`)."""
    for r in np.flatnonzero(sections["type"] == _SHT_RELA):
        target = int(sections[r]["info"])
        if target not in loaded:
            continue
        s = sections[r]
        rel = np.frombuffer(obj, _RELA, int(s["size"]) // _RELA.itemsize, s["offset"])
        kinds = (rel["info"] & 0xFFFFFFFF).astype(np.int64)
        symbol = addresses[(rel["info"] >> 32).astype(np.intp)]
        if (symbol[rel["info"] >> 32 != 0] == 0).any():
            raise Unsupported("a relocation against a symbol that is not loaded")
        where = offsets[("section", target)] + rel["offset"].astype(np.int64)
        for kind in set(kinds.tolist()):  # (np.unique would import numpy.ma: 10 ms)
            if kind not in _KINDS:
                raise Unsupported(f"relocation kind {kind}")
            width, relative, signed = _KINDS[kind]
            m = kinds == kind
            value = symbol[m] + rel["addend"][m].astype(np.uint64)  # wraps, as the ABI's sums
            if relative:
                value -= np.uint64(base) + where[m].astype(np.uint64)
            _write(image, where[m], value, width, signed)


def _write(
    image: np.ndarray, where: np.ndarray, value: np.ndarray, width: int, signed: bool
) -> None:
    if width == 4:
        as_int = value.view(np.int64) if signed else value
        lo, hi = (-(1 << 31), 1 << 31) if signed else (0, 1 << 32)
        if ((as_int < lo) | (as_int >= hi)).any():
            raise Unsupported("a 32-bit relocation out of range")
        value = value.astype(np.uint32)
    data = value.astype(f"<u{width}").view(np.uint8).reshape(-1, width)
    image[where[:, None] + np.arange(width)] = data


def process_symbol(name: str) -> int | None:
    """The address of symbol `name` among those the process has loaded (the C library,
    Python's, ...), or None."""
    try:
        return ctypes.cast(getattr(_LIBC, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def _round_up(n: int, a: int) -> int:
    return -(-n // a) * a


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]  # fmt: skip
_LIBC.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def _map(size: int) -> int:
    prot, flags = _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS
    address = _LIBC.mmap(None, size, prot, flags, -1, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise Unsupported(f"mmap of {size} bytes failed (errno {ctypes.get_errno()})")
    return address


def _protect(address: int, size: int, prot: int) -> None:
    if size and _LIBC.mprotect(address, size, prot) != 0:
        raise Unsupported(f"mprotect failed (errno {ctypes.get_errno()})")
