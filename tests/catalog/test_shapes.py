"""Output shapes and weights from the catalog records, against Keras' own shapes.

Regressions of issue 14, each a consequence of one shape rule per class: merges broadcast
(MobileNetV3's squeeze-and-excite at an unknown image size), ConvLSTM2D's spatial axes, and
Cropping3D in tf.keras files. Keras 3 runs in this process; tf-keras in one subprocess (never in
the same process as Keras 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnconvert.model import Layer
from bnconvert.readers import load
from bnconvert.shapes import infer_shapes, layer_output_shapes


def _outputs(path: Path) -> list[tuple]:
    model = load(path)
    shapes = infer_shapes(model)
    return [shapes[ref] for ref in model.outputs]


def test_elementwise_merges_broadcast() -> None:
    """(N, ?, ?, C) * (N, 1, 1, C) is (N, ?, ?, C): a size 1 never wins over an unknown size."""
    multiply = Layer(name="m", class_name="Multiply", config={})
    assert layer_output_shapes(multiply, [(None, None, None, 16), (None, 1, 1, 16)]) == [(None, None, None, 16)]
    assert layer_output_shapes(multiply, [(None, 1, 1, 16), (None, 7, None, 16)]) == [(None, 7, None, 16)]
    add = Layer(name="a", class_name="Add", config={})
    assert layer_output_shapes(add, [(None, 1, 1, 4), (None, 1, 1, 4)]) == [(None, 1, 1, 4)]


def test_a_class_without_a_rule_has_unknown_shapes() -> None:
    assert layer_output_shapes(Layer(name="x", class_name="NoSuchLayer", config={}), [(None, 3)]) is None


# -- Keras 3 ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_mobilenet_v3_small_at_its_default_size_exports(keras, fmt: str, tmp_path: Path) -> None:
    """Its default input is (None, None, 3): squeeze-and-excite's Multiply once took the (1, 1) of
    the excitation as the image size, and the next strided depthwise convolution went to 0x0."""
    from bnconvert.pipeline import export_file

    model = keras.applications.MobileNetV3Small(weights=None)
    path = tmp_path / f"m.{fmt}"
    model.save(path)
    assert _outputs(path) == [(None, 1000)]
    report = export_file(path, tmp_path / "m.onnx", check=False)
    assert report.fold.totals["folded"] == report.fold.totals["batch_norms"] > 0


CONV_LSTM = {
    "same": {"filters": 8, "kernel_size": 3, "padding": "same"},
    "valid_strided_sequences": {"filters": 5, "kernel_size": (3, 2), "strides": 2, "return_sequences": True},
    "dilated_state": {"filters": 4, "kernel_size": 3, "dilation_rate": 2, "padding": "same", "return_state": True},
}


@pytest.mark.parametrize("case", CONV_LSTM)
def test_conv_lstm2d_shapes_and_weights_match_keras3(keras, case: str, tmp_path: Path) -> None:
    inp = keras.Input((4, 30, 30, 3))
    out = keras.layers.ConvLSTM2D(**CONV_LSTM[case])(inp)
    model = keras.Model(inp, out)
    path = tmp_path / "m.keras"
    model.save(path)
    want = [tuple(o.shape) for o in model.outputs]
    assert _outputs(path) == want
    layer = load(path).layers[-1]  # its weights (in the cell's group) read by meaning and checked
    assert {k: v.shape for k, v in layer.weights.items()} == {
        w.path.split("/")[-1]: tuple(w.shape) for w in model.layers[-1].weights}


def test_a_conv_lstm2d_model_folds_into_a_file_keras_loads(keras, tmp_path: Path) -> None:
    """The writer puts a Keras 3 recurrent layer's weights back into its cell's group."""
    import numpy as np

    from bnconvert.pipeline import fold_file

    inp = keras.Input((3, 8, 8, 2))
    x = keras.layers.ConvLSTM2D(4, 3, padding="same", return_sequences=True)(inp)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inp, keras.layers.ConvLSTM2D(3, 3, strides=2)(x))
    path, out = tmp_path / "m.keras", tmp_path / "f.keras"
    model.save(path)
    fold_file(path, out, check=False)
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(keras.saving.load_model(out)(x), model(x), rtol=1e-5, atol=1e-6)


def test_a_layer_of_an_unknown_class_keeps_its_sublayer_weights(keras, tmp_path: Path) -> None:
    """A class the catalog lacks (LSTM) is copied from the input, its cell's group included."""
    import numpy as np

    from bnconvert.pipeline import fold_file

    inp = keras.Input((5, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Dense(4)(inp))
    model = keras.Model(inp, keras.layers.LSTM(3)(x))
    path, out = tmp_path / "m.keras", tmp_path / "f.keras"
    model.save(path)
    fold_file(path, out, check=False)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_allclose(keras.saving.load_model(out)(x), model(x), rtol=1e-5, atol=1e-6)


# -- tf-keras --------------------------------------------------------------------------------------
_TFK = r"""
import json, sys
import tf_keras
L = tf_keras.layers
folder = sys.argv[1]
def seq(shape, *layers):
    return tf_keras.Sequential([tf_keras.Input(shape), *layers])
CASES = {
    "cropping3d": lambda: seq((6, 8, 8, 2), L.Cropping3D(((1, 0), (2, 1), (0, 1)))),
    "cropping3d_int": lambda: seq((6, 8, 8, 2), L.Cropping3D(1), L.BatchNormalization()),
    "cropping3d_cf": lambda: seq((2, 6, 8, 8), L.Cropping3D((1, 2, 1), data_format="channels_first")),
    "cropping3d_dynamic": lambda: seq((None, 8, 8, 2), L.Conv3D(3, 1), L.Cropping3D(((0, 1), (2, 2), (1, 0)))),
    "conv_lstm2d": lambda: seq((4, 30, 30, 3), L.ConvLSTM2D(8, 3, padding="same")),
    "conv_lstm2d_valid": lambda: seq((4, 30, 30, 3), L.ConvLSTM2D(8, 3, strides=2, return_sequences=True)),
    "conv_lstm2d_cropping3d": lambda: seq((4, 10, 10, 2), L.ConvLSTM2D(3, 3, padding="same", return_sequences=True),
                                          L.Cropping3D(((1, 0), (1, 1), (2, 0))), L.BatchNormalization()),
}
shapes = {}
for name, build in CASES.items():
    model = build()
    for fmt in ("h5", "keras"):
        model.save(f"{folder}/{name}.{fmt}")
    shapes[name] = list(model.output_shape)
print(json.dumps(shapes))
"""


@pytest.fixture(scope="module")
def tfkeras_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    pytest.importorskip("tf_keras")
    folder = tmp_path_factory.mktemp("tfkeras_shapes")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _TFK, str(folder)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("fmt", ["h5", "keras"])
@pytest.mark.parametrize("case", ["cropping3d", "cropping3d_int", "cropping3d_cf", "cropping3d_dynamic", "conv_lstm2d",
                                  "conv_lstm2d_valid", "conv_lstm2d_cropping3d"])
def test_tf_keras_output_shapes(tfkeras_files: tuple[Path, dict[str, list]], case: str, fmt: str) -> None:
    folder, shapes = tfkeras_files
    assert _outputs(folder / f"{case}.{fmt}") == [tuple(shapes[case])]


@pytest.mark.parametrize("case", ["cropping3d", "cropping3d_cf"])
def test_tf_keras_cropping3d_exports(tfkeras_files: tuple[Path, dict[str, list]], case: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from bnconvert.pipeline import export_file

    folder, _ = tfkeras_files
    export_file(folder / f"{case}.h5", tmp_path / "m.onnx", check=False)
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_every_layer_test_case_gets_keras_output_shapes(keras, tmp_path: Path) -> None:
    """Every layer of the ONNX layer tests' models (tests/onnx/test_layers.py): the catalog's shape
    rules give each output exactly the shape Keras 3 gives it."""
    from ..onnx.test_layers import CASES

    wrong, compared = {}, 0
    for case, build in sorted(CASES.items()):
        model = build()
        path = tmp_path / f"{case}.keras"
        model.save(path)
        read = load(path)
        shapes = infer_shapes(read)
        for layer in model.layers:
            if layer.name not in read or type(layer).__name__ == "InputLayer":
                continue
            got = [shapes.get(r) for r in shapes if r.layer == layer.name]
            want = [tuple(t.shape) for t in (layer.output if isinstance(layer.output, list) else [layer.output])]
            compared += 1
            if got != want:
                wrong[f"{case}/{layer.name} ({type(layer).__name__})"] = (got, want)
    assert not wrong, wrong
    assert compared > 100
