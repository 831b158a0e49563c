"""ConvLSTM1D/2D/3D against Keras: the float64 reference and the ONNX export, each compared with
Keras' own predict (never with each other).

Keras 3 models are built, given random biases, saved and predicted once per session; tf_keras
(its own process) builds one ConvLSTM2D with its ``hard_sigmoid`` (``0.2x + 0.5``). Masks: a
Keras 3 ConvLSTM called eagerly with a mask (whole steps and pixels masked) against the catalog
semantics given the same mask, and the ONNX handler given the mask as a graph input. The
real-world file ``Zmey1__OceanObservation__convlstm_model.h5`` (Keras 3 legacy HDF5) goes through
``bnconvert export`` and is compared with Keras 3's predict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import bnconvert
from bnconvert.catalog import CallContext, catalog
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError
from bnconvert.onnx import to_onnx
from bnconvert.onnx.builder import Builder, Call, Tensor
from bnconvert.onnx.layout import identity
from bnconvert.onnx.registry import handlers
from bnconvert.onnx.save import add_initializers

from ..conftest import sequence_corpus_file
from .helpers import check_model, inputs_for, keras_predict, rel_err, run_onnx

#: Keras computes in float32: a few float32 roundings per step, relative to the largest output
TOLERANCE = 1e-5


CASES = ["1d_same_sequences", "2d_valid", "2d_first_same_sequences", "2d_first_valid_state", "2d_strides2_state",
         "2d_dilation2_backwards", "2d_backwards_state", "2d_relu_hard_sigmoid_nobias", "2d_dynamic_time", "3d_same"]


def _cases() -> dict[str, Any]:
    """name -> a function building the Keras 3 model (tiny: T = 3, images up to 6x6, 2-4 filters)."""
    import keras

    L = keras.layers

    def seq(shape: tuple, layer: Any) -> Any:
        inp = keras.Input(shape)
        out = layer(inp)
        return keras.Model(inp, out)

    return {
        "1d_same_sequences": lambda: seq((3, 6, 2), L.ConvLSTM1D(3, 3, padding="same", return_sequences=True)),
        "2d_valid": lambda: seq((3, 5, 5, 2), L.ConvLSTM2D(4, 3)),
        "2d_first_same_sequences": lambda: seq((3, 2, 5, 4), L.ConvLSTM2D(3, (3, 2), padding="same", data_format="channels_first",
                                                                         return_sequences=True)),
        "2d_first_valid_state": lambda: seq((3, 2, 5, 5), L.ConvLSTM2D(2, 2, data_format="channels_first", return_state=True)),
        "2d_strides2_state": lambda: seq((3, 6, 5, 2), L.ConvLSTM2D(3, 3, strides=2, padding="same", return_state=True,
                                                                    return_sequences=True)),
        "2d_dilation2_backwards": lambda: seq((3, 6, 6, 2), L.ConvLSTM2D(2, 2, dilation_rate=2, go_backwards=True,
                                                                         return_sequences=True)),
        "2d_backwards_state": lambda: seq((3, 4, 4, 1), L.ConvLSTM2D(2, 3, padding="same", go_backwards=True, return_state=True)),
        "2d_relu_hard_sigmoid_nobias": lambda: seq((3, 5, 5, 2), L.ConvLSTM2D(3, 3, padding="same", activation="relu",
                                                                              recurrent_activation="hard_sigmoid",
                                                                              use_bias=False, dropout=0.3,
                                                                              recurrent_dropout=0.2)),
        "2d_dynamic_time": lambda: seq((None, 4, 4, 2), L.ConvLSTM2D(2, 3, padding="same", return_sequences=True)),
        "3d_same": lambda: seq((3, 3, 4, 4, 1), L.ConvLSTM3D(2, 2, padding="same")),
    }


def _randomize(model: Any, seed: int) -> None:
    """Random biases (Keras starts them at 0 and 1), kernels as Keras initialised them."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.path.endswith("bias"):
            v.assign(rng.normal(0.0, 0.5, tuple(v.shape)).astype(np.float32))


@pytest.fixture(scope="module")
def keras3_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]:
    """name -> (saved .keras file, inputs, Keras 3 outputs); built once for the module."""
    import keras

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("conv_lstm")
    out = {}
    builders = _cases()
    assert list(builders) == CASES
    for k, (name, build) in enumerate(builders.items()):
        model = build()
        _randomize(model, k)
        xs = inputs_for(model, seed=k, batch=3) if None not in model.inputs[0].shape[1:] else \
            [np.random.default_rng(k).normal(size=(2, 5, 4, 4, 2)).astype(np.float32)]
        path = folder / f"{name}.keras"
        model.save(path)
        out[name] = (path, xs, keras_predict(model, xs))
    return out


@pytest.mark.parametrize("case", CASES)
def test_reference_and_onnx_equal_keras3(case: str, keras3_models: dict[str, Any]) -> None:
    path, xs, expected = keras3_models[case]
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    feeds = {s.name: x for s, x in zip(runner.input_specs(), xs)}
    reference = list(runner.infer(feeds).values())
    assert len(reference) == len(expected)
    ref_err = max(rel_err(e, r) for e, r in zip(expected, reference))
    assert ref_err <= TOLERANCE, f"float64 reference vs Keras 3: {ref_err:.2e}"
    for opset in (13, 17, 21):
        proto = to_onnx(bnconvert.load(path), opset=opset)
        check_model(proto)
        outs = run_onnx(proto, xs)
        assert len(outs) == len(expected)
        onnx_err = max(rel_err(e, o) for e, o in zip(expected, outs))
        assert onnx_err <= TOLERANCE, f"opset {opset}: ONNX vs Keras 3: {onnx_err:.2e}"
