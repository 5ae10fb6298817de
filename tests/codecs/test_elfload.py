"""bundler's loader of x86-64 relocatable objects, on objects LLVM compiles here from IR:
code, read-only tables, common symbols and a C library function are placed and linked;
what it cannot place is refused with nothing left mapped."""

from __future__ import annotations

import ctypes
import platform

import pytest

from bundler.codecs import elfload

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="the loader places x86-64 objects"
)

#: A table in read-only data, a counter as a common symbol, and a call into the C library.
IR = r"""
@table = internal constant [4 x i64] [i64 7, i64 -11, i64 13, i64 -17]
@calls = common global i64 0, align 8
declare i64 @labs(i64)

define i64 @lookup(i64 %i) {
entry:
  %p = getelementptr [4 x i64], ptr @table, i64 0, i64 %i
  %v = load i64, ptr %p
  %a = call i64 @labs(i64 %v)
  %n = load i64, ptr @calls
  %n1 = add i64 %n, 1
  store i64 %n1, ptr @calls
  %r = mul i64 %a, %n1
  ret i64 %r
}
"""


def _object(reloc: str = "static", codemodel: str = "large") -> bytes:
    import llvmlite.binding as ll

    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    module = ll.parse_assembly(IR)
    module.triple = ll.get_process_triple()
    machine = ll.Target.from_default_triple().create_target_machine(
        reloc=reloc, codemodel=codemodel
    )
    return machine.emit_object(module)


def test_an_object_of_the_large_code_model_is_placed_linked_and_runs():
    symbols = elfload.load(_object(), elfload.process_symbol)
    lookup = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(symbols["lookup"])
    assert [lookup(i) for i in range(4)] == [7 * 1, 11 * 2, 13 * 3, 17 * 4]
    calls = ctypes.c_int64.from_address(symbols["calls"])  # the common symbol, zeroed, kept
    assert calls.value == 4


def test_each_load_gets_its_own_code_and_data():
    obj = _object()
    first, second = (elfload.load(obj, elfload.process_symbol) for _ in range(2))
    assert first["lookup"] != second["lookup"] and first["calls"] != second["calls"]
    ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(first["lookup"])(0)
    assert ctypes.c_int64.from_address(second["calls"]).value == 0


def test_an_unresolved_symbol_is_refused_and_nothing_stays_mapped():
    before = list(elfload._MAPPINGS)
    with pytest.raises(elfload.Unsupported, match="unresolved symbol labs"):
        elfload.load(_object(), lambda name: None)
    assert before == elfload._MAPPINGS


def test_position_independent_code_needing_a_global_offset_table_is_refused():
    before = list(elfload._MAPPINGS)
    with pytest.raises(elfload.Unsupported, match=r"relocation kind|out of range"):
        elfload.load(_object(reloc="pic", codemodel="small"), elfload.process_symbol)
    assert before == elfload._MAPPINGS


@pytest.mark.parametrize(
    ("offset", "value", "problem"),
    [(0, b"\x7fELG", "not a 64-bit"), (0x12, (183).to_bytes(2, "little"), "machine 183")],
)
def test_an_object_of_another_kind_or_machine_is_refused(offset, value, problem):
    obj = bytearray(_object())
    obj[offset : offset + len(value)] = value
    with pytest.raises(elfload.Unsupported, match=problem):
        elfload.load(bytes(obj), elfload.process_symbol)
