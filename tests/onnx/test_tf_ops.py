"""tf.keras TFOpLambda / SlicingOpLambda operations: the ONNX export against tf-keras.

The files tf-keras made for ``tests/catalog/test_tf_ops.py`` (the same subprocess, run once per
session) are exported, checked by ONNX and run by onnxruntime; each output is compared with
tf-keras' own, ``max |keras - onnx| / max |keras|``.
"""

from __future__ import annotations

import functools

import onnx
import pytest

import bnconvert
from bnconvert.errors import UnsupportedLayerError
from bnconvert.onnx import to_onnx

from ..catalog.test_tf_ops import (
    CASES,
    NOT_EXPORTED,
    REFUSED,
    TOLERANCE,
    case_data,
    rel_error,
)
from .helpers import check_model, run_onnx

#: the opsets each case is exported at: the lowest bnconvert writes, the default, the newest
OPSETS = {"elementwise": (13, 17, 21), "reductions": (13, 17, 21), "shapes": (13, 21), "unary": (13, 21), "images": (13, 21),
          "dynamic": (13, 21)}


@functools.cache
def _exported(name: str, opset: int) -> tuple[onnx.ModelProto, dict[str, float]]:
    path, xs, ys, names = case_data(name)
    proto = to_onnx(bnconvert.load(path), opset=opset)
    outs = run_onnx(proto, xs)
    assert len(outs) == len(ys)
    return proto, {n: rel_error(y, o) for n, y, o in zip(names, ys, outs)}


@pytest.mark.parametrize(("name", "opset"), [(n, o) for n in sorted(set(CASES) - set(NOT_EXPORTED))
                                             for o in OPSETS.get(n, (17,))])
def test_export_equals_tf_keras(name: str, opset: int) -> None:
    proto, errors = _exported(name, opset)
    check_model(proto)
    bad = {k: f"{v:.1e}" for k, v in errors.items() if v > TOLERANCE}
    assert not bad, f"{name} (opset {opset}): tf-keras and onnxruntime differ (max |diff| / max): {bad}"


def test_a_channels_last_image_model_keeps_its_layout_through_elementwise_operations() -> None:
    """Between the convolutions of the image case (held channels-first), ``tf.nn.relu``,
    ``x * 2.0 + constant``, ``tf.math.maximum``, ``reduce_mean(keepdims)``, ``tf.nn.softmax``
    and ``tf.nn.silu`` read no Transpose: they work in the layout the convolutions hold."""
    proto, _ = _exported("image", 17)
    transposed = {node.output[0] for node in proto.graph.node if node.op_type == "Transpose"}
    native = ("Relu", "Mul", "Add", "Max", "Sub", "ReduceMean", "Softmax", "Sigmoid")
    readers = [node for node in proto.graph.node if node.op_type in native]
    assert len(readers) >= 9
    assert not [node.name for node in readers if transposed & set(node.input)]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_function_names_layer_and_function(name: str) -> None:
    """A TensorFlow function bnconvert has no handler for, or a call it cannot rebuild, is
    refused in one line naming the layer, the function and the reason."""
    path, _, _, _ = case_data(name)
    with pytest.raises(UnsupportedLayerError) as info:
        to_onnx(bnconvert.load(path))
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in REFUSED[name]), message


@pytest.mark.parametrize("name", sorted(NOT_EXPORTED))
def test_a_call_with_float64_semantics_but_no_onnx_equivalent_is_refused_by_the_export(name: str) -> None:
    """``tf.pad(mode='SYMMETRIC')`` (checked against tf-keras by the float64 reference) has no
    ONNX Pad mode: the export says so, naming the layer."""
    path, _, _, _ = case_data(name)
    with pytest.raises(UnsupportedLayerError, match=f"'tf.compat.v1.pad(_\\d+)?' \\(TFOpLambda: .*{NOT_EXPORTED[name]}"):
        to_onnx(bnconvert.load(path))
