"""Static int8 quantisation of a folded export (bnconvert.deploy.int8).

Two tiny Keras 3 classifiers (Conv + BN with non-trivial statistics, pooling, Dense softmax: 10
and 1000 classes) are built once, read, folded and exported by bnconvert
(``fold_model`` + ``to_onnx``; the export's own check is tested elsewhere), quantised with 64 calibration samples; the int8 model is held to the
float ONNX model and to Keras, and every report figure is recomputed here from onnxruntime runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

import bnconvert
from bnconvert.deploy import int8
from bnconvert.deploy.int8 import load_calibration, model_inputs, quantize_int8, refuse_without_calibration
from bnconvert.errors import BnconvertError, FormatError, OutputError
from bnconvert.onnx import to_onnx

from ..onnx.helpers import randomize

SAMPLES = 64
SHAPE = (9, 9, 3)
#: measured: max |int8 - float| / max |float| 0.5 % (10 classes) and 0.7 % (1000), the same against Keras
REL_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Both classifiers: the float ONNX export, calibration data and Keras' predictions."""
    import keras

    L = keras.layers
    folder = tmp_path_factory.mktemp("int8")
    rng = np.random.default_rng(0)
    built = {}
    for seed, (name, classes) in enumerate((("cnn10", 10), ("cnn1000", 1000))):
        model = keras.Sequential([
            keras.Input(SHAPE), L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
            L.Conv2D(8, 3, strides=2), L.BatchNormalization(epsilon=1e-3), L.Activation("relu"),
            L.GlobalAveragePooling2D(), L.Dense(classes, activation="softmax"),
        ], name=name)
        randomize(model, seed=seed)  # non-trivial BN statistics and biases
        keras_file, onnx_file = folder / f"{name}.keras", folder / f"{name}.onnx"
        model.save(keras_file)
        folded, fold_report = bnconvert.fold_model(bnconvert.load(keras_file))
        assert fold_report.totals["folded"] == 2, fold_report.to_dict()
        proto = to_onnx(folded)
        assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
        onnx.save(proto, onnx_file)
        x = rng.normal(0.0, 1.0, (SAMPLES, *SHAPE)).astype(np.float32)
        np.savez(folder / f"{name}.npz", x=x)
        built[name] = {"onnx": onnx_file, "npz": folder / f"{name}.npz", "x": x,
                       "keras": np.asarray(model.predict(x, verbose=0, batch_size=SAMPLES))}
    return built


@pytest.fixture(scope="module")
def quantized(models: dict[str, dict], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int8.Int8Report]]:
    out = {}
    for name, m in models.items():
        names, shapes, dtypes = model_inputs(m["onnx"])
        cal = load_calibration(m["npz"], names, shapes, input_dtypes=dtypes)
        target = tmp_path_factory.mktemp("q") / f"{name}.int8.onnx"
        out[name] = (target, quantize_int8(m["onnx"], target, cal))
    return out


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_graph_is_qdq_with_per_channel_int8_conv_weights(models, quantized) -> None:
    path, report = quantized["cnn10"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") == report.quantize_nodes > 0
    assert ops.count("DequantizeLinear") == report.dequantize_nodes > 0
    assert "BatchNormalization" not in ops
    inits = {t.name: t for t in proto.graph.initializer}
    conv_weights = []
    for node in proto.graph.node:
        if node.op_type == "Conv":
            producer = next(n for n in proto.graph.node if node.input[1] in n.output)
            assert producer.op_type == "DequantizeLinear"
            weight, scale = inits[producer.input[0]], numpy_helper.to_array(inits[producer.input[1]])
            axis = next((a.i for a in producer.attribute if a.name == "axis"), 1)
            assert weight.data_type == TensorProto.INT8 and len(weight.dims) == 4
            assert axis == 0 and scale.shape == (weight.dims[0],)  # one scale per output channel
            assert len(set(scale.tolist())) > 1
            conv_weights.append(weight.name)
    assert len(conv_weights) == 2
    # the input of every Conv is quantised too (static: the activations' ranges are calibrated)
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)


def test_report_figures_match_an_independent_computation(models, quantized) -> None:
    m = models["cnn10"]
    path, report = quantized["cnn10"]
    ref, out = _run(m["onnx"], m["x"]).astype(np.float64), _run(path, m["x"]).astype(np.float64)
    (o,) = report.outputs
    assert report.samples == SAMPLES and report.per_channel
    assert o.max_abs == pytest.approx(np.max(np.abs(ref - out)), rel=1e-6)
    assert o.mean_abs == pytest.approx(np.mean(np.abs(ref - out)), rel=1e-6)
    assert o.rel == pytest.approx(np.max(np.abs(ref - out)) / np.max(np.abs(ref)), rel=1e-6)
    assert o.classes == 10 and o.top5 is None
    assert o.top1 == pytest.approx(np.mean(ref.argmax(1) == out.argmax(1)))
    assert o.top1 >= 0.9 and o.rel < REL_TOLERANCE
    assert report.float_bytes == Path(m["onnx"]).stat().st_size and report.int8_bytes == path.stat().st_size
    json.dumps(report.to_dict())
    text = report.summary()
    assert "64 samples" in text and "top class agrees on" in text and "per output channel" in text
    assert not report.notes


def test_int8_agrees_with_keras(models, quantized) -> None:
    for name, m in models.items():
        out = _run(quantized[name][0], m["x"]).astype(np.float64)
        ref = m["keras"].astype(np.float64)
        assert np.max(np.abs(ref - out)) / np.max(np.abs(ref)) < REL_TOLERANCE, name
        assert np.mean(ref.argmax(1) == out.argmax(1)) >= 0.9, name


def test_1000_classes_get_top5(models, quantized) -> None:
    m = models["cnn1000"]
    path, report = quantized["cnn1000"]
    (o,) = report.outputs
    assert o.classes == 1000 and o.top5 is not None and o.top5 >= o.top1
    ref, out = _run(m["onnx"], m["x"]), _run(path, m["x"])
    top5 = np.argsort(-out, axis=1)[:, :5]
    assert o.top5 == pytest.approx(np.mean([ref[i].argmax() in top5[i] for i in range(SAMPLES)]))
    assert "top 5" in report.summary()
    # Softmax stays float (int8.FLOAT_OPS): quantised on [0, 1], 1000 probabilities of ~0.001 were all 0
    proto = onnx.load(str(path))
    softmax = next(n for n in proto.graph.node if n.op_type == "Softmax")
    assert softmax.output[0] in {o.name for o in proto.graph.output}
    assert o.top1 >= 0.9 and o.rel < REL_TOLERANCE and np.all(out.max(axis=1) > 0)


def test_fixed_batch_is_fed_as_declared(models, tmp_path) -> None:
    m = models["cnn10"]
    proto = onnx.load(str(m["onnx"]))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(proto, tmp_path / "fixed.onnx")
    names, shapes, _ = model_inputs(tmp_path / "fixed.onnx")
    assert shapes[0] == (4, *SHAPE)
    report = quantize_int8(tmp_path / "fixed.onnx", tmp_path / "q.onnx", {names[0]: m["x"][:34]})
    assert report.samples == 32 and report.batch == 4
    assert any("last 2 samples are not used" in n for n in report.notes)


def test_agreement_on_known_values() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    out = np.array([[0.2, 0.8], [0.3, 0.7], [0.4, 0.6], [0.3, 0.7]])
    a = int8.agreement("y", ref, out)
    assert a.top1 == 0.75 and a.classes == 2 and a.top5 is None
    assert a.max_abs == pytest.approx(0.5) and a.rel == pytest.approx(0.5 / 0.9)
    assert int8.agreement("y", np.ones((3, 4, 2)), np.ones((3, 4, 2))).top1 is None  # not a classifier's shape


def test_per_tensor_and_few_samples(models, tmp_path) -> None:
    m = models["cnn10"]
    names, _, _ = model_inputs(m["onnx"])
    report = quantize_int8(m["onnx"], tmp_path / "q.onnx", {names[0]: m["x"][:5].astype(np.float64)}, per_channel=False,
                           batch=2)  # float64 from the API: fed as the input's float32
    assert not report.per_channel and report.samples == 5
    assert any("recommended" in n for n in report.notes) and "per tensor" in report.summary()
    inits = onnx.load(str(tmp_path / "q.onnx")).graph.initializer
    assert all(t.dims == [] for t in inits if t.name.endswith("kernel_scale"))


def test_uint8_activations(models, tmp_path) -> None:
    m = models["cnn10"]
    names, _, _ = model_inputs(m["onnx"])
    report = quantize_int8(m["onnx"], tmp_path / "u.onnx", {names[0]: m["x"]}, activations="uint8")
    graph = onnx.load(str(tmp_path / "u.onnx")).graph
    zero_points = {t.name: t.data_type for t in graph.initializer if t.name.endswith("zero_point")}
    activation_points = [dtype for name, dtype in zero_points.items() if "kernel" not in name and "bias" not in name]
    assert activation_points and set(activation_points) == {onnx.TensorProto.UINT8}
    assert report.activations.startswith("uint8") and "uint8 (asymmetric) activations" in report.summary()
    (o,) = report.outputs
    assert o.rel < 0.05 and o.top1 is not None and o.top1 >= 0.9
    with pytest.raises(ValueError, match="activations"):
        quantize_int8(m["onnx"], tmp_path / "v.onnx", {names[0]: m["x"]}, activations="int4")  # type: ignore[arg-type]


def test_folder_of_npy(models, tmp_path) -> None:
    m = models["cnn10"]
    names, shapes, dtypes = model_inputs(m["onnx"])
    np.save(tmp_path / f"{names[0]}.npy", m["x"][:4].astype(np.float64))
    cal = load_calibration(tmp_path, names, shapes, input_dtypes=dtypes)
    assert cal[names[0]].dtype == np.float32 and cal[names[0]].shape == (4, *SHAPE)


@pytest.mark.parametrize("arrays, words", [
    ({"a": np.zeros((4, *SHAPE), np.float32), "b": np.zeros((4, *SHAPE), np.float32)}, "named after the model's inputs"),
    ({"x": np.zeros((4, 9, 9, 4), np.float32)}, "has shape (4, 9, 9, 4)"),
    ({"x": np.zeros((4, 81, 3), np.float32)}, "has shape (4, 81, 3)"),
    ({"x": np.zeros((0, *SHAPE), np.float32)}, "holds no samples"),
    ({"x": np.full((4, *SHAPE), np.nan, np.float32)}, "NaN or infinite"),
    ({"x": np.full((4, *SHAPE), 1e300)}, "beyond float32's range"),
    ({"x": np.zeros((4, *SHAPE), np.uint8)}, "has dtype uint8"),
    ({"x": np.array([{"a": 1}] * 4, dtype=object)}, "holds Python objects"),
])
def test_bad_calibration_is_one_line(models, tmp_path, arrays, words) -> None:
    names, shapes, dtypes = model_inputs(models["cnn10"]["onnx"])
    path = tmp_path / "cal.npz"
    np.savez(path, **arrays)  # the object array is pickled by savez: load_calibration must not unpickle it
    with pytest.raises(FormatError) as err:
        load_calibration(path, names, shapes, input_dtypes=dtypes)
    message = str(err.value)
    assert words in message and "\n" not in message, message


def test_bad_calibration_files(models, tmp_path) -> None:
    names, shapes, _ = model_inputs(models["cnn10"]["onnx"])
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    two = {"x": np.zeros((4, *SHAPE), np.float32), "y": np.zeros((3, *SHAPE), np.float32)}
    np.savez(tmp_path / "two.npz", **two)
    np.save(tmp_path / "one.npy", np.zeros((4, *SHAPE), np.float32))
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.npy").write_bytes(b"\x80\x04 not an array")
    cases = {
        tmp_path / "missing.npz": "not found",
        tmp_path / "junk.npz": "not a readable",
        tmp_path / "empty": "holds no .npy files",
        tmp_path / "one.npy": "must be a .npz file",
        tmp_path / "junk": "x.npy: not a readable",
    }
    for path, words in cases.items():
        with pytest.raises(FormatError, match=words):
            load_calibration(path, names, shapes)
    with pytest.raises(FormatError, match="different numbers of samples"):
        load_calibration(tmp_path / "two.npz", ["x", "y"], [shapes[0], shapes[0]])


def test_without_calibration_refused() -> None:
    error = refuse_without_calibration()
    assert str(error).startswith("int8 needs calibration data: --calibration DATA.npz")
    assert "random data calibrates badly" in str(error)
    with pytest.raises(BnconvertError, match="int8 needs calibration data"):
        quantize_int8("model.onnx", "out.onnx", {})


def test_calibration_for_other_inputs_refused(models, tmp_path) -> None:
    with pytest.raises(BnconvertError, match="calibration data for inputs 'images'; the model's are"):
        quantize_int8(models["cnn10"]["onnx"], tmp_path / "q.onnx", {"images": models["cnn10"]["x"]})
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_nothing(models, tmp_path, monkeypatch) -> None:
    import onnxruntime.quantization as q

    m = models["cnn10"]
    names, _, _ = model_inputs(m["onnx"])
    out = tmp_path / "q.onnx"

    def broken(model_input, model_output, *args, **kwargs):
        Path(model_output).write_bytes(b"half")
        raise RuntimeError("quantiser died\nsecond line")

    monkeypatch.setattr(q, "quantize_static", broken)
    with pytest.raises(BnconvertError) as err:
        quantize_int8(m["onnx"], out, {names[0]: m["x"]})
    assert "could not quantise" in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        quantize_int8(m["onnx"], out, {names[0]: m["x"]})
    assert out.read_bytes() == b"keep me"
    with pytest.raises(OutputError, match="is the input file"):
        quantize_int8(m["onnx"], m["onnx"], {names[0]: m["x"]}, force=True)


def test_a_header_declaring_more_than_memory_is_one_line(tmp_path) -> None:
    """An .npz member whose header declares 1e14 samples: numpy allocates before it reads."""
    import zipfile

    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000000, 9, 9, 3), }"
    header += " " * (118 - len(header)) + "\n"
    blob = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(64)
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as z:
        z.writestr("x.npy", blob)
    with pytest.raises(FormatError, match=r"declares more data than fits in memory|not a readable"):
        load_calibration(tmp_path / "lie.npz", ["x"], [(None, 9, 9, 3)])
