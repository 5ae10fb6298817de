"""The values of a TensorProto as an array, or a `FormatError` naming the tensor when its
data does not fit its type and dims (the onnx package's own errors are untyped)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bundler.errors import FormatError


def tensor_values(proto: Any, name: str, path: str | None = None) -> np.ndarray:
    """`onnx.numpy_helper.to_array(proto)`; a `FormatError` (for the file `path`, when
    given) naming tensor `name` when it cannot be read."""
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(proto)
    except Exception as exc:  # the onnx package's own errors (ValueError, TypeError...)
        raise FormatError(path, None, f"tensor {name!r}: unreadable data: {exc}") from None
