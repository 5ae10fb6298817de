"""Which tensors may be quantized and where a tensor goes when its rows do not fit the wanted
codec: llama-quantize's rules (llama.cpp `tensor_allows_quantization`,
`tensor_type_fallback`), in one place."""

from __future__ import annotations

import re

from bundler.bundle import Tensor
from bundler.codecs import Codec, get
from bundler.errors import UsageError

#: Tensors llama-quantize never quantizes, by name (llama.cpp `tensor_allows_quantization`,
#: plus the Hugging Face spellings of norms and position/token-type embeddings).
KEEP_PATTERN = re.compile(
    r"_norm\.weight|ffn_gate_inp\.weight|ffn_gate_tid2eid\.weight|altup|laurel"
    r"|per_layer_model_proj|ssm_conv1d|shortconv\.conv\.weight|indexer\.[kq]_proj\.weight"
    r"|time_mix_(first|w0|w1|w2|v0|v1|v2|a0|a1|a2|g1|g2|decay_w1|decay_w2|lerp_fused)\.weight"
    r"|attn_rel_b\.weight|\.position_embd|sam\.pos_embd|sam\.neck\.|sam\.net_|\.rel_pos"
    r"|\.patch_embd|\.patch_merger|a\.rvq\.codebook|mm\.a\.code_embd"
    r"|^position_embd\.weight$|^token_types\.weight$"
    r"|(^|\.)norm\.weight$|LayerNorm|layer_norm|position_embeddings|token_type_embeddings"
)
#: The token embeddings' names (llama.cpp `tensor_name_match_token_embd`).
TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")
#: Where a tensor goes when its rows do not fit the wanted codec's block (then F16), as
#: llama.cpp's `tensor_type_fallback` sends them.
FALLBACK = {
    **dict.fromkeys(("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s"), "iq4_nl"),
    "iq4_xs": "iq4_nl",
    **dict.fromkeys(("q2_0", "q2_k", "q3_k", "tq1_0", "tq2_0"), "q4_0"),
    "q4_k": "q5_0",
    "q5_k": "q5_1",
    "q6_k": "q8_0",
}
LAST_RESORT = "f16"
#: A codec of blocks larger than this with no FALLBACK (Q1_0, NVFP4) has none at all:
#: llama.cpp stops with "no tensor type fallback is defined".
NO_FALLBACK_ABOVE = 32
#: The output tensor's codec in a llama-quantize mixture, and what it takes instead when
#: its rows do not fit the file type's block (or the model is a Falcon).
OUTPUT_TYPE, OUTPUT_FALLBACK = "q6_k", "q8_0"
#: Architectures whose output tensor always takes OUTPUT_FALLBACK.
OUTPUT_FALLBACK_ARCHS = ("falcon",)
#: The file types whose output tensor takes OUTPUT_LOW_BIT instead of OUTPUT_TYPE.
OUTPUT_LOW_BIT_FILE_TYPES = ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
OUTPUT_LOW_BIT = "q5_k"
#: Codecs llama-quantize writes only with importance weights (llama.cpp
#: `tensor_requires_imatrix`), and the file type in which Q2_K needs them too.
NEEDS_IMPORTANCE = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs")
Q2_K_NEEDS_IMPORTANCE_IN = "Q2_K_S"


#: Why a tensor is kept for its name alone (what `PlanOptions(name_rules=False)` lifts).
NOT_A_WEIGHT = "not a weight"
KEPT_BY_NAME = "kept as llama-quantize keeps it"


def quantizable(tensor: Tensor) -> str | None:
    """None when llama-quantize would quantize `tensor`, else why it is kept."""
    if len(tensor.shape) < 2:
        return "1-D"
    kind = tensor.codec.facts
    if kind.numpy_dtype is not None and not kind.numpy_dtype.startswith(("<f", "bfloat")):
        return f"{tensor.codec.name} is not a float type"
    if not tensor.name.endswith("weight"):
        return NOT_A_WEIGHT
    if KEEP_PATTERN.search(tensor.name):
        return KEPT_BY_NAME
    return None


def by_name(why_kept: str) -> bool:
    """True when `quantizable` kept a tensor for its name only."""
    return why_kept in (NOT_A_WEIGHT, KEPT_BY_NAME)


def _fits(codec: Codec, shape: tuple[int, ...]) -> bool:
    return shape[-1] % codec.facts.block_size == 0


def output_codec(
    want: Codec, shape: tuple[int, ...], arch: str | None, ftype: str | None = None
) -> Codec:
    """The output tensor's codec in a mixture whose base codec is `want` (llama.cpp
    `llama_tensor_get_type` for `output.weight`); MXFP4_MOE keeps it in OUTPUT_FALLBACK."""
    if ftype == "MXFP4_MOE" or arch in OUTPUT_FALLBACK_ARCHS or not _fits(want, shape):
        return get(OUTPUT_FALLBACK)
    if ftype in OUTPUT_LOW_BIT_FILE_TYPES:
        return get(OUTPUT_LOW_BIT)
    return want if want.name == OUTPUT_FALLBACK else get(OUTPUT_TYPE)


def needs_importance(name: str, codec: Codec, ftype: str | None) -> bool:
    """True when llama-quantize refuses to write tensor `name` as `codec` in a file of type
    `ftype` without importance weights (never the token embedding or the output tensor)."""
    if name == "output.weight" or name in TOKEN_EMBD_NAMES:
        return False
    return codec.name in NEEDS_IMPORTANCE or (
        codec.name == "q2_k" and ftype == Q2_K_NEEDS_IMPORTANCE_IN
    )


def with_fallback(want: Codec, shape: tuple[int, ...], name: str = "") -> tuple[Codec, str]:
    """`want`, or where tensor `name` of `shape` goes when its rows do not fit it, and a
    note; a UsageError when llama.cpp has nowhere for it to go."""
    if _fits(want, shape):
        return want, ""
    note = f"rows of {shape[-1]} are not a multiple of {want.facts.block_size} for {want.name}"
    if want.name not in FALLBACK and want.facts.block_size > NO_FALLBACK_ABOVE:
        raise UsageError(
            f"tensor {name}: {note}, and llama.cpp defines no fallback codec for {want.name}"
        )
    fallback = get(FALLBACK.get(want.name, LAST_RESORT))
    if not _fits(fallback, shape):
        fallback = get(LAST_RESORT)
    return fallback, f"{note}: fallback {fallback.name}"
