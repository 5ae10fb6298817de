"""An independent float64 restatement of affine quantization (PyTorch / compressed-tensors
formulas), written from the formulas rather than from bundler's code: loops over slices,
no shared helpers."""

from __future__ import annotations

import ml_dtypes
import numpy as np

SCALE = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}


def slice_index(shape, granularity, axis=0, group=128):
    """For every element, the flat index of its slice, and the parameter shape."""
    idx = np.indices(shape).reshape(len(shape), -1)
    if granularity == "tensor":
        return np.zeros(idx.shape[1], dtype=np.int64), (1,)
    if granularity == "channel":
        pshape = tuple(d if i == axis else 1 for i, d in enumerate(shape))
        return idx[axis], pshape
    lead = shape[:-1]
    ng = shape[-1] // group
    flat_lead = np.ravel_multi_index(idx[:-1], lead) if lead else np.zeros(idx.shape[1], int)
    return flat_lead * ng + idx[-1] // group, (*lead, ng)


def minmax_ranges(x, granularity, axis=0, group=128):
    sid, pshape = slice_index(x.shape, granularity, axis, group)
    n = int(np.prod(pshape))
    flat = x.reshape(-1).astype(np.float64)
    lo = np.array([flat[sid == i].min() for i in range(n)])
    hi = np.array([flat[sid == i].max() for i in range(n)])
    return lo, hi


def quantize(
    x, bits, symmetric, granularity, lo, hi, axis=0, group=128, scale_dtype="f32", extreme=False
):
    """codes (x's shape), scale (param shape, scale dtype), zero point (param shape).
    `extreme`: symmetric scales are the slice's value of largest magnitude (the negative
    one on a tie) over the lowest code, ONNX Runtime's 4-bit block rule, so that value is
    the lowest code."""
    qmin = -(2 ** (bits - 1)) if symmetric else 0
    qmax = 2 ** (bits - 1) - 1 if symmetric else 2**bits - 1
    sid, pshape = slice_index(x.shape, granularity, axis, group)
    scales, zeros = [], []
    for a, b in zip(lo, hi, strict=True):
        a, b = float(a), float(b)
        if a == b:
            s = abs(a) or 1.0
        else:
            a0, b0 = min(a, 0.0), max(b, 0.0)
            half = (qmax - qmin) / 2
            if symmetric and extreme:
                s = (a0 if abs(a0) >= abs(b0) else b0) / qmin
            elif symmetric:
                s = max(-a0, b0) / half
            else:
                s = (b0 - a0) / (qmax - qmin)
            s = s or 1.0
        s = SCALE[scale_dtype](np.float32(s))
        zp = 0
        if not symmetric:
            zp = int(min(max(np.rint(qmin - min(a, 0.0) / float(s)), qmin), qmax))
        scales.append(s)
        zeros.append(zp)
    scales = np.array(scales, dtype=SCALE[scale_dtype])
    zeros = np.array(zeros)
    s64 = scales.astype(np.float64)[sid]
    q = np.clip(np.rint(x.reshape(-1).astype(np.float64) / s64) + zeros[sid], qmin, qmax)
    return q.reshape(x.shape).astype(np.int64), scales.reshape(pshape), zeros.reshape(pshape)
