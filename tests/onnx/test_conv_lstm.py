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
         "2d_dilation2_backwards", "2d_backwards_state", "2d_relu_hard_sigmoid_nobias", "2d_dynamic_time", "3d_same", "2d_stateful"]
#: the cases also exported at the oldest and newest opset (Split, Scan and HardSigmoid do not change)
ALL_OPSETS = ("2d_strides2_state", "3d_same")


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
        "2d_stateful": lambda: keras.Sequential([keras.Input(batch_shape=(2, 3, 4, 4, 1)),
                                                 L.ConvLSTM2D(2, 3, padding="same", stateful=True)]),
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
        shape = model.inputs[0].shape
        xs = inputs_for(model, seed=k, batch=shape[0] or 3) if None not in shape[1:] else \
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
    for opset in (13, 17, 21) if case in ALL_OPSETS else (17,):
        proto = to_onnx(bnconvert.load(path), opset=opset)
        check_model(proto)
        outs = run_onnx(proto, xs)
        assert len(outs) == len(expected)
        onnx_err = max(rel_err(e, o) for e, o in zip(expected, outs))
        assert onnx_err <= TOLERANCE, f"opset {opset}: ONNX vs Keras 3: {onnx_err:.2e}"


# -- masks -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def masked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A ConvLSTM2D (go_backwards, return_state) called eagerly by Keras 3 with a whole-step mask
    ``(N, T)`` and with a pixel mask ``(N, T, H, W)``, its bnconvert layer, and a Masking model."""
    import keras

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    inp = keras.Input((4, 5, 5, 2))
    layer = keras.layers.ConvLSTM2D(3, 3, padding="same", go_backwards=True, return_sequences=True, return_state=True)
    model = keras.Model(inp, layer(inp))
    _randomize(model, 3)
    path = tmp_path_factory.mktemp("conv_lstm_mask") / "masked.keras"
    model.save(path)
    x = rng.normal(size=(3, 4, 5, 5, 2)).astype(np.float32)
    steps = np.array([[True, True, False, True], [False, True, True, True], [True, False, False, True]])
    pixels = rng.random((3, 4, 5, 5)) > 0.3
    expected = {name: [np.asarray(y) for y in layer(x, mask=m)] for name, m in (("steps", steps), ("pixels", pixels))}
    # Masking -> ConvLSTM2D -> ConvLSTM2D: the mask Masking derives from zero pixels, carried on
    # (Sequential: a functional Keras 3.15 model records Masking's mask as NotEqual/Any operation layers)
    chain = keras.Sequential([keras.Input((4, 5, 5, 2)), keras.layers.Masking(0.0),
                              keras.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True),
                              keras.layers.ConvLSTM2D(2, 3, padding="same")])
    _randomize(chain, 4)
    chain_path = path.with_name("chain.keras")
    chain.save(chain_path)
    xz = x.copy()
    xz[0, 2], xz[1, 1, 2], xz[2, 3, :, 1] = 0.0, 0.0, 0.0  # a whole step, a row, a column
    return {"path": path, "x": x, "masks": {"steps": steps, "pixels": pixels}, "expected": expected,
            "chain": (chain_path, xz, np.asarray(chain(xz)))}


def _conv_lstm_layer(path: Path) -> Any:
    model = bnconvert.load(path)
    return model, next(layer for _, layer, _ in model.walk() if layer.class_name.startswith("ConvLSTM"))


@pytest.mark.parametrize("kind", ["steps", "pixels"])
def test_reference_masks_equal_keras3(kind: str, masked: dict[str, Any]) -> None:
    model, layer = _conv_lstm_layer(masked["path"])
    record = catalog()[layer.class_name]
    mask = masked["masks"][kind]
    outs = record.call(layer, [masked["x"]], CallContext(source=model.source, masks=[mask]))
    expected = masked["expected"][kind]
    assert len(outs) == len(expected) == 3
    err = max(rel_err(e, o) for e, o in zip(expected, outs))
    assert err <= TOLERANCE, f"{kind} mask: float64 reference vs Keras 3: {err:.2e}"
    unmasked = record.call(layer, [masked["x"]], CallContext(source=model.source))
    assert rel_err(expected[0], unmasked[0]) > 1e-2  # the mask changes the result
    out_masks = record.mask(layer, [masked["x"]], CallContext(masks=[mask]))
    assert out_masks[0] is mask and out_masks[1:] == [None, None]


def _export_with_mask(layer: Any, model: Any, x_shape: tuple, mask_shape: tuple, opset: int) -> onnx.ModelProto:
    """The handler alone, given the mask as a graph input (as the export walk hands it over)."""
    b = Builder(opset)
    xt = Tensor(shape=x_shape, views={identity(len(x_shape)): b.claim("x")})
    mt = Tensor(shape=mask_shape, views={identity(len(mask_shape)): b.claim("mask")})
    shapes = catalog()[layer.class_name].shape(layer.config, [x_shape])
    call = Call(layer=layer, name=layer.name, inputs=[xt], out_shapes=shapes, source=model.source, masks=[mt])
    outs = handlers()[layer.class_name](b, call)
    assert call.out_masks is not None and call.out_masks[0] is mt and call.out_masks[1:] == [None, None]
    names = [b.view(t, identity(t.rank)) for t in outs]
    graph = helper.make_graph(
        b.nodes, "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape)),
                            helper.make_tensor_value_info("mask", TensorProto.BOOL, list(mask_shape))],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(t.shape)) for n, t in zip(names, outs)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return add_initializers(proto, b.constants)


@pytest.mark.parametrize("kind", ["steps", "pixels"])
def test_onnx_masks_equal_keras3(kind: str, masked: dict[str, Any]) -> None:
    model, layer = _conv_lstm_layer(masked["path"])
    mask = masked["masks"][kind]
    for opset in (13, 21):
        proto = _export_with_mask(layer, model, (None, 4, 5, 5, 2), (None, *mask.shape[1:]), opset)
        check_model(proto)
        outs = run_onnx(proto, [masked["x"], mask])
        err = max(rel_err(e, o) for e, o in zip(masked["expected"][kind], outs))
        assert err <= TOLERANCE, f"{kind} mask, opset {opset}: ONNX vs Keras 3: {err:.2e}"


def test_masking_chain_equals_keras3(masked: dict[str, Any]) -> None:
    path, x, expected = masked["chain"]
    proto = to_onnx(bnconvert.load(path))
    check_model(proto)
    assert sum(n.op_type == "Scan" for n in proto.graph.node) == 2
    err = rel_err(expected, run_onnx(proto, [x])[0])
    assert err <= TOLERANCE, f"Masking -> ConvLSTM2D x2: ONNX vs Keras 3: {err:.2e}"
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    err = rel_err(expected, next(iter(runner.infer({runner.input_specs()[0].name: x}).values())))
    assert err <= TOLERANCE, f"Masking -> ConvLSTM2D x2: float64 reference vs Keras 3: {err:.2e}"


def test_a_mask_that_does_not_fit_the_state_is_refused(masked: dict[str, Any]) -> None:
    """A strided layer's state is smaller than the pixel mask: Keras cannot run it; we say why, in one line."""
    model, layer = _conv_lstm_layer(masked["path"])
    strided = layer.copy(config={**layer.config, "strides": 2})
    mask = masked["masks"]["pixels"]
    with pytest.raises(UnsupportedLayerError, match=r"conv_lstm.*mask of shape \(3, 4, 5, 5\) does not fit"):
        catalog()[layer.class_name].call(strided, [masked["x"]], CallContext(masks=[mask]))
    with pytest.raises(UnsupportedLayerError, match=r"ConvLSTM2D: a mask of shape .* does not fit the state") as info:
        _export_with_mask(strided, model, (None, 4, 5, 5, 2), (None, 4, 5, 5), 17)
    assert "\n" not in str(info.value)


# -- tf_keras ----------------------------------------------------------------------------------------
#: run in its own process (tf_keras and Keras 3 never share one): two ConvLSTM2D with tf_keras'
#: default recurrent activation, hard_sigmoid = clip(0.2x + 0.5, 0, 1), saved as .h5
_TFK_SCRIPT = r"""
import sys
import numpy as np
import tf_keras

L = tf_keras.layers
tf_keras.utils.set_random_seed(0)
inp = tf_keras.Input((3, 5, 5, 2))
seq = L.ConvLSTM2D(3, 3, padding="same", return_sequences=True, go_backwards=True)(inp)
out, h, c = L.ConvLSTM2D(2, 2, strides=2, return_state=True)(seq)
model = tf_keras.Model(inp, [out, h, c])
rng = np.random.default_rng(0)
for v in model.weights:
    if v.name.split("/")[-1].startswith("bias"):
        v.assign(rng.normal(0.0, 0.5, tuple(v.shape)).astype("float32"))
x = rng.normal(0.0, 2.0, (2, 3, 5, 5, 2)).astype("float32")
ys = model(x, training=False)
model.save(sys.argv[1] + "/tfk_conv_lstm.h5")
np.savez(sys.argv[1] + "/tfk_conv_lstm.npz", x=x, **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
print(model.layers[1].get_config()["recurrent_activation"])
"""


@pytest.fixture(scope="module")
def tf_keras_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, list[np.ndarray]]:
    folder = tmp_path_factory.mktemp("tfk_conv_lstm")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _TFK_SCRIPT, str(folder)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "hard_sigmoid"
    data = np.load(folder / "tfk_conv_lstm.npz")
    return folder / "tfk_conv_lstm.h5", data["x"], [data[f"y{i}"] for i in range(3)]


def test_tf_keras_reference_and_onnx(tf_keras_model: tuple[Path, np.ndarray, list[np.ndarray]]) -> None:
    path, x, expected = tf_keras_model
    model = bnconvert.load(path)
    assert model.source is not None and model.source.generation == 2
    runner = ReferenceRunner(path, model=model)
    reference = list(runner.infer({runner.input_specs()[0].name: x}).values())
    err = max(rel_err(e, r) for e, r in zip(expected, reference))
    assert len(reference) == 3 and err <= TOLERANCE, f"float64 reference vs tf_keras: {err:.2e}"
    proto = to_onnx(model)
    check_model(proto)
    outs = run_onnx(proto, [x])
    err = max(rel_err(e, o) for e, o in zip(expected, outs))
    assert len(outs) == 3 and err <= TOLERANCE, f"ONNX vs tf_keras: {err:.2e}"


# -- the real-world file -----------------------------------------------------------------------------
def test_corpus_convlstm_exports_and_equals_keras3(tmp_path: Path) -> None:
    """Keras 3 legacy .h5: ConvLSTM2D (1x1 kernel, relu) -> BatchNormalization -> Dropout ->
    Flatten -> Dense x2, exported by the CLI (BN folded forward into the Dense) and compared with
    Keras 3's own predict, as is the float64 reference."""
    import keras

    from bnconvert.cli import main

    path = sequence_corpus_file("Zmey1")
    out = tmp_path / "zmey.onnx"
    result = CliRunner().invoke(main, ["export", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 of 1 BatchNormalization folded" in result.stdout
    proto = onnx.load(out)
    check_model(proto)
    assert [n.op_type for n in proto.graph.node].count("Scan") == 1
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    model = keras.models.load_model(path, compile=False)
    # inputs in [0, 1], the scaled observations the model was trained on: N(0, 1) inputs drive its
    # last sigmoid to logits near -40, outputs of 1e-17, where onnxruntime's and TensorFlow's
    # float32 sigmoids part (8e-4 relative to an output maximum of 4e-6)
    x = np.random.default_rng(5).uniform(0.0, 1.0, (8, 3, 1, 1, 5)).astype(np.float32)
    expected = keras_predict(model, [x])[0]
    err = rel_err(expected, run_onnx(proto, [x])[0])
    assert err <= TOLERANCE, f"ONNX vs Keras 3: {err:.2e}"
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    reference = next(iter(runner.infer({runner.input_specs()[0].name: x}).values()))
    err = rel_err(expected, reference)
    assert err <= TOLERANCE, f"float64 reference vs Keras 3: {err:.2e}"


def test_stateful_is_said_to_start_from_zero_states(keras3_models: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    path = keras3_models["2d_stateful"][0]
    with caplog.at_level("WARNING", logger="bnconvert.onnx.layers.conv_lstm"):
        to_onnx(bnconvert.load(path))
    assert "is stateful: exported with zero initial states" in caplog.text


@pytest.mark.parametrize("key", ["activation", "recurrent_activation"])
def test_an_activation_onnx_lacks_is_refused_in_one_line(key: str, keras3_models: dict[str, Any]) -> None:
    model = bnconvert.load(keras3_models["2d_valid"][0])
    layer = next(layer for _, layer, _ in model.walk() if layer.class_name == "ConvLSTM2D")
    layer.config[key] = "bogus"
    pattern = rf"'{layer.name}' \(ConvLSTM2D: {key} 'bogus' is not (supported|a Keras activation bnconvert knows)\)"
    with pytest.raises(UnsupportedLayerError, match=pattern) as info:
        to_onnx(model)
    assert "\n" not in str(info.value)
