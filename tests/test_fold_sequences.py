"""Folding BatchNormalization into and around sequence layers, against Keras itself.

Small Keras 3 models (BN -> LSTM / GRU both ``reset_after`` / SimpleRNN / Bidirectional /
RNN(StackedRNNCells) / ConvLSTM2D / TimeDistributed, Embedding ``mask_zero``, Masking) with
non-trivial BN statistics are built once, saved and predicted by Keras; bnconvert reads, folds
and writes them, and Keras loads the folded file and must give the original model's outputs
within 1e-5 (max abs difference / max abs output). A tf-keras model (one subprocess) is checked
the same way, its folded file run by bnconvert's float64 reference (Keras 3 cannot load a tf-keras
GRU with ``reset_after=False`` the same way, and the reference is written from Keras' source, not
from the fold). The fold arithmetic is also checked against the closed formulas in plain numpy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.fold import fold_model, plan_folds
from bnconvert.fold.kernels import fold_forward, scale_recurrent_input

#: max |folded - original| / max |original|
TOLERANCE = 1e-5
T, N = 5, 3  # steps, batch


def _error(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    assert ref.shape == out.shape, (ref.shape, out.shape)
    return float(np.abs(ref - out).max() / max(np.abs(ref).max(), 1e-30))


# -- the closed formulas, in numpy ------------------------------------------------------------------
def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def _gru_step(x: np.ndarray, h: np.ndarray, w: dict[str, np.ndarray], u: int, reset_after: bool) -> np.ndarray:
    """One GRU step as Keras' GRUCell computes it (keras/src/layers/rnn/gru.py), float64."""
    k, r_k = w["kernel"], w["recurrent_kernel"]
    b_in, b_rec = (w["bias"][0], w["bias"][1]) if reset_after else (w["bias"], np.zeros(3 * u))
    xz, xr, xh = np.split(x @ k + b_in, 3, axis=-1)
    if reset_after:
        rz, rr, rh = np.split(h @ r_k + b_rec, 3, axis=-1)
        z, r = _sigmoid(xz + rz), _sigmoid(xr + rr)
        hh = np.tanh(xh + r * rh)
    else:
        z, r = _sigmoid(xz + h @ r_k[:, :u]), _sigmoid(xr + h @ r_k[:, u:2 * u])
        hh = np.tanh(xh + (r * h) @ r_k[:, 2 * u:])
    return z * h + (1 - z) * hh


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_gru_input_fold_is_exact_for_every_gate(reset_after: bool, use_bias: bool) -> None:
    """GRU(s*x + t) == GRU'(x) for one step from a non-zero state, with the bias the fold gives
    (row 0 of a reset_after bias, the whole bias otherwise; created when there was none)."""
    rng = np.random.default_rng(3)
    f, u = 4, 3
    w = {"kernel": rng.normal(size=(f, 3 * u)), "recurrent_kernel": rng.normal(size=(u, 3 * u))}
    if use_bias:
        w["bias"] = rng.normal(size=(2, 3 * u) if reset_after else (3 * u,))
    s, t = rng.uniform(0.3, 2, f) * rng.choice([-1, 1], f), rng.normal(size=f)
    x, h = rng.normal(size=(2, f)), rng.normal(size=(2, u))
    folded = fold_forward("GRU", w, s, t, config={"units": u, "reset_after": reset_after, "use_bias": use_bias})
    assert folded["bias"].shape == ((2, 3 * u) if reset_after else (3 * u,))
    full = dict(w, bias=w.get("bias", np.zeros((2, 3 * u) if reset_after else 3 * u)))
    expected = _gru_step(x * s + t, h, full, u, reset_after)
    assert _error(expected, _gru_step(x, h, folded, u, reset_after)) < 1e-12
    if reset_after:  # the recurrent bias (row 1, inside the reset gate's product) must not move
        np.testing.assert_array_equal(folded["bias"][1], full["bias"][1])


def test_recurrent_input_kernel_closed_formula() -> None:
    """``W' = diag(s) W``, ``b' = b + t W`` (split: row 0 only), in the kernel's dtype."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 8)).astype(np.float32)
    b = rng.normal(size=(8,)).astype(np.float32)
    s, t = rng.uniform(0.5, 2, 3), rng.normal(size=3)
    new_w, new_b = scale_recurrent_input(w, b, s, t)
    np.testing.assert_allclose(new_w, np.diag(s) @ w.astype(np.float64), rtol=1e-6)
    np.testing.assert_allclose(new_b, b + t @ w.astype(np.float64), rtol=1e-6, atol=1e-6)
    assert new_w.dtype == new_b.dtype == np.float32
    b2 = rng.normal(size=(2, 8))
    new_w, new_b = scale_recurrent_input(w.astype(np.float64), b2, s, t, split=True)
    np.testing.assert_allclose(new_b, np.stack([b2[0] + t @ w.astype(np.float64), b2[1]]), rtol=1e-12)
    assert not np.shares_memory(new_b, b2)


def test_lstm_and_conv_lstm_fold_by_role() -> None:
    """LSTM: the input kernel and the (4u,) bias change, the recurrent kernel does not;
    ConvLSTM2D: the input kernel as a valid convolution's (sum over the window of W*t)."""
    rng = np.random.default_rng(5)
    w = {"kernel": rng.normal(size=(3, 8)), "recurrent_kernel": rng.normal(size=(2, 8)), "bias": rng.normal(size=8)}
    s, t = rng.uniform(0.5, 2, 3), rng.normal(size=3)
    new = fold_forward("LSTM", w, s, t, config={"units": 2})
    assert new["recurrent_kernel"] is w["recurrent_kernel"]
    np.testing.assert_allclose(new["bias"], w["bias"] + t @ w["kernel"], rtol=1e-12)
    k = rng.normal(size=(3, 3, 3, 8))
    new = fold_forward("ConvLSTM2D", {"kernel": k, "recurrent_kernel": rng.normal(size=(3, 3, 2, 8))}, s, t,
                       config={"filters": 2, "use_bias": False})
    np.testing.assert_allclose(new["kernel"], k * s[:, None], rtol=1e-12)
    np.testing.assert_allclose(new["bias"], np.einsum("ijco,c->o", k, t), rtol=1e-12)


# -- Keras 3 models -------------------------------------------------------------------------------
def _set_bn(model: Any, rng: np.random.Generator) -> None:
    """Non-trivial statistics in every BN (wrapped ones too): never gamma 1, beta 0, mean 0, var 1."""
    for layer in model.layers:
        weights = layer.get_weights()
        inner = getattr(layer, "layer", layer)
        if type(inner).__name__ == "BatchNormalization":
            c = weights[0].shape
            layer.set_weights([rng.uniform(0.4, 1.8, c) * rng.choice([-1, 1], c), rng.normal(size=c),
                               rng.normal(size=c), rng.uniform(0.3, 2.5, c)])
        elif weights:
            layer.set_weights([rng.normal(scale=0.6, size=w.shape) for w in weights])


def _builders() -> dict[str, tuple[Callable[[Any], Any], Callable[[np.random.Generator], np.ndarray]]]:
    """name -> (build(keras) -> model, input maker)."""
    def seq(rng: np.random.Generator) -> np.ndarray:
        return rng.normal(size=(N, T, 3))

    def video(rng: np.random.Generator) -> np.ndarray:
        return rng.normal(size=(N, 4, 6, 6, 2))

    def ids(rng: np.random.Generator) -> np.ndarray:
        x = rng.integers(1, 10, size=(N, T))
        x[0, 3:] = 0  # post-padding
        x[1, :2] = 0  # pre-padding
        return x

    def chain(*layers: Any, shape: tuple[int, ...] = (T, 3), dtype: str = "float32") -> Callable[[Any], Any]:
        def build(keras: Any) -> Any:
            x = keras.Input(shape, dtype=dtype)
            y = x
            for make in layers:
                y = make(keras)(y)
            return keras.Model(x, y)
        return build

    def bn(name: str = "bn", **kw: Any) -> Callable[[Any], Any]:
        return lambda k: k.layers.BatchNormalization(name=name, **kw)
    return {
        "lstm": (chain(bn(), lambda k: k.layers.LSTM(4, return_sequences=True, name="rnn")), seq),
        "lstm_no_bias_backwards": (chain(bn(), lambda k: k.layers.LSTM(4, use_bias=False, go_backwards=True, name="rnn")), seq),
        "gru_reset_after": (chain(bn(), lambda k: k.layers.GRU(4, return_sequences=True, name="rnn")), seq),
        "gru_reset_before": (chain(bn(), lambda k: k.layers.GRU(4, reset_after=False, return_sequences=True, name="rnn")), seq),
        "gru_no_bias": (chain(bn(), lambda k: k.layers.GRU(4, use_bias=False, name="rnn")), seq),
        "simple_rnn": (chain(bn(), lambda k: k.layers.SimpleRNN(4, activation="relu", return_sequences=True, name="rnn")), seq),
        "bidirectional": (chain(bn(), lambda k: k.layers.Bidirectional(k.layers.LSTM(3, return_sequences=True), name="rnn")), seq),
        "bidirectional_gru_no_bias": (chain(bn(), lambda k: k.layers.Bidirectional(
            k.layers.GRU(3, use_bias=False), merge_mode="ave", name="rnn")), seq),
        "stacked_cells": (chain(bn(), lambda k: k.layers.RNN(
            k.layers.StackedRNNCells([k.layers.LSTMCell(4, use_bias=False), k.layers.GRUCell(3)]), return_sequences=True,
            name="rnn")), seq),
        "embedding_mask": (chain(lambda k: k.layers.Embedding(10, 3, mask_zero=True), bn(),
                                 lambda k: k.layers.LSTM(4, return_sequences=True, name="rnn"), shape=(T,), dtype="int32"), ids),
        "masking": (chain(bn(), lambda k: k.layers.Masking(0.0), lambda k: k.layers.LSTM(4, name="rnn")), seq),
        "td_dense": (chain(bn(), lambda k: k.layers.TimeDistributed(k.layers.Dense(4, use_bias=False), name="td")), seq),
        "td_conv": (chain(lambda k: k.layers.TimeDistributed(k.layers.Conv2D(3, 3), name="conv1"), bn("bn", axis=-1),
                          lambda k: k.layers.TimeDistributed(k.layers.Conv2D(4, 2), name="conv2"),
                          lambda k: k.layers.TimeDistributed(k.layers.BatchNormalization(), name="td_bn"),
                          shape=(4, 6, 6, 2)), video),
        "conv_lstm": (chain(bn(), lambda k: k.layers.ConvLSTM2D(3, 3, return_sequences=True, name="rnn"),
                            bn("bn_after"), shape=(4, 6, 6, 2)), video),
        "conv_lstm_same": (chain(bn(), lambda k: k.layers.ConvLSTM2D(3, 3, padding="same", name="rnn"),
                                 shape=(4, 6, 6, 2)), video),
        "lstm_time_axis": (chain(bn("bn", axis=1), lambda k: k.layers.LSTM(4, name="rnn")), seq),
        "lstm_then_bn": (chain(lambda k: k.layers.LSTM(4, return_sequences=True, name="rnn"), bn("bn_after")), seq),
    }


#: name -> {BN: (action, target)}: what the plan must decide
EXPECTED = {
    "lstm": {"bn": ("forward", "rnn")},
    "lstm_no_bias_backwards": {"bn": ("forward", "rnn")},
    "gru_reset_after": {"bn": ("forward", "rnn")},
    "gru_reset_before": {"bn": ("forward", "rnn")},
    "gru_no_bias": {"bn": ("forward", "rnn")},
    "simple_rnn": {"bn": ("forward", "rnn")},
    "bidirectional": {"bn": ("forward", "rnn")},
    "bidirectional_gru_no_bias": {"bn": ("forward", "rnn")},
    "stacked_cells": {"bn": ("forward", "rnn")},
    "embedding_mask": {"bn": ("forward", "rnn")},
    "masking": {"bn": ("stays", None)},
    "td_dense": {"bn": ("forward", "td")},
    "td_conv": {"bn": ("backward", "conv1"), "td_bn": ("backward", "conv2")},
    "conv_lstm": {"bn": ("forward", "rnn"), "bn_after": ("stays", None)},
    "conv_lstm_same": {"bn": ("stays", None)},
    "lstm_time_axis": {"bn": ("stays", None)},
    "lstm_then_bn": {"bn_after": ("stays", None)},
}

#: name -> {BN: words its reason must hold}
REASONS = {
    "masking": {"bn": "computes the Keras mask from the values it receives"},
    "conv_lstm": {"bn_after": "o*act(c)"},
    "conv_lstm_same": {"bn": "pads with zeros (same padding) and the shift is not zero"},
    "lstm_then_bn": {"bn_after": "a recurrent state"},
    "lstm_time_axis": {"bn": "its axis 1 is not the last axis, which 'rnn' (LSTM) reads"},
}


@pytest.fixture(scope="module")
def keras3_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    """name -> (saved .keras file, input, Keras' output of the original model): built once."""
    import keras

    folder = tmp_path_factory.mktemp("seq_fold")
    rng = np.random.default_rng(11)
    out = {}
    for name, (build, make_input) in _builders().items():
        model = build(keras)
        _set_bn(model, rng)
        x = make_input(rng)
        path = folder / f"{name}.keras"
        model.save(path)
        out[name] = (path, x, np.asarray(model(x, training=False)))  # eager: no tf.function to trace
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_keras3_folded_file_matches_keras(name: str, keras3_cases: dict, tmp_path: Path) -> None:
    import keras

    path, x, expected = keras3_cases[name]
    model = bnconvert.load(path)
    decisions = {d.bn: d for d in plan_folds(model)}
    assert {bn: (d.action, d.target) for bn, d in decisions.items()} == EXPECTED[name], \
        {bn: d.reason for bn, d in decisions.items()}
    for bn, words in REASONS.get(name, {}).items():
        assert words in decisions[bn].reason, decisions[bn].reason
    folded, _ = fold_model(model)
    folded_bns = {bn for bn, (action, _) in EXPECTED[name].items() if action != "stays"}
    assert folded_bns.isdisjoint(layer.name for layer in folded.layers)
    out = tmp_path / f"{name}.folded.keras"
    bnconvert.write_model(folded, out, original=model)
    got = np.asarray(keras.models.load_model(out)(x, training=False))
    assert _error(expected, got) < TOLERANCE


def test_created_bias_and_config(keras3_cases: dict) -> None:
    """A recurrent layer without a bias gets one in its own layout, and ``use_bias`` in its config
    (a stack's first cell's, a Bidirectional's inner layer's); the original model is untouched."""
    model = bnconvert.load(keras3_cases["gru_no_bias"][0])
    folded, report = fold_model(model)
    assert report.created_bias == ["rnn"]
    assert folded["rnn"].config["use_bias"] is True and model["rnn"].config["use_bias"] is False
    assert folded["rnn"].weights["bias"].shape == (2, 12)  # reset_after: input row, recurrent row (zero)
    assert not np.any(folded["rnn"].weights["bias"][1])
    stacked = bnconvert.load(keras3_cases["stacked_cells"][0])
    folded, _ = fold_model(stacked)
    before, after = stacked["rnn"].weights, folded["rnn"].weights
    changed = [k for k in after if k not in before or not np.array_equal(before[k], after[k])]
    assert sorted(changed) == ["cells/0/bias", "cells/0/kernel"]  # the first cell's input side only
    assert "cells/0/bias" not in stacked["rnn"].weights  # created, in the first cell's config
    assert folded["rnn"].config["cell"]["config"]["cells"][0]["config"]["use_bias"] is True
    assert stacked["rnn"].config["cell"]["config"]["cells"][0]["config"]["use_bias"] is False


def test_bn_feeding_an_initial_state_stays(tmp_path: Path) -> None:
    """A BN whose output is an LSTM's initial state cannot fold into it; the sequence's can."""
    import keras

    x, h = keras.Input((T, 3)), keras.Input((4,))
    hs = keras.layers.BatchNormalization(name="bn_h")(h)
    xs = keras.layers.BatchNormalization(name="bn_x")(x)
    y = keras.layers.LSTM(4, name="rnn")(xs, initial_state=[hs, hs])
    model = keras.Model([x, h], y)
    _set_bn(model, np.random.default_rng(2))
    path = tmp_path / "state.keras"
    model.save(path)
    decisions = {d.bn: d for d in plan_folds(bnconvert.load(path))}
    assert decisions["bn_h"].action == "stays"
    assert "initial state" in decisions["bn_h"].reason


# -- tf-keras (a separate process: it never shares one with Keras 3) --------------------------------
_TFK = r"""
import json, sys
import numpy as np
import tf_keras as keras
import bnconvert
folder = sys.argv[1]
rng = np.random.default_rng(7)
x = keras.Input((5, 3))
y = keras.layers.BatchNormalization(name="bn")(x)
y = keras.layers.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid", return_sequences=True, name="gru")(y)
y = keras.layers.BatchNormalization(name="bn2")(y)
y = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True, use_bias=False), merge_mode="sum", name="bi")(y)
model = keras.Model(x, y)
for layer in model.layers:
    w = layer.get_weights()
    if layer.name.startswith("bn"):
        c = w[0].shape
        layer.set_weights([rng.uniform(0.4, 1.8, c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.3, 2.5, c)])
    elif w:
        layer.set_weights([rng.normal(scale=0.6, size=a.shape) for a in w])
inp = rng.normal(size=(3, 5, 3)).astype("float32")
model.save(folder + "/tfk.h5")
np.save(folder + "/x.npy", inp)
np.save(folder + "/y.npy", model(inp, training=False).numpy())
# bnconvert folds and writes here too, so that tf-keras itself loads the folded file
original = bnconvert.load(folder + "/tfk.h5")
folded, report = bnconvert.fold_model(original)
bnconvert.write_model(folded, folder + "/tfk.folded.h5", original=original)
again = keras.models.load_model(folder + "/tfk.folded.h5")
np.save(folder + "/y_folded.npy", again(inp, training=False).numpy())
json.dump({"layers": [layer.name for layer in again.layers]}, open(folder + "/folded.json", "w"))
"""


def test_tf_keras_h5_folds_and_matches(tmp_path: Path) -> None:
    """tf-keras .h5: BN -> GRU(reset_after=False, hard_sigmoid 0.2x+0.5) and BN ->
    Bidirectional(LSTM without bias, sum) both fold; tf-keras loads the folded file and gives the
    original's outputs, and so does the float64 reference (written from Keras' source) on it."""
    from bnconvert.check.reference import ReferenceRunner

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _TFK, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    model = bnconvert.load(tmp_path / "tfk.h5")
    _, report = fold_model(model)
    assert {b.path: (b.action, b.target) for b in report.batch_norms} == {"bn": ("forward", "gru"), "bn2": ("forward", "bi")}
    assert report.created_bias == ["bi"]
    assert json.loads((tmp_path / "folded.json").read_text())["layers"] == ["input_1", "gru", "bi"]
    expected = np.load(tmp_path / "y.npy")
    assert _error(expected, np.load(tmp_path / "y_folded.npy")) < TOLERANCE
    out = tmp_path / "tfk.folded.h5"
    runner = ReferenceRunner(out, model=bnconvert.load(out))
    x = np.load(tmp_path / "x.npy")
    got = next(iter(runner.infer({runner.input_specs()[0].name: x}).values()))
    assert _error(expected, got) < TOLERANCE
    assert json.dumps(report.to_dict())  # the report is plain data


def test_first_cell_of_every_rnn_config_form() -> None:
    """A generic RNN's input kernel is its first cell's, whatever form ``cell`` takes."""
    from bnconvert.fold.sites import sites

    lstm = {"class_name": "LSTMCell", "config": {"units": 4}}
    gru = {"class_name": "GRUCell", "config": {"units": 3, "reset_after": False}}
    stack = {"class_name": "StackedRNNCells", "config": {"cells": [gru, lstm]}}
    forms = {"one": ({"cell": lstm}, "", ("cell", "config"), None),
             "list": ({"cell": [gru, lstm]}, "cells/0/", ("cell", 0, "config"), "reset_after"),
             "stack": ({"cell": stack}, "cells/0/", ("cell", "config", "cells", 0, "config"), "reset_after")}
    for form, (config, prefix, path, split) in forms.items():
        (site,) = sites("RNN", config)
        assert (site.prefix, site.path, site.role.split) == (prefix, path, split), form
    assert sites("RNN", {"cell": {"class_name": "Dense", "config": {}}}) == []  # not a cell: no site, a barrier


# -- Keras 1 per-gate weights and CuDNN layouts: their writers, against the files' ground truth -------
@pytest.mark.parametrize("name", ["seq_k1_lstm", "seq_k1_gru", "seq_k1_simplernn", "seq_k1_embedding", "seq_k1_lstm_gpu", "seq_cudnn"])
def test_legacy_recurrent_fold_matches_ground_truth(name: str, tmp_path: Path) -> None:
    """A Keras 1 (W_i, U_i, b_i ... per gate) or Keras 2.2.4 CuDNN file folds BN -> recurrent
    layer; the folded file, written back in its own layout and read again, run by the float64
    reference, gives the file's expected outputs (``<name>.expected.npz``: no installed Keras
    writes these formats, so the fixture maker computed them with its own hand-written numpy cell
    math from Keras 1.2.2's and Keras 2.2.4's sources)."""
    from bnconvert.check.reference import ReferenceRunner

    from .conftest import fixture_file

    path = fixture_file(f"{name}.h5")
    model = bnconvert.load(path)
    folded, report = fold_model(model)
    assert [b.action for b in report.batch_norms] == ["forward"]
    out = tmp_path / f"{name}.folded.h5"
    bnconvert.write_model(folded, out, original=model)
    again = bnconvert.load(out)
    assert not any(bnconvert.bn.is_bn(layer) for layer in again.layers)
    truth = np.load(fixture_file(f"{name}.expected.npz"))
    runner = ReferenceRunner(out, model=again)
    got = next(iter(runner.infer({runner.input_specs()[0].name: truth["x"]}).values()))
    assert _error(truth["y"], got) < TOLERANCE


# -- channels_first TimeDistributed(Conv2D): the channel axis of the 5-D tensor --------------------
def _td_conv_model(axis: int, *, inner_bn: bool) -> Any:
    """Input (N, T, C, H, W) -> TimeDistributed(Conv2D channels_first) -> BN on ``axis`` (wrapped in
    a TimeDistributed when ``inner_bn``, its axis then given on the 4-D step)."""
    from bnconvert.model import Layer, Model, TensorRef

    rng = np.random.default_rng(9)
    conv = {"filters": 4, "kernel_size": [3, 3], "data_format": "channels_first", "activation": "linear", "use_bias": False}
    bn_weights = {"gamma": rng.uniform(0.5, 1.5, 4), "beta": rng.normal(size=4), "moving_mean": rng.normal(size=4),
                  "moving_variance": rng.uniform(0.3, 2, 4)}
    bn_cfg = {"axis": axis, "epsilon": 1e-3}
    layers = [Layer("x", "InputLayer", {"batch_shape": [None, 3, 2, 5, 5]}),
              Layer("td", "TimeDistributed", {"layer": {"class_name": "Conv2D", "config": conv}},
                    {"kernel": rng.normal(size=(3, 3, 2, 4))}, [[TensorRef("x")]])]
    if inner_bn:
        layers.append(Layer("bn", "TimeDistributed", {"layer": {"class_name": "BatchNormalization", "config": bn_cfg}},
                            bn_weights, [[TensorRef("td")]]))
    else:
        layers.append(Layer("bn", "BatchNormalization", bn_cfg, bn_weights, [[TensorRef("td")]]))
    return Model("m", layers, [TensorRef("x")], [TensorRef("bn")])


@pytest.mark.parametrize(("axis", "inner_bn", "folds"), [(2, False, True), (-1, False, False), (1, True, True), (-1, True, False)])
def test_channels_first_time_distributed_conv(axis: int, inner_bn: bool, folds: bool, tmp_path: Path) -> None:
    """BN -> backward into TimeDistributed(Conv2D channels_first) only on the conv's channel axis,
    2 of the 5-D tensor (1 of a wrapped BN's 4-D step); the folded model (bias created) computes
    what the original does in the float64 reference."""
    from bnconvert.check.reference import ReferenceRunner

    model = _td_conv_model(axis, inner_bn=inner_bn)
    (decision,) = plan_folds(model)
    assert decision.action == ("backward" if folds else "stays"), decision.reason
    if not folds:
        assert "is not the channel axis of 'td' (TimeDistributed)" in decision.reason
        return
    folded, report = fold_model(model)
    assert [layer.name for layer in folded.layers] == ["x", "td"] and report.created_bias == ["td"]
    assert folded["td"].config["layer"]["config"]["use_bias"] is True
    assert model["td"].config["layer"]["config"]["use_bias"] is False  # the input model is untouched
    x = np.random.default_rng(1).normal(size=(2, 3, 2, 5, 5))
    runs = [next(iter(ReferenceRunner(tmp_path / "m.h5", model=m).infer({"x": x}).values())) for m in (model, folded)]
    assert _error(runs[0], runs[1]) < 1e-12
