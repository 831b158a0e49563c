"""Sequence layers in every file format: the real files of the sequence corpus, and small files
built here with h5py in the layouts older Keras wrote (Keras 1 per-gate weights, cuDNN weights).

Expected values come from the files themselves (read with h5py, not bnconvert), from Keras'
parameter counts (the corpus README) and from conversions computed here element by element.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import bnconvert
from bnconvert.errors import FormatError, UnsupportedLayerError
from bnconvert.fold import fold_model
from bnconvert.model import TensorArg
from bnconvert.readers.graph import TENSOR_KWARGS
from bnconvert.writers import write_model

from ..conftest import sequence_corpus_file

#: file prefix -> (format bnconvert reports, parameters Keras counts: the corpus README's table;
#: Keras 1 and the weights-only file: from the stored shapes, see the tests below)
CORPUS = {
    "kootenpv__neural_complete": ("keras1-h5", 97 * 512 + 128 * 512 + 512 + 128 * 87 + 87),
    "Kashdog__NaturalQuery": ("keras2-h5", 13_840),
    "anushree1001__Comparing-Multiple-Pre-trained-Neural-network-models-on-IMDB-dataset__bigru": ("keras2-h5", 83_201),
    "anushree1001__Comparing-Multiple-Pre-trained-Neural-network-models-on-IMDB-dataset__simplernn": ("keras2-h5", 80_545),
    "AbuAlHagag__stp_models": ("keras2-h5", 97_537),
    "Zmey1__OceanObservation": ("keras3-h5", 7_169),
    "tmakian99__GeoLife": ("keras2-h5", 172_516),
    "Niveditha79__Transformers": ("keras3-zip", 1_177),
    "akshitgajera1013__Email": ("keras3-zip", 178_881),
    "Varshitha14-web__Mental": ("keras3-zip", 230_407),
    "gokulsarveshsk__ner": ("tfkeras-zip", 81_316),
}


@pytest.mark.parametrize("prefix", sorted(CORPUS))
def test_corpus_file_reads_with_keras_parameter_count(prefix: str) -> None:
    model = bnconvert.load(sequence_corpus_file(prefix))
    fmt, params = CORPUS[prefix]
    assert model.source is not None and model.source.format == fmt
    assert model.count_params() == params


def _zip_weights(path: Path) -> h5py.File:
    with zipfile.ZipFile(path) as z:
        return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")


@pytest.mark.parametrize("prefix,layer,units", [("Varshitha14-web__Mental", "bidirectional", 64),
                                                ("gokulsarveshsk__ner", "bidirectional_3", 32)])
def test_zip_bidirectional_lstm_weights_from_their_cells(prefix: str, layer: str, units: int) -> None:
    path = sequence_corpus_file(prefix)
    weights = bnconvert.load(path)[layer].weights
    with _zip_weights(path) as f:
        for side in ("forward", "backward"):
            cell = f[f"layers/bidirectional/{side}_layer/cell/vars"]
            for i, meaning in enumerate(("kernel", "recurrent_kernel", "bias")):
                np.testing.assert_array_equal(weights[f"{side}/{meaning}"], cell[str(i)][()])
    assert weights["forward/recurrent_kernel"].shape == (units, 4 * units)


def test_zip_gru_reset_after_bias_rows() -> None:
    path = sequence_corpus_file("akshitgajera1013__Email")
    gru = bnconvert.load(path)["gru_1"]
    assert gru.config["reset_after"] is True and gru.weights["bias"].shape == (2, 192)
    with _zip_weights(path) as f:
        np.testing.assert_array_equal(gru.weights["bias"], f["layers/gru/cell/vars/2"][()])


def test_h5_bidirectional_gru_reset_before_and_names_unlike_the_config() -> None:
    path = sequence_corpus_file("anushree1001__Comparing-Multiple-Pre-trained-Neural-network-models-on-IMDB-dataset__bigru")
    layer = bnconvert.load(path)["bidirectional_4"]
    assert layer.config["layer"]["config"]["reset_after"] is False
    with h5py.File(path) as f:
        g = f["model_weights/bidirectional_4"]
        for side in ("forward", "backward"):
            for meaning in ("kernel", "recurrent_kernel", "bias"):
                np.testing.assert_array_equal(layer.weights[f"{side}/{meaning}"], g[f"bidirectional_4/{side}_gru_4/{meaning}:0"][()])
    assert layer.weights["forward/bias"].shape == (48,)


def test_h5_time_distributed_weights_under_the_wrapper() -> None:
    path = sequence_corpus_file("AbuAlHagag__stp_models")
    layer = bnconvert.load(path)["time_distributed"]
    assert layer.config["layer"]["class_name"] == "Conv2D"
    with h5py.File(path) as f:
        np.testing.assert_array_equal(layer.weights["kernel"], f["model_weights/time_distributed/time_distributed/kernel:0"][()])


def test_h5_initial_state_from_another_layers_state_outputs() -> None:
    model = bnconvert.load(sequence_corpus_file("Kashdog__NaturalQuery"))
    assert [str(r) for r in model["lstm_2"].calls[0]] == ["input_2", "lstm_1[0][1]", "lstm_1[0][2]"]
    assert model["lstm_1"].config["recurrent_activation"] == "hard_sigmoid"


def test_tensor_keyword_arguments_become_call_inputs() -> None:
    """tf.keras writes ``x + y`` as a TFOpLambda whose ``y`` is a keyword argument, and a
    MultiHeadAttention's ``value``/``key`` the same way: they are inputs, in the order written."""
    model = bnconvert.load(sequence_corpus_file("tmakian99__GeoLife"))
    add = model["tf.__operators__.add"]
    assert [str(r) for r in add.calls[0]] == ["input_1", "multi_head_attention"]
    assert add.class_name == "tf.__operators__.add" and add.source_class == "TFOpLambda"
    assert add.op_args(0) == ([TensorArg(0)], {"y": TensorArg(1), "name": None})
    mha = model["multi_head_attention"]
    assert [str(r) for r in mha.calls[0]] == ["input_1"] * 3
    assert mha.call_kwargs[0][TENSOR_KWARGS] == {"value": [1], "key": [2]}


def test_keras1_lstm_per_gate_weights_fused_in_keras2_order() -> None:
    path = sequence_corpus_file("kootenpv__neural_complete")
    lstm = bnconvert.load(path)["lstm_1"]
    assert lstm.source_class == "LSTM"
    assert {k: lstm.config[k] for k in ("units", "recurrent_activation", "activation", "return_sequences")} == {
        "units": 128, "recurrent_activation": "hard_sigmoid", "activation": "tanh", "return_sequences": False}
    with h5py.File(path) as f:
        g = f["model_weights/lstm_1"]
        stored = {n.decode().split(":")[0]: g[n][()] for n in g.attrs["weight_names"]}
    units = 128
    for meaning, kind in (("kernel", "W"), ("recurrent_kernel", "U"), ("bias", "b")):
        fused = lstm.weights[meaning]
        for gate, slot in zip("ifco", range(4)):  # Keras 2 gate order i, f, c, o
            np.testing.assert_array_equal(fused[..., slot * units:(slot + 1) * units], stored[f"lstm_1_{kind}_{gate}"])


def _cudnn_to_lstm_kernel(kernel: np.ndarray, gates: int) -> np.ndarray:
    """Element by element: for each gate block ``k`` (F, u), Keras' ``k.T.reshape(k.shape, order='F')``
    puts ``k[p // u, p % u]`` at ``(p % F, p // F)``."""
    features, width = kernel.shape
    units = width // gates
    out = np.empty_like(kernel)
    for g in range(gates):
        block = kernel[:, g * units:(g + 1) * units]
        for p in range(features * units):
            out[p % features, g * units + p // features] = block[p // units, p % units]
    return out


def test_weights_only_cudnn_lstm_recognised_and_converted() -> None:
    path = sequence_corpus_file("minimaxir__textgenrnn")
    model = bnconvert.load(path)
    with h5py.File(path) as f:
        stored = {name: {n.decode(): f[name][n][()] for n in f[name].attrs["weight_names"]} for name in ("rnn_1", "rnn_2")}
        total = sum(f[name][n].size for name in f.attrs["layer_names"] for n in (x.decode() for x in f[name].attrs["weight_names"]))
    assert model.count_params() == total - 2 * 4 * 128  # two cuDNN biases of 8u become one of 4u each
    for name in ("rnn_1", "rnn_2"):
        layer = model[name]
        assert (layer.class_name, layer.source_class, layer.config["units"]) == ("LSTM", "CuDNNLSTM", 128)
        s = stored[name]
        kernel, recurrent, bias = s[f"{name}/kernel:0"], s[f"{name}/recurrent_kernel:0"], s[f"{name}/bias:0"]
        np.testing.assert_array_equal(layer.weights["kernel"], _cudnn_to_lstm_kernel(kernel, 4))
        np.testing.assert_array_equal(layer.weights["recurrent_kernel"],
                                      np.hstack([recurrent[:, g * 128:(g + 1) * 128].T for g in range(4)]))
        np.testing.assert_allclose(layer.weights["bias"], bias[:512] + bias[512:], rtol=0, atol=0)


def _textgenrnn_config(rnn_class: str) -> dict[str, Any]:
    """textgenrnn's architecture (its model.py) as Keras 2.1.5 ``to_json`` writes it."""
    def layer(cls: str, name: str, config: dict[str, Any], inputs: list[str]) -> dict[str, Any]:
        return {"class_name": cls, "name": name, "config": {"name": name, **config},
                "inbound_nodes": [[[i, 0, 0, {}] for i in inputs]] if inputs else []}
    rnn = {"units": 128, "return_sequences": True}
    layers = [
        layer("InputLayer", "input", {"batch_input_shape": [None, 40], "dtype": "int32"}, []),
        layer("Embedding", "embedding", {"input_dim": 465, "output_dim": 100}, ["input"]),
        layer(rnn_class, "rnn_1", rnn, ["embedding"]),
        layer(rnn_class, "rnn_2", rnn, ["rnn_1"]),
        layer("Concatenate", "rnn_concat", {"axis": -1}, ["embedding", "rnn_1", "rnn_2"]),
        layer("AttentionWeightedAverage", "attention", {}, ["rnn_concat"]),
        layer("Dense", "output", {"units": 465, "activation": "softmax"}, ["attention"]),
    ]
    if rnn_class == "LSTM":
        for entry in layers[2:4]:
            entry["config"].update(activation="tanh", recurrent_activation="sigmoid", use_bias=True)
    return {"class_name": "Model", "config": {"name": "textgenrnn", "layers": layers, "input_layers": [["input", 0, 0]],
                                              "output_layers": [["output", 0, 0]]}}


@pytest.mark.parametrize("rnn_class", ["CuDNNLSTM", "LSTM"])
def test_weights_only_cudnn_lstm_with_its_architecture(tmp_path: Path, rnn_class: str) -> None:
    """With the architecture, both spellings read the cuDNN weights as Keras' load_weights does."""
    config = tmp_path / "textgenrnn.json"
    config.write_text(json.dumps(_textgenrnn_config(rnn_class)))
    path = sequence_corpus_file("minimaxir__textgenrnn")
    model = bnconvert.load(path, config=config)
    guessed = bnconvert.load(path)
    for name in ("rnn_1", "rnn_2"):
        layer = model[name]
        assert (layer.class_name, layer.source_class) == ("LSTM", rnn_class)
        assert layer.config["recurrent_activation"] == "sigmoid"
        for meaning in ("kernel", "recurrent_kernel", "bias"):
            np.testing.assert_array_equal(layer.weights[meaning], guessed[name].weights[meaning])


# -- small files in the older layouts, built with h5py ---------------------------------------------------
def _write_keras_h5(path: Path, config: dict[str, Any], weights: dict[str, list[tuple[str, np.ndarray]]],
                    version: str, backend: str | None = "tensorflow") -> None:
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = version
        if backend:
            f.attrs["backend"] = backend
        f.attrs["model_config"] = json.dumps(config)
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([n.encode() for n in weights])
        for layer, named in weights.items():
            lg = g.create_group(layer)
            lg.attrs["weight_names"] = np.array([n.encode() for n, _ in named]) if named else np.zeros((0,))
            for n, a in named:
                lg.create_dataset(n, data=a)


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype("float32")


def test_keras1_gru_simple_rnn_and_bidirectional_lstm(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    f_, u = 4, 3
    gru = [(f"gru_1_{k}_{g}:0", _rand(rng, *(f_, u) if k == "W" else (u, u) if k == "U" else (u,)))
           for g in "zrh" for k in "WUb"]
    rnn = [(f"simplernn_1_{k}:0", _rand(rng, *s)) for k, s in (("W", (u, 2)), ("U", (2, 2)), ("b", (2,)))]
    bi = [(f"{side}_lstm_1_{k}_{g}:0", _rand(rng, *(2, u) if k == "W" else (u, u) if k == "U" else (u,)))
          for side in ("forward", "backward") for g in "icfo" for k in "WUb"]
    keras1 = {"consume_less": "cpu", "inner_activation": "hard_sigmoid", "activation": "tanh", "return_sequences": True,
              "dropout_W": 0.0, "dropout_U": 0.0, "init": "glorot_uniform", "inner_init": "orthogonal"}
    config = {"class_name": "Sequential", "config": [
        {"class_name": "GRU", "config": {"name": "gru_1", "output_dim": u, "batch_input_shape": [None, None, f_], **keras1}},
        {"class_name": "SimpleRNN", "config": {"name": "simplernn_1", "output_dim": 2, **keras1}},
        {"class_name": "Bidirectional", "config": {"name": "bi_1", "merge_mode": "sum", "layer": {
            "class_name": "LSTM", "config": {"name": "lstm_1", "output_dim": u, "forget_bias_init": "one", **keras1}}}},
    ]}
    path = tmp_path / "k1.h5"
    _write_keras_h5(path, config, {"gru_1": gru, "simplernn_1": rnn, "bi_1": bi}, "1.2.2", backend=None)
    model = bnconvert.load(path)
    stored = dict(gru + rnn + bi)
    g = model["gru_1"]
    assert g.config["reset_after"] is False and g.config["recurrent_activation"] == "hard_sigmoid"
    for meaning, k in (("kernel", "W"), ("recurrent_kernel", "U"), ("bias", "b")):
        for slot, gate in enumerate("zrh"):
            np.testing.assert_array_equal(g.weights[meaning][..., slot * u:(slot + 1) * u], stored[f"gru_1_{k}_{gate}:0"])
    s = model["simplernn_1"]
    assert s.config["units"] == 2 and "recurrent_activation" not in s.config
    np.testing.assert_array_equal(s.weights["kernel"], stored["simplernn_1_W:0"])
    b = model["bi_1"]
    assert b.config["merge_mode"] == "sum" and b.config["layer"]["config"]["units"] == u
    for side in ("forward", "backward"):
        for meaning, k in (("kernel", "W"), ("recurrent_kernel", "U"), ("bias", "b")):
            for slot, gate in enumerate("ifco"):
                np.testing.assert_array_equal(b.weights[f"{side}/{meaning}"][..., slot * u:(slot + 1) * u],
                                              stored[f"{side}_lstm_1_{k}_{gate}:0"])


def test_keras1_lstm_gpu_mode_keeps_fused_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    named = [("lstm_1_W:0", _rand(rng, 3, 8)), ("lstm_1_U:0", _rand(rng, 2, 8)), ("lstm_1_b:0", _rand(rng, 8))]
    config = {"class_name": "Sequential", "config": [{"class_name": "LSTM", "config": {
        "name": "lstm_1", "output_dim": 2, "consume_less": "gpu", "input_dim": 3, "input_length": 5}}]}
    path = tmp_path / "gpu.h5"
    _write_keras_h5(path, config, {"lstm_1": named}, "1.2.2", backend=None)
    lstm = bnconvert.load(path)["lstm_1"]
    assert lstm.config["implementation"] == 2 and lstm.config["batch_input_shape"] == [None, 5, 3]
    for (_, array), meaning in zip(named, ("kernel", "recurrent_kernel", "bias")):
        np.testing.assert_array_equal(lstm.weights[meaning], array)


def _cudnn_file(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A Keras 2.1.5 file with a CuDNNGRU and a Bidirectional(CuDNNLSTM), cuDNN layouts."""
    f_, u = 4, 3
    arrays = {
        "gru/kernel:0": _rand(rng, f_, 3 * u), "gru/recurrent_kernel:0": _rand(rng, u, 3 * u), "gru/bias:0": _rand(rng, 6 * u),
    }
    for side in ("forward", "backward"):
        arrays.update({f"bi/{side}_lstm/kernel:0": _rand(rng, u, 4 * 2), f"bi/{side}_lstm/recurrent_kernel:0": _rand(rng, 2, 8),
                       f"bi/{side}_lstm/bias:0": _rand(rng, 16)})
    config = {"class_name": "Sequential", "config": [
        {"class_name": "CuDNNGRU", "config": {"name": "gru", "units": u, "return_sequences": True,
                                              "batch_input_shape": [None, 5, f_], "kernel_initializer": {"class_name": "VarianceScaling"}}},
        {"class_name": "Bidirectional", "config": {"name": "bi", "merge_mode": "concat", "layer": {
            "class_name": "CuDNNLSTM", "config": {"name": "lstm", "units": 2}}}},
    ]}
    _write_keras_h5(path, config, {"gru": [(k, v) for k, v in arrays.items() if k.startswith("gru/")],
                                   "bi": [(k, v) for k, v in arrays.items() if k.startswith("bi/")]}, "2.1.5")
    return arrays


def test_cudnn_classes_read_as_lstm_and_gru(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    path = tmp_path / "cudnn.h5"
    stored = _cudnn_file(path, rng)
    model = bnconvert.load(path)
    gru = model["gru"]
    assert (gru.class_name, gru.source_class) == ("GRU", "CuDNNGRU")
    assert gru.config["reset_after"] is True and gru.config["recurrent_activation"] == "sigmoid"
    np.testing.assert_array_equal(gru.weights["kernel"], _cudnn_to_lstm_kernel(stored["gru/kernel:0"], 3))
    np.testing.assert_array_equal(gru.weights["recurrent_kernel"],
                                  np.hstack([stored["gru/recurrent_kernel:0"][:, g * 3:(g + 1) * 3].T for g in range(3)]))
    np.testing.assert_array_equal(gru.weights["bias"], np.stack([stored["gru/bias:0"][:9], stored["gru/bias:0"][9:]]))
    bi = model["bi"]
    assert bi.config["layer"]["class_name"] == "LSTM" and bi.config["layer"]["config"]["recurrent_activation"] == "sigmoid"
    for side in ("forward", "backward"):
        bias = stored[f"bi/{side}_lstm/bias:0"]
        np.testing.assert_array_equal(bi.weights[f"{side}/bias"], bias[:8] + bias[8:])
        np.testing.assert_array_equal(bi.weights[f"{side}/kernel"], _cudnn_to_lstm_kernel(stored[f"bi/{side}_lstm/kernel:0"], 4))


def test_cudnn_weights_written_back_in_their_layout(tmp_path: Path) -> None:
    """The writer inverts the conversion: kernels byte for byte; the GRU bias exactly; an LSTM's
    two bias halves may be split differently (Keras splits them equally) but keep their sum. The
    classes are written as the LSTM/GRU Keras converts such weights into (no Keras after tf.keras
    1.x has the cuDNN classes)."""
    rng = np.random.default_rng(6)
    path = tmp_path / "cudnn.h5"
    stored = _cudnn_file(path, rng)
    model = bnconvert.load(path)
    out = tmp_path / "out.h5"
    write_model(fold_model(model)[0], out, original=model)
    with h5py.File(out) as f:
        written = {n.decode(): f["model_weights"][layer][n][()] for layer in ("gru", "bi")
                   for n in f["model_weights"][layer].attrs["weight_names"]}
        written_config = json.loads(f.attrs["model_config"])["config"]
    assert [e["class_name"] for e in written_config] == ["GRU", "Bidirectional"]
    assert written_config[1]["config"]["layer"]["class_name"] == "LSTM"
    assert written_config[0]["config"]["reset_after"] is True and "source_class" not in json.dumps(written_config)
    assert written.keys() == stored.keys()
    for name, array in stored.items():
        if name.startswith("bi/") and name.endswith("bias:0"):
            np.testing.assert_allclose(written[name][:8] + written[name][8:], array[:8] + array[8:], rtol=1e-6)
        else:
            np.testing.assert_array_equal(written[name], array, err_msg=name)


@pytest.mark.parametrize("version,expected", [("2.1.5", False), ("2.2.4", False), ("2.3.1", False), ("2.4.0", True),
                                              ("2.11.0", True)])
def test_gru_reset_after_default_by_generation(tmp_path: Path, version: str, expected: bool) -> None:
    rng = np.random.default_rng(7)
    rows = (2, 9) if expected else (9,)
    named = [("gru/kernel:0", _rand(rng, 4, 9)), ("gru/recurrent_kernel:0", _rand(rng, 3, 9)), ("gru/bias:0", _rand(rng, *rows))]
    config = {"class_name": "Sequential", "config": [{"class_name": "GRU", "config": {
        "name": "gru", "units": 3, "batch_input_shape": [None, 5, 4]}}]}
    path = tmp_path / "gru.h5"
    _write_keras_h5(path, config, {"gru": named}, version)
    assert bnconvert.load(path)["gru"].config["reset_after"] is expected


def test_gru_bias_disagreeing_with_reset_after_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    named = [("gru/kernel:0", _rand(rng, 4, 9)), ("gru/recurrent_kernel:0", _rand(rng, 3, 9)), ("gru/bias:0", _rand(rng, 2, 9))]
    config = {"class_name": "Sequential", "config": [{"class_name": "GRU", "config": {
        "name": "gru", "units": 3, "reset_after": False, "batch_input_shape": [None, 5, 4]}}]}
    path = tmp_path / "gru.h5"
    _write_keras_h5(path, config, {"gru": named}, "2.1.5")
    with pytest.raises(FormatError, match=r"layer 'gru' \(GRU\): weight 'bias' has shape \(2, 9\), the config implies \(9,\)"):
        bnconvert.load(path)


def test_keras1_time_distributed_th_convolution_and_embedding(tmp_path: Path) -> None:
    """Keras 1 wrappers hold their inner layer in Keras 1 words; a ``th`` kernel inside a
    TimeDistributed gets the same layout change as outside (Keras 2's ``preprocess_weights_for_loading``)."""
    rng = np.random.default_rng(9)
    kernel = _rand(rng, 2, 1, 2, 2)  # th: (filters, channels, rows, cols)
    config = {"class_name": "Sequential", "config": [
        {"class_name": "TimeDistributed", "config": {"name": "td_1", "batch_input_shape": [None, 3, 1, 4, 4], "layer": {
            "class_name": "Convolution2D", "config": {"name": "conv_1", "nb_filter": 2, "nb_row": 2, "nb_col": 2,
                                                      "dim_ordering": "th", "border_mode": "valid", "subsample": [1, 1],
                                                      "activation": "linear", "bias": True}}}},
    ]}
    path = tmp_path / "td.h5"
    _write_keras_h5(path, config, {"td_1": [("conv_1_W:0", kernel), ("conv_1_b:0", _rand(rng, 2))]}, "1.2.2", backend=None)
    td = bnconvert.load(path)["td_1"]
    assert td.config["layer"]["class_name"] == "Conv2D" and td.config["layer"]["config"]["data_format"] == "channels_first"
    np.testing.assert_array_equal(td.weights["kernel"], np.transpose(kernel, (2, 3, 1, 0)))

    table = _rand(rng, 10, 4)
    config = {"class_name": "Sequential", "config": [
        {"class_name": "Embedding", "config": {"name": "embedding_1", "input_dim": 10, "output_dim": 4, "input_length": 5,
                                               "mask_zero": True, "init": "uniform", "dropout": 0.0,
                                               "batch_input_shape": [None, 5], "input_dtype": "int32"}},
        {"class_name": "Masking", "config": {"name": "masking_1", "mask_value": 0.5}},
    ]}
    path = tmp_path / "emb.h5"
    _write_keras_h5(path, config, {"embedding_1": [("embedding_1_W:0", table)], "masking_1": []}, "1.2.2", backend=None)
    model = bnconvert.load(path)
    emb = model["embedding_1"]
    assert {k: emb.config[k] for k in ("input_dim", "output_dim", "mask_zero")} == {"input_dim": 10, "output_dim": 4, "mask_zero": True}
    assert "init" not in emb.config and model["masking_1"].config["mask_value"] == 0.5
    np.testing.assert_array_equal(emb.weights["embeddings"], table)


def test_keras1_conv_lstm_refused_in_one_line(tmp_path: Path) -> None:
    config = {"class_name": "Sequential", "config": [{"class_name": "ConvLSTM2D", "config": {
        "name": "convlstm_1", "nb_filter": 2, "nb_row": 2, "nb_col": 2, "batch_input_shape": [None, 3, 4, 4, 1]}}]}
    path = tmp_path / "k1_convlstm.h5"
    _write_keras_h5(path, config, {"convlstm_1": []}, "1.2.2", backend=None)
    with pytest.raises(UnsupportedLayerError, match=r"layer 'convlstm_1' \(ConvLSTM2D\): Keras 1 ConvLSTM2D files are not supported"):
        bnconvert.load(path)


def test_written_cudnn_layers_are_described(tmp_path: Path) -> None:
    from bnconvert.writers import describe_format

    path = tmp_path / "cudnn.h5"
    _cudnn_file(path, np.random.default_rng(10))
    text = describe_format("keras2-h5", bnconvert.load(path))
    assert "CuDNNGRU/CuDNNLSTM written as GRU/LSTM with the functions cuDNN computes, weights kept in the cuDNN layout" in text
