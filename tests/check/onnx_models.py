"""Tiny ONNX models built with onnx.helper, and their numpy reference, for the check tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["conv_bn_onnx", "numpy_conv_bn", "perturbed", "channels_last_variant", "save"]


def conv_bn_onnx(rng: np.random.Generator) -> onnx.ModelProto:
    """x (N,2,5,5) -> Conv(3) -> BatchNormalization -> Relu -> y, with non-trivial BN statistics."""
    w = rng.normal(0, 0.5, (3, 2, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 3).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(0, 0.5, 3).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.normal(0, 0.5, 3).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.uniform(0.3, 2, 3).astype(np.float32), "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "gamma", "beta", "mean", "var"], ["bn"], name="bn", epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5, 5])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def numpy_conv_bn(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    p = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((x.shape[0], 3, 5, 5))
    for i in range(5):
        for j in range(5):
            conv[:, :, i, j] = np.einsum("ncab,ocab->no", xp[:, :, i:i + 3, j:j + 3], p["W"])
    s = (p["gamma"] / np.sqrt(p["var"] + 1e-3))[None, :, None, None]
    bn = (conv - p["mean"][None, :, None, None]) * s + p["beta"][None, :, None, None]
    return {"conv": conv, "bn": bn, "y": np.maximum(bn, 0)}


def perturbed(model: onnx.ModelProto, initializer: str, factor: float) -> onnx.ModelProto:
    """A copy of ``model`` with one initializer multiplied by ``factor``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        if init.name == initializer:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), initializer))
            return copy
    raise KeyError(initializer)


def channels_last_variant(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same computation taking and returning NHWC tensors (Transpose in, Transpose out)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    g = copy.graph
    inp, out = g.input[0], g.output[0]
    n, c, h, w = (d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim)
    on, oc, oh, ow = (d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim)
    for node in g.node:
        node.input[:] = ["x/nchw" if i == inp.name else i for i in node.input]
        node.output[:] = ["y/nchw" if o == out.name else o for o in node.output]
    g.node.insert(0, helper.make_node("Transpose", [inp.name], ["x/nchw"], name="in_t", perm=[0, 3, 1, 2]))
    g.node.append(helper.make_node("Transpose", ["y/nchw"], [out.name], name="out_t", perm=[0, 2, 3, 1]))
    del g.input[:]
    del g.output[:]
    g.input.append(helper.make_tensor_value_info(inp.name, TensorProto.FLOAT, [n, h, w, c]))
    g.output.append(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [on, oh, ow, oc]))
    onnx.checker.check_model(copy)
    return copy


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, path)
    return str(path)
