"""Small ONNX models for the ONNX container tests: every element type, Constant nodes,
subgraph bodies, external data."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper

#: numpy arrays of every element type numpy_helper can write (STRING and COMPLEX128 apart).
ELEMENT_ARRAYS = {
    "f32": np.array([[1.5, -2.25], [3.0, np.inf]], np.float32),
    "f16": np.array([0.5, -65504.0, 1e-4], np.float16),
    "bf16": np.array([1.0, -3.5], ml_dtypes.bfloat16),
    "f64": np.array([np.pi, -1e300]),
    "i8": np.array([-128, 127], np.int8),
    "u8": np.array([0, 255], np.uint8),
    "i16": np.array([-32768, 7], np.int16),
    "u16": np.array([65535, 1], np.uint16),
    "i32": np.array([-(2**31), 5], np.int32),
    "u32": np.array([2**32 - 1], np.uint32),
    "i64": np.array([-(2**63), 2**62], np.int64),
    "u64": np.array([2**64 - 1], np.uint64),
    "bool": np.array([True, False, True]),
    "c64": np.array([1 + 2j], np.complex64),
    "f8_e4m3": np.array([1.0, -448.0], ml_dtypes.float8_e4m3fn),
    "f8_e4m3fnuz": np.array([0.5], ml_dtypes.float8_e4m3fnuz),
    "f8_e5m2": np.array([2.0, -57344.0], ml_dtypes.float8_e5m2),
    "f8_e5m2fnuz": np.array([4.0], ml_dtypes.float8_e5m2fnuz),
    "f8_e8m0": np.array([1.0, 2.0**-10], ml_dtypes.float8_e8m0fnu),
    "f4": np.array([0.5, -6.0, 1.5, 0.0], ml_dtypes.float4_e2m1fn),
    "int4": np.array([-8, 7, 3], ml_dtypes.int4),
    "uint4": np.array([15, 0, 9], ml_dtypes.uint4),
}


def model_of(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def every_type_model(raw: bool = True) -> onnx.ModelProto:
    """One initializer per element type (raw_data or the typed fields), plus a STRING one."""
    inits = []
    for name, array in ELEMENT_ARRAYS.items():
        t = numpy_helper.from_array(array, name)
        if not raw and name not in ("f4", "int4", "uint4", "bf16") and not name.startswith("f8"):
            t = helper.make_tensor(name, t.data_type, array.shape, array.reshape(-1).tolist())
        inits.append(t)
    inits.append(numpy_helper.from_array(np.array([b"a", b"bc"], object), "strings"))
    graph = helper.make_graph([], "types", [], [], initializer=inits)
    return model_of(graph, 21)


def nested_model() -> onnx.ModelProto:
    """Initializer, Constant nodes (tensor, floats, int) and If branches holding a Constant
    and an initializer of the same name: names must come out unique."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")

    def branch(tag: str, scale: float) -> onnx.GraphProto:
        c = helper.make_node(
            "Constant", [], ["bw"],
            value=numpy_helper.from_array(np.full((3, 2), scale, np.float32)),
        )  # fmt: skip
        mm = helper.make_node("MatMul", ["x", "bw"], ["y_" + tag])
        init = numpy_helper.from_array(np.array([scale], np.float32), "inner")
        add = helper.make_node("Add", ["y_" + tag, "inner"], ["out_" + tag])
        return helper.make_graph(
            [c, mm, add], tag, [], [helper.make_tensor_value_info("out_" + tag, 1, None)],
            initializer=[init],
        )  # fmt: skip

    nodes = [
        helper.make_node("Constant", [], ["cf"], value_floats=[1.0, 2.0]),
        helper.make_node("Constant", [], ["ci"], value_int=7),
        helper.make_node("MatMul", ["a", "w"], ["x"]),
        helper.make_node(
            "If",
            ["cond"],
            ["y"],
            then_branch=branch("then", 0.5),
            else_branch=branch("else", -0.25),
        ),
    ]
    graph = helper.make_graph(
        nodes, "nested",
        [helper.make_tensor_value_info("a", 1, [1, 2]),
         helper.make_tensor_value_info("cond", 9, [])],
        [helper.make_tensor_value_info("y", 1, None)],
        initializer=[w],
    )  # fmt: skip
    return model_of(graph)
