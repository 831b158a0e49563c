"""float16 export (:mod:`bnconvert.deploy.fp16`) against Keras 3.

Every Keras model is built once for the module (random BN statistics, a few channels set by hand
where a test needs float16 to overflow or flush them), saved as ``.keras``, read back by bnconvert,
folded, exported with :func:`~bnconvert.onnx.export.to_onnx_parts`, turned into float16, run by
onnxruntime and compared with Keras: the pass rule of the check with :data:`FP16_ATOL` and
:data:`FP16_RTOL` (``|keras - onnx| <= atol + rtol * max|keras|``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator

import bnconvert
from bnconvert.deploy import fp16
from bnconvert.deploy.fp16 import FP16_ATOL, FP16_RTOL, Fp16RiskError, analyse, to_float16
from bnconvert.deploy.fp16_analysis import _weight_findings, layer_namer
from bnconvert.onnx.export import to_onnx, to_onnx_parts
from bnconvert.onnx.save import add_initializers

from ..onnx.helpers import check_model, randomize, rel_err, run_onnx

OPSETS = (13, 17)


def _passes(ref: np.ndarray, out: np.ndarray) -> bool:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    return bool(np.all(np.abs(ref - out) <= FP16_ATOL + FP16_RTOL * np.abs(ref).max()))


def _set_channel(layer: Any, channel: int, **values: float) -> None:
    """Set one channel of some of a layer's vectors (gamma, moving_variance, bias...)."""
    for v in layer.weights:
        kind = v.path.split("/")[-1]
        if kind in values:
            arr = np.asarray(v.numpy()).copy()
            arr[channel] = values[kind]
            v.assign(arr)


def _build(folder: Path) -> dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]:
    """name -> (saved .keras file, inputs, Keras outputs)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(7)
    models: dict[str, Any] = {}

    i = keras.Input((9, 9, 3))
    y = L.Conv2D(6, 3, name="conv_a")(i)
    y = L.BatchNormalization(name="bn_a")(y)
    y = L.ReLU()(y)
    y = L.Conv2D(4, 3, padding="same", name="conv_b")(y)
    y = L.BatchNormalization(name="bn_b")(y)
    y = L.Flatten()(L.Activation("relu")(y))
    models["cnn"] = keras.Model(i, L.Dense(5, name="head")(y))

    # channel 0 of big_conv: scale gamma/sqrt(var+eps) = 5e5 folds into a kernel beyond 65504;
    # its input is scaled by 1e-3 first and its bias is 0, so its outputs (and everything after) stay
    # in float16's range
    i = keras.Input((7, 7, 3))
    y = L.Rescaling(1e-3, name="scale_down")(i)
    y = L.Conv2D(4, 3, name="big_conv")(y)
    y = L.BatchNormalization(name="bn_big")(y)
    y = L.GlobalAveragePooling2D()(L.ReLU()(y))
    models["overflow"] = keras.Model(i, L.Dense(3, name="head")(y))

    # channel 1 of tiny_conv: gamma 1e-9 folds into weights below float16's smallest subnormal
    i = keras.Input((7, 7, 3))
    y = L.Conv2D(4, 3, name="tiny_conv")(i)
    y = L.BatchNormalization(name="bn_tiny")(y)
    y = L.GlobalAveragePooling2D()(L.ReLU()(y))
    models["underflow"] = keras.Model(i, L.Dense(3, name="head")(y))

    # a masked GRU (a Scan whose body is the cell) and native LSTMs with a Dense per step (a
    # Transpose to batch-major, then a MatMul) and a BN folded between
    i = keras.Input((6, 3))
    a = L.GRU(4, name="gru")(L.Masking(0.25)(i))
    b = L.Dense(4, name="per_step")(L.LSTM(5, return_sequences=True, name="lstm_a")(i))
    b = L.LSTM(4, name="lstm_b")(L.BatchNormalization(name="bn_seq")(b))
    models["sequence"] = keras.Model(i, L.Dense(3, name="head")(L.Concatenate()([a, b])))

    # a Keras Application (as tests/onnx/test_applications.py builds them)
    models["MobileNetV2"] = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3))

    out = {}
    for seed, (name, model) in enumerate(models.items()):
        randomize(model, seed)
        if name == "overflow":
            _set_channel(model.get_layer("bn_big"), 0, gamma=2.24e4, moving_variance=1e-3, moving_mean=1e-6, beta=0.3)
            _set_channel(model.get_layer("big_conv"), 0, bias=0.0)
        if name == "underflow":
            _set_channel(model.get_layer("bn_tiny"), 1, gamma=1e-9)
        shape = (3, *model.inputs[0].shape[1:])
        x = rng.uniform(0.0, 1.0, shape).astype(np.float32)
        if name == "sequence":
            x[0, :2] = 0.25  # two masked steps
        path = folder / f"{name}.keras"
        model.save(path)
        out[name] = (path, [x], [np.asarray(model(x, training=False))])
    return out


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]:
    return _build(tmp_path_factory.mktemp("fp16"))


def _parts(path: Path, *, opset: int = 17, fold: bool = True) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[str]]:
    model = bnconvert.load(path)
    if fold:
        model, _ = bnconvert.fold_model(model)
    proto, constants = to_onnx_parts(model, opset=opset)
    return proto, constants, [p for p, _, _ in model.walk()]


def _run(proto: onnx.ModelProto, constants: dict[str, np.ndarray], xs: list[np.ndarray]) -> list[np.ndarray]:
    """onnxruntime with its default options, as a user loads the file (its full optimisation level
    fuses nodes, and once crashed on a float16 Transpose + MatMul) and with none."""
    full = onnx.ModelProto()
    full.CopyFrom(proto)
    add_initializers(full, constants)
    check_model(full)
    session = ort.InferenceSession(full.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})
    for a, b in zip(outs, run_onnx(full, xs)):
        np.testing.assert_allclose(a, b, rtol=FP16_RTOL, atol=FP16_ATOL)
    return outs


def _run_reference(proto: onnx.ModelProto, constants: dict[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    """The first output by onnx's reference runtime, which computes each float16 node in float16
    (onnxruntime's CPU kernels mostly compute float16 nodes in float32, and drop the Cast pairs
    between them)."""
    full = onnx.ModelProto()
    full.CopyFrom(proto)
    add_initializers(full, constants)
    with np.errstate(over="ignore"):
        return ReferenceEvaluator(full).run(None, {i.name: x for i, x in zip(proto.graph.input, xs)})[0]


def _body_types(proto: onnx.ModelProto) -> set[int]:
    """Element types of the inputs and outputs of the Scan bodies (floats and the mask)."""
    return {vi.type.tensor_type.elem_type for node in proto.graph.node for attr in node.attribute if attr.HasField("g")
            for vi in (*attr.g.input, *attr.g.output)}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", ["cnn", "sequence"])
def test_float16_matches_keras(cases, name, opset):
    path, xs, ref = cases[name]
    proto, constants, layers = _parts(path, opset=opset)
    err32 = rel_err(ref[0], _run(proto, constants, xs)[0])
    half, half_constants, report = to_float16(proto, constants, layers=layers)
    assert not report.findings and not report.kept_float32
    # weights in float16: every float initializer; compute in float16: error well above float32's
    floats = {n: a for n, a in half_constants.items() if a.dtype.kind == "f"}
    single = {n for n, a in floats.items() if a.dtype == np.float32}
    assert len(floats) > 5 and single == ({"per_step/kernel"} if name == "sequence" else set())  # read by a float32 MatMul
    assert all(constants[n].dtype == np.float32 for n in floats)  # the input constants are untouched
    (out,) = _run(half, half_constants, xs)
    assert out.dtype == np.float32
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [TensorProto.FLOAT]
    err16 = rel_err(ref[0], out)
    assert _passes(ref[0], out), f"float16 off by {err16:.2e} of max|keras|"
    assert err16 > 10 * err32, (err16, err32)
    if name != "sequence":  # onnx.reference runs a Scan over axis 0 only; bnconvert's scan batch-major inputs
        emulated = _run_reference(half, half_constants, xs)
        assert _passes(ref[0], emulated), rel_err(ref[0], emulated)
    if name == "sequence":
        assert any(n.op_type == "Scan" for n in half.graph.node)
        assert report.float32_ops == {"Transpose": 1, "MatMul": 1}  # the pair onnxruntime cannot load in float16
        assert _body_types(half) == {TensorProto.FLOAT16, TensorProto.BOOL}  # the cell's body in float16 too
    assert "kept in float32" not in report.summary()


def test_keras_application(cases):
    path, xs, ref = cases["MobileNetV2"]
    proto, constants, layers = _parts(path)
    half, half_constants, report = to_float16(proto, constants, layers=layers)
    assert not report.kept_float32 and report.float16_initializers > 100 and report.casts == 2
    for out in (_run(half, half_constants, xs)[0], _run_reference(half, half_constants, xs)):
        assert _passes(ref[0], out), rel_err(ref[0], out)
        assert np.array_equal(out.argmax(-1), ref[0].argmax(-1))  # the same top class for every sample


def test_whole_model_proto(cases):
    """A ModelProto holding its initializers (to_onnx) converts like the two parts."""
    path, xs, ref = cases["cnn"]
    model, _ = bnconvert.fold_model(bnconvert.load(path))
    whole = to_onnx(model)
    half, half_constants, _ = to_float16(whole, {})
    assert not half.graph.initializer and {a.dtype for a in half_constants.values() if a.dtype.kind == "f"} == {np.dtype(np.float16)}
    assert len(whole.graph.initializer) == len(half_constants)  # the input is untouched
    assert _passes(ref[0], _run(half, half_constants, xs)[0])


def test_float16_io(cases):
    path, xs, ref = cases["cnn"]
    proto, constants, layers = _parts(path)
    half, half_constants, report = to_float16(proto, constants, io_float16=True, layers=layers)
    assert report.io_dtype == "float16" and report.casts == 0
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [TensorProto.FLOAT16]
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [TensorProto.FLOAT16]
    (out,) = _run(half, half_constants, [x.astype(np.float16) for x in xs])
    assert out.dtype == np.float16
    assert _passes(ref[0], out)


def test_overflow_layer_kept_float32(cases, monkeypatch):
    path, xs, ref = cases["overflow"]
    proto, constants, layers = _parts(path)
    with np.errstate(over="ignore"):
        assert np.isinf(constants["big_conv/kernel"].astype(np.float16)).any()  # what a plain cast would do
    half, half_constants, report = to_float16(proto, constants, layers=layers)
    assert [layer for layer, _ in report.kept_float32] == ["big_conv"]
    assert {f.kind for f in report.findings} == {"overflow"}
    assert half_constants["big_conv/kernel"].dtype == np.float32
    assert half_constants["head/kernel"].dtype == np.float16
    big = [n for n in half.graph.node if n.name == "big_conv"]
    assert big and all(v in half_constants or v.endswith("/float32") for v in big[0].input)  # a Cast before it
    (out,) = _run(half, half_constants, xs)
    assert np.all(np.isfinite(out)) and np.abs(ref[0]).max() > 10
    assert _passes(ref[0], out), rel_err(ref[0], out)
    emulated = _run_reference(half, half_constants, xs)  # every activation within float16's range
    assert _passes(ref[0], emulated), rel_err(ref[0], emulated)
    assert "'big_conv'" in report.summary() and "65504" in report.summary()
    json.dumps(report.to_dict())

    monkeypatch.setattr(fp16, "analyse", lambda *args, **kwargs: [])  # what casting everything would give
    blind, blind_constants, _ = to_float16(proto, constants, layers=layers)
    monkeypatch.undo()
    with np.errstate(all="ignore"):
        assert not np.all(np.isfinite(_run(blind, blind_constants, xs)[0]))

    with pytest.raises(Fp16RiskError) as exc:
        to_float16(proto, constants, on_risk="refuse", layers=layers)
    message = str(exc.value)
    assert "\n" not in message and "'big_conv'" in message and "--fp16-risky keep" in message


def test_underflow_channel_found(cases):
    path, xs, ref = cases["underflow"]
    proto, constants, _ = _parts(path)
    kernel = constants["tiny_conv/kernel"]
    assert kernel.dtype == np.float32 and not np.any(kernel[1].astype(np.float16)) and np.any(kernel[1])
    findings = analyse(proto, constants)
    assert [(f.layer, f.kind) for f in findings] == [("tiny_conv", "underflow")]
    assert "1 of 4 output channels" in findings[0].detail
    half, half_constants, report = to_float16(proto, constants)  # without layers: named by the node names
    assert [layer for layer, _ in report.kept_float32] == ["tiny_conv"]
    assert half_constants["tiny_conv/kernel"].dtype == np.float32
    (out,) = _run(half, half_constants, xs)
    assert _passes(ref[0], out)
    with pytest.raises(Fp16RiskError, match=r"tiny_conv.*all zero"):
        to_float16(proto, constants, on_risk="refuse")


def test_unfolded_batchnorm_judged_by_its_scale(cases):
    """A BN that stays (an ONNX BatchNormalization) is judged by gamma/sqrt(var+eps), not by a
    tiny variance that float16 holds badly but epsilon outweighs."""
    path, xs, ref = cases["cnn"]
    proto, constants, layers = _parts(path, fold=False)
    assert any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    tiny = dict(constants)
    tiny["bn_a/moving_variance"] = np.full_like(constants["bn_a/moving_variance"], 1e-7)  # subnormal in float16
    assert not analyse(proto, tiny, layers=layers)
    half, half_constants, report = to_float16(proto, constants, layers=layers)
    assert not report.kept_float32
    (out,) = _run(half, half_constants, xs)
    assert _passes(ref[0], out)
    huge = dict(constants)
    huge["bn_a/gamma"] = np.full_like(constants["bn_a/gamma"], 1e4)
    huge["bn_a/moving_variance"] = np.full_like(constants["bn_a/moving_variance"], 1e-6)
    found = analyse(proto, huge, layers=layers)
    assert [(f.layer, f.kind) for f in found] == [("bn_a", "overflow")]


def test_weight_findings_per_channel():
    w = np.random.default_rng(0).normal(0.0, 0.1, (4, 3, 3, 3)).astype(np.float32)
    assert _weight_findings(w, 0, 1e-2) == []
    w[2] *= 1e-8  # one output channel below float16's smallest subnormal
    w[3] *= 1e-5  # one held in subnormals (about 1e-6): rounded by about 2%
    w[0, 0, 0, 0] = 1e5
    kinds = dict(_weight_findings(w, 0, 1e-2))
    assert set(kinds) == {"overflow", "underflow", "precision"}
    assert kinds["overflow"].startswith("1 of 108 values") and "1 of 4 output channels" in kinds["underflow"]
    gains = np.array([1e-9, 0.0, 0.5], np.float32)  # a vector: every value its own channel; 0 stays 0
    assert [k for k, _ in _weight_findings(gains, None, 1e-2)] == ["underflow"]
    assert _weight_findings(gains, None, 1e-2, added=True) == []  # a bias: its rounding is below the sum's


def test_nodes_named_after_their_layers():
    layer_of = layer_namer(["conv", "outer", "outer/inner", "dense"])
    assert layer_of("conv") == layer_of("conv/bias_add") == layer_of("conv_1") == "conv"
    assert layer_of("outer/inner/matmul") == "outer/inner" and layer_of("outer/other") == "outer"
    assert layer_of("dense/call1/matmul") == "dense"  # a second call of a shared layer
    assert layer_namer(None)("outer/inner/matmul") == "outer"
