"""ONNX export of the legacy classes (:mod:`bnconvert.onnx.layers.legacy`) against Keras.

LocallyConnected1D/2D: the tf_keras models of ``tests/catalog/test_legacy_layers.py`` (built once
per session in their own process), exported by bnconvert and run by onnxruntime, against
tf_keras' own outputs, with a dynamic batch. The Keras 1 classes are exported from their fixtures
in ``tests/readers/test_legacy_layers.py``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import bnconvert
from bnconvert.errors import UnsupportedLayerError
from bnconvert.model import Layer, Model, TensorRef
from bnconvert.onnx import to_onnx

from ..catalog.test_legacy_layers import CASES, tf_keras_files
from .helpers import check_model, rel_err, run_onnx

#: onnxruntime's float32 against tf_keras' float32: ``max |diff| / max |keras|``
TOLERANCE = 1e-5


@pytest.mark.parametrize("case", CASES)
def test_export_matches_tf_keras(case: str) -> None:
    folder, counts = tf_keras_files()
    data = np.load(folder / f"{case}.npz")
    proto = to_onnx(bnconvert.load(folder / f"{case}.h5"))
    check_model(proto)
    x = data["x0"]
    for batch in (x, x[:1]):  # the batch is dynamic
        outs = run_onnx(proto, [batch])
        assert len(outs) == counts[case]
        errors = [rel_err(data[f"y{i}"][: len(batch)], out) for i, out in enumerate(outs)]
        print(f"{case} (batch {len(batch)}): ONNX vs tf_keras, max relative error {max(errors):.2e}")
        assert max(errors) < TOLERANCE, errors


@pytest.mark.parametrize("case", ["local1d", "local2d"])
def test_every_implementation_gathers_windows_instead_of_a_dense_matrix(case: str) -> None:
    """Each layer (implementations 1, 2 and 3) is one Gather of windows and a batched MatMul with
    a (positions, window, filters) kernel: no zero-filled (input, output) matrix."""
    folder, _ = tf_keras_files()
    model = bnconvert.load(folder / f"{case}.h5")
    layers = [layer for layer in model.layers if layer.class_name.startswith("LocallyConnected")]
    assert {layer.config["implementation"] for layer in layers} == {1, 2, 3}
    proto = to_onnx(model)
    assert sum(node.op_type == "Gather" for node in proto.graph.node) == len(layers)
    kernels = [t for t in proto.graph.initializer if t.name.endswith("/kernel")]
    assert len(kernels) == len(layers) and all(len(t.dims) == 3 for t in kernels)


def test_a_python_function_merge_is_refused_by_the_export() -> None:
    model = Model("m", [Layer("a", "InputLayer", {"batch_shape": [None, 3]}),
                        Layer("b", "InputLayer", {"batch_shape": [None, 3]}),
                        Layer("merge_1", "Merge", {"mode": None, "keras1_merge_mode": "<python function>",
                                                       "output_shape": [3]},
                              calls=[[TensorRef("a", 0, 0), TensorRef("b", 0, 0)]])],
                  inputs=[TensorRef("a", 0, 0), TensorRef("b", 0, 0)], outputs=[TensorRef("merge_1", 0, 0)])
    with pytest.raises(UnsupportedLayerError, match=r"'merge_1'.*Python code, which bnconvert never runs"):
        to_onnx(model)


def test_exported_graph_is_valid_onnx() -> None:
    folder, _ = tf_keras_files()
    proto = to_onnx(bnconvert.load(folder / "local2d.h5"))
    onnx.checker.check_model(proto, full_check=True)
