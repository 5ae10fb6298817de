"""Whether two converters wrote the same GGUF tensors: the check beside every timed
conversion."""

from __future__ import annotations

from typing import Any

import numpy as np


def compare_outputs(ours: str, theirs: str) -> dict[str, Any]:
    """Tensor by tensor (names, types, shapes, bytes), read with gguf.GGUFReader."""
    import gguf

    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    differ = sorted(set(a) ^ set(b))
    for name in sorted(set(a) & set(b)):
        x, y = a[name], b[name]
        same = (
            x.tensor_type == y.tensor_type
            and list(x.shape) == list(y.shape)
            and np.array_equal(np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8))
        )
        if not same:
            differ.append(name)
    return {"tensors": len(a), "equal": not differ, "differ": differ[:10]}
