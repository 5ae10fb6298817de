"""What an ONNX model holds beyond its tensors: IR version, opsets, producer, graph sizes,
external-data files, and the model file a rewrite goes back into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bundler.containers.onnx.schema import NAME
from bundler.containers.protocol import Details


@dataclass(frozen=True)
class OnnxDetails(Details):
    FORMAT = NAME

    #: the model file a bundle read from it is written back into (None: weights only)
    model: str | None = None
    ir_version: int = 0
    #: (domain, version) pairs, the default domain as "ai.onnx"
    opsets: tuple[tuple[str, int], ...] = ()
    producer: str = ""
    graphs: int = 0
    nodes: int = 0
    #: external-data files the tensors live in, relative to the model
    external_files: tuple[str, ...] = ()

    def facts(self) -> dict[str, Any]:
        return {
            "ir_version": self.ir_version,
            "opsets": dict(self.opsets),
            "producer": self.producer,
            "graphs": self.graphs,
            "nodes": self.nodes,
            "external_files": list(self.external_files),
        }

    def headline(self, size: str) -> str:
        opset = dict(self.opsets).get("ai.onnx")
        return (
            f"ONNX IR v{self.ir_version}, opset {opset}, {self.nodes:,} nodes in "
            f"{self.graphs} graph(s); {size}"
        )
