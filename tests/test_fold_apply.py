"""The graph pass: which BN fold (the fixtures' documented outcomes), what the new model looks like,
that the input is never touched, and that folded models compute the same thing (a small numpy
interpreter runs original and folded models; no Keras needed)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import bnconvert
from bnconvert.catalog import kernel_layout
from bnconvert.errors import FoldError
from bnconvert.fold import fold_model, plan_folds
from bnconvert.model import Layer, Model, TensorRef

from .conftest import fixture_file


# -- a tiny numpy interpreter (channels_last, stride-1 or strided valid/same convs) ----------------------
def _act(name: str, x: np.ndarray) -> np.ndarray:
    return {
        "linear": lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "softmax": lambda v: np.exp(v - v.max(-1, keepdims=True)) / np.exp(v - v.max(-1, keepdims=True)).sum(-1, keepdims=True),
    }[name](x)


def _pad(x: np.ndarray, k: list[int], padding: str) -> np.ndarray:
    if padding != "same":
        return x
    pads = [(0, 0)] + [((kk - 1) // 2, kk - 1 - (kk - 1) // 2) for kk in k] + [(0, 0)]
    return np.pad(x, pads)


def _conv(layer: Layer, x: np.ndarray) -> np.ndarray:
    c, w = layer.config, layer.weights
    assert c.get("data_format", "channels_last") != "channels_first"
    n = x.ndim - 2
    kernel = np.asarray(w["depthwise_kernel"] if "depthwise_kernel" in w else w["kernel"], np.float64)
    k = list(kernel.shape[:n])
    strides = c.get("strides", [1] * n)
    strides = list(strides) if isinstance(strides, (list, tuple)) else [strides] * n
    xp = _pad(x, k, c.get("padding", "valid"))
    win = sliding_window_view(xp, k, axis=tuple(range(1, n + 1)))  # (N, *out, C, *k)
    win = win[(slice(None), *(slice(None, None, s) for s in strides))]
    sp = "hw"[:n] if n <= 2 else "dhw"
    kk = "ij"[:n] if n <= 2 else "ijl"
    layout = kernel_layout(layer.class_name)
    if layout.depthwise:  # depthwise or separable
        y = np.einsum(f"n{sp}c{kk},{kk}cm->n{sp}cm", win, kernel).reshape(*win.shape[: n + 1], -1)
        if layout.separable:
            y = y @ np.asarray(w["pointwise_kernel"], np.float64).reshape(-1, w["pointwise_kernel"].shape[-1])
    else:
        y = np.einsum(f"n{sp}c{kk},{kk}co->n{sp}o", win, kernel)
    if c.get("use_bias", True) and "bias" in w:
        y = y + w["bias"]
    return _act(c.get("activation", "linear"), y)


def _pool(layer: Layer, x: np.ndarray, op) -> np.ndarray:  # noqa: ANN001
    n = x.ndim - 2
    size = layer.config.get("pool_size", [2] * n)
    size = list(size) if isinstance(size, (list, tuple)) else [size] * n
    win = sliding_window_view(x, size, axis=tuple(range(1, n + 1)))
    win = win[(slice(None), *(slice(None, None, s) for s in size))]
    return op(win, axis=tuple(range(-n, 0)))


def _bn(layer: Layer, x: np.ndarray) -> np.ndarray:
    p = bnconvert.bn_params(layer)
    axis = p.axis[0] % x.ndim
    if layer.config.get("virtual_batch_size") and p.axis[0] > 0:
        axis = (p.axis[0] - 1) % x.ndim
    shape = [1] * x.ndim
    shape[axis] = p.channels
    return x * p.fold_scale.reshape(shape) + p.fold_shift.reshape(shape)


def _call(layer: Layer, xs: list[np.ndarray]) -> list[np.ndarray]:
    cls, x = layer.class_name, xs[0]
    if layer.model is not None:
        return forward(layer.model, xs)
    if cls == "Dense":
        y = x @ layer.weights["kernel"] + (layer.weights["bias"] if layer.config.get("use_bias", True) else 0)
        return [_act(layer.config.get("activation", "linear"), y)]
    if kernel_layout(cls) is not None:  # the convolutions
        return [_conv(layer, x)]
    if cls == "BatchNormalization":
        return [_bn(layer, x)]
    if cls == "Activation":
        return [_act(layer.config["activation"], x)]
    if cls == "ReLU":
        return [np.maximum(x, 0)]
    if cls in ("Dropout", "GaussianNoise", "GaussianDropout", "SpatialDropout2D", "AlphaDropout", "ActivityRegularization"):
        return [x]
    if cls.startswith("MaxPooling"):
        return [_pool(layer, x, np.max)]
    if cls == "GlobalAveragePooling2D":
        return [x.mean(axis=(1, 2))]
    if cls == "Flatten":
        return [x.reshape(len(x), -1)]
    if cls == "Reshape":
        return [x.reshape(len(x), *layer.config["target_shape"])]
    if cls == "Add":
        return [sum(xs)]
    if cls == "Concatenate":
        return [np.concatenate(xs, axis=layer.config.get("axis", -1))]
    raise NotImplementedError(cls)


def forward(model: Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``model`` (float64) on ``inputs`` in the order of ``model.inputs``."""
    values = {ref: np.asarray(x, np.float64) for ref, x in zip(model.inputs, inputs)}
    pending = [layer for layer in model.layers if layer.calls]
    while pending:
        progressed = False
        for layer in list(pending):
            if all(r in values for call in layer.calls for r in call):
                for k, call in enumerate(layer.calls):
                    for j, y in enumerate(_call(layer, [values[r] for r in call])):
                        values[TensorRef(layer.name, k, j)] = y
                pending.remove(layer)
                progressed = True
        assert progressed, "graph does not resolve"
    return [values[r] for r in model.outputs]


def _inputs(model: Model, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [model[r.layer].config.get("batch_shape") or model[r.layer].config.get("batch_input_shape") for r in model.inputs]
    return [rng.uniform(0, 1, (2, *shape[1:])) for shape in shapes]


def _rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max() / np.abs(x).max()) for x, y in zip(a, b))


def _bn_names(model: Model) -> list[str]:
    return [path for path, layer, _ in model.walk() if layer.class_name == "BatchNormalization"]


# -- the fixtures' documented outcomes ---------------------------------------------------------------------
EXPECTED = {
    # file: (folded BN paths -> action, BN paths that stay)
    "k3_educba.keras": ({"batch_normalization": "merge", "batch_normalization_1": "forward", "batch_normalization_2": "merge",
                         "batch_normalization_3": "forward", "batch_normalization_4": "forward"}, []),
    "k3_educba_neg_gamma.keras": ({"batch_normalization_1": "forward", "batch_normalization_3": "forward", "batch_normalization_4": "forward"},
                                  ["batch_normalization", "batch_normalization_2"]),
    "k3_dense_tanh.keras": ({"batch_normalization": "backward", "batch_normalization_1": "backward", "batch_normalization_2": "backward"}, []),
    "k3_chain.keras": ({f"batch_normalization{s}": "backward" for s in ("", "_1", "_2", "_3", "_4")}, []),
    "k3_conv1d.keras": ({"batch_normalization": "backward", "batch_normalization_1": "backward"}, []),
    "k3_functional.keras": ({"inner_seq/inner_seq_bn": "backward", "inner_fn/inner_fn_bn": "backward", "bn_head": "backward"},
                            ["bn_after_shared", "bn_after_add", "bn_fork"]),
    "k3_bn_variants.keras": (dict.fromkeys(("bn_no_center", "bn_no_scale", "bn_no_affine", "bn_eps_0p01", "bn_renorm"), "backward")
                             | {"bn_axis1_rank3": "forward"}, []),
    "k3_after_act.keras": ({"bn_fwd_valid_conv": "forward", "bn_fwd_dense": "forward"}, ["bn_before_same_conv"]),
    "k3_channels_first.keras": ({"batch_normalization": "backward", "batch_normalization_1": "backward"}, []),
    "tfk_functional.h5": ({"inner_seq/inner_seq_bn": "backward", "inner_fn/inner_fn_bn": "backward", "bn_head": "backward"},
                          ["bn_after_shared", "bn_after_add", "bn_fork"]),
    "tfk_bn_variants.h5": (dict.fromkeys(("bn_eps_1em6", "bn_no_center", "bn_no_scale", "bn_renorm"), "backward"), ["bn_axes_1_2"]),
    "tfk_bn_virtual_batch.h5": ({"bn_virtual_batch": "backward"}, []),
    "k1_tf_seq.h5": ({f"batchnormalization_{i}": "backward" for i in (1, 2, 3)}, []),
    "k1_th_model.h5": ({f"batchnormalization_{i}": "backward" for i in (1, 2, 3)}, []),
    "k1_mode2.h5": ({"batchnorm2": "backward"}, ["batchnorm1"]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_outcomes(name: str) -> None:
    folds, stays = EXPECTED[name]
    model = bnconvert.load(fixture_file(name))
    decisions = {d.path: d for d in plan_folds(model)}
    assert {p: d.action for p, d in decisions.items() if d.folds} == folds
    assert sorted(p for p, d in decisions.items() if not d.folds) == sorted(stays)
    folded, report = fold_model(model)
    assert sorted(_bn_names(folded)) == sorted(stays)
    assert report.totals["folded"] == len(folds) and report.totals["stays"] == len(stays)


REASONS = {
    ("k3_educba_neg_gamma.keras", "batch_normalization"): ["activation relu", "negative or zero", "MaxPooling2D"],
    ("k3_functional.keras", "bn_after_shared"): ["shared (2 calls)", "'add' (Add) takes 2 inputs"],
    ("k3_functional.keras", "bn_after_add"): ["'add' (Add) (2 inputs)", "nested model 'inner_seq'"],
    ("k3_functional.keras", "bn_fork"): ["'fork_conv' (Conv2D) also feeds other layers", "takes 2 inputs"],
    ("k3_after_act.keras", "bn_before_same_conv"): ["activation relu", "same padding", "shift is not zero"],
    ("tfk_bn_variants.h5", "bn_axes_1_2"): ["several axes [1, 2]"],
    ("k1_mode2.h5", "batchnorm1"): ["Keras 1 mode 2"],
}


@pytest.mark.parametrize("name,bn", sorted(REASONS))
def test_reasons_for_bn_that_stay(name: str, bn: str) -> None:
    decision = {d.path: d for d in plan_folds(bnconvert.load(fixture_file(name)))}[bn]
    assert decision.action == "stays"
    for fragment in REASONS[(name, bn)]:
        assert fragment in decision.reason, decision.reason


@pytest.mark.parametrize("name", ["k3_educba.keras", "k3_educba_neg_gamma.keras", "k3_dense_tanh.keras", "k3_after_act.keras",
                                  "k3_conv1d.keras", "k3_functional.keras", "k3_bn_variants.keras", "tfk_functional.h5"])
def test_folded_model_computes_the_same(name: str) -> None:
    model = bnconvert.load(fixture_file(name))
    folded, _ = fold_model(model)
    xs = _inputs(model)
    assert _rel(forward(model, xs), forward(folded, xs)) < 1e-6


def test_keras1_and_virtual_batch_match_their_ground_truth() -> None:
    for name in ("k1_tf_seq.h5", "tfk_bn_virtual_batch.h5"):
        model = bnconvert.load(fixture_file(name))
        folded, _ = fold_model(model)
        truth = np.load(fixture_file(name.replace(".h5", ".expected.npz")))
        y = forward(folded, [truth["x"]])[0]
        assert np.abs(y - truth["y"]).max() / np.abs(truth["y"]).max() < 1e-5, name


# -- the new model ------------------------------------------------------------------------------------------
def _snapshot(model: Model) -> list:
    return [(path, layer.class_name, copy.deepcopy(layer.config), {k: v.copy() for k, v in layer.weights.items()},
             [list(c) for c in layer.calls]) for path, layer, _ in model.walk()]


def test_input_model_is_not_modified_and_identities_are_dropped() -> None:
    model = bnconvert.load(fixture_file("k3_dense_tanh.keras"))
    before = _snapshot(model)
    folded, report = fold_model(model)
    after = _snapshot(model)
    assert len(before) == len(after)
    for (p1, c1, cfg1, w1, calls1), (p2, c2, cfg2, w2, calls2) in zip(before, after):
        assert (p1, c1, cfg1, calls1) == (p2, c2, cfg2, calls2)
        assert w1.keys() == w2.keys() and all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert [layer.class_name for layer in folded.layers] == ["InputLayer", "Dense", "Activation"] * 1 + ["Dense", "Activation"] * 2 + ["Dense"]
    assert len(report.dropped) == 3 and all(d.startswith("dropout") for d in report.dropped)
    for layer in folded.layers[1:]:  # rewired: every call reads a layer that still exists
        assert all(ref.layer in folded for call in layer.calls for ref in call)
    assert report.changed == ["dense", "dense_1", "dense_2"]


def test_created_bias_and_dtype() -> None:
    model = bnconvert.load(fixture_file("k3_chain.keras"))
    folded, report = fold_model(model)
    depthwise = next(layer for layer in folded.layers if layer.class_name == "DepthwiseConv2D")
    assert depthwise.config["use_bias"] is True and depthwise.weights["bias"].shape == (12,)  # 6 channels x multiplier 2
    assert depthwise.weights["bias"].dtype == np.float32
    assert report.created_bias == [depthwise.name]
    original = model[depthwise.name]
    assert original.config["use_bias"] is False and "bias" not in original.weights


def _bn_layer(name: str, n: int, rng: np.random.Generator, call: TensorRef, **cfg) -> Layer:
    weights = {
        "gamma": rng.uniform(0.5, 1.5, n).astype(np.float32), "beta": rng.normal(0, 0.5, n).astype(np.float32),
        "moving_mean": rng.normal(0, 0.5, n).astype(np.float32), "moving_variance": rng.uniform(0.3, 2, n).astype(np.float32),
    }
    if cfg.get("scale") is False:
        del weights["gamma"]
    if cfg.get("center") is False:
        del weights["beta"]
    return Layer(name, "BatchNormalization", {"axis": -1, "epsilon": 1e-3, **cfg}, weights, [[call]])


def _dense_model(rng: np.random.Generator, *, second: dict, output_is_bn: bool = True) -> Model:
    layers = [
        Layer("x", "InputLayer", {"batch_shape": [None, 4]}),
        Layer("d", "Dense", {"units": 3, "activation": "relu"}, {"kernel": rng.normal(size=(4, 3)).astype(np.float32),
                                                                  "bias": rng.normal(size=3).astype(np.float32)}, [[TensorRef("x")]]),
    ]
    layers.append(_bn_layer("bn1", 3, rng, TensorRef("d")))
    layers.append(Layer("drop", "Dropout", {"rate": 0.5}, {}, [[TensorRef("bn1")]]))
    layers.append(_bn_layer("bn2", 3, rng, TensorRef("drop"), **second))
    return Model("m", layers, [TensorRef("x")], [TensorRef("bn2")])


def test_bn_that_stays_carries_the_merged_affine() -> None:
    rng = np.random.default_rng(3)
    model = _dense_model(rng, second={"center": False, "scale": False})
    folded, report = fold_model(model)
    outcome = {bn.path: bn for bn in report.batch_norms}
    assert outcome["bn1"].action == "merge" and outcome["bn1"].target == "bn2"
    assert outcome["bn2"].action == "stays" and outcome["bn2"].absorbed == ["bn1"]
    assert "model output" in outcome["bn2"].reason
    assert [layer.name for layer in folded.layers] == ["x", "d", "bn2"]
    bn2 = folded["bn2"]
    assert bn2.config["center"] is True and bn2.config["scale"] is True
    assert list(bn2.weights) == ["gamma", "beta", "moving_mean", "moving_variance"]
    xs = [rng.normal(size=(5, 4))]
    assert _rel(forward(model, xs), forward(folded, xs)) < 1e-6
    assert model["bn2"].config["center"] is False  # the input is untouched


def test_nan_in_a_bn_that_would_fold_is_refused() -> None:
    rng = np.random.default_rng(4)
    model = _dense_model(rng, second={})
    model["d"].config["activation"] = "linear"
    model["bn1"].weights["moving_variance"] = np.array([1.0, -5.0, 1.0], np.float32)
    with pytest.raises(FoldError, match="'bn1'"):
        fold_model(model)
    decision = next(d for d in plan_folds(model) if d.bn == "bn1")
    assert decision.blocked and decision.action == "stays"


def test_nan_in_a_bn_that_stays_anyway_is_reported_not_refused() -> None:
    model = bnconvert.load(fixture_file("k3_functional.keras"))
    model["bn_after_add"].weights["moving_mean"] = np.full(4, np.nan, np.float32)
    _, report = fold_model(model)
    outcome = {bn.path: bn for bn in report.batch_norms}["bn_after_add"]
    assert outcome.action == "stays" and "NaN" in outcome.reason


def test_forward_through_reshape_needs_a_per_unit_scale() -> None:
    rng = np.random.default_rng(5)
    layers = [
        Layer("x", "InputLayer", {"batch_shape": [None, 2, 3]}),
        Layer("a", "Activation", {"activation": "relu"}, {}, [[TensorRef("x")]]),
        _bn_layer("bn", 3, rng, TensorRef("a")),
        Layer("r", "Reshape", {"target_shape": [3, 2]}, {}, [[TensorRef("bn")]]),
        Layer("d", "Dense", {"units": 2}, {"kernel": rng.normal(size=(2, 2)).astype(np.float32), "bias": np.zeros(2, np.float32)},
              [[TensorRef("r")]]),
    ]
    model = Model("m", layers, [TensorRef("x")], [TensorRef("d")])
    decision = plan_folds(model)[0]
    assert decision.action == "stays" and "varies along an axis" in decision.reason
    layers[3].config["target_shape"] = [6]  # now every unit Dense reads has one scale: folds
    layers[4].weights["kernel"] = rng.normal(size=(6, 2)).astype(np.float32)
    model = Model("m", layers, [TensorRef("x")], [TensorRef("d")])
    folded, report = fold_model(model)
    assert report.batch_norms[0].action == "forward"
    xs = [rng.normal(size=(3, 2, 3))]
    assert _rel(forward(model, xs), forward(folded, xs)) < 1e-6


def test_identity_as_model_output_is_rewired() -> None:
    rng = np.random.default_rng(6)
    model = _dense_model(rng, second={})
    model.outputs = [TensorRef("drop")]
    model.layers = [layer for layer in model.layers if layer.name != "bn2"]
    model = model.with_layers(model.layers)
    folded, _ = fold_model(model)
    assert folded.outputs == [TensorRef("d")] or folded.outputs == [TensorRef("bn1")]
    xs = [rng.normal(size=(2, 4))]
    assert _rel(forward(model, xs), forward(folded, xs)) < 1e-6
