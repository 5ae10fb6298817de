"""llama.cpp's file types: the names `--type` accepts and the `general.file_type` numbers.

A file type is a base codec plus, for the K-quant mixtures (Q4_K_M, ...), a rule set that
gives some tensors a wider codec (bundler.plan.mixtures). The numbers are llama.cpp's
`llama_ftype` values, which differ from the GGML tensor type ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from bundler.codecs import Codec, get
from bundler.errors import UnknownCodecError


@dataclass(frozen=True)
class FileType:
    """One `--type` choice."""

    name: str
    ftype: int
    base: str
    #: True for the K-quant mixtures whose per-tensor choices live in bundler.plan.mixtures
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
    FileType("BF16", 32, "bf16"),
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


def for_codec(codec: Codec) -> FileType | None:
    """The plain (non-mixture) file type whose base is `codec`, if any."""
    for f in FILE_TYPES:
        if f.base == codec.name and f.name.lower() == codec.name:
            return f
    return None
