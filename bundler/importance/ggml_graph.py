"""The nodes of a llama.cpp compute graph as llama-cpp-python's bundled ggml library hands
them to an eval callback (`llama_context_params.cb_eval`): a ctypes view of `struct
ggml_tensor` and the few ggml functions needed to read a matrix product's inputs.

llama-cpp-python binds the callback type but not the tensor struct; the struct's fields are
ggml.h's (the ggml that llama-cpp-python 0.3.36 vendors): type, buffer, ne[4], nb[4], op,
op_params[16 x int32], flags, src[10], view_src, view_offs, data, name[64], extra,
padding[8]. `check_layout` compares the view with ggml's own accessors (name, element
count, the size ggml reports for a tensor) before any value is trusted, so a library with
another layout is an error, never a misread.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from bundler.errors import BundlerError

MAX_DIMS, MAX_SRC, MAX_NAME, MAX_OP_PARAMS = 4, 10, 64, 64
#: sizeof(struct ggml_object), which ggml_tensor_overhead() adds to the tensor's size.
OBJECT_SIZE = 32
#: GGML_TYPE_F32 and GGML_TYPE_I32.
F32, I32 = 0, 26


class GgmlTensor(ctypes.Structure):
    """`struct ggml_tensor` (ggml.h)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * MAX_DIMS),
        ("nb", ctypes.c_size_t * MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


class LayoutError(BundlerError):
    """llama-cpp-python's ggml does not lay out its tensors as bundler reads them."""


@cache
def ggml(llama_cpp: ModuleType) -> ctypes.CDLL:
    """ggml's base library as llama-cpp-python loaded it, with the signatures used here."""
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    names = [n for n in os.listdir(lib_dir) if n.startswith("libggml-base")] if os.path.isdir(
        lib_dir
    ) else []  # fmt: skip
    if not names:
        raise LayoutError(
            f"llama-cpp-python at {lib_dir} ships no libggml-base library: bundler cannot "
            "read the model's activations"
        )
    lib = ctypes.CDLL(os.path.join(lib_dir, sorted(names, key=len)[0]))
    ptr = [ctypes.c_void_p]
    for name, restype, argtypes in (
        ("ggml_get_name", ctypes.c_char_p, ptr),
        ("ggml_op_desc", ctypes.c_char_p, ptr),
        ("ggml_nelements", ctypes.c_int64, ptr),
        ("ggml_nbytes", ctypes.c_size_t, ptr),
        ("ggml_tensor_overhead", ctypes.c_size_t, []),
        ("ggml_backend_buffer_is_host", ctypes.c_bool, ptr),
        ("ggml_backend_tensor_get", None, [*ptr, ctypes.c_void_p, *[ctypes.c_size_t] * 2]),
    ):  # fmt: skip
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def check_layout(lib: ctypes.CDLL, address: int) -> None:
    """Raise LayoutError unless the struct view of the tensor at `address` agrees with
    ggml's accessors."""
    t = GgmlTensor.from_address(address)
    size = lib.ggml_tensor_overhead() - OBJECT_SIZE
    problems = []
    if size != ctypes.sizeof(GgmlTensor):
        problems.append(
            f"ggml's tensors are {size} bytes, bundler reads {ctypes.sizeof(GgmlTensor)}"
        )
    elif t.name != lib.ggml_get_name(address):
        problems.append("tensor names are not where bundler reads them")
    elif int(np.prod(list(t.ne))) != lib.ggml_nelements(address):
        problems.append("tensor shapes are not where bundler reads them")
    if problems:
        raise LayoutError(
            f"llama-cpp-python's ggml lays out its tensors otherwise than ggml.h 0.3.36 "
            f"({problems[0]}): bundler cannot read the model's activations"
        )


def op(lib: ctypes.CDLL, address: int) -> str:
    """The node's operation (MUL_MAT, MUL_MAT_ID, ADD, ...)."""
    return lib.ggml_op_desc(address).decode("ascii", "replace")


def rows(lib: ctypes.CDLL, t: GgmlTensor, address: int) -> np.ndarray:
    """The F32 tensor `t` (at `address`) as (rows, ne[0]) float32, copied."""
    ne, nb = list(t.ne), list(t.nb)
    if t.type != F32 or nb[0] != 4:
        raise BundlerError(f"activation {t.name.decode()!r} is not contiguous float32 rows")
    shape = (ne[3], ne[2], ne[1], ne[0])
    strides = (nb[3], nb[2], nb[1], nb[0])
    if lib.ggml_backend_buffer_is_host(t.buffer):
        span = sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + 4
        raw = (ctypes.c_char * span).from_address(t.data)
        view: Any = np.ndarray(shape, np.float32, raw, 0, strides)
    else:  # in a device's memory: ggml copies it out
        nbytes = lib.ggml_nbytes(address)
        buf = np.empty(nbytes, np.uint8)
        lib.ggml_backend_tensor_get(address, buf.ctypes.data, 0, nbytes)
        view = np.ndarray(shape, np.float32, buf, 0, strides)
    return np.array(view, dtype=np.float32).reshape(-1, ne[0])
