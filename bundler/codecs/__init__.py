"""Block and element codecs: one registry, one module per family.

`facts` declares every codec's layout and ids; `registry` looks them up and wraps their
kernels; `floats`, `legacy`, `kquants` and `apr_native` hold the kernels of each family.
"""

from bundler.codecs.facts import TABLE, CodecFacts
from bundler.codecs.registry import (
    Codec,
    all_codecs,
    by_apr_code,
    by_ggml_id,
    by_safetensors_dtype,
    get,
    kernel_threads,
    names,
    set_threads,
    thread_count,
)

__all__ = [
    "TABLE",
    "Codec",
    "CodecFacts",
    "all_codecs",
    "by_apr_code",
    "by_ggml_id",
    "by_safetensors_dtype",
    "get",
    "kernel_threads",
    "names",
    "set_threads",
    "thread_count",
]
