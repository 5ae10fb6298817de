"""llama-quantize's per-tensor mixtures: which tensors of a model get a wider codec than the
file type's base (Q4_K_M gives some attention-value and feed-forward-down layers Q6_K, the
output tensor Q6_K, ...).

The rules are those of llama.cpp's `llama_tensor_get_type_impl` (src/llama-quant.cpp, the
version vendored by llama-cpp-python 0.3.36) for every file type llama-quantize writes (not
NVFP4: its `llama_ftype_get_default_type` has no case for it), as llama-quantize applies
them without an importance matrix unless `imatrix` says one is used (IQ4_NL and IQ4_XS widen
the first eighth of ffn_down only without one, IQ3_XXS widens attn_v and ffn_down only
without one). The 1- and 2-bit lattice file types (IQ1_*, IQ2_*) have a branch of their own
that the other categories never reach. The rules depend on the tensor's category (from its
name), on counters kept in tensor order, and on a few model hyper-parameters read from the
GGUF metadata.
"""

from __future__ import annotations

import re

from bundler.codecs import Codec, get
from bundler.plan.filetypes import FileType
from bundler.plan.model import ModelInfo
from bundler.plan.rules import TOKEN_EMBD_NAMES, output_codec

# Categories, tried in this order on the tensor name (llama.cpp `tensor_get_category`).
_CATEGORIES = (
    ("attn_qkv.weight", "attn_qkv"),
    ("attn_kv_b.weight", "attn_kv_b"),
    ("attn_v.weight", "attn_v"),
    ("attn_k.weight", "attn_k"),
    ("attn_q.weight", "attn_q"),
    ("attn_output.weight", "attn_output"),
    ("ffn_up", "ffn_up"),
    ("ffn_gate", "ffn_gate"),
    ("ffn_down", "ffn_down"),
)
_ATTN_V_LIKE = {"attn_v", "attn_qkv", "attn_kv_b"}
_IQ4 = ("IQ4_NL", "IQ4_XS")
_IQ1 = ("IQ1_S", "IQ1_M")
#: The 2-bit file types that give their widened tensors IQ3_S rather than Q2_K.
_IQ2_SM = ("IQ2_S", "IQ2_M")
#: The file types of llama.cpp's low-bit branch (their own attn_v, ffn_down, attn_output).
LOW_BIT = ("IQ2_XXS", "IQ2_XS", *_IQ1, *_IQ2_SM)
_TERNARY = ("TQ1_0", "TQ2_0")
#: An untied token embedding's codec by file type (else the file type's base).
_TOKEN_EMBD = {
    **dict.fromkeys((*_TERNARY, "Q2_0"), "q4_k"),
    **dict.fromkeys(("IQ2_XXS", "IQ2_XS", *_IQ1), "q2_k"),
    **dict.fromkeys((*_IQ2_SM, "IQ3_XXS"), "iq3_s"),
}
#: attn_q's codec (and attn_k's but in eight-expert models) by file type.
_ATTN_Q = {"IQ3_XS": "iq3_xxs", "IQ3_XXS": "iq2_s"}


def category(name: str) -> str:
    """The tensor's category: output, token_embd, attn_v, ffn_down, ... or other."""
    if name == "output.weight":
        return "output"
    if name in TOKEN_EMBD_NAMES:
        return "token_embd"
    for needle, cat in _CATEGORIES:
        if needle in name:
            return cat
    return "other"


_BLOCK = re.compile(r"blk\.\s*([+-]?\d+)")


def loader_order(name: str) -> tuple[int, str]:
    """Sort key of llama.cpp's loader (`weight_name_comparer`), the order llama-quantize
    walks a model in: tensors outside the blocks first, then block by block by number
    (blk.2 before blk.10), by name within a block. Its layer counters follow this walk."""
    found = _BLOCK.match(name)
    return (int(found.group(1)) if found else -1, name)


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """The layers the _M mixtures widen: the first and last eighth, and every third between."""
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


class Mixture:
    """Chooses each quantizable tensor's codec for one file type, called in tensor order."""

    def __init__(self, ftype: FileType, info: ModelInfo, imatrix: bool = False):
        self.ftype = ftype.name
        #: whether an importance matrix is used (some rules depend on it)
        self.imatrix = imatrix
        self.base = ftype.codec
        self.hp = info.hparams
        self.tied = not info.has_output
        self.n_attention_wv = sum(category(n) in _ATTN_V_LIKE for n in info.names)
        self.i_attention_wv = 0
        self.counters = {"ffn_down": 0, "ffn_gate": 0, "ffn_up": 0}

    def choose(self, name: str, shape: tuple[int, ...], want: Codec) -> tuple[Codec, str]:
        """The codec for tensor `name` (before the shape fallback) and why."""
        cat = category(name)
        if cat == "output" or (self.tied and cat == "token_embd"):
            return output_codec(want, shape, self.hp.arch, self.ftype), "output tensor"
        if self.ftype == "MXFP4_MOE":
            chosen = get("mxfp4" if self._expert_tensor(cat, shape) else "q8_0")
        elif cat == "token_embd":
            chosen = get(_TOKEN_EMBD.get(self.ftype, want.name))
        elif self.ftype in LOW_BIT:
            chosen = self._low_bit(cat, want)
        elif cat in _ATTN_V_LIKE:
            chosen = self._attn_v(want)
            self.i_attention_wv += 1
        elif cat == "attn_k" and self.hp.n_expert == 8:
            chosen = get("q8_0")
        elif cat in ("attn_k", "attn_q"):
            chosen = get(_ATTN_Q.get(self.ftype, want.name))
        elif cat == "ffn_down":
            chosen = self._ffn_down(name, want)
        elif cat == "attn_output":
            chosen = self._attn_output(want)
        elif cat in ("ffn_gate", "ffn_up"):
            chosen = self._ffn_gate_up(cat, name, want)
        else:
            chosen = want
        return chosen, (f"{self.ftype} mixture ({cat})" if chosen != want else "")

    def _expert_tensor(self, cat: str, shape: tuple[int, ...]) -> bool:
        """MXFP4_MOE's test: several experts stacked (ne[2] > 1); in bailingmoe3, whose
        attention projections are 3-D too, only the feed-forward ones."""
        stacked = len(shape) >= 3 and shape[-3] > 1
        if self.hp.arch == "bailingmoe3":
            return stacked and cat in ("ffn_up", "ffn_gate", "ffn_down")
        return stacked

    def _attn_v(self, want: Codec) -> Codec:
        f, hp, i = self.ftype, self.hp, self.i_attention_wv
        new = want
        if f == "Q2_K":
            new = get("q4_k" if hp.n_gqa >= 4 else "q3_k")
        elif (f in ("Q2_K_S", "IQ3_XS", "IQ3_S") and hp.n_gqa >= 4) or f == "IQ3_M":
            new = get("q4_k")
        elif f == "IQ3_XXS":
            new = get("q4_k" if hp.n_gqa >= 4 else "iq3_xxs" if self.imatrix else "iq3_s")
        elif f == "Q3_K_M":
            new = get("q5_k" if i < 2 else "q4_k")
        elif f == "Q3_K_L" or (f in _IQ4 and hp.n_gqa >= 4):
            new = get("q5_k")
        elif f in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, self.n_attention_wv):
            new = get("q6_k")
        elif f == "Q4_K_S" and i < 4:
            new = get("q5_k")
        if hp.is_70b and new.name in ("q3_k", "q4_k"):
            new = get("q5_k")
        if hp.n_expert == 8:
            new = get("q8_0")
        return new

    def _layer(self, cat: str, name: str) -> tuple[int, int]:
        i_layer = self.counters[cat]
        self.counters[cat] += 1
        if self.hp.n_expert > 1:  # experts are not consecutive: read the layer from the name
            try:
                i_layer = int(name.split(".")[1])
            except (IndexError, ValueError):
                from bundler.errors import UsageError

                raise UsageError(f"cannot tell the layer of tensor {name!r}") from None
        return i_layer, self.hp.n_layer

    def _ffn_down(self, name: str, want: Codec) -> Codec:
        i, n = self._layer("ffn_down", name)
        f, falcon = self.ftype, self.hp.arch == "falcon"
        if f == "Q2_K":
            return get("q3_k")
        if f == "Q2_K_S":
            return get("q4_k") if i < n // 8 else want
        if f == "IQ3_XXS" and not self.imatrix:
            return get("q4_k" if i < n // 8 else "q3_k")
        if f == "IQ3_M" and (i < n // 8 or (self.hp.n_expert == 8 and use_more_bits(i, n))):
            return get("q4_k")
        if f == "Q3_K_M":
            if i < n // 16:
                return get("q5_k")
            return get("q4_k" if not falcon or use_more_bits(i, n) else "q3_k")
        if f == "Q3_K_L":
            return get("q4_k" if falcon else "q5_k")
        if f == "Q4_K_M":
            if falcon:
                return get("q6_k" if i < n // 16 else "q5_k" if use_more_bits(i, n) else "q4_k")
            return get("q6_k") if use_more_bits(i, n) else want
        if f in _IQ4 and i < n // 8 and not self.imatrix:
            return get("q5_k")
        if f == "Q5_K_M" and use_more_bits(i, n):
            return get("q6_k")
        if f == "Q4_K_S" and not falcon and i < n // 8:
            return get("q5_k")
        if f in ("Q4_0", "Q5_0") and self.imatrix and i < n // 8:
            # llama.cpp guards the first ffn_down layers, only when a matrix is used
            return get("q4_1" if f == "Q4_0" else "q5_1")
        return want

    def _attn_output(self, want: Codec) -> Codec:
        f = self.ftype
        if self.hp.arch == "falcon":
            return get("q4_k") if f == "Q3_K_L" else want
        if self.hp.n_expert == 8:
            widened = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M", *_IQ4)
            iq3 = ("IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M")
            return get("q5_k") if f in widened + iq3 else want
        wider = {
            "Q2_K": "q3_k", "Q3_K_M": "q4_k", "Q3_K_L": "q5_k", "IQ3_XXS": "iq3_s",
            "IQ3_M": "q4_k",
        }.get(f)  # fmt: skip
        return get(wider) if wider else want

    def _ffn_gate_up(self, cat: str, name: str, want: Codec) -> Codec:
        i, n = self._layer(cat, name)
        if self.ftype == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
            return get("iq3_xxs")
        return want

    def _low_bit(self, cat: str, want: Codec) -> Codec:
        """llama.cpp's branch for the 1- and 2-bit lattice file types; its ffn_down counter
        is the tensor's rank among the ffn_down tensors, even in expert models."""
        hp, wider = self.hp, get("iq3_s" if self.ftype in _IQ2_SM else "q2_k")
        if cat in _ATTN_V_LIKE:
            self.i_attention_wv += 1
            return get("q4_k") if hp.n_gqa >= 4 or hp.n_expert >= 4 else wider
        if cat == "attn_k" and hp.n_expert == 8:
            return get("q4_k")
        if cat == "ffn_down":
            i = self.counters["ffn_down"]
            self.counters["ffn_down"] += 1
            return wider if i < hp.n_layer // 8 else want
        if cat == "attn_output" and hp.n_expert == 8:
            return get("q5_k")
        if cat == "attn_output" and self.ftype in _IQ1:
            return get("iq2_xxs")
        if cat == "attn_output" and self.ftype in _IQ2_SM:
            return get("iq3_s")
        return want
