"""Affine-quantized weights as bundle tensors, in the compressed-tensors layout
(formats/affine.md), whatever the container.

A weight `<m>.weight` quantized by an affine codec becomes:

- 8 and 16 bits (`int-quantized`): `<m>.weight`, the signed codes as I8 / I16 in the
  weight's shape (asymmetric codes offset by -2^(B-1));
- 2 to 7 bits (`pack-quantized`): `<m>.weight_packed`, I32 words packed along each row
  (`packing.pack_int32`), and `<m>.weight_shape`, I64, the original shape;
- `<m>.weight_scale`: F32 (or F16 / BF16) in the parameter shape ([1], [rows, 1],
  [rows, cols / G]);
- asymmetric only, `<m>.weight_zero_point`: signed like the codes; for pack-quantized
  channel and group schemes packed into I32 along dim 0 as compressed-tensors does.

and the bundle's `quantization_config` metadata (a JSON string) holds compressed-tensors'
config (`quant_method`, `format`, `config_groups`, `ignore`, `quantization_status`) plus
`bundler_codecs`, each module's full codec name. Every container stores these as plain
tensors and a string, so converting between containers copies every byte.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from bundler.bundle import Bundle, Metadata, Source, Tensor, ValueType
from bundler.codecs.affine import packing
from bundler.codecs.affine.codec import AffineCodec, Encoded, dequantize
from bundler.codecs.affine.names import SCALE_SUFFIX
from bundler.codecs.affine.scheme import Scheme
from bundler.errors import FormatError, UsageError

CONFIG_KEY = "quantization_config"
CODECS_KEY = "bundler_codecs"
SUFFIXES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")
_STRATEGY = {"tensor": "tensor", "channel": "channel", "group": "group"}


def format_of(scheme: Scheme) -> str:
    """compressed-tensors' format name for a scheme's storage."""
    return "int-quantized" if scheme.bits in (8, 16) else "pack-quantized"


def _zero_packed(scheme: Scheme, param_shape: tuple[int, ...]) -> bool:
    return (
        format_of(scheme) == "pack-quantized"
        and scheme.granularity in ("channel", "group")
        and len(param_shape) == 2
        and (scheme.granularity == "group" or scheme.axis == 0)
    )


def _rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    cols = shape[-1] if shape else 1
    return math.prod(shape) // max(cols, 1), cols


@dataclass(frozen=True)
class Piece:
    """One stored tensor of a quantized weight."""

    name: str
    shape: tuple[int, ...]
    codec: str
    part: str  # codes, scale, zero_point, shape


def pieces(module: str, shape: tuple[int, ...], codec: AffineCodec) -> list[Piece]:
    """The tensors a weight of `shape` becomes, in order."""
    s = codec.scheme
    pshape = codec.parameter_shape(shape)
    out = []
    if format_of(s) == "int-quantized":
        out.append(Piece(f"{module}.weight", shape, "i8" if s.bits == 8 else "i16", "codes"))
    else:
        rows, cols = _rows_cols(shape)
        words = packing.packed_words(cols, s.bits)
        out.append(Piece(f"{module}.weight_packed", (rows, words), "i32", "codes"))
    out.append(Piece(f"{module}.weight_scale", pshape, s.scale_dtype, "scale"))
    if not s.symmetric:
        if _zero_packed(s, pshape):
            zshape = (packing.packed_words(pshape[0], s.bits), pshape[1])
            out.append(Piece(f"{module}.weight_zero_point", zshape, "i32", "zero_point"))
        else:
            zcodec = "i8" if s.bits <= 8 else "i16"
            out.append(Piece(f"{module}.weight_zero_point", pshape, zcodec, "zero_point"))
    if format_of(s) == "pack-quantized":
        out.append(Piece(f"{module}.weight_shape", (len(shape),), "i64", "shape"))
    return out


def stored_arrays(module: str, encoded: Any, only: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of each piece of an `Encoded` weight (or of the piece `only`), by name."""
    codec: AffineCodec = encoded.codec
    s = codec.scheme
    shift = 0 if s.symmetric else 1 << (s.bits - 1)
    signed = np.dtype(np.int8 if s.bits <= 8 else np.int16)
    out: dict[str, np.ndarray] = {}
    for piece in pieces(module, encoded.shape, codec):
        if only is not None and piece.name != only:
            continue
        if piece.part == "codes":
            if format_of(s) == "int-quantized":
                arr = (encoded.codes.astype(np.int32) - shift).astype(signed)
            else:
                rows, cols = _rows_cols(encoded.shape)
                unsigned = encoded.codes.reshape(rows, cols).astype(np.int32)
                arr = packing.pack_int32(unsigned + packing.offset(s.bits, s.symmetric), s.bits)
        elif piece.part == "scale":
            arr = encoded.scale
        elif piece.part == "zero_point":
            zp = encoded.zero_point.astype(np.int32)
            if piece.codec == "i32":
                arr = np.ascontiguousarray(packing.pack_int32(zp.T, s.bits).T)
            else:
                arr = (zp - shift).astype(signed)
        else:
            arr = np.array(encoded.shape, dtype=np.int64)
        out[piece.name] = np.ascontiguousarray(arr).reshape(piece.shape)
    return out


class _Encoding:
    """Quantizes one weight as its pieces are read: the calibration (the costly search) is
    done once and kept (it is small); the codes are made when their piece is written."""

    def __init__(self, module: str, tensor: Tensor, codec: AffineCodec):
        self.module, self.tensor, self.codec = module, tensor, codec
        self.calibration: Any = None

    def array(self, piece: Piece) -> np.ndarray:
        values = None
        if self.calibration is None:
            values = self.tensor.numpy()
            self.calibration = self.codec.calibrate(values)
        cal = self.calibration
        if piece.part == "codes":
            values = self.tensor.numpy() if values is None else values
            encoded = self.codec.encode(values, calibration=cal)
        else:
            zero = None if self.codec.scheme.symmetric else cal.zero_point
            codes = np.broadcast_to(np.zeros((), self.codec.code_dtype), self.tensor.shape)
            encoded = Encoded(self.codec, codes, cal.scale, zero)
        return stored_arrays(self.module, encoded, only=piece.name)[piece.name]


class _PieceSource(Source):
    def __init__(self, encoding: _Encoding, piece: Piece):
        self.encoding, self.piece = encoding, piece

    def raw(self) -> np.ndarray:
        if self.piece.part == "shape":
            return np.array(self.encoding.tensor.shape, dtype="<i8").view(np.uint8)
        arr = self.encoding.array(self.piece)
        return np.ascontiguousarray(arr).view(np.uint8).reshape(-1)


def module_of(name: str) -> str:
    """`a.b.weight` -> `a.b` (the module a weight belongs to)."""
    return name[: -len(".weight")] if name.endswith(".weight") else name


def quantized_tensors(tensor: Tensor, codec: AffineCodec) -> list[Tensor]:
    """Lazy tensors of `tensor` quantized by `codec` (encoded when first read)."""
    module = module_of(tensor.name)
    codec.parameter_shape(tensor.shape)  # shape problems surface now, not mid-write
    encoding = _Encoding(module, tensor, codec)
    return [Tensor(p.name, p.shape, p.codec, _PieceSource(encoding, p)) for p in pieces(
        module, tensor.shape, codec)]  # fmt: skip


def config(codecs: dict[str, AffineCodec], ignore: list[str]) -> dict[str, Any]:
    """compressed-tensors' quantization_config for modules quantized with `codecs`."""
    by_codec: dict[AffineCodec, list[str]] = {}
    for module, codec in codecs.items():
        by_codec.setdefault(codec, []).append(module)
    groups = {}
    formats = set()
    for i, (codec, modules) in enumerate(by_codec.items()):
        s = codec.scheme
        formats.add(format_of(s))
        groups[f"group_{i}"] = {
            "targets": modules,
            "weights": {
                "num_bits": s.bits,
                "type": "int",
                "symmetric": s.symmetric,
                "strategy": _STRATEGY[s.granularity],
                "group_size": s.group_size if s.granularity == "group" else None,
                "block_structure": None,
                "dynamic": False,
                "actorder": None,
                "observer": s.calibration.config()["method"],
                "observer_kwargs": {},
            },
            "input_activations": None,
            "output_activations": None,
            "format": format_of(s),
        }
    return {
        "quant_method": "compressed-tensors",
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "config_groups": groups,
        "ignore": ignore,
        "quantization_status": "compressed",
        "kv_cache_scheme": None,
        CODECS_KEY: {m: c.name for m, c in codecs.items()},
    }


def quantize_bundle(
    bundle: Bundle, codec_for: Callable[[Tensor], AffineCodec | None]
) -> tuple[Bundle, dict[str, AffineCodec]]:
    """A bundle whose tensors `codec_for` gives a codec are replaced by their pieces (lazy),
    with the quantization_config metadata; and the codec of each source tensor quantized."""
    out = Bundle(Metadata(bundle.metadata.typed_items()), format=bundle.format, path=bundle.path)
    codecs: dict[str, AffineCodec] = {}
    ignore: list[str] = []
    for t in bundle.tensors.values():
        codec = codec_for(t)
        if codec is None:
            if t.name.endswith(".weight") and len(t.shape) >= 2:
                ignore.append(module_of(t.name))
            out.add(t)
            continue
        codecs[t.name] = codec
        for piece in quantized_tensors(t, codec):
            out.add(piece)
    if codecs:
        cfg = config({module_of(n): c for n, c in codecs.items()}, ignore)
        out.metadata.set(CONFIG_KEY, json.dumps(cfg, sort_keys=True), ValueType.STRING)
    return out, codecs


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Group:
    """A quantized weight found in a bundle: its module, scheme and stored tensors."""

    module: str
    scheme: Scheme
    format: str
    names: dict[str, str]  # part -> tensor name
    shape: tuple[int, ...]

    @property
    def first(self) -> str:
        return min(self.names.values(), key=len)


def read_config(bundle: Bundle) -> dict[str, Any] | None:
    """The compressed-tensors quantization_config of a bundle: its metadata's, else the
    `config.json` beside the file (where other tools put it)."""
    text = bundle.metadata.get(CONFIG_KEY)
    if text is None and bundle.path:
        folder = bundle.path if os.path.isdir(bundle.path) else os.path.dirname(bundle.path)
        candidate = os.path.join(folder, "config.json")
        if os.path.isfile(candidate):
            try:
                with open(candidate, encoding="utf-8") as f:
                    cfg = json.load(f).get(CONFIG_KEY)
            except (OSError, ValueError, AttributeError):
                cfg = None
            text = cfg
    if text is None:
        return None
    try:
        cfg = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        raise FormatError(bundle.path, None, f"{CONFIG_KEY} is not JSON") from None
    if not isinstance(cfg, dict) or cfg.get("quant_method") != "compressed-tensors":
        return None
    return cfg


def groups(bundle: Bundle) -> dict[str, Group]:
    """Every quantized weight of a compressed-tensors bundle, by module."""
    cfg = read_config(bundle)
    if cfg is None:
        return {}
    named = cfg.get(CODECS_KEY) or {}
    found = {}
    for scale_name in [n for n in bundle.tensors if n.endswith(SCALE_SUFFIX)]:
        module = scale_name[: -len(SCALE_SUFFIX)]
        scheme, fmt = _scheme_of(cfg, module, named)
        if scheme is None:
            continue
        found[module] = _group(bundle, module, scheme, fmt)
    return found


def _scheme_of(cfg: dict, module: str, named: dict) -> tuple[Scheme | None, str]:
    for group in (cfg.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        if not _targets(group.get("targets") or [], module) or weights.get("type", "int") != "int":
            continue
        fmt = group.get("format") or cfg.get("format") or "pack-quantized"
        if module in named:
            return AffineCodec(named[module]).scheme, fmt
        strategy = weights.get("strategy", "tensor")
        if strategy not in _STRATEGY:
            raise UsageError(f"{module}: compressed-tensors strategy {strategy!r} is not supported")
        return Scheme(
            bits=int(weights.get("num_bits", 8)),
            symmetric=bool(weights.get("symmetric", True)),
            granularity=strategy,
            group_size=int(weights.get("group_size") or 128),
        ), fmt
    return None, ""


def _targets(targets: list[str], module: str) -> bool:
    for t in targets:
        if t.startswith("re:"):
            if re.match(t[3:], module):
                return True
        elif t == module or t == "Linear" or module.endswith("." + t):
            return True  # a class name: every module stored with scales is one
    return False


def _group(bundle: Bundle, module: str, scheme: Scheme, fmt: str) -> Group:
    t = bundle.tensors
    names = {"scale": f"{module}.weight_scale"}
    if f"{module}.weight_zero_point" in t:
        names["zero_point"] = f"{module}.weight_zero_point"
    if f"{module}.weight_packed" in t:
        names["codes"] = f"{module}.weight_packed"
        if f"{module}.weight_shape" not in t:
            raise FormatError(bundle.path, None, f"{module}.weight_packed has no weight_shape")
        names["shape"] = f"{module}.weight_shape"
        shape = tuple(int(v) for v in t[names["shape"]].numpy().reshape(-1))
        fmt = "pack-quantized"
    elif f"{module}.weight" in t:
        names["codes"] = f"{module}.weight"
        shape = t[names["codes"]].shape
        fmt = "int-quantized" if fmt == "pack-quantized" else fmt
    else:
        raise FormatError(bundle.path, None, f"{module}.weight_scale has no codes beside it")
    return Group(module, scheme, fmt, names, shape)


def decode_group(bundle: Bundle, group: Group) -> np.ndarray:
    """The float32 values of a quantized weight."""
    s = group.scheme
    t = bundle.tensors
    shift = 1 << (s.bits - 1)
    codes_t = t[group.names["codes"]]
    if codes_t.codec.name == "i32" and group.format == "pack-quantized":
        rows, cols = _rows_cols(group.shape)
        words = codes_t.numpy().reshape(rows, -1)
        codes = packing.unpack_int32(words, s.bits, cols).astype(np.int32) - shift
    else:
        codes = codes_t.numpy().astype(np.int32)
    codes = codes.reshape(group.shape)
    scale = t[group.names["scale"]].numpy()
    zero = None
    if "zero_point" in group.names:
        z = t[group.names["zero_point"]]
        if z.codec.name == "i32" and group.format == "pack-quantized":
            pshape = AffineCodec(s).parameter_shape(group.shape)
            zero = (
                packing.unpack_int32(z.numpy().T.copy(), s.bits, pshape[0]).T.astype(np.int32)
                - shift
            )
        else:
            zero = z.numpy().astype(np.int32)
    try:
        return dequantize(codes, scale, zero, s, group.shape)
    except UsageError as e:
        raise FormatError(bundle.path, None, f"{group.module}: {e}") from None


class _DecodedSource(Source):
    def __init__(self, bundle: Bundle, group: Group):
        self.bundle, self.group = bundle, group

    def raw(self) -> np.ndarray:
        return decode_group(self.bundle, self.group).astype("<f4").view(np.uint8).reshape(-1)

    def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
        yield from Source.iter_raw(self, chunk_bytes)


def dequantized(bundle: Bundle, found: dict[str, Group] | None = None) -> Bundle:
    """The bundle with every quantized weight replaced by one F32 `<m>.weight` (decoded when
    read), and without the quantization_config."""
    found = groups(bundle) if found is None else found
    if not found:
        return bundle
    owner = {name: g for g in found.values() for name in g.names.values()}
    md = Metadata((k, v) for k, v in bundle.metadata.typed_items() if k != CONFIG_KEY)
    out = Bundle(md, format=bundle.format, path=bundle.path, format_info=bundle.format_info)
    done = set()
    for name, tensor in bundle.tensors.items():
        g = owner.get(name)
        if g is None:
            out.add(tensor)
        elif g.module not in done:
            done.add(g.module)
            out.add(Tensor(f"{g.module}.weight", g.shape, "f32", _DecodedSource(bundle, g)))
    return out


def write_model_config(bundle: Bundle, folder: str, force: bool = True) -> None:
    """Put the bundle's quantization_config into `<folder>/config.json` (the folder's own
    config.json, else the source folder's, else a new one), as Transformers and vLLM read
    compressed-tensors models."""
    text = bundle.metadata.get(CONFIG_KEY)
    if not isinstance(text, str):
        return
    from bundler.atomic import atomic_output

    target = os.path.join(folder, "config.json")
    sources = [target]
    if bundle.path:
        src = bundle.path if os.path.isdir(bundle.path) else os.path.dirname(bundle.path)
        sources.append(os.path.join(src, "config.json"))
    model: dict[str, Any] = {}
    for candidate in sources:
        if os.path.isfile(candidate):
            try:
                with open(candidate, encoding="utf-8") as f:
                    loaded = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(loaded, dict):
                model = loaded
                break
    model[CONFIG_KEY] = json.loads(text)
    with atomic_output(target, force=True) as f:
        f.write((json.dumps(model, indent=2, sort_keys=True) + "\n").encode("utf-8"))
