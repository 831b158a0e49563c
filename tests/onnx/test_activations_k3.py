"""Every Keras activation name exported to ONNX, against Keras 3 and tf-keras.

The files and Keras outputs are those of ``tests/catalog/test_activations_k3.py`` (one model per
Keras, every name as an ``Activation`` layer and as a ``Dense`` activation); here they are
exported at opsets 13 (the oldest the export writes: Shrink, TopK, CumSum compositions), 17 and
21 (fused Gelu, HardSwish, Mish) and run by onnxruntime. A channels_last convolution with
``sparsemax``, ``softmax`` and ``sparse_plus`` checks the activation axis where the graph holds
channels first.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import bnconvert
from bnconvert.onnx import to_onnx

from ..catalog.test_activations_k3 import (
    TOLERANCE,
    errors_by_name,
    keras3_files,
    tf_keras_files,
)
from ..catalog.tfkeras_cases import session_folder
from .helpers import check_model, run_onnx

OPSETS = (13, 17, 21)


def _onnx_errors(path: Path, xs: list[np.ndarray], expected: list[np.ndarray], names: list[str],
                 opset: int) -> dict[str, float]:
    proto = to_onnx(bnconvert.load(path), opset=opset)
    check_model(proto)
    return errors_by_name(expected, run_onnx(proto, xs), names)


@pytest.mark.parametrize("opset", OPSETS)
def test_onnx_activations_equal_keras3(opset: int) -> None:
    errors = _onnx_errors(*keras3_files(), opset)
    bad = {n: f"{e:.2e}" for n, e in errors.items() if e > TOLERANCE}
    assert not bad, f"opset {opset}: max |keras 3 - onnx| / max |keras 3|: {bad}"


@pytest.mark.parametrize("opset", (13, 21))
def test_onnx_activations_equal_tf_keras(opset: int) -> None:
    errors = _onnx_errors(*tf_keras_files(), opset)
    assert "hard_sigmoid" in errors  # tf-keras' 0.2 x + 0.5
    bad = {n: f"{e:.2e}" for n, e in errors.items() if e > TOLERANCE}
    assert not bad, f"opset {opset}: max |tf-keras - onnx| / max |tf-keras|: {bad}"


@functools.cache
def _conv_files() -> tuple[Path, list[np.ndarray], list[np.ndarray], list[str]]:
    import keras

    from .helpers import keras_predict, randomize

    keras.utils.set_random_seed(0)
    x = keras.Input((5, 5, 3), name="image")
    names = ["sparsemax", "softmax", "sparse_plus", "soft_shrink"]
    model = keras.Model(x, [keras.layers.Conv2D(4, 1, activation=n, name=f"conv_{n}")(x) for n in names])
    randomize(model)
    xs = [np.random.default_rng(5).normal(0.0, 0.7, (2, 5, 5, 3)).astype(np.float32)]
    path = session_folder("bnc_act_conv_") / "conv.keras"
    model.save(path)
    return path, xs, keras_predict(model, xs), names


@pytest.mark.parametrize("opset", (13, 21))
def test_activation_axis_of_a_channels_first_graph(opset: int) -> None:
    errors = _onnx_errors(*_conv_files(), opset)
    bad = {n: f"{e:.2e}" for n, e in errors.items() if e > TOLERANCE}
    assert not bad, f"opset {opset}: {bad}"
