"""The facts of every codec and dtype, declared once.

Each row says how a value type is laid out (block size, bytes per block), what it is called
in each container format (GGML type id, APR dtype code, SafeTensors dtype), and which
module holds its kernels. Everything else in bundler (sizes, lookups, dtype maps, the
`bundler types` table) is derived from this table.

Sources: ggml's `ggml-common.h` block structs and type traits; the SafeTensors dtype list;
aprender's `v2` dtype codes. APR codes above 63 that are not aprender's own are this
project's extension: 64 + GGML type id (formats/apr.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Codes older aprender files used for AprQ4 / AprQ8.
APR_LEGACY_ALIASES = {8: 128, 9: 129}
#: Offset of this project's APR codes for GGML types aprender lacks.
APR_GGML_BASE = 64


@dataclass(frozen=True)
class Field:
    """A multi-byte field of one block (or of a flat codec's tensor-wide header):
    its name, byte offset and width. A `scale` is a float the decoder multiplies by (a NaN
    there is a lost block); other fields (sums) are integers or floats the decoder does not
    use. Every field is byte-swapped in big-endian files."""

    name: str
    offset: int
    width: int
    scale: bool = True
    #: in the tensor-wide header of a flat codec, not in each block
    header: bool = False


@dataclass(frozen=True)
class CodecFacts:
    """Layout and per-format identity of one codec or element dtype."""

    name: str
    block_size: int
    type_size: int
    ggml_id: int | None = None
    apr_own_code: int | None = None
    safetensors_dtype: str | None = None
    #: numpy dtype string of one element, for element (non-block) types.
    numpy_dtype: str | None = None
    #: the multi-byte fields of one block (element types: none, the element is swapped whole)
    fields: tuple[Field, ...] = ()
    #: module holding this codec's kernels; None when bundler only stores its bytes.
    kernels: str | None = None
    #: codes laid out over the whole flattened tensor, not per row (aprender's own codecs):
    #: the payload is `header_bytes` followed by ceil(n / block_size) blocks.
    flat: bool = False
    header_bytes: int = 0
    description: str = ""
    #: encodes with per-column importance weights (ggml's `quantize_<type>` given
    #: `quant_weights`, an importance-matrix row) when `encode` is given them
    takes_importance: bool = False
    #: accepts importance weights and ignores them, as ggml's `ggml_quantize_chunk` does
    #: (element types, Q8_0); a codec that neither takes nor ignores them refuses them
    ignores_importance: bool = False
    #: encodes only with importance weights: ggml's quantizer asserts them
    #: (`ggml_quantize_requires_imatrix`: IQ2_XXS, IQ2_XS, IQ1_S)
    requires_importance: bool = False

    @property
    def is_block(self) -> bool:
        """True for quantized block codecs (more than one value per block)."""
        return self.block_size > 1 or self.numpy_dtype is None

    @property
    def swap_fields(self) -> tuple[tuple[int, int], ...]:
        """(byte offset, width) of the multi-byte fields of one block that are byte-swapped
        in big-endian files; for element types the whole element. (A flat codec's header
        is swapped whole: see `header_bytes`.)"""
        if not self.is_block:
            return ((0, self.type_size),) if self.type_size > 1 else ()
        return tuple((f.offset, f.width) for f in self.fields if not f.header)

    @property
    def scale_fields(self) -> tuple[Field, ...]:
        """The float scales of one block (of the header for flat codecs with one)."""
        return tuple(f for f in self.fields if f.scale)

    @property
    def bits_per_weight(self) -> float:
        """Storage cost per value, block headers included."""
        return 8.0 * self.type_size / self.block_size

    @property
    def apr_code(self) -> int | None:
        """The APR dtype code: aprender's own, else this project's 64 + GGML id."""
        if self.apr_own_code is not None:
            return self.apr_own_code
        if self.ggml_id is not None:
            return APR_GGML_BASE + self.ggml_id
        return None

    @property
    def apr_native(self) -> bool:
        """True when aprender itself can read tensors of this codec (it has aprender's own
        code, not this project's extension)."""
        return self.apr_own_code is not None

    @property
    def accepts_importance(self) -> bool:
        """True when `encode` may be given importance weights (used or ignored)."""
        return self.takes_importance or self.ignores_importance

    @property
    def has_kernels(self) -> bool:
        return self.kernels is not None

    def row_bytes(self, n: int) -> int:
        """Bytes of one row of `n` values (n must be a multiple of the block size)."""
        return (n // self.block_size) * self.type_size

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes of a whole tensor of the given logical shape."""
        count = math.prod(shape)
        if self.flat:
            # aprender stores an empty tensor as zero bytes, header included
            if count == 0:
                return 0
            return self.header_bytes + -(-count // self.block_size) * self.type_size
        if not shape:
            return self.type_size if self.block_size == 1 else 0
        rows = count // shape[-1] if shape[-1] else 0
        return rows * self.row_bytes(shape[-1])


def _f(*spec: tuple) -> tuple[Field, ...]:
    return tuple(Field(*s) for s in spec)


#: The block fields of the codecs: a leading half scale `d`, then a half min `m` (legacy) or
#: `dmin` (K-quants), or a half sum `s` the decoder does not use.
_D = _f(("d", 0, 2))
_DM = _f(("d", 0, 2), ("m", 2, 2))
_DS = _f(("d", 0, 2), ("s", 2, 2, False))
_DDMIN = _f(("d", 0, 2), ("dmin", 2, 2))


def _elem(name, size, ggml=None, apr=None, st=None, dtype=None, kernels=None, desc=""):
    return CodecFacts(
        name, 1, size, ggml, apr, st, dtype, kernels=kernels, description=desc,
        ignores_importance=kernels is not None,
    )  # fmt: skip


def _block(name, block, size, ggml, fields, kernels=None, apr=None, desc="", importance=None):
    """A block codec; `importance` says how it treats importance weights: "takes" them (a
    weighted search), "requires" them (a weighted search only), "ignores" them (Q8_0's scale
    is max|x|/127 either way), or, by default, refuses them."""
    return CodecFacts(
        name, block, size, ggml, apr, None, None, fields, kernels, description=desc,
        takes_importance=importance in ("takes", "requires"),
        ignores_importance=importance == "ignores", requires_importance=importance == "requires",
    )  # fmt: skip


_FLOATS = "bundler.codecs.floats"
_LEGACY = "bundler.codecs.legacy_table"
_KQUANTS = "bundler.codecs.kquants.kernels"
_APR = "bundler.codecs.apr_native"
_IQUANTS = "bundler.codecs.iquants"
_HALFSCALED = "bundler.codecs.halfscaled_table"
_IGN = "ignores"
_FP4 = "bundler.codecs.fp4_table"

#: Every codec and dtype bundler knows, in GGML id order, then the types only other formats have.
TABLE: tuple[CodecFacts, ...] = (
    _elem("f32", 4, 0, 0, "F32", "<f4", _FLOATS, "IEEE binary32"),
    _elem("f16", 2, 1, 1, "F16", "<f2", _FLOATS, "IEEE binary16, round to nearest even"),
    _block("q4_0", 32, 18, 2, _D, _LEGACY, desc="4-bit symmetric, half scale", importance="takes"),
    _block(
        "q4_1", 32, 20, 3, _DM, _LEGACY, desc="4-bit with half scale and min", importance="takes"
    ),
    _block("q5_0", 32, 22, 6, _D, _LEGACY, desc="5-bit symmetric, half scale", importance="takes"),
    _block(
        "q5_1", 32, 24, 7, _DM, _LEGACY, desc="5-bit with half scale and min", importance="takes"
    ),
    _block(
        "q8_0", 32, 34, 8, _D, _LEGACY, desc="8-bit symmetric, half scale", importance="ignores"
    ),
    _block("q8_1", 32, 36, 9, _DS, _LEGACY, desc="8-bit with half scale and sum"),
    _block(
        "q2_k",
        256,
        84,
        10,
        _f(("d", 80, 2), ("dmin", 82, 2)),
        _KQUANTS,
        desc="2-bit K-quant",
        importance="takes",
    ),
    _block(
        "q3_k", 256, 110, 11, _f(("d", 108, 2)), _KQUANTS, desc="3-bit K-quant", importance="takes"
    ),
    _block(
        "q4_k", 256, 144, 12, _DDMIN, _KQUANTS, apr=12, desc="4-bit K-quant", importance="takes"
    ),
    _block("q5_k", 256, 176, 13, _DDMIN, _KQUANTS, desc="5-bit K-quant", importance="takes"),
    _block(
        "q6_k",
        256,
        210,
        14,
        _f(("d", 208, 2)),
        _KQUANTS,
        apr=14,
        desc="6-bit K-quant",
        importance="takes",
    ),
    _block(
        "q8_k",
        256,
        292,
        15,
        _f(("d", 0, 4), *((f"bsums[{i}]", 260 + 2 * i, 2, False) for i in range(16))),
        _KQUANTS,
        desc="8-bit K-quant (activations)",
    ),
    _block(
        "iq2_xxs",
        256,
        66,
        16,
        _D,
        _IQUANTS,
        desc="2-bit lattice, 256-point grid, 4-bit scales per 32",
        importance="requires",
    ),
    _block(
        "iq2_xs",
        256,
        74,
        17,
        _D,
        _IQUANTS,
        desc="2-bit lattice, 512-point grid, 4-bit scales per 16",
        importance="requires",
    ),
    _block(
        "iq3_xxs",
        256,
        98,
        18,
        _D,
        _IQUANTS,
        desc="3-bit lattice, 4 values per 256-point grid index",
        importance="takes",
    ),
    _block(
        "iq1_s",
        256,
        50,
        19,
        _D,
        _IQUANTS,
        desc="1-bit lattice (-1, 0, 1 + delta), 3-bit scales per 32",
        importance="requires",
    ),
    _block("iq4_nl", 32, 18, 20, _D, _IQUANTS, desc="4-bit non-linear", importance="takes"),
    _block(
        "iq3_s",
        256,
        110,
        21,
        _D,
        _IQUANTS,
        desc="3-bit lattice, 4 values per 512-point grid index",
        importance="takes",
    ),
    _block(
        "iq2_s",
        256,
        82,
        22,
        _D,
        _IQUANTS,
        desc="2-bit lattice, 1024-point grid, 4-bit scales per 16",
        importance="takes",
    ),
    _block(
        "iq4_xs",
        256,
        136,
        23,
        _f(("d", 0, 2), ("scales_h", 2, 2, False)),
        _IQUANTS,
        desc="4-bit non-linear, 6-bit scales per 32",
        importance="takes",
    ),
    _elem("i8", 1, 24, 6, "I8", "i1", _FLOATS, "signed 8-bit integer"),
    _elem("i16", 2, 25, None, "I16", "<i2", _FLOATS, "signed 16-bit integer"),
    _elem("i32", 4, 26, 4, "I32", "<i4", _FLOATS, "signed 32-bit integer"),
    _elem("i64", 8, 27, 5, "I64", "<i8", _FLOATS, "signed 64-bit integer"),
    _elem("f64", 8, 28, 3, "F64", "<f8", _FLOATS, "IEEE binary64"),
    _block(
        "iq1_m",
        256,
        56,
        29,
        (),
        _IQUANTS,
        desc="1-bit lattice (-1, 0, 1 + delta), 3-bit scales per 16",
        importance="takes",
    ),
    _elem("bf16", 2, 30, 30, "BF16", "bfloat16", _FLOATS, "bfloat16, round to nearest even"),
    # ternary and MXFP4: ggml's quantizers ignore importance weights
    _block(
        "tq1_0",
        256,
        54,
        34,
        _f(("d", 52, 2)),
        _HALFSCALED,
        desc="ternary, 5 trits per byte",
        importance="ignores",
    ),
    _block(
        "tq2_0",
        256,
        66,
        35,
        _f(("d", 64, 2)),
        _HALFSCALED,
        desc="ternary, 2 bits per value",
        importance="ignores",
    ),
    _block(
        "mxfp4",
        32,
        17,
        39,
        (),
        _FP4,
        desc="4-bit E2M1 floats, E8M0 block scale",
        importance="ignores",
    ),
    _block(
        "nvfp4",
        64,
        36,
        40,
        (),
        _FP4,
        desc="4-bit E2M1 floats, unsigned E4M3 scale per 16",
        importance="ignores",
    ),
    # Q1_0 and Q2_0: ggml's quantizers ignore importance weights
    _block("q1_0", 128, 18, 41, _D, _HALFSCALED, desc="1-bit signs, half scale", importance=_IGN),
    _block("q2_0", 64, 18, 42, _D, _HALFSCALED, desc="2-bit codes -1..2, half d", importance=_IGN),
    # Types that only SafeTensors (and APR for u8) can hold.
    _elem("u8", 1, None, 7, "U8", "u1", _FLOATS, "unsigned 8-bit integer"),
    _elem("u16", 2, None, None, "U16", "<u2", _FLOATS, "unsigned 16-bit integer"),
    _elem("u32", 4, None, None, "U32", "<u4", _FLOATS, "unsigned 32-bit integer"),
    _elem("u64", 8, None, None, "U64", "<u8", _FLOATS, "unsigned 64-bit integer"),
    _elem("bool", 1, None, None, "BOOL", "?", _FLOATS, "boolean, one byte"),
    _elem("c64", 8, None, None, "C64", "<c8", _FLOATS, "complex of two binary32"),
    _elem("f8_e5m2", 1, None, None, "F8_E5M2", "float8_e5m2", _FLOATS, "8-bit float"),
    _elem("f8_e4m3", 1, None, None, "F8_E4M3", "float8_e4m3fn", _FLOATS, "8-bit float"),
    _elem("f8_e8m0", 1, None, None, "F8_E8M0", "float8_e8m0fnu", _FLOATS, "8-bit exponent"),
    _elem("f8_e4m3fnuz", 1, None, None, "F8_E4M3FNUZ", "float8_e4m3fnuz", _FLOATS, "8-bit"),
    _elem("f8_e5m2fnuz", 1, None, None, "F8_E5M2FNUZ", "float8_e5m2fnuz", _FLOATS, "8-bit"),
    CodecFacts("f6_e2m3", 4, 3, safetensors_dtype="F6_E2M3", description="6-bit float, packed"),
    CodecFacts("f6_e3m2", 4, 3, safetensors_dtype="F6_E3M2", description="6-bit float, packed"),
    CodecFacts("f4", 2, 1, safetensors_dtype="F4", description="4-bit float, packed"),
    # aprender's own codecs, laid out over the flattened tensor.
    CodecFacts(
        "apr_q4",
        32,
        18,
        apr_own_code=128,
        fields=_D,
        kernels=_APR,
        flat=True,
        description="aprender Q4: blocks of 32, half scale max|x|/7, adjacent nibble pairs",
    ),
    CodecFacts(
        "apr_q8",
        1,
        1,
        apr_own_code=129,
        fields=_f(("scale", 0, 4, True, True)),
        kernels=_APR,
        flat=True,
        header_bytes=4,
        description="aprender Q8: one float32 scale per tensor, then int8 codes",
    ),
)

#: The facts of each codec, by name.
BY_NAME: dict[str, CodecFacts] = {f.name: f for f in TABLE}
#: The codecs aprender itself reads (the others' APR codes are this project's extension).
APRENDER_CODECS: tuple[str, ...] = tuple(f.name for f in TABLE if f.apr_native)
