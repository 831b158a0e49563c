"""The readers on the sequence fixtures (issue 15): recurrent weights by meaning, whatever layout
the file stores them in.

The expectations are computed here from the raw HDF5 datasets with the layout each writer used
(fixtures/make_seq_legacy.py and fixtures/README.md, from the Keras 1.2.2 and 2.2.4 sources):
Keras 1 per-gate ``W_i, U_i, b_i, W_c, ...`` (file order i, c, f, o) or ``consume_less='gpu'``
fused ``W, U, b``; CuDNN kernels handed to cuDNN flattened per gate, with separate input and
recurrent biases. The meanings bnconvert delivers are the Keras 2/3 ones (LSTM gates i, f, c, o;
GRU z, r, h; GRU bias (3u,) or (2, 3u) when reset_after).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import bnconvert
from bnconvert.check.reference import ReferenceRunner

from ..conftest import FIXTURES, fixture_file, sequence_corpus_file


def _raw(path: Path, layer: str) -> dict[str, np.ndarray]:
    """A Keras 1 / 2 full .h5 layer's datasets by the suffix after ``<layer>_`` or ``<layer>/``."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"][layer]
        out = {}
        for raw in group.attrs["weight_names"]:
            name = raw.decode() if isinstance(raw, bytes) else raw
            key = name.split("/")[-1] if "/" in name else name[len(layer) + 1:]
            out[key.split(":")[0]] = group[name][()]
    return out


KERAS1 = [  # file, layer, class, per-gate file order or None for fused / SimpleRNN weights
    ("seq_k1_lstm.h5", "lstm_1", "LSTM", "icfo"),
    ("seq_k1_lstm_gpu.h5", "lstm_1", "LSTM", None),
    ("seq_k1_lstm_gpu.h5", "lstm_2", "LSTM", "icfo"),
    ("seq_k1_gru.h5", "gru_1", "GRU", "zrh"),
    ("seq_k1_simplernn.h5", "simplernn_1", "SimpleRNN", None),
    ("seq_k1_embedding.h5", "lstm_1", "LSTM", "icfo"),
    ("seq_k1_embedding.h5", "gru_1", "GRU", None),
]


@pytest.mark.parametrize("stem, name, cls, file_gates", KERAS1, ids=str)
def test_keras1_recurrent_weights_by_meaning(stem: str, name: str, cls: str, file_gates: str | None) -> None:
    path = fixture_file(stem)
    raw = _raw(path, name)
    if file_gates is None:
        expected = {"kernel": raw["W"], "recurrent_kernel": raw["U"], "bias": raw["b"]}
    else:
        meaning = {"LSTM": "ifco", "GRU": "zrh"}[cls]  # Keras 2/3 fused gate order
        assert sorted(meaning) == sorted(file_gates)
        expected = {m: np.concatenate([raw[f"{s}_{g}"] for g in meaning], -1)
                    for m, s in (("kernel", "W"), ("recurrent_kernel", "U"), ("bias", "b"))}
    layer = bnconvert.load(path)[name]
    assert layer.class_name == cls
    assert set(layer.weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(layer.weights[key], value, err_msg=key)


def test_keras1_corpus_lstm_per_gate_weights() -> None:
    """kootenpv (Keras 1.2.0, TensorFlow): 12 per-gate weights in file order i, c, f, o."""
    path = sequence_corpus_file("kootenpv__neural_complete")
    raw = _raw(path, "lstm_1")
    layer = bnconvert.load(path)["lstm_1"]
    np.testing.assert_array_equal(layer.weights["kernel"], np.concatenate([raw[f"W_{g}"] for g in "ifco"], -1))
    np.testing.assert_array_equal(layer.weights["bias"], np.concatenate([raw[f"b_{g}"] for g in "ifco"]))


@pytest.mark.parametrize("stem, name, reset_after", [
    ("seq_k1_gru.h5", "gru_1", False),            # Keras 1: the candidate resets before U_h
    ("seq_k1_embedding.h5", "gru_1", False),
    ("seq_k3_gru_v1.keras", "gru", False),
    ("seq_k3_gru_v1.h5", "gru_1", False),
    ("seq_tfk_gru.h5", "gru", True),              # tf.keras 2 default
    ("seq_tfk_embedding.keras", "gru", True),
])
def test_gru_reset_after_is_explicit(stem: str, name: str, reset_after: bool) -> None:
    layer = bnconvert.load(fixture_file(stem))[name]
    assert layer.config["reset_after"] is reset_after
    units = layer.weights["recurrent_kernel"].shape[0]
    assert layer.weights["bias"].shape == ((2, 3 * units) if reset_after else (3 * units,))


def _cudnn_gate_blocks(kernel: np.ndarray, units: int, n_gates: int) -> list[np.ndarray]:
    """Keras' (F, u) block per gate as cuDNN reads it: flattened, a (u, F) row-major matrix."""
    n_in = kernel.shape[0]
    return [kernel[:, k * units:(k + 1) * units].ravel().reshape(units, n_in) for k in range(n_gates)]


@pytest.mark.parametrize("name, n_gates", [("cu_dnnlstm_1", 4), ("cu_dnngru_1", 3)])
def test_cudnn_weights_in_keras_meaning(name: str, n_gates: int) -> None:
    path = fixture_file("seq_cudnn.h5")
    raw = _raw(path, name)
    units = raw["recurrent_kernel"].shape[0]
    kernel = np.concatenate([w.T for w in _cudnn_gate_blocks(raw["kernel"], units, n_gates)], -1)
    recurrent = np.concatenate([w.T for w in _cudnn_gate_blocks(raw["recurrent_kernel"], units, n_gates)], -1)
    b_in, b_rec = raw["bias"][: n_gates * units], raw["bias"][n_gates * units:]
    layer = bnconvert.load(path)[name]
    np.testing.assert_array_equal(layer.weights["kernel"], kernel)
    np.testing.assert_array_equal(layer.weights["recurrent_kernel"], recurrent)
    if n_gates == 4:  # one LSTM bias: both cuDNN biases add up
        np.testing.assert_allclose(layer.weights["bias"], b_in + b_rec, rtol=1e-6)
    else:  # a GRU keeps them apart: the recurrent one sits inside r * (.)
        assert layer.config["reset_after"] is True
        np.testing.assert_array_equal(layer.weights["bias"], np.stack([b_in, b_rec]))


@pytest.mark.parametrize("stem", ["seq_k1_lstm", "seq_k1_lstm_gpu", "seq_k1_gru", "seq_k1_simplernn",
                                  "seq_k1_embedding", "seq_cudnn"])
def test_float64_reference_reproduces_hand_computed_outputs(stem: str) -> None:
    """The file as read, run by bnconvert's float64 reference, equals the generator's numpy cell
    math (Keras 1: hard_sigmoid 0.2x + 0.5, masked steps repeat; cuDNN: sigmoid gates)."""
    path = fixture_file(stem + ".h5")
    data = np.load(fixture_file(stem + ".expected.npz"))
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    (spec,) = runner.input_specs()
    (y,) = runner.infer({spec.name: data["x"]}).values()
    err = np.abs(y - data["y"]).max() / np.abs(data["y"]).max()
    assert err < 1e-5, err


def test_float64_reference_on_the_keras1_corpus_lstm() -> None:
    path = sequence_corpus_file("kootenpv__neural_complete")
    sys.path.insert(0, str(FIXTURES))
    try:
        from make_seq_legacy import k1_seq_forward
    finally:
        sys.path.remove(str(FIXTURES))
    x = np.random.default_rng(1).normal(0.0, 1.0, (3, 5, 97)).astype(np.float32)
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    (spec,) = runner.input_specs()
    (y,) = runner.infer({spec.name: x}).values()
    truth = k1_seq_forward(str(path), x.astype(np.float64))
    assert np.abs(y - truth).max() / np.abs(truth).max() < 1e-5


@pytest.fixture(scope="module")
def keras3_param_counts() -> dict[str, int]:
    import keras

    return {p.name: keras.models.load_model(p, compile=False).count_params()
            for p in sorted(Path(FIXTURES).glob("seq_k3_*.keras"))}


def test_keras3_fixtures_read_with_every_parameter(keras3_param_counts: dict[str, int]) -> None:
    assert len(keras3_param_counts) == 11
    for name, count in keras3_param_counts.items():
        for ext in (".keras", ".h5"):
            stem = name[: -len(".keras")] + ext
            assert bnconvert.load(fixture_file(stem)).count_params() == count, stem


def _layout(path: Path) -> dict[str, Any]:
    """The HDF5 layout facts a reader depends on: attribute names and string kinds per object,
    dataset dtypes and storage, and the weight-name pattern (``<layer>_W_i:0``)."""
    facts: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        def kind(obj: Any, key: str) -> str:
            tid = obj.attrs.get_id(key).get_type()
            if isinstance(tid, h5py.h5t.TypeStringID):
                return "vlen-str" if tid.is_variable_str() else "fixed-str"
            return obj.attrs.get_id(key).dtype.kind
        facts["root"] = {k: kind(f, k) for k in f.attrs}
        mw = f["model_weights"]
        facts["model_weights"] = {k: kind(mw, k) for k in mw.attrs}
        lstm = mw["lstm_1"]
        facts["lstm_group"] = {k: kind(lstm, k) for k in lstm.attrs}
        names = [n.decode() for n in lstm.attrs["weight_names"]]
        facts["lstm_names"] = [n.replace("lstm_1_", "", 1) for n in names]
        facts["datasets"] = {(lstm[n].dtype.str, lstm[n].chunks, lstm[n].compression) for n in names}
        facts["config_is_list"] = isinstance(json.loads(f.attrs["model_config"])["config"], list)
    return facts


def test_keras1_fixture_layout_matches_the_real_keras1_file() -> None:
    """seq_k1_lstm.h5 (h5py, imitating Keras 1.2.2) and kootenpv's real Keras 1.2.0 file agree on
    every layout fact a reader uses (both TensorFlow backend, compiled)."""
    ours = _layout(fixture_file("seq_k1_lstm.h5"))
    real = _layout(sequence_corpus_file("kootenpv__neural_complete"))
    assert ours == real
    assert real["lstm_names"][:3] == ["W_i:0", "U_i:0", "b_i:0"]
