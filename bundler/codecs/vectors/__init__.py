"""Embedding vectors quantized one vector at a time: QInt8, QInt4, Binary and FP16 with
lnmp-quant's arithmetic (formats/vectors.md), on one vector or an (N, D) matrix; the wire
format; adaptive choice; batches where a bad vector fails alone; search on the codes; and
collections stored in any bundle format.
"""

from bundler.codecs.vectors.adaptive import (
    AccuracyTarget,
    AdaptiveReport,
    MixedVectors,
    quantize_adaptive,
    quantize_to_target,
)
from bundler.codecs.vectors.batch import BatchResult, BatchStats, quantize_batch
from bundler.codecs.vectors.dimensions import (
    DimensionRanges,
    DimensionVectors,
    fit_ranges,
    quantize_dims,
)
from bundler.codecs.vectors.schemes import (
    QuantizedVector,
    QuantizedVectors,
    Scheme,
    cosine,
    dequantize,
    quantize,
    vector_cosine,
)
from bundler.codecs.vectors.search import (
    code_stats,
    exact_search,
    hamming,
    recall,
    recall_at_k,
    scores,
    search,
    top_k,
)
from bundler.codecs.vectors.serialization import from_bytes, to_bytes
from bundler.codecs.vectors.storage import add_to_bundle, collections, from_bundle, to_bundle
from bundler.errors import (
    DataCorrupted,
    DecodingFailed,
    EncodingFailed,
    InvalidDimension,
    InvalidScheme,
    VectorError,
)

__all__ = [
    "AccuracyTarget",
    "AdaptiveReport",
    "BatchResult",
    "BatchStats",
    "DataCorrupted",
    "DecodingFailed",
    "DimensionRanges",
    "DimensionVectors",
    "EncodingFailed",
    "InvalidDimension",
    "InvalidScheme",
    "MixedVectors",
    "QuantizedVector",
    "QuantizedVectors",
    "Scheme",
    "VectorError",
    "add_to_bundle",
    "code_stats",
    "collections",
    "cosine",
    "dequantize",
    "exact_search",
    "fit_ranges",
    "from_bundle",
    "from_bytes",
    "hamming",
    "quantize",
    "quantize_adaptive",
    "quantize_batch",
    "quantize_dims",
    "quantize_to_target",
    "recall",
    "recall_at_k",
    "scores",
    "search",
    "to_bundle",
    "to_bytes",
    "top_k",
    "vector_cosine",
]
