"""Checks shared by the formats whose reference runtime cannot run some of this project's
tensors."""

from __future__ import annotations

from bundler.bundle import Bundle
from bundler.problems import Problem


def affine_refused(bundle: Bundle, path: str, runtime: str) -> list[Problem]:
    """Affine-quantized weights (formats/affine.md) run in compressed-tensors readers (vLLM,
    Transformers) from SafeTensors; `runtime` (llama.cpp, aprender) has no such tensors."""
    from bundler.codecs.affine import checkpoint

    if checkpoint.read_config(bundle) is None:
        return []
    scales = [n for n in bundle.tensors if n.endswith(".weight_scale")]
    if not scales:
        return []
    message = (
        f"{runtime} cannot run affine-quantized weights (compressed-tensors layout, "
        f"{len(scales)} weights such as {scales[0][: -len('_scale')]!r}); decode them "
        "(--type f16) or convert to SafeTensors"
    )
    return [Problem(message, runtime, path, tensor=scales[0])]
