"""Writing ONNX: a bundle read from an ONNX model goes back into that model (tensors whose
bytes did not change keep their TensorProto as it was, so an unchanged bundle gives a
protobuf-equal model); any other bundle becomes a weights-only model (initializers, no
nodes). Models over the protobuf limit keep their large tensors in one external-data file
beside the model. Output appears atomically."""

from __future__ import annotations

import os
from typing import Any

from bundler.atomic import atomic_output, output_group
from bundler.bundle import Bundle, Tensor
from bundler.containers.onnx import deps
from bundler.containers.onnx.details import OnnxDetails
from bundler.containers.onnx.graph import sites
from bundler.containers.onnx.reader import EXTERNAL, load_model, site_tensor
from bundler.containers.onnx.schema import CODEC_TO_ELEMENT, ELEMENT_TYPES, WIDENED
from bundler.errors import UsageError

#: Serialized models at least this large keep their large tensors in an external file
#: (protobuf cannot hold a message over 2 GiB).
EXTERNAL_LIMIT = (2 << 30) - (64 << 20)
#: Tensors at least this large go to the external file of such a model.
EXTERNAL_MIN_BYTES = 1024
#: Alignment of each tensor in an external-data file.
EXTERNAL_ALIGN = 64


def write(bundle: Bundle, path: str, force: bool = True, **options: Any) -> None:
    """Write `bundle` as an ONNX model at `path` (an existing `path` is refused unless
    `force`)."""
    if options:
        raise UsageError(f"ONNX output takes no options ({', '.join(options)})")
    details = OnnxDetails.of(bundle)
    source = details.model if details else None
    model = onto_source(bundle, source) if source else weights_only(bundle)
    save_model(model, path, force=force)


def onto_source(bundle: Bundle, source: str) -> Any:
    """The model at `source` holding `bundle`'s tensors (same names, shapes and types)."""
    model = load_model(source)
    found = sites(model)
    names = {s.name for s in found}
    extra = [n for n in bundle.tensors if n not in names]
    if extra:
        raise UsageError(
            f"ONNX output rewrites the source model's tensors; {extra[0]!r} is not one of them"
        )
    for site in found:
        tensor = bundle.tensors.get(site.name)
        original = site_tensor(source, site)
        if tensor is None or original is None:
            continue
        if tensor.codec != original.codec or tensor.shape != original.shape:
            raise UsageError(
                f"tensor {site.name!r}: ONNX output keeps each tensor's element type and shape "
                f"({original.codec.name} {list(original.shape)}, asked {tensor.codec.name}); "
                "quantize ONNX models with `bundler quantize model.onnx -o out.onnx --type int8`"
            )
        proto = site.proto()
        external = proto is not None and proto.data_location == EXTERNAL
        if not external and _same_bytes(tensor, original):
            continue
        if proto is None or proto.data_type in WIDENED:
            raise UsageError(f"tensor {site.name!r}: cannot be rewritten in place")
        _set_raw(proto, tensor.raw().tobytes())
    return model


def _same_bytes(a: Tensor, b: Tensor) -> bool:
    return a.source is b.source or a.raw().tobytes() == b.raw().tobytes()


def _set_raw(proto: Any, raw: bytes) -> None:
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        proto.ClearField(field)
    del proto.external_data[:]
    proto.data_location = 0
    proto.raw_data = raw


def weights_only(bundle: Bundle) -> Any:
    """A model with no nodes whose initializers are `bundle`'s tensors; metadata as
    metadata_props (strings)."""
    onnx = deps.onnx()
    initializers = []
    for t in bundle.tensors.values():
        element = CODEC_TO_ELEMENT.get(t.codec.name)
        if element is None:
            raise UsageError(
                f"tensor {t.name!r}: ONNX has no element type for codec {t.codec.name} "
                "(convert to a float or integer type first)"
            )
        proto = onnx.TensorProto(name=t.name, dims=list(t.shape), data_type=element)
        proto.raw_data = t.raw().tobytes()
        initializers.append(proto)
    graph = onnx.helper.make_graph([], "weights", [], [], initializer=initializers)
    model = onnx.helper.make_model(graph, producer_name="bundler")
    for key, value in bundle.metadata.typed_items():
        model.metadata_props.add(key=key, value=str(value.plain()))
    return model


def save_model(model: Any, path: str, force: bool = True, under_limit: bool = False) -> list[str]:
    """Write `model` at `path` atomically (and its external-data file when too large for
    one protobuf); returns the files written. `under_limit`: the caller knows the model is
    far smaller than that (its size is then not measured, which costs a serialization)."""
    path = os.fspath(path)
    if under_limit or model.ByteSize() < EXTERNAL_LIMIT:
        with atomic_output(path, force=force) as f:
            f.write(model.SerializeToString())
        return [path]
    from onnx.external_data_helper import set_external_data

    from bundler.containers.onnx.graph import scopes

    location = os.path.basename(path) + ".data"
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), location)
    with output_group(path):
        with atomic_output(data_path, force=force) as data:
            for scope in scopes(model.graph):
                for proto in _protos(scope.graph):
                    if len(proto.raw_data) < EXTERNAL_MIN_BYTES:
                        continue
                    data.write(b"\0" * (-data.tell() % EXTERNAL_ALIGN))
                    offset = data.tell()
                    data.write(proto.raw_data)
                    set_external_data(proto, location, offset, len(proto.raw_data))
                    proto.data_location = EXTERNAL
                    proto.ClearField("raw_data")
        with atomic_output(path, force=force) as f:
            f.write(model.SerializeToString())
    return [data_path, path]


def _protos(graph: Any):
    yield from graph.initializer
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    yield attr.t


__all__ = ["ELEMENT_TYPES", "save_model", "write"]
