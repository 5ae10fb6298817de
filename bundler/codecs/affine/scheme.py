"""An affine codec's configuration: bits, signedness, granularity, calibration, scale dtype.

The configuration is the codec's identity (equality, hashing, `config()`), and has a short
string form for the command line: colon-separated tokens in any order, for example
`int4:g128:asym:mse`, `int8:channel`, `int8:channel1:p99.9:f16`.

- `int<B>`: bits, 2..16 (`uint<B>` is `int<B>:asym`);
- `tensor` (default), `channel` or `channel<axis>` (default axis 0, the output axis),
  `g<G>` (groups of G values along the last, input axis; G a multiple of 8);
- `sym` (default; signed codes, zero point 0) or `asym` (unsigned codes with a zero point);
- `extreme` (symmetric only): the scale rule of ONNX Runtime's 4-bit block quantizer and
  GGML's Q4_0 instead of compressed-tensors' (the default): see `arithmetic`;
- `div32`: codes from the quotient x / scale taken in float32, as ONNX QuantizeLinear
  computes it (the default takes it in float64, exactly; the two differ only where the
  float32 quotient lands on a half-integer);
- a calibration method (`minmax` default, `p<upper>` or `p<lower>-<upper>`, `meanstd<k>`,
  `mse`, `entropy`: see `calibration`);
- `f32` (default), `f16` or `bf16`: the dtype the scales are stored in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bundler.codecs.affine.arithmetic import DIVISIONS, RULES, SCALE_DTYPES
from bundler.codecs.affine.calibration import Method, MinMax, method_from
from bundler.codecs.affine.names import BITS
from bundler.codecs.affine.packing import IntegerCodes
from bundler.errors import UsageError

MIN_BITS, MAX_BITS = 2, 16
GRANULARITIES = ("tensor", "channel", "group")
DEFAULT_GROUP = 128


class SchemeError(UsageError):
    """An affine configuration that does not make sense (bits, group size, axis, token)."""


@dataclass(frozen=True)
class Scheme(IntegerCodes):
    """The configuration of one affine codec."""

    bits: int = 8
    symmetric: bool = True
    granularity: str = "tensor"
    axis: int = 0
    group_size: int = DEFAULT_GROUP
    calibration: Method = field(default_factory=MinMax)
    scale_dtype: str = "f32"
    scale_rule: str = RULES[0]
    division: str = DIVISIONS[0]

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise SchemeError(f"bits must be an integer, got {self.bits!r}")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise SchemeError(f"bits must be {MIN_BITS}..{MAX_BITS}, got {self.bits}")
        if self.granularity not in GRANULARITIES:
            raise SchemeError(
                f"granularity must be one of {', '.join(GRANULARITIES)}, got {self.granularity!r}"
            )
        if self.scale_dtype not in SCALE_DTYPES:
            raise SchemeError(
                f"scale dtype must be one of {', '.join(SCALE_DTYPES)}, got {self.scale_dtype!r}"
            )
        if self.scale_rule not in RULES:
            raise SchemeError(
                f"scale rule must be one of {', '.join(RULES)}, got {self.scale_rule!r}"
            )
        if self.division not in DIVISIONS:
            raise SchemeError(
                f"division must be one of {', '.join(DIVISIONS)}, got {self.division!r}"
            )
        if self.scale_rule != RULES[0] and not self.symmetric:
            raise SchemeError(f"the {self.scale_rule} scale rule is for symmetric codes (sym)")
        if self.granularity == "group" and (self.group_size < 8 or self.group_size % 8):
            raise SchemeError(f"group size must be a positive multiple of 8, got {self.group_size}")
        if self.granularity != "group":
            object.__setattr__(self, "group_size", DEFAULT_GROUP)
        if self.granularity != "channel":
            object.__setattr__(self, "axis", 0)
        object.__setattr__(self, "calibration", method_from(self.calibration))

    @property
    def signed(self) -> bool:
        """Symmetric codes are signed, asymmetric ones unsigned."""
        return self.symmetric

    @property
    def name(self) -> str:
        """The canonical short string form."""
        gran = {
            "tensor": "tensor",
            "channel": "channel" if self.axis == 0 else f"channel{self.axis}",
            "group": f"g{self.group_size}",
        }[self.granularity]
        parts = [f"int{self.bits}", gran, "sym" if self.symmetric else "asym"]
        if self.scale_rule != RULES[0]:
            parts.append(self.scale_rule)
        parts.append(self.calibration.token)
        if self.scale_dtype != "f32":
            parts.append(self.scale_dtype)
        if self.division != DIVISIONS[0]:
            parts.append(_DIV32)
        return ":".join(parts)

    def config(self) -> dict[str, Any]:
        """Plain-JSON identity; `from_config` gives the scheme back."""
        return {
            "id": "affine",
            "bits": self.bits,
            "symmetric": self.symmetric,
            "granularity": self.granularity,
            "axis": self.axis,
            "group_size": self.group_size,
            "calibration": self.calibration.config(),
            "scale_dtype": self.scale_dtype,
            "scale_rule": self.scale_rule,
            "division": self.division,
        }

    def replace(self, **changes: Any) -> Scheme:
        """A copy with some fields changed (and checked again)."""
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        values.update(changes)
        return Scheme(**values)


def from_config(config: dict[str, Any]) -> Scheme:
    """The scheme a `config()` dict describes."""
    if not isinstance(config, dict) or config.get("id") != "affine":
        raise SchemeError(f"not an affine codec configuration: {config!r}")
    known = set(Scheme.__dataclass_fields__)
    extra = set(config) - known - {"id"}
    if extra:
        raise SchemeError(f"unknown affine configuration keys: {', '.join(sorted(extra))}")
    return Scheme(**{k: v for k, v in config.items() if k != "id"})


_DIV32 = "div32"
_CHANNEL = re.compile(r"channel(\d*)")
_GROUP = re.compile(r"g(\d+)")


def parse(text: str) -> Scheme:
    """The scheme of a short string such as `int4:g128:asym:mse`."""
    tokens = [t for t in text.strip().lower().split(":") if t]
    values: dict[str, Any] = {}
    for token in tokens:
        key, value = _token(token, text)
        if key in values and values[key] != value:
            raise SchemeError(f"{text!r}: {key} given twice")
        if isinstance(value, dict):
            values.update(value)
        else:
            values[key] = value
    if "bits" not in values:
        raise SchemeError(f"{text!r}: no int<bits> token (for example int8 or int4)")
    return Scheme(**values)


def _token(token: str, text: str) -> tuple[str, Any]:
    m = BITS.fullmatch(token)
    if m:
        value: dict[str, Any] = {"bits": int(m.group(2))}
        if m.group(1):
            value["symmetric"] = False
        return "bits", value
    if token in ("sym", "asym"):
        return "symmetric", token == "sym"
    if token == "tensor":
        return "granularity", "tensor"
    m = _CHANNEL.fullmatch(token)
    if m:
        return "granularity", {"granularity": "channel", "axis": int(m.group(1) or 0)}
    m = _GROUP.fullmatch(token)
    if m:
        return "granularity", {"granularity": "group", "group_size": int(m.group(1))}
    if token in SCALE_DTYPES:
        return "scale_dtype", token
    if token in RULES:
        return "scale_rule", token
    if token == _DIV32:
        return "division", "f32"
    try:
        return "calibration", method_from(token)
    except UsageError:
        raise SchemeError(
            f"{text!r}: unknown token {token!r} (int<B>, tensor, channel[<axis>], g<G>, "
            "sym, asym, extreme, div32, minmax, p<upper>, p<lower>-<upper>, meanstd<k>, mse, "
            "entropy, f32, f16, bf16)"
        ) from None
