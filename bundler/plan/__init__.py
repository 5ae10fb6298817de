"""Which codec each tensor of a bundle is written with, and why: the file types
(`filetypes`), what may be quantized and the fallbacks (`rules`), llama-quantize's mixtures
(`mixtures`), what the rules know of the model (`model`) and the planner (`planner`);
`affine` is the stage that makes or decodes affine-quantized weights around the planner;
`target` plans to a size target from each tensor's error-versus-bytes curve (`curves`) by
a greedy Lagrangian allocation (`allocate`), weighing errors without an importance matrix
by the sensitivity estimated from the weights (`sensitivity`)."""

from __future__ import annotations

from bundler.plan.filetypes import FILE_TYPES, FileType, file_type, for_codec
from bundler.plan.model import HyperParams, ModelInfo, model_info
from bundler.plan.planner import (
    QUANTIZATION_VERSION,
    Choice,
    Plan,
    PlanOptions,
    make_plan,
)
from bundler.plan.rules import FALLBACK, KEEP_PATTERN, LAST_RESORT, quantizable

__all__ = [
    "FALLBACK",
    "FILE_TYPES",
    "KEEP_PATTERN",
    "LAST_RESORT",
    "QUANTIZATION_VERSION",
    "Choice",
    "FileType",
    "HyperParams",
    "ModelInfo",
    "Plan",
    "PlanOptions",
    "file_type",
    "for_codec",
    "make_plan",
    "model_info",
    "quantizable",
]
