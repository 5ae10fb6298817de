"""Reading ONNX models: every tensor wherever it lives, bit for bit as onnx.numpy_helper
reads it, with unique stable names."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx_samples import ELEMENT_ARRAYS, every_type_model, nested_model

from bundler.bundle import FileSource
from bundler.containers import detect, open_bundle
from bundler.containers.onnx.graph import scopes


def _same(tensor, array: np.ndarray) -> bool:
    """The tensor's stored bytes and shape are the array's."""
    return tensor.shape == array.shape and tensor.raw().tobytes() == array.tobytes()


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed_fields"])
def test_every_element_type_reads_as_numpy_helper_does(raw, tmp_path):
    path = tmp_path / "types.onnx"
    onnx.save(every_type_model(raw), path)
    bundle = open_bundle(path)
    assert detect(path) == "onnx"
    assert bundle.metadata["onnx.skipped"] == ["strings"]
    for name, array in ELEMENT_ARRAYS.items():
        t = bundle.tensors[name]
        if name in ("int4", "uint4"):  # widened to int8 / uint8, values unchanged
            assert t.codec.name == ("i8" if name == "int4" else "u8")
            assert t.numpy().tolist() == array.astype(np.int16).tolist()
        elif name == "f4":  # store-only codec: the packed bytes are ONNX's
            assert t.raw().tobytes() == numpy_helper.from_array(array).raw_data
        else:
            assert t.codec.name == name
            assert _same(t, array), name


def test_constants_and_subgraph_tensors_get_unique_path_names(tmp_path):
    path = tmp_path / "nested.onnx"
    onnx.save(nested_model(), path)
    bundle = open_bundle(path)
    assert list(bundle.tensors) == [
        "w", "cf", "ci",
        "If_0/else_branch/inner", "If_0/else_branch/bw",
        "If_0/then_branch/inner", "If_0/then_branch/bw",
    ]  # fmt: skip
    assert bundle.tensors["cf"].numpy().tolist() == [1.0, 2.0]
    assert bundle.tensors["ci"].numpy().tolist() == 7
    assert bundle.tensors["If_0/else_branch/bw"].numpy().tolist() == [[-0.25] * 2] * 3


def test_external_data_is_read_in_place_from_its_file(tmp_path):
    model = nested_model()
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ext.bin", size_threshold=0)
    bundle = open_bundle(path)
    w = bundle.tensors["w"]
    assert isinstance(w.source, FileSource) and w.source.path.endswith("ext.bin")
    assert w.numpy().tolist() == np.arange(6).reshape(2, 3).tolist()


def _reference_tensors(model: onnx.ModelProto) -> list[np.ndarray]:
    """Every TensorProto of the model in graph order, through numpy_helper."""
    out = []
    for scope in scopes(model.graph):
        out += [numpy_helper.to_array(t) for t in scope.graph.initializer]
        for node in scope.graph.node:
            if node.op_type == "Constant":
                out += [numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"]
    return out


@pytest.mark.realfile
@pytest.mark.parametrize(
    "name", ["silero_vad.onnx", "silero_vad_16k_op15.onnx", "silero_vad_half.onnx"]
)
def test_silero_models_read_every_tensor_bit_for_bit(name, silero_vad_onnx):
    path = silero_vad_onnx[name]
    bundle = open_bundle(path)
    expected = _reference_tensors(onnx.load(path))
    assert len(bundle.tensors) == len(expected)
    for tensor, array in zip(bundle.tensors.values(), expected, strict=True):
        assert _same(tensor, array), tensor.name
    in_branches = any(n.startswith("If_0/") and n.endswith("weight_ih") for n in bundle.tensors)
    assert in_branches == (name == "silero_vad.onnx")  # the others keep them top-level


def test_graphs_are_found_in_other_domains_ops_and_the_default_domain_s_control_flow(tmp_path):
    def body(tag: str) -> onnx.GraphProto:
        w = numpy_helper.from_array(np.full((2, 2), 1.0, np.float32), "w_" + tag)
        return helper.make_graph(
            [helper.make_node("Identity", ["w_" + tag], ["o_" + tag])], tag, [],
            [helper.make_tensor_value_info("o_" + tag, 1, None)], initializer=[w],
        )  # fmt: skip

    custom = helper.make_node("Beam", ["x"], ["y"], domain="com.example", name="beam")
    custom.attribute.append(helper.make_attribute("decoders", [body("a"), body("b")]))
    branch = helper.make_node(
        "If", ["c"], ["z"], then_branch=body("then"), else_branch=body("else"), name="if"
    )
    graph = helper.make_graph(
        [custom, branch], "g",
        [helper.make_tensor_value_info("x", 1, [2]), helper.make_tensor_value_info("c", 9, [])],
        [helper.make_tensor_value_info("y", 1, None), helper.make_tensor_value_info("z", 1, None)],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    path = tmp_path / "graphs.onnx"
    onnx.save(model, path)
    assert list(open_bundle(path).tensors) == [
        "beam/decoders.0/w_a", "beam/decoders.1/w_b",  # attribute order (make_node sorts)
        "if/else_branch/w_else", "if/then_branch/w_then",
    ]  # fmt: skip
