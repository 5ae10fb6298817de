"""Quantized collections as bundle tensors plus metadata (formats/vectors.md), so that a
collection is stored in SafeTensors, GGUF or APR alike and converts between them unchanged.

A collection NAME of one scheme is three tensors, `NAME.codes` (int8, N x data bytes: the
packed data reinterpreted, every container has int8), `NAME.scale` and `NAME.min` (float32,
N), and the metadata keys `vectors.NAME.scheme` (string) and `vectors.NAME.dim` (uint32).
A mixed collection (adaptive choice) has `vectors.NAME.scheme` = "mixed" and one such
group per scheme used, `NAME.SCHEME.codes/.scale/.min` plus `NAME.SCHEME.rows` (int64,
the group's positions in the collection).

A collection with per-dimension ranges (bundler.codecs.vectors.dimensions) has
`vectors.NAME.ranges` = "dimension" (and `vectors.NAME.fit`), `NAME.codes`, and one scale
and min per dimension, `NAME.dim_scale` and `NAME.dim_min` (float32, D), instead of the
per-vector ones. A Binary collection written with `fields=False` has
`vectors.NAME.ranges` = "none" and only `NAME.codes`: its scale is always 1 and its mean
is used neither to decode nor to search (read back, the mins are NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bundler.bundle import Bundle, Tensor, ValueType
from bundler.codecs.vectors.adaptive import MixedVectors
from bundler.codecs.vectors.dimensions import DimensionRanges, DimensionVectors
from bundler.codecs.vectors.schemes import QuantizedVectors, Scheme
from bundler.errors import DataCorrupted, InvalidScheme, UsageError

PREFIX = "vectors."
MIXED = "mixed"
#: `vectors.NAME.ranges` values: per-dimension ranges; no per-vector field (Binary only).
DIMENSION = "dimension"
NO_FIELDS = "none"


def _group_tensors(q: QuantizedVectors, stem: str) -> list[Tensor]:
    return [
        Tensor.from_raw(f"{stem}.codes", q.data.shape, "i8", q.data),
        Tensor.from_raw(f"{stem}.scale", (len(q),), "f32", q.scale.astype("<f4")),
        Tensor.from_raw(f"{stem}.min", (len(q),), "f32", q.min.astype("<f4")),
    ]


def add_to_bundle(
    bundle: Bundle,
    name: str,
    q: QuantizedVectors | MixedVectors | DimensionVectors,
    fields: bool = True,
) -> Bundle:
    """Add collection `name` (tensors and metadata) to `bundle`; returns the bundle.

    fields=False (Binary only) stores the codes without the per-vector scale and mean.
    """
    if any(k.startswith(f"{PREFIX}{name}.") for k in bundle.metadata):
        raise UsageError(f"the bundle already holds a vector collection {name!r}")
    if not fields and not (isinstance(q, QuantizedVectors) and q.scheme == Scheme.BINARY):
        raise UsageError("only a binary collection can be stored without its per-vector fields")
    md = bundle.metadata
    if isinstance(q, DimensionVectors):
        md.set(f"{PREFIX}{name}.scheme", q.scheme.value, ValueType.STRING)
        md.set(f"{PREFIX}{name}.ranges", DIMENSION, ValueType.STRING)
        md.set(f"{PREFIX}{name}.fit", q.ranges.fit, ValueType.STRING)
        bundle.add(Tensor.from_raw(f"{name}.codes", q.data.shape, "i8", q.data))
        for part, values in (("dim_scale", q.ranges.scale), ("dim_min", q.ranges.min)):
            bundle.add(Tensor.from_raw(f"{name}.{part}", (q.dim,), "f32", values.astype("<f4")))
    elif isinstance(q, QuantizedVectors):
        md.set(f"{PREFIX}{name}.scheme", q.scheme.value, ValueType.STRING)
        if fields:
            for t in _group_tensors(q, name):
                bundle.add(t)
        else:
            md.set(f"{PREFIX}{name}.ranges", NO_FIELDS, ValueType.STRING)
            bundle.add(Tensor.from_raw(f"{name}.codes", q.data.shape, "i8", q.data))
    else:
        bundle.metadata.set(f"{PREFIX}{name}.scheme", MIXED, ValueType.STRING)
        for scheme, group in q.groups.items():
            stem = f"{name}.{scheme.value}"
            for t in _group_tensors(group, stem):
                bundle.add(t)
            rows = q.rows[scheme].astype("<i8")
            bundle.add(Tensor.from_raw(f"{stem}.rows", rows.shape, "i64", rows))
    bundle.metadata.set(f"{PREFIX}{name}.dim", q.dim, ValueType.UINT32)
    return bundle


def to_bundle(
    q: QuantizedVectors | MixedVectors | DimensionVectors,
    name: str = "vectors",
    fields: bool = True,
) -> Bundle:
    """A new bundle holding collection `name`."""
    return add_to_bundle(Bundle(), name, q, fields)


def collections(bundle: Bundle) -> list[str]:
    """Names of the vector collections a bundle holds."""
    return [
        k[len(PREFIX) : -len(".scheme")]
        for k in bundle.metadata
        if k.startswith(PREFIX) and k.endswith(".scheme")
    ]


def _where(bundle: Bundle) -> str | None:
    return bundle.path


def _tensor(bundle: Bundle, name: str, codec: str, shape: tuple[int, ...]) -> np.ndarray:
    t = bundle.tensors.get(name)
    if t is None:
        raise DataCorrupted(_where(bundle), None, f"vector collection tensor {name!r} is missing")
    if t.codec.name != codec or t.shape != shape:
        raise DataCorrupted(
            _where(bundle),
            None,
            f"tensor {name!r} is {t.codec.name} {t.shape}, expected {codec} {shape}",
        )
    return np.asarray(t.raw())


def _codes(bundle: Bundle, stem: str, scheme: Scheme, dim: int) -> np.ndarray:
    codes = bundle.tensors.get(f"{stem}.codes")
    if codes is None or len(codes.shape) != 2:
        raise DataCorrupted(_where(bundle), None, f"{stem}.codes is missing or not 2-D")
    n = codes.shape[0]
    data = _tensor(bundle, f"{stem}.codes", "i8", (n, scheme.data_size(dim)))
    return data.reshape(n, -1).view(np.uint8)


def _group(bundle: Bundle, stem: str, scheme: Scheme, dim: int) -> QuantizedVectors:
    data = _codes(bundle, stem, scheme, dim)
    n = len(data)
    scale = _tensor(bundle, f"{stem}.scale", "f32", (n,)).view("<f4")
    low = _tensor(bundle, f"{stem}.min", "f32", (n,)).view("<f4")
    return QuantizedVectors(scheme, dim, scale, low, data)


def _ranged(bundle: Bundle, name: str, scheme: Scheme, dim: int, ranges: str):
    md: Any = bundle.metadata
    data = _codes(bundle, name, scheme, dim)
    if ranges == NO_FIELDS and scheme == Scheme.BINARY:
        n = len(data)
        return QuantizedVectors(scheme, dim, np.ones(n), np.full(n, np.nan), data)
    if ranges != DIMENSION:
        raise DataCorrupted(_where(bundle), None, f"{name}: unknown ranges {ranges!r}")
    try:
        r = DimensionRanges(
            scheme,
            _tensor(bundle, f"{name}.dim_scale", "f32", (dim,)).view("<f4"),
            _tensor(bundle, f"{name}.dim_min", "f32", (dim,)).view("<f4"),
            str(md.get(f"{PREFIX}{name}.fit", "minmax")),
        )
    except InvalidScheme as exc:
        raise DataCorrupted(_where(bundle), None, f"{name}: {exc}") from None
    except DataCorrupted as exc:
        raise DataCorrupted(_where(bundle), None, f"{name}: {exc.problem}") from None
    return DimensionVectors(r, data)


def from_bundle(
    bundle: Bundle, name: str | None = None
) -> QuantizedVectors | MixedVectors | DimensionVectors:
    """Collection `name` (the only one when None) read back from a bundle."""
    names = collections(bundle)
    if name is None:
        if len(names) != 1:
            raise UsageError(f"the bundle holds {len(names)} vector collections: {names}; name one")
        name = names[0]
    if name not in names:
        raise UsageError(f"no vector collection {name!r} in the bundle (it has {names})")
    md: Any = bundle.metadata
    dim = int(md[f"{PREFIX}{name}.dim"])
    label = md[f"{PREFIX}{name}.scheme"]
    if label != MIXED:
        try:
            scheme = Scheme.parse(label)
        except InvalidScheme:
            raise DataCorrupted(_where(bundle), None, f"unknown vector scheme {label!r}") from None
        ranges = md.get(f"{PREFIX}{name}.ranges")
        if ranges is not None:
            return _ranged(bundle, name, scheme, dim, str(ranges))
        return _group(bundle, name, scheme, dim)
    groups, rows = {}, {}
    for scheme in Scheme:
        stem = f"{name}.{scheme.value}"
        if f"{stem}.codes" in bundle.tensors:
            groups[scheme] = _group(bundle, stem, scheme, dim)
            n = len(groups[scheme])
            rows[scheme] = _tensor(bundle, f"{stem}.rows", "i64", (n,)).view("<i8").astype(np.int64)
    total = sum(len(g) for g in groups.values())
    schemes = np.full(total, 255, np.uint8)
    for scheme, r in rows.items():
        if r.size and (r.min() < 0 or r.max() >= total):
            raise DataCorrupted(_where(bundle), None, f"{name}.{scheme.value}.rows out of range")
        schemes[r] = scheme.code
    if (schemes == 255).any():
        raise DataCorrupted(_where(bundle), None, f"{name}: rows of the groups do not cover 0..N")
    return MixedVectors(dim, schemes, groups, rows)
