"""Folded copies of files with recurrent layers load in Keras and predict what the originals do.

Each Keras flavour (Keras 3, tf-keras; separate processes, they cannot share one) builds small
models with a recurrent layer and a BatchNormalization the fold removes, saves them as ``.keras``
and ``.h5``, and, in the same child process, bnconvert folds and writes each; Keras then loads
the written file and its predictions are compared with the original model's. Keras is the
reference on both sides: bnconvert's output is never compared with itself.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import bnconvert
from bnconvert.fold import fold_model
from bnconvert.writers import write_model

from ..conftest import sequence_corpus_file
from ..readers.test_sequence_formats import _cudnn_file, _cudnn_to_lstm_kernel

#: relative tolerance of the issue: max |diff| / max |output|
TOLERANCE = 1e-5

_CASES = r'''
import json, os, sys
import numpy as np
flavour, folder = sys.argv[1], sys.argv[2]
if flavour == "keras3":
    import keras
else:
    import tf_keras as keras
import bnconvert
from bnconvert.fold import fold_model
from bnconvert.writers import write_model
L = keras.layers
rng = np.random.default_rng(0)

def chain():
    """Every recurrent form in one graph: BN before an LSTM (folds forward into its kernel), a
    Bidirectional GRU, TimeDistributed(Dense), a stack of cells, a SimpleRNN, BN after a Dense."""
    inp = keras.Input((5, 4))
    x = L.BatchNormalization()(inp)
    x = L.LSTM(3, return_sequences=True)(x)
    x = L.Bidirectional(L.GRU(3, return_sequences=True))(x)
    x = L.TimeDistributed(L.Dense(3))(x)
    x = L.RNN(L.StackedRNNCells([L.LSTMCell(3), L.GRUCell(2), L.LSTMCell(2)]), return_sequences=True)(x)
    x = L.SimpleRNN(3)(x)
    x = L.Dense(4)(x)
    x = L.BatchNormalization()(x)
    return keras.Model(inp, L.Dense(2)(x))


def sequential():
    """A Sequential model: Bidirectional(LSTM) and a GRU without bias, reset before the product."""
    return keras.Sequential([keras.Input((5, 4)), L.Bidirectional(L.LSTM(3, return_sequences=True)),
                             L.GRU(3, reset_after=False, use_bias=False), L.Dense(4), L.BatchNormalization(),
                             L.Dense(2)])


def tf_op():
    """tf.keras only: a BN output passed as the keyword argument ``y`` of a TFOpLambda (``x + bn``)."""
    inp = keras.Input((5, 4))
    x = inp + L.BatchNormalization()(L.Dense(4)(inp))
    return keras.Model(inp, L.Dense(2)(L.LSTM(3)(x)))


def conv_lstm():
    """ConvLSTM1D keeps its weights in a cell too (``layers/conv_lstm1d/cell/vars``)."""
    inp = keras.Input((5, 4))
    x = L.Reshape((5, 4, 1))(inp)
    x = L.ConvLSTM1D(2, 3, return_sequences=True)(x)
    x = L.Flatten()(x)
    x = L.Dense(4)(x)
    x = L.BatchNormalization()(x)
    return keras.Model(inp, L.Dense(2)(x))


cases = {"chain": chain, "sequential": sequential, "conv_lstm": conv_lstm}
if flavour == "tf_keras":
    cases["tf_op"] = tf_op
x = rng.uniform(0, 1, (3, 5, 4)).astype("float32")
results = {}
for name, make in cases.items():
    m = make()
    for w in m.weights:  # small weights: saturated gates would hide a wrong kernel
        variance = "moving_variance" in getattr(w, "path", w.name)
        w.assign(rng.uniform(0.2 if variance else -0.6, 1.0 if variance else 0.6, tuple(w.shape)).astype("float32"))
    want = np.asarray(m(x))
    np.savez(os.path.join(folder, f"{name}.weights.npz"),
             **{f"{layer.name}.{i}": w for layer in m.layers for i, w in enumerate(layer.get_weights())})
    for ext in ("keras", "h5"):
        src = os.path.join(folder, f"{name}.{ext}")
        out = os.path.join(folder, f"{name}.folded.{ext}")
        m.save(src)
        original = bnconvert.load(src)
        folded, report = fold_model(original)
        write_model(folded, out, original=original)
        got = np.asarray(keras.models.load_model(out, compile=False)(x))
        n_bn = sum(1 for _, layer, _ in folded.walk() if layer.class_name == "BatchNormalization")
        results[f"{name}.{ext}"] = [float(np.abs(got - want).max() / np.abs(want).max()), n_bn,
                                    float(np.abs(want).max())]
if len(sys.argv) > 3:  # a Keras 1 file bnconvert wrote as Keras 2: load it, keep its LSTM weights
    m = keras.models.load_model(sys.argv[3], compile=False)
    layer = m.get_layer("lstm_1")
    np.savez(os.path.join(folder, "keras1_lstm.npz"), *layer.get_weights())
    results["keras1"] = [layer.get_config()["units"], layer.get_config()["recurrent_activation"],
                         list(np.asarray(m(np.zeros((1, 3, 97), "float32"))).shape)]
if len(sys.argv) > 5:  # CuDNNGRU and Bidirectional(CuDNNLSTM) written as GRU/LSTM, cuDNN weights
    m = keras.models.load_model(sys.argv[5], compile=False)
    np.savez(os.path.join(folder, "cudnn.npz"), **{f"{layer.name}.{i}": w for layer in m.layers
                                                  for i, w in enumerate(layer.get_weights())})
    results["cudnn"] = [type(layer).__name__ for layer in m.layers]
if len(sys.argv) > 4:  # Keras 1 Embedding, GRU, SimpleRNN, Bidirectional(LSTM) written as Keras 2
    m = keras.models.load_model(sys.argv[4], compile=False)
    np.savez(os.path.join(folder, "keras1_rnn.npz"), **{f"{layer.name}.{i}": w for layer in m.layers
                                                       for i, w in enumerate(layer.get_weights())})
    gru = m.get_layer("gru_1").get_config()
    results["keras1_rnn"] = [gru["reset_after"], m.get_layer("bi_1").get_config()["merge_mode"],
                             list(np.asarray(m(np.array([[1, 2, 0, 0, 0]]))).shape)]
print(json.dumps(results))
'''


def _run(flavour: str, folder: Path, *extra: str) -> dict[str, list]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _CASES, flavour, str(folder), *extra], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=["keras3", "tf_keras"])
def flavour_results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list], Path]:
    """The flavour's results, and its folder. tf-keras also loads the Keras 1 LSTM file bnconvert
    wrote as Keras 2 (one TensorFlow start for both)."""
    folder = tmp_path_factory.mktemp(request.param)
    extra = []
    if request.param == "tf_keras":
        model = bnconvert.load(sequence_corpus_file("kootenpv__neural_complete"))
        write_model(fold_model(model)[0], folder / "neural_char.h5", original=model)
        keras1 = _keras1_recurrent_file(folder / "keras1_rnn.h5")
        model = bnconvert.load(keras1)
        write_model(fold_model(model)[0], folder / "keras1_rnn.folded.h5", original=model)
        cudnn = folder / "cudnn.h5"
        _cudnn_file(cudnn, np.random.default_rng(11))
        model = bnconvert.load(cudnn)
        write_model(fold_model(model)[0], folder / "cudnn.folded.h5", original=model)
        extra = [str(folder / "neural_char.h5"), str(folder / "keras1_rnn.folded.h5"), str(folder / "cudnn.folded.h5")]
    return _run(request.param, folder, *extra), folder


def test_folded_recurrent_models_load_and_match(flavour_results: tuple[dict[str, list], Path]) -> None:
    results = {k: v for k, v in flavour_results[0].items() if not k.startswith(("keras1", "cudnn"))}
    names = ["chain.h5", "chain.keras", "conv_lstm.h5", "conv_lstm.keras", "sequential.h5", "sequential.keras"]
    assert sorted(results) in (names, sorted(names + ["tf_op.h5", "tf_op.keras"]))
    bad = {name: r for name, r in results.items() if not r[0] <= TOLERANCE}
    assert not bad, bad
    # the fold removed every BN (so the written files hold changed recurrent and Dense weights)
    assert all(n_bn == 0 for _, n_bn, _ in results.values()), results


def test_read_weights_are_what_keras_holds(flavour_results: tuple[dict[str, list], Path]) -> None:
    """bnconvert's weights by meaning, in catalog order, equal Keras' ``get_weights()`` of the model
    that wrote the file, layer by layer (cells of a stack, both directions, wrapped layers), for
    both formats: the round trip above alone would not see two weights swapped on reading."""
    folder = flavour_results[1]
    for name in ("chain", "sequential", "conv_lstm"):
        keras_weights = np.load(folder / f"{name}.weights.npz")
        for ext in ("keras", "h5"):
            model = bnconvert.load(folder / f"{name}.{ext}")
            seen = 0
            for layer in model.layers:
                for i, array in enumerate(layer.weights.values()):
                    np.testing.assert_array_equal(array, keras_weights[f"{layer.name}.{i}"], err_msg=f"{name}.{ext} {layer.name}")
                    seen += 1
            assert seen == len(keras_weights.files), f"{name}.{ext}"


def test_cudnn_layers_written_load_in_tf_keras_as_keras_converts_them(flavour_results: tuple[dict[str, list], Path]) -> None:
    """tf-keras has no cuDNN classes; the copy names them LSTM/GRU and keeps the cuDNN weights, which
    tf-keras' own ``_convert_rnn_weights`` turns into what the element-wise conversion gives."""
    results, folder = flavour_results
    if "cudnn" not in results:
        return  # the Keras 3 run
    assert results["cudnn"] == ["GRU", "Bidirectional"]
    loaded = np.load(folder / "cudnn.npz")
    with h5py.File(folder / "cudnn.h5") as f:
        stored = {n.decode(): f["model_weights"][layer][n][()] for layer in ("gru", "bi")
                  for n in f["model_weights"][layer].attrs["weight_names"]}
    np.testing.assert_array_equal(loaded["gru.0"], _cudnn_to_lstm_kernel(stored["gru/kernel:0"], 3))
    np.testing.assert_array_equal(loaded["gru.2"], stored["gru/bias:0"].reshape(2, -1))
    for j, side in enumerate(("forward", "backward")):
        np.testing.assert_array_equal(loaded[f"bi.{3 * j}"], _cudnn_to_lstm_kernel(stored[f"bi/{side}_lstm/kernel:0"], 4))
        bias = stored[f"bi/{side}_lstm/bias:0"]
        np.testing.assert_allclose(loaded[f"bi.{3 * j + 2}"], bias[:8] + bias[8:], rtol=1e-6)


def _keras1_recurrent_file(path: Path) -> Path:
    """A Keras 1.2.2 Sequential: Embedding(mask_zero) -> GRU -> SimpleRNN -> Bidirectional(LSTM, sum),
    per-gate weights whose values are their own flat positions plus a layer offset."""
    def arr(*shape: int, offset: float) -> np.ndarray:
        return (np.arange(np.prod(shape), dtype="float32").reshape(shape) / 100 + offset).astype("float32")

    keras1 = {"consume_less": "cpu", "inner_activation": "hard_sigmoid", "activation": "tanh", "return_sequences": True}
    layers = {
        "embedding_1": [("embedding_1_W:0", arr(10, 4, offset=0))],
        "gru_1": [(f"gru_1_{k}_{g}:0", arr(*{"W": (4, 3), "U": (3, 3), "b": (3,)}[k], offset=i))
                  for i, (g, k) in enumerate((g, k) for g in "zrh" for k in "WUb")],
        "simplernn_1": [(f"simplernn_1_{k}:0", arr(*s, offset=0.5)) for k, s in (("W", (3, 2)), ("U", (2, 2)), ("b", (2,)))],
        "bi_1": [(f"{side}_lstm_1_{k}_{g}:0", arr(*{"W": (2, 3), "U": (3, 3), "b": (3,)}[k], offset=i / 7))
                 for i, (side, g, k) in enumerate((s, g, k) for s in ("forward", "backward") for g in "icfo" for k in "WUb")],
    }
    config = {"class_name": "Sequential", "config": [
        {"class_name": "Embedding", "config": {"name": "embedding_1", "input_dim": 10, "output_dim": 4, "input_length": 5,
                                               "mask_zero": True, "batch_input_shape": [None, 5], "input_dtype": "int32"}},
        {"class_name": "GRU", "config": {"name": "gru_1", "output_dim": 3, **keras1}},
        {"class_name": "SimpleRNN", "config": {"name": "simplernn_1", "output_dim": 2, **keras1}},
        {"class_name": "Bidirectional", "config": {"name": "bi_1", "merge_mode": "sum", "layer": {
            "class_name": "LSTM", "config": {"name": "lstm_1", "output_dim": 3, **keras1, "return_sequences": False}}}},
    ]}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "1.2.2"
        f.attrs["model_config"] = json.dumps(config)
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for name, named in layers.items():
            lg = g.create_group(name)
            lg.attrs["weight_names"] = np.array([n.encode() for n, _ in named])
            for n, a in named:
                lg.create_dataset(n, data=a)
    return path


def test_keras1_recurrent_layers_written_as_keras2_load_in_tf_keras(flavour_results: tuple[dict[str, list], Path]) -> None:
    """tf-keras loads the Keras 2 copy of a Keras 1 Embedding/GRU/SimpleRNN/Bidirectional(LSTM) file
    with the Keras 1 gates fused as Keras 2 orders them (GRU z, r, h; LSTM i, f, c, o)."""
    results, folder = flavour_results
    if "keras1_rnn" not in results:
        return  # the Keras 3 run
    assert results["keras1_rnn"] == [False, "sum", [1, 3]]
    loaded = np.load(folder / "keras1_rnn.npz")
    with h5py.File(folder / "keras1_rnn.h5") as f:
        stored = {n.decode().split(":")[0]: f["model_weights"][layer][n][()] for layer in f["model_weights"]
                  for n in f["model_weights"][layer].attrs["weight_names"]}
    np.testing.assert_array_equal(loaded["embedding_1.0"], stored["embedding_1_W"])
    for i, k in enumerate("WUb"):
        np.testing.assert_array_equal(loaded[f"gru_1.{i}"], np.concatenate([stored[f"gru_1_{k}_{g}"] for g in "zrh"], -1))
        np.testing.assert_array_equal(loaded[f"simplernn_1.{i}"], stored[f"simplernn_1_{k}"])
        for j, side in enumerate(("forward", "backward")):
            np.testing.assert_array_equal(loaded[f"bi_1.{3 * j + i}"],
                                          np.concatenate([stored[f"{side}_lstm_1_{k}_{g}"] for g in "ifco"], -1))


def test_keras1_lstm_written_as_keras2_loads_with_fused_gates(flavour_results: tuple[dict[str, list], Path]) -> None:
    """The Keras 1 file (12 per-gate LSTM weights) becomes a Keras 2 ``.h5`` that tf-keras loads; the
    loaded LSTM weights are the file's gates concatenated in Keras 2's order i, f, c, o."""
    results, folder = flavour_results
    if "keras1" not in results:
        return  # the Keras 3 run; tf-keras checks the Keras 1 file
    assert results["keras1"] == [128, "hard_sigmoid", [1, 87]]
    loaded = np.load(folder / "keras1_lstm.npz")
    with h5py.File(sequence_corpus_file("kootenpv__neural_complete")) as f:
        g = f["model_weights/lstm_1"]
        w = {n.decode().split(":")[0][len("lstm_1_"):]: g[n][()] for n in g.attrs["weight_names"]}
    for i, kind in enumerate(("W", "U", "b")):
        expected = np.concatenate([w[f"{kind}_{gate}"] for gate in "ifco"], axis=-1)
        np.testing.assert_array_equal(loaded[f"arr_{i}"], expected)


def test_corpus_keras3_zip_with_recurrent_layers_roundtrips(tmp_path: Path) -> None:
    """Nothing to fold in these real files: the written copy must still hold every weight where
    Keras 3 looks for it (``layers/bidirectional/forward_layer/cell/vars`` ...), byte for byte."""
    for prefix in ("Varshitha14-web", "akshitgajera1013"):
        src = sequence_corpus_file(prefix)
        out = tmp_path / f"{prefix}.keras"
        model = bnconvert.load(src)
        folded, _ = fold_model(model)
        write_model(folded, out, original=model)
        with zipfile.ZipFile(src) as a, zipfile.ZipFile(out) as b:
            before, after = (io.BytesIO(z.read("model.weights.h5")) for z in (a, b))
        with h5py.File(before) as fa, h5py.File(after) as fb:
            found: list[str] = []
            fa["layers"].visititems(lambda n, o, found=found: found.append(n) if isinstance(o, h5py.Dataset) else None)
            assert found
            for n in found:
                np.testing.assert_array_equal(fa["layers"][n][()], fb["layers"][n][()], err_msg=n)
                assert fb["layers"][n].dtype == fa["layers"][n].dtype
