"""Block and element codecs: one registry, one module per family.

`facts` declares every codec's layout, fields and ids; `registry` looks them up and wraps
their kernels; `kernels` loads the kernel modules (compilation, threads); `halfs` holds the
half-precision helpers; `warmup` compiles kernels ahead of use; `floats`, `legacy`,
`kquants` and `apr_native` hold the kernels of each family.
"""

from bundler.codecs.facts import TABLE, CodecFacts
from bundler.codecs.kernels import kernel_threads, set_threads, thread_count
from bundler.codecs.registry import (
    Codec,
    all_codecs,
    by_apr_code,
    by_ggml_id,
    by_numpy_dtype,
    by_safetensors_dtype,
    get,
    names,
)

__all__ = [
    "TABLE",
    "Codec",
    "CodecFacts",
    "all_codecs",
    "by_apr_code",
    "by_ggml_id",
    "by_numpy_dtype",
    "by_safetensors_dtype",
    "get",
    "kernel_threads",
    "names",
    "set_threads",
    "thread_count",
]
