"""ONNX tensor element types (TensorProto.DataType numbers) and the codec each is held as.

Element types without a codec of their own are widened on reading: INT4/UINT4 to int8/uint8
(values unchanged). STRING and COMPLEX128 tensors are not weights: they are listed in the
bundle's metadata under `onnx.skipped` instead.
"""

from __future__ import annotations

NAME = "onnx"
#: Most dimensions a tensor may have here (ONNX sets none; numpy allows 64).
MAX_DIMS = 32

#: ONNX element type number -> (ONNX name, codec name or None).
ELEMENT_TYPES: dict[int, tuple[str, str | None]] = {
    1: ("FLOAT", "f32"),
    2: ("UINT8", "u8"),
    3: ("INT8", "i8"),
    4: ("UINT16", "u16"),
    5: ("INT16", "i16"),
    6: ("INT32", "i32"),
    7: ("INT64", "i64"),
    8: ("STRING", None),
    9: ("BOOL", "bool"),
    10: ("FLOAT16", "f16"),
    11: ("DOUBLE", "f64"),
    12: ("UINT32", "u32"),
    13: ("UINT64", "u64"),
    14: ("COMPLEX64", "c64"),
    15: ("COMPLEX128", None),
    16: ("BFLOAT16", "bf16"),
    17: ("FLOAT8E4M3FN", "f8_e4m3"),
    18: ("FLOAT8E4M3FNUZ", "f8_e4m3fnuz"),
    19: ("FLOAT8E5M2", "f8_e5m2"),
    20: ("FLOAT8E5M2FNUZ", "f8_e5m2fnuz"),
    21: ("UINT4", "u8"),
    22: ("INT4", "i8"),
    23: ("FLOAT4E2M1", "f4"),
    24: ("FLOAT8E8M0", "f8_e8m0"),
}

#: Element types stored widened (their raw bytes are not the codec's bytes).
WIDENED = {21, 22}

#: Element types whose values are floats (weights that quantization may rewrite).
FLOAT_TYPES = {1: "f32", 10: "f16", 16: "bf16", 11: "f64"}

#: Codec name -> ONNX element type, for writing a bundle as ONNX initializers.
CODEC_TO_ELEMENT = {
    codec: number
    for number, (_, codec) in ELEMENT_TYPES.items()
    if codec is not None and number not in WIDENED
}


def type_name(number: int) -> str:
    """`FLOAT`, `INT4`, ... (or `type 99` for a number ONNX does not define)."""
    entry = ELEMENT_TYPES.get(number)
    return entry[0] if entry else f"type {number}"
