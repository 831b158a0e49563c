"""Shared helpers of the ONNX export tests: export a Keras 3 model through a file, run both, compare.

Keras 3 is imported lazily, inside the functions, so a module importing this one does not load
TensorFlow until a test needs it. Errors are ``max |keras - onnx| / max |keras|``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

import bnconvert
from bnconvert.model import Layer, Model, Source, TensorRef
from bnconvert.onnx import to_onnx

TOLERANCE = 1e-4


def rel_err(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    assert ref.shape == out.shape, (ref.shape, out.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ref - out).max() / (scale if scale > 0 else 1.0))


def check_model(proto: onnx.ModelProto) -> None:
    """The checks every exported model must pass."""
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)


def run_onnx(proto: onnx.ModelProto, xs: list[np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})


def randomize(model: Any, seed: int = 0) -> None:
    """Non-trivial BN statistics (never 1/0), biases, PReLU slopes; kernels keep Keras' init."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        kind = v.path.split("/")[-1]
        shape = tuple(v.shape)
        if kind == "moving_variance":
            value = rng.uniform(0.3, 2.0, shape)
        elif kind in ("moving_mean", "beta", "bias"):
            value = rng.normal(0.0, 0.5, shape)
        elif kind == "gamma":
            value = rng.uniform(0.5, 1.5, shape) * np.where(rng.random(shape) < 0.2, -1, 1)
        elif kind == "alpha":
            value = rng.uniform(0.05, 0.5, shape)
        else:
            continue
        v.assign(value.astype(np.float32))


def inputs_for(model: Any, seed: int = 1, batch: int = 2, low: float | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(batch, *tuple(t.shape[1:])) for t in model.inputs]
    if low is None:
        return [rng.normal(0.0, 1.0, s).astype(np.float32) for s in shapes]
    return [rng.uniform(low, 1.0, s).astype(np.float32) for s in shapes]


def keras_predict(model: Any, xs: list[np.ndarray], *, jit: bool | None = None) -> list[np.ndarray]:
    """Keras 3 inference; XLA for channels_first models (TF on CPU has no NCHW conv kernel)."""
    import tensorflow as tf

    if jit is None:
        jit = any(getattr(layer, "data_format", None) == "channels_first" for layer in _all_layers(model))
    arg = xs if len(xs) > 1 else xs[0]
    if jit:
        fn = tf.function(lambda *a: model(list(a) if len(a) > 1 else a[0], training=False), jit_compile=True, autograph=False)
        ys = fn(*xs)
    else:
        ys = model(arg, training=False)
    return [np.asarray(y) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def export_keras(model: Any, tmp_path: Path, *, fmt: str = "keras", opset: int = 17, nchw: bool = False,
                 name: str = "model") -> tuple[onnx.ModelProto, Model]:
    """Save ``model`` as ``.keras`` or ``.h5``, read it back with bnconvert, export it."""
    path = tmp_path / f"{name}.{fmt}"
    model.save(path)
    loaded = bnconvert.load(path)
    return to_onnx(loaded, opset=opset, nchw=nchw), loaded


def roundtrip(model: Any, tmp_path: Path, *, opsets: tuple[int, ...] = (17,), fmt: str = "keras", seed: int = 1,
              xs: list[np.ndarray] | None = None, tolerance: float = TOLERANCE) -> dict[int, float]:
    """Export ``model`` at each opset, check the graph, and compare with Keras; returns the errors."""
    xs = xs if xs is not None else inputs_for(model, seed)
    ref = keras_predict(model, xs)
    errors = {}
    for opset in opsets:
        proto, _ = export_keras(model, tmp_path, fmt=fmt, opset=opset, name=f"model_{opset}")
        check_model(proto)
        outs = run_onnx(proto, xs)
        assert len(outs) == len(ref)
        errors[opset] = max(rel_err(r, o) for r, o in zip(ref, outs))
        assert errors[opset] <= tolerance, f"opset {opset}: relative error {errors[opset]:.2e}"
    return errors


def chain_model(layers: list[Layer], batch_shape: list[int | None], *, fmt: str = "keras3-zip") -> Model:
    """A hand-built bnconvert Sequential model (for layers Keras 3 cannot produce)."""
    inp = Layer(name="input", class_name="InputLayer", config={"batch_shape": batch_shape, "dtype": "float32"})
    prev = inp
    for layer in layers:
        layer.calls = [[TensorRef(prev.name)]]
        layer.call_kwargs = [{}]
        prev = layer
    return Model(name="hand_built", layers=[inp, *layers], inputs=[TensorRef("input")], outputs=[TensorRef(prev.name)],
                 kind="Sequential", source=Source(path="hand_built.h5", format=fmt))
