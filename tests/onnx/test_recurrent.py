"""SimpleRNN, LSTM, GRU, RNN (cells, StackedRNNCells) and Bidirectional exported to ONNX, against
Keras' own outputs (never against bnconvert's float64 reference).

Keras 3 models are built once per session with random weights (biases included), saved, read by
bnconvert, exported and run by onnxruntime, on a batch and a number of steps other than the
ones seen first (the time axis is declared ``None`` wherever Keras allows). tf_keras builds its
cases in its own process (its ``hard_sigmoid`` is ``0.2x + 0.5``, Keras 3's ``x/6 + 0.5``).
Integer inputs hold pre-padded, post-padded, unpadded and holed rows, so an Embedding's
``mask_zero`` mask reaches the recurrent layers. Unmasked layers with ONNX RNN activations must
become the native LSTM/GRU/RNN operators (checked at opsets 13 and 21); masked ones a Scan.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError
from bnconvert.model import Layer
from bnconvert.onnx import to_onnx

from ..conftest import fixture_file, sequence_corpus_dir, sequence_corpus_file
from .helpers import chain_model, check_model, rel_err, run_onnx

#: max |keras - onnx| / max |keras|: float32 rounding over a few steps
TOLERANCE = 1e-5
NATIVE = {"LSTM", "GRU", "RNN"}

#: token rows: pre-padded, post-padded, unpadded, holes (mask_zero masks the zeros)
TOKENS = np.array([[0, 0, 3, 4, 5, 1], [2, 3, 4, 0, 0, 0], [1, 2, 3, 4, 5, 6], [0, 5, 0, 7, 0, 0]], np.int32)


def _floats(batch: int, steps: int, features: int, seed: int, *, padded: bool = False) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0.0, 1.0, (batch, steps, features)).astype(np.float32)
    if padded:  # whole steps at 0.0 for Masking: pre-padding, post-padding, a hole
        x[0, :2] = 0.0
        x[1, steps - 2:] = 0.0
        x[-1, 1] = 0.0
    return x


def _keras3_cases() -> dict[str, tuple[Any, str, set[str]]]:
    """name -> (model, input kind, the recurrent ONNX ops the export must hold)."""
    import keras

    L = keras.layers

    def seq(*layers: Any, steps: int | None = None) -> Any:
        x = keras.Input((steps, 3))
        y = x
        for layer in layers:
            y = layer(y)
        return keras.Model(x, keras.tree.flatten(y))  # a stack's states come nested per cell

    def tokens(*layers: Any, steps: int | None = None) -> Any:
        x = keras.Input((steps,), dtype="int32")
        y = L.Embedding(10, 3, mask_zero=True)(x)
        for layer in layers:
            y = layer(y)
        return keras.Model(x, keras.tree.flatten(y))

    def masking(*layers: Any) -> Any:
        x = keras.Input((None, 3))
        y = L.Masking(0.0)(x)
        for layer in layers:
            y = layer(y)
        return keras.Model(x, y)

    def with_states() -> Any:  # the seq2seq pattern: states of one LSTM start another
        x, z = keras.Input((None, 3)), keras.Input((None, 2))
        _, h, c = L.LSTM(4, return_state=True)(x)
        y = L.LSTM(4, return_sequences=True, go_backwards=True)(z, initial_state=[h, c])
        hs = [keras.Input((4,)) for _ in range(2)]
        b = L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum")(z, initial_state=hs)
        return keras.Model([x, z, *hs], [y, b])

    def masked_with_states() -> Any:  # Keras 3 masks no call with several tensor arguments
        x, hs = keras.Input((None,), dtype="int32"), [keras.Input((4,)) for _ in range(2)]
        y = L.LSTM(4, return_sequences=True)(L.Embedding(10, 3, mask_zero=True)(x), initial_state=hs)
        return keras.Model([x, *hs], L.GRU(3, return_sequences=True)(y))  # the GRU is masked, on time-major input

    def mixed_bidirectional() -> Any:
        back = L.GRU(4, return_sequences=True, go_backwards=True, recurrent_activation="hard_sigmoid")
        return seq(L.Bidirectional(L.LSTM(4, return_sequences=True), backward_layer=back))

    def stack() -> Any:
        return L.StackedRNNCells([L.LSTMCell(4), L.GRUCell(3, reset_after=False), L.SimpleRNNCell(2)])

    return {
        # no mask: native operators
        "lstm_sequences": (seq(L.LSTM(4, return_sequences=True)), "float", {"LSTM"}),
        "lstm_states_backwards": (seq(L.LSTM(5, return_state=True, go_backwards=True)), "float", {"LSTM"}),
        "lstm_relu_hard_sigmoid_no_bias": (seq(L.LSTM(4, return_sequences=True, go_backwards=True, use_bias=False,
                                                      activation="relu", recurrent_activation="hard_sigmoid")), "float", {"LSTM"}),
        "gru_reset_after": (seq(L.GRU(4, return_sequences=True, return_state=True)), "float", {"GRU"}),
        "gru_reset_before": (seq(L.GRU(4, reset_after=False, return_sequences=True, go_backwards=True,
                                       recurrent_activation="hard_sigmoid")), "float", {"GRU"}),
        "gru_no_bias_softsign": (seq(L.GRU(4, use_bias=False, activation="softsign", return_state=True)), "float", {"GRU"}),
        "simple_rnn": (seq(L.SimpleRNN(4, return_sequences=True, return_state=True, dropout=0.3)), "float", {"RNN"}),
        "simple_rnn_linear_backwards": (seq(L.SimpleRNN(4, activation=None, go_backwards=True, return_sequences=True)),
                                        "float", {"RNN"}),
        "simple_rnn_elu_unrolled": (seq(L.SimpleRNN(4, activation="elu", unroll=True, return_sequences=True), steps=6),
                                    "float6", {"RNN"}),
        "rnn_stacked_cells": (seq(L.RNN(stack(), return_sequences=True, return_state=True, go_backwards=True)), "float",
                              {"LSTM", "GRU", "RNN"}),
        "rnn_gru_cell": (seq(L.RNN(L.GRUCell(4), return_state=True)), "float", {"GRU"}),
        "initial_states": (with_states(), "states", {"LSTM", "GRU"}),
        # activations ONNX's RNN operators lack: a Scan
        "lstm_gelu": (seq(L.LSTM(4, activation="gelu", return_sequences=True, go_backwards=True)), "float", {"Scan"}),
        "gru_swish_hard_silu": (seq(L.GRU(4, activation="swish", recurrent_activation="hard_silu", return_state=True,
                                                      use_bias=False)),
                                "float", {"Scan"}),
        "gru_reset_before_selu": (seq(L.GRU(4, activation="selu", reset_after=False, return_sequences=True)), "float", {"Scan"}),
        "native_then_scan": (seq(L.LSTM(4, return_sequences=True), L.LSTM(3, activation="gelu", return_sequences=True,
                                                                          go_backwards=True)), "float", {"LSTM", "Scan"}),
        "simple_rnn_softmax": (seq(L.SimpleRNN(4, activation="softmax", return_sequences=True)), "float", {"Scan"}),
        # Bidirectional
        "bidirectional_concat": (seq(L.Bidirectional(L.LSTM(4, return_sequences=True))), "float", {"LSTM"}),
        "bidirectional_sum_states": (seq(L.Bidirectional(L.GRU(4, return_state=True), merge_mode="sum")), "float", {"GRU"}),
        "bidirectional_mul": (seq(L.Bidirectional(L.SimpleRNN(4, return_sequences=True), merge_mode="mul")), "float", {"RNN"}),
        "bidirectional_ave_hard_sigmoid": (seq(L.Bidirectional(L.LSTM(4, recurrent_activation="hard_sigmoid",
                                                                      return_state=True), merge_mode="ave")), "float", {"LSTM"}),
        "bidirectional_none": (seq(L.Bidirectional(L.GRU(4, return_sequences=True, return_state=True), merge_mode=None)),
                               "float", {"GRU"}),
        "bidirectional_lstm_gru": (mixed_bidirectional(), "float", {"LSTM", "GRU"}),
        "bidirectional_stacked": (seq(L.Bidirectional(L.RNN(stack(), return_sequences=True))), "float", {"LSTM", "GRU", "RNN"}),
        # masks
        "mask_lstm": (tokens(L.LSTM(4, return_sequences=True)), "tokens", {"Scan"}),
        "mask_lstm_states": (tokens(L.LSTM(4, return_state=True)), "tokens", {"Scan"}),
        "mask_gru_backwards": (tokens(L.GRU(4, go_backwards=True, return_sequences=True, return_state=True)), "tokens", {"Scan"}),
        "mask_gru_reset_before": (tokens(L.GRU(4, reset_after=False, return_sequences=True)), "tokens", {"Scan"}),
        "mask_no_bias": (tokens(L.LSTM(4, use_bias=False, return_sequences=True), L.GRU(3, use_bias=False)), "tokens",
                         {"Scan"}),
        "mask_simple_rnn_last": (tokens(L.SimpleRNN(4, go_backwards=True)), "tokens", {"Scan"}),
        "mask_stacked": (tokens(L.RNN(stack(), return_sequences=True, return_state=True)), "tokens", {"Scan"}),
        "mask_bidirectional_lstm": (tokens(L.Bidirectional(L.LSTM(4, return_sequences=True))), "tokens", {"Scan"}),
        "mask_bidirectional_gru_states": (tokens(L.Bidirectional(L.GRU(4, return_sequences=True, return_state=True),
                                                                 merge_mode=None)), "tokens", {"Scan"}),
        "mask_bidirectional_last": (tokens(L.Bidirectional(L.LSTM(4), merge_mode="ave")), "tokens", {"Scan"}),
        "mask_bidirectional_unrolled": (tokens(L.Bidirectional(L.LSTM(4, unroll=True, return_sequences=True)), steps=6),
                                        "tokens", {"Scan"}),
        "mask_zero_output": (tokens(L.LSTM(4, return_sequences=True, zero_output_for_mask=True)), "tokens", {"Scan"}),
        "mask_zero_output_unrolled_backwards": (tokens(L.GRU(4, unroll=True, go_backwards=True, return_sequences=True,
                                                             zero_output_for_mask=True), steps=6), "tokens", {"Scan"}),
        "mask_chain": (tokens(L.LSTM(4, return_sequences=True, go_backwards=True), L.GRU(3, return_sequences=True),
                              L.Dense(2)), "tokens", {"Scan"}),
        "mask_with_initial_states": (masked_with_states(), "tokens_states", {"LSTM", "Scan"}),
        "masking_lstm": (masking(L.LSTM(4, return_sequences=True), L.SimpleRNN(3, return_state=True)), "masking", {"Scan"}),
    }


KERAS3_CASES = [
    "lstm_sequences", "lstm_states_backwards", "lstm_relu_hard_sigmoid_no_bias", "gru_reset_after", "gru_reset_before",
    "gru_no_bias_softsign", "simple_rnn", "simple_rnn_linear_backwards", "simple_rnn_elu_unrolled", "rnn_stacked_cells",
    "rnn_gru_cell", "initial_states", "lstm_gelu", "gru_swish_hard_silu", "gru_reset_before_selu", "native_then_scan",
    "simple_rnn_softmax",
    "bidirectional_concat", "bidirectional_sum_states", "bidirectional_mul", "bidirectional_ave_hard_sigmoid",
    "bidirectional_none", "bidirectional_lstm_gru", "bidirectional_stacked", "mask_lstm", "mask_lstm_states",
    "mask_gru_backwards", "mask_gru_reset_before", "mask_no_bias", "mask_simple_rnn_last", "mask_stacked", "mask_bidirectional_lstm",
    "mask_bidirectional_gru_states", "mask_bidirectional_last", "mask_bidirectional_unrolled", "mask_zero_output",
    "mask_zero_output_unrolled_backwards", "mask_chain", "mask_with_initial_states",
    "masking_lstm",
]


def _randomize(model: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.6, tuple(v.shape)).astype(np.float32))


def _inputs(kind: str, model: Any, first: bool) -> list[np.ndarray]:
    """Two input sets per model: batch 4 and 6 steps, then batch 3 and 5 steps (fixed-length models keep 6)."""
    batch, steps = (4, 6) if first else (3, 5)
    seed = 1 if first else 2
    if kind.startswith("tokens"):
        tokens = TOKENS if first or model.inputs[0].shape[1] == 6 else TOKENS[1:, 1:]
        rng = np.random.default_rng(seed)
        return [tokens] + [rng.normal(0.0, 1.0, (len(tokens), 4)).astype(np.float32) for _ in model.inputs[1:]]
    if kind == "float6":
        return [_floats(batch, 6, 3, seed)]
    if kind == "masking":
        return [_floats(batch, steps, 3, seed, padded=True)]
    if kind == "states":
        rng = np.random.default_rng(seed)
        return [_floats(batch, steps, 3, seed), _floats(batch, steps + 1, 2, seed + 5),
                *(rng.normal(0.0, 1.0, (batch, 4)).astype(np.float32) for _ in range(2))]
    return [_floats(batch, steps, 3, seed)]


def _outputs(ys: Any) -> list[np.ndarray]:
    return [np.asarray(y) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]


@pytest.fixture(scope="module")
def keras3_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every Keras 3 case saved (``.keras`` and ``.h5`` alternately) with its inputs and Keras' outputs."""
    folder = tmp_path_factory.mktemp("recurrent3")
    built = _keras3_cases()
    assert list(built) == KERAS3_CASES
    cases = {}
    for k, (name, (model, kind, ops)) in enumerate(built.items()):
        _randomize(model, k)
        runs = []
        for first in (True, False):
            xs = _inputs(kind, model, first)
            runs.append((xs, _outputs(model(xs if len(xs) > 1 else xs[0], training=False))))
        path = folder / f"{name}.{'keras' if k % 2 else 'h5'}"
        model.save(path)
        cases[name] = {"path": path, "runs": runs, "ops": ops}
    return cases


def _compare(proto: Any, runs: list[tuple[list[np.ndarray], list[np.ndarray]]]) -> float:
    worst = 0.0
    for xs, ys in runs:
        outs = run_onnx(proto, xs)
        assert len(outs) == len(ys)
        worst = max([worst] + [rel_err(y, o) for y, o in zip(ys, outs)])
    return worst


def _recurrent_ops(proto: Any) -> set[str]:
    return {n.op_type for n in proto.graph.node if n.op_type in NATIVE | {"Scan"}}


@pytest.mark.parametrize("name", KERAS3_CASES)
def test_export_equals_keras3(name: str, keras3_cases: dict[str, dict[str, Any]]) -> None:
    case = keras3_cases[name]
    proto = to_onnx(bnconvert.load(case["path"]), opset=17)
    check_model(proto)
    assert _recurrent_ops(proto) == case["ops"]
    error = _compare(proto, case["runs"])
    assert error <= TOLERANCE, f"{name}: max |keras - onnx| / max |keras| = {error:.2e}"


def _reference_error(path: Path, runs: list[tuple[list[np.ndarray], list[np.ndarray]]]) -> float:
    """The float64 reference (the catalog's semantics, which check exports without TensorFlow)
    against Keras' outputs."""
    runner = ReferenceRunner(path)
    worst = 0.0
    for xs, ys in runs:
        outs = list(runner.infer({spec.name: x for spec, x in zip(runner.input_specs(), xs)}).values())
        assert len(outs) == len(ys)
        worst = max([worst] + [rel_err(y, o) for y, o in zip(ys, outs)])
    return worst


def test_reference_equals_keras3(keras3_cases: dict[str, dict[str, Any]]) -> None:
    """Keras 3's quirks too: a call with initial states runs unmasked, and the unrolled loop
    zeroes a backward sequence by the time-order mask."""
    errors = {name: _reference_error(case["path"], case["runs"]) for name, case in keras3_cases.items()}
    bad = {name: f"{e:.2e}" for name, e in errors.items() if not e <= TOLERANCE}
    assert not bad, f"Keras 3 and the float64 reference differ (max |diff| / max): {bad}"


def test_reference_equals_tf_keras(tf_keras_cases: tuple[Path, dict[str, list[int]]]) -> None:
    folder, counts = tf_keras_cases
    errors = {}
    for name, (n_in, n_out) in counts.items():
        data = np.load(folder / f"{name}.npz")
        errors[name] = _reference_error(folder / f"{name}.h5", [([data[f"x{i}"] for i in range(n_in)],
                                                                 [data[f"y{i}"] for i in range(n_out)])])
    bad = {name: f"{e:.2e}" for name, e in errors.items() if not e <= TOLERANCE}
    assert not bad, f"tf_keras and the float64 reference differ (max |diff| / max): {bad}"


@pytest.mark.parametrize("opset", [13, 21])
def test_native_operators_at_every_opset(opset: int, keras3_cases: dict[str, dict[str, Any]]) -> None:
    for name in ("lstm_states_backwards", "gru_reset_before", "simple_rnn_linear_backwards", "bidirectional_none",
                 "rnn_stacked_cells", "mask_bidirectional_gru_states"):
        case = keras3_cases[name]
        proto = to_onnx(bnconvert.load(case["path"]), opset=opset)
        check_model(proto)
        assert _recurrent_ops(proto) == case["ops"], name
        error = _compare(proto, case["runs"])
        assert error <= TOLERANCE, f"{name} at opset {opset}: {error:.2e}"


def test_bidirectional_mirror_is_one_node(keras3_cases: dict[str, dict[str, Any]]) -> None:
    """A Bidirectional whose halves match is one ``direction="bidirectional"`` node; with
    hard_sigmoid the alpha/beta lists would be read differently by ONNX's two readings, so it is
    two one-direction nodes."""
    def directions(name: str) -> list[str]:
        proto = to_onnx(bnconvert.load(keras3_cases[name]["path"]))
        return sorted(a.s.decode() for n in proto.graph.node if n.op_type in NATIVE for a in n.attribute
                      if a.name == "direction")

    assert directions("bidirectional_concat") == ["bidirectional"]
    assert directions("bidirectional_ave_hard_sigmoid") == ["forward", "reverse"]


# -- tf_keras ------------------------------------------------------------------------------------
_TFK_CASES = r"""
import json, sys
import numpy as np
import tf_keras
L = tf_keras.layers
folder = sys.argv[1]
TOKENS = np.array(json.loads(sys.argv[2]), np.int32)

def seq(*layers, steps=None):
    x = tf_keras.Input((steps, 3))
    y = x
    for layer in layers:
        y = layer(y)
    return tf_keras.Model(x, y)

def tokens(*layers, steps=None):
    x = tf_keras.Input((steps,), dtype="int32")
    y = L.Embedding(10, 3, mask_zero=True)(x)
    for layer in layers:
        y = layer(y)
    return tf_keras.Model(x, y)

def masking(*layers):
    x = tf_keras.Input((None, 3))
    y = L.Masking(0.0)(x)
    for layer in layers:
        y = layer(y)
    return tf_keras.Model(x, y)

def masked_with_states():  # tf_keras masks it (Keras 3 does not)
    x, hs = tf_keras.Input((None,), dtype="int32"), [tf_keras.Input((4,)) for _ in range(2)]
    y = L.LSTM(4, return_sequences=True)(L.Embedding(10, 3, mask_zero=True)(x), initial_state=hs)
    return tf_keras.Model([x, *hs], y)

CASES = {
    "mask_with_initial_states": masked_with_states(),
    "lstm_hard_sigmoid": seq(L.LSTM(4, recurrent_activation="hard_sigmoid", return_sequences=True, go_backwards=True)),
    "gru_reset_before_states": seq(L.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid", return_state=True)),
    "gru_reset_after": seq(L.GRU(4, return_sequences=True)),
    "simple_rnn_relu": seq(L.SimpleRNN(4, activation="relu", return_sequences=True)),
    "bidirectional_hard_sigmoid": seq(L.Bidirectional(L.GRU(4, recurrent_activation="hard_sigmoid", reset_after=False,
                                                            return_sequences=True))),
    "mask_bidirectional": tokens(L.Bidirectional(L.LSTM(4, recurrent_activation="hard_sigmoid", return_sequences=True))),
    "mask_bidirectional_unrolled": tokens(L.Bidirectional(L.GRU(4, unroll=True, return_sequences=True)), steps=6),
    "mask_gru_backwards": tokens(L.GRU(4, go_backwards=True, return_sequences=True, reset_after=False)),
    "masking_lstm": masking(L.LSTM(4, return_sequences=True), L.LSTM(3)),
}
rng = np.random.default_rng(0)
done = {}
for name, model in CASES.items():
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.6, tuple(v.shape)).astype("float32"))
    if name.startswith("mask_"):
        x = TOKENS
    else:
        x = rng.normal(0.0, 1.0, (4, 6, 3)).astype("float32")
        if name.startswith("masking"):
            x[0, :2] = 0.0
            x[1, 4:] = 0.0
            x[3, 1] = 0.0
    xs = [x] + [rng.normal(0.0, 1.0, (4, 4)).astype("float32") for _ in model.inputs[1:]]
    ys = model(xs if len(xs) > 1 else x, training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    model.save(f"{folder}/{name}.h5")
    np.savez(f"{folder}/{name}.npz", **{f"x{i}": v for i, v in enumerate(xs)}, **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
    done[name] = [len(xs), len(ys)]
if len(sys.argv) > 3:  # the seq2seq corpus file, loaded by tf_keras itself
    model = tf_keras.models.load_model(sys.argv[3], compile=False)
    a = rng.uniform(0.0, 1.0, (3, 7, 22)).astype("float32")
    b = rng.uniform(0.0, 1.0, (3, 5, 16)).astype("float32")
    np.savez(f"{folder}/s2s.npz", a=a, b=b, y=np.asarray(model([a, b], training=False)))
print(json.dumps(done))
"""


def _tf_keras(script: str, *args: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", script, *args], check=False, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tf_keras_cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[int]]]:
    folder = tmp_path_factory.mktemp("recurrent_tfk")
    s2s = list(sequence_corpus_dir().glob("Kashdog__NaturalQuery__s2s*")) if sequence_corpus_dir().is_dir() else []
    return folder, json.loads(_tf_keras(_TFK_CASES, str(folder), json.dumps(TOKENS.tolist()), *map(str, s2s[:1])))


def test_export_equals_tf_keras(tf_keras_cases: tuple[Path, dict[str, list[int]]]) -> None:
    folder, counts = tf_keras_cases
    errors = {}
    for name, (n_in, n_out) in counts.items():
        data = np.load(folder / f"{name}.npz")
        proto = to_onnx(bnconvert.load(folder / f"{name}.h5"))
        check_model(proto)
        assert bool(_recurrent_ops(proto) & {"Scan"}) == name.startswith("mask"), name
        errors[name] = _compare(proto, [([data[f"x{i}"] for i in range(n_in)], [data[f"y{i}"] for i in range(n_out)])])
    bad = {name: f"{e:.2e}" for name, e in errors.items() if e > TOLERANCE}
    assert not bad, f"tf_keras and the ONNX export differ (max |diff| / max): {bad}"


def test_seq2seq_corpus_file_with_initial_states(tf_keras_cases: tuple[Path, dict[str, list[int]]]) -> None:
    """Kashdog s2s.h5 (standalone Keras 2.1.5): lstm_1's states start lstm_2 (inputs [x, h0, c0]),
    hard_sigmoid gates, steps not declared; against tf_keras loading the file (same process as
    the cases above)."""
    path = sequence_corpus_file("Kashdog__NaturalQuery__s2s")
    folder, _ = tf_keras_cases
    data = np.load(folder / "s2s.npz")
    proto = to_onnx(bnconvert.load(path))
    check_model(proto)
    assert _recurrent_ops(proto) == {"LSTM"}
    error = _compare(proto, [([data["a"], data["b"]], [data["y"]])])
    assert error <= TOLERANCE, f"{error:.2e}"


# -- Keras 1 and CuDNN files ------------------------------------------------------------------------
@pytest.mark.parametrize(("stem", "ops"), [
    ("seq_k1_lstm", {"LSTM"}),  # per-gate weights, hard_sigmoid 0.2x + 0.5
    ("seq_k1_lstm_gpu", {"LSTM"}),  # consume_less='gpu' fused weights
    ("seq_k1_gru", {"GRU"}),  # Theano, reset before the recurrent product
    ("seq_k1_simplernn", {"RNN"}),  # go_backwards into relu
    ("seq_k1_embedding", {"Scan"}),  # mask_zero through LSTM then GRU
    ("seq_cudnn", {"LSTM", "GRU"}),  # CuDNNLSTM / CuDNNGRU layouts
])
def test_legacy_files_against_their_expected_outputs(stem: str, ops: set[str]) -> None:
    """Fixtures whose expected outputs come from hand-written numpy step functions of Keras 1.2.2
    and cuDNN (fixtures/README.md), not from bnconvert; no Keras needed."""
    data = np.load(fixture_file(f"{stem}.expected.npz"))
    proto = to_onnx(bnconvert.load(fixture_file(f"{stem}.h5")))
    check_model(proto)
    assert _recurrent_ops(proto) == ops
    error = _compare(proto, [([data["x"]], [data["y"]])])
    assert error <= TOLERANCE, f"{stem}: {error:.2e}"


# -- refusals ------------------------------------------------------------------------------------
def _lstm_layer(**config: Any) -> Layer:
    rng = np.random.default_rng(0)
    weights = {"kernel": rng.normal(size=(3, 16)).astype(np.float32),
               "recurrent_kernel": rng.normal(size=(4, 16)).astype(np.float32),
               "bias": rng.normal(size=(16,)).astype(np.float32)}
    return Layer(name="seq_lstm", class_name="LSTM", config={"units": 4, **config}, weights=weights)


@pytest.mark.parametrize(("config", "reason"), [
    ({"time_major": True}, "time_major"),
    ({"recurrent_activation": "no_such_function"}, "recurrent_activation 'no_such_function' is not supported"),
])
def test_refusals_name_layer_class_and_reason(config: dict[str, Any], reason: str) -> None:
    model = chain_model([_lstm_layer(**config)], [None, None, 3])
    with pytest.raises(UnsupportedLayerError) as info:
        to_onnx(model)
    message = str(info.value)
    assert "'seq_lstm' (LSTM" in message and reason in message and "\n" not in message


def test_unknown_cell_class_is_refused() -> None:
    layer = Layer(name="custom_rnn", class_name="RNN", config={"cell": {"class_name": "PeepholeLSTMCell", "config": {"units": 4}}})
    with pytest.raises(UnsupportedLayerError, match=r"custom_rnn.*RNN"):
        to_onnx(chain_model([layer], [None, None, 3]))


def test_stateful_exports_with_zero_states_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    model = chain_model([_lstm_layer(stateful=True, return_sequences=True)], [2, None, 3])
    with caplog.at_level("WARNING", logger="bnconvert.onnx.layers.recurrent"):
        proto = to_onnx(model)
    assert "stateful" in caplog.text and "zero initial states" in caplog.text
    assert _recurrent_ops(proto) == {"LSTM"}
    assert not any(n.input[5:] for n in proto.graph.node if n.op_type == "LSTM")  # no initial_h: zeros
