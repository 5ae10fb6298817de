"""llama.cpp's file types: the names `--type` accepts and the `general.file_type` numbers.

A file type is a base codec plus, for the mixtures (Q4_K_M, IQ4_XS, MXFP4_MOE, ...), a rule
set that gives some tensors another codec (bundler.plan.mixtures). The numbers are llama.cpp's
`llama_ftype` values, which differ from the GGML tensor type ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from bundler.codecs import Codec, all_codecs, get
from bundler.errors import UnknownCodecError, UsageError


@dataclass(frozen=True)
class FileType:
    """One `--type` choice; `ftype` is None for a codec llama.cpp has no file type for
    (aprender's AprQ4 / AprQ8): no `general.file_type` is written then."""

    name: str
    ftype: int | None
    base: str
    #: True for the mixtures with per-tensor rules of their own in bundler.plan.mixtures
    mixture: bool = False

    @property
    def codec(self) -> Codec:
        return get(self.base)


FILE_TYPES: tuple[FileType, ...] = (
    FileType("F32", 0, "f32"),
    FileType("F16", 1, "f16"),
    FileType("Q4_0", 2, "q4_0"),
    FileType("Q4_1", 3, "q4_1"),
    FileType("Q8_0", 7, "q8_0"),
    FileType("Q5_0", 8, "q5_0"),
    FileType("Q5_1", 9, "q5_1"),
    FileType("Q2_K", 10, "q2_k", True),
    FileType("Q3_K_S", 11, "q3_k", True),
    FileType("Q3_K_M", 12, "q3_k", True),
    FileType("Q3_K_L", 13, "q3_k", True),
    FileType("Q4_K_S", 14, "q4_k", True),
    FileType("Q4_K_M", 15, "q4_k", True),
    FileType("Q5_K_S", 16, "q5_k", True),
    FileType("Q5_K_M", 17, "q5_k", True),
    FileType("Q6_K", 18, "q6_k", True),
    FileType("IQ2_XXS", 19, "iq2_xxs", True),
    FileType("IQ2_XS", 20, "iq2_xs", True),
    FileType("Q2_K_S", 21, "q2_k", True),
    FileType("IQ3_XS", 22, "iq3_s", True),
    FileType("IQ3_XXS", 23, "iq3_xxs", True),
    FileType("IQ1_S", 24, "iq1_s", True),
    FileType("IQ4_NL", 25, "iq4_nl", True),
    FileType("IQ3_S", 26, "iq3_s", True),
    FileType("IQ3_M", 27, "iq3_s", True),
    FileType("IQ2_S", 28, "iq2_xs", True),
    FileType("IQ2_M", 29, "iq2_s", True),
    FileType("IQ4_XS", 30, "iq4_xs", True),
    FileType("IQ1_M", 31, "iq1_m", True),
    FileType("BF16", 32, "bf16"),
    FileType("TQ1_0", 36, "tq1_0", True),
    FileType("TQ2_0", 37, "tq2_0", True),
    FileType("MXFP4_MOE", 38, "mxfp4", True),
    FileType("Q1_0", 40, "q1_0"),
    FileType("Q2_0", 41, "q2_0", True),
)
#: llama-quantize's short names for the medium mixtures.
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

_BY_NAME = {f.name: f for f in FILE_TYPES}


def file_type(name: str) -> FileType:
    """The file type called `name` (any case; Q4_K means Q4_K_M as in llama-quantize)."""
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    try:
        return _BY_NAME[key]
    except KeyError:
        raise UnknownCodecError(name, [f.name for f in FILE_TYPES]) from None


def choose(name: str) -> FileType:
    """What `--type name` means: a file type (Q4_K_M, ...), or a codec written to every
    quantized tensor (the plain file type of that codec, or, for a codec llama.cpp has no
    file type for, one without a `general.file_type`)."""
    try:
        return file_type(name)
    except UnknownCodecError:
        pass
    try:
        codec = get(name)
    except UnknownCodecError:
        raise UnknownCodecError(
            name,
            _type_names(),
            f"unknown --type {name!r}; file types: {', '.join(_type_names())}; "
            f"codecs: {', '.join(c.name for c in encodable())}",
        ) from None
    if codec not in encodable():
        raise UsageError(
            f"--type {name}: bundler does not quantize weights to {codec.name}; codecs it "
            f"quantizes to: {', '.join(c.name for c in encodable())}"
        )
    return for_codec(codec) or FileType(codec.name.upper(), None, codec.name)


def _type_names() -> list[str]:
    return [f.name for f in FILE_TYPES] + [f"{k} (= {v})" for k, v in ALIASES.items()]


def encodable() -> list[Codec]:
    """Every codec `--type` can write floats with (block and float codecs bundler encodes)."""
    return [c for c in all_codecs() if c.facts.has_kernels and _takes_floats(c)]


def _takes_floats(codec: Codec) -> bool:
    dtype = codec.facts.numpy_dtype
    return codec.facts.is_block or dtype.startswith(("<f", "bfloat"))


def for_codec(codec: Codec) -> FileType | None:
    """The plain (non-mixture) file type whose base is `codec`, if any."""
    for f in FILE_TYPES:
        if f.base == codec.name and f.name.lower() == codec.name:
            return f
    return None
