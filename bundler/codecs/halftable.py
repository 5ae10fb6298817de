"""The float32 value of every IEEE binary16 bit pattern: the table the compiled kernels
read half-precision scales through, importable without the compiler."""

from __future__ import annotations

import numpy as np

#: float32 value of every half bit pattern.
HALF_TO_F32 = (
    np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
)
