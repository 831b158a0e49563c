"""Attention end to end (issue 16): a real Keras 3 transformer, and folds around attention layers.

``Niveditha79__Transformers_Model__transformer_model.keras`` (sequence corpus #8, Keras 3.14): a
pre-norm encoder block on a univariate series, MultiHeadAttention (2 heads, key_dim 64, dropout
0.1; its weights under ``query_dense/vars`` ...) with residual ``keras.ops.add`` layers. It exports
with the built-in check against Keras 3 passing, its ONNX and float64 outputs equal Keras 3's on
seeded inputs, ``inspect`` reads it and ``fold`` writes a file Keras 3 loads.

A small model with BatchNormalization around MultiHeadAttention and EinsumDense, saved by Keras 3
in both formats: the BN before the attention folds into the Dense before it, those after the
attention and the EinsumDense stay (with the reason), and the folded files (the projections'
weights rewritten into their sublayer groups) load in Keras 3 and compute what the original did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.check.reference import ReferenceRunner

from .conftest import sequence_corpus_file
from .onnx.helpers import check_model, run_onnx

#: max |ours - keras| / max |keras|, the issue's bar
TOLERANCE = 1e-5
TRANSFORMER = "Niveditha79__Transformers_Model__transformer_model"


def _error(keras_out: Any, other: Any) -> float:
    ref, out = np.asarray(keras_out, np.float64), np.asarray(other, np.float64)
    assert ref.shape == out.shape, (ref.shape, out.shape)
    return float(np.abs(ref - out).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The corpus file, its checked export, seeded inputs and Keras 3's outputs on them."""
    import keras

    path = sequence_corpus_file(TRANSFORMER)
    out = tmp_path_factory.mktemp("transformer") / "model.onnx"
    report = bnconvert.export_file(path, out)
    x = np.random.default_rng(8).normal(0.0, 1.0, (3, 50, 1)).astype(np.float32)
    expected = np.asarray(keras.saving.load_model(path, compile=False)(x, training=False))
    return {"path": path, "onnx": out, "report": report, "x": x, "keras": expected}


def test_transformer_exports_with_the_check_against_keras3_passing(transformer: dict[str, Any]) -> None:
    check = transformer["report"].check
    assert check.passed and check.reference_kind == "keras", check.summary()
    assert check.error <= TOLERANCE, f"built-in check: {check.error:.2e}"  # measured 3.4e-07


def test_transformer_onnx_and_reference_equal_keras3(transformer: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(transformer["onnx"]))
    check_model(proto)
    assert {"Einsum", "Softmax"} <= {node.op_type for node in proto.graph.node}
    (out,) = run_onnx(proto, [transformer["x"]])
    assert _error(transformer["keras"], out) <= TOLERANCE
    runner = ReferenceRunner(transformer["path"], model=bnconvert.load(transformer["path"]))
    (ref,) = runner.infer({runner.input_specs()[0].name: transformer["x"]}).values()
    assert _error(transformer["keras"], ref) <= TOLERANCE


def test_transformer_inspect_and_fold(transformer: dict[str, Any], tmp_path: Path) -> None:
    import keras
    from click.testing import CliRunner

    from bnconvert.cli import main

    result = CliRunner().invoke(main, ["inspect", str(transformer["path"])])
    assert result.exit_code == 0 and "13 layers" in result.output, result.output
    folded = tmp_path / "folded.keras"
    bnconvert.fold_file(transformer["path"], folded, check=False)
    again = keras.saving.load_model(folded, compile=False)(transformer["x"], training=False)
    assert _error(transformer["keras"], again) <= TOLERANCE


def _bn_around_attention() -> Any:
    import keras

    L = keras.layers
    x = keras.Input((5, 4), name="x")
    h = L.BatchNormalization(name="bn_before")(L.Dense(6, name="dense")(x))
    a = L.MultiHeadAttention(2, 3, name="mha")(h, h)
    a = L.BatchNormalization(name="bn_after_mha")(a)
    g = L.GroupQueryAttention(2, 4, 2, name="gqa")(a, a)
    g = L.BatchNormalization(name="bn_before_einsum")(g)
    e = L.EinsumDense("abc,cd->abd", (5, 3), bias_axes="d", name="einsum")(g)
    model = keras.Model(x, L.BatchNormalization(name="bn_after_einsum")(e))
    rng = np.random.default_rng(3)
    for v in model.weights:  # non-trivial statistics and biases: the 1/0 defaults hide every mistake
        kind, shape = v.path.split("/")[-1], tuple(v.shape)
        if kind == "moving_variance":
            v.assign(rng.uniform(0.3, 2.0, shape).astype(np.float32))
        elif kind in ("moving_mean", "beta", "bias"):
            v.assign(rng.normal(0.0, 0.5, shape).astype(np.float32))
        elif kind == "gamma":
            v.assign((rng.uniform(0.5, 1.5, shape) * np.where(rng.random(shape) < 0.3, -1, 1)).astype(np.float32))
    return model


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_fold_around_attention_writes_files_keras_loads(fmt: str, tmp_path: Path) -> None:
    import keras

    model = _bn_around_attention()
    x = np.random.default_rng(4).normal(0.0, 1.0, (2, 5, 4)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    path, folded = tmp_path / f"model.{fmt}", tmp_path / f"folded.{fmt}"
    model.save(path)
    report = bnconvert.fold_file(path, folded, check=False)
    outcomes = {bn.path: bn for bn in report.batch_norms}
    assert outcomes["bn_before"].target == "dense", outcomes["bn_before"]
    assert "'mha'" in outcomes["bn_after_mha"].reason and outcomes["bn_after_mha"].target is None
    assert "'gqa'" in outcomes["bn_before_einsum"].reason and "equation names" in outcomes["bn_before_einsum"].reason
    assert "'einsum'" in outcomes["bn_after_einsum"].reason and outcomes["bn_after_einsum"].target is None
    loaded = keras.saving.load_model(folded, compile=False)
    assert "bn_before" not in {layer.name for layer in loaded.layers}
    assert _error(expected, loaded(x, training=False)) <= TOLERANCE
