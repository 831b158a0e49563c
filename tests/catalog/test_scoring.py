"""Attention, AdditiveAttention, Dot, ReversibleEmbedding and RandomFourierFeatures: the float64
catalog against Keras 3 and tf-keras.

A few functional models per Keras cover every option: scores ``dot`` and ``concat``, ``use_scale``,
causal calls (``use_causal_mask``; tf-keras' older ``causal`` config), ``return_attention_scores``,
a separate key, Keras masks from ``Embedding(mask_zero=True)`` on query and value (value mask on
the scores, query mask on the output, which carries it on); Dot with int, negative and pair
``axes`` on ranks 2-4 and ``normalize``; ReversibleEmbedding shared between a forward and a
``reverse=True`` call, tied and untied, with a ``logit_soft_cap`` and ``mask_zero``;
RandomFourierFeatures (tf-keras only). Keras 3 saves each model as ``.keras`` and as its legacy
``.h5`` and runs here; tf-keras runs in one subprocess
(:mod:`.tfkeras_cases`); the ONNX tests (``tests/onnx/test_scoring.py``) reuse the files.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.catalog import catalog
from bnconvert.catalog.scoring import batch_dot
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError
from bnconvert.model import Layer
from bnconvert.onnx import to_onnx

from ..onnx.helpers import chain_model
from .tfkeras_cases import scoring_files, session_folder

#: max |keras - reference| / max |keras| (float32 rounding: a few 1e-7)
TOLERANCE = 1e-5
CLASSES = {"Attention", "AdditiveAttention", "Dot", "ReversibleEmbedding", "RandomFourierFeatures"}

#: name -> (path, inputs, Keras' outputs)
Cases = dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]


def _attention(keras: Any) -> Any:
    L = keras.layers
    q, v, k = keras.Input((4, 5), name="q"), keras.Input((6, 5), name="v"), keras.Input((6, 5), name="k")
    s = keras.Input((6, 3), name="s")  # a self-attention input, Tq == Tv for the causal calls
    concat, scores = L.Attention(use_scale=True, score_mode="concat", name="concat")([q, v, k], return_attention_scores=True)
    outs = [
        L.Attention(dropout=0.4, name="dot")([q, v]),  # dropout: the identity at inference
        L.Attention(use_scale=True, name="dot_scaled_key")([q, v, k]),
        concat, scores,
        L.Attention(score_mode="concat", name="concat_causal")([s, s], use_causal_mask=True),
        L.Attention(use_scale=True, name="dot_causal")([s, s, s], use_causal_mask=True),
        L.AdditiveAttention(name="additive")([q, v, k]),
        L.AdditiveAttention(use_scale=False, name="additive_plain_causal")([s, s], use_causal_mask=True),
    ]
    return keras.Model([q, v, k, s], outs, name="attention")


def _masked(keras: Any) -> Any:
    """Query and value masks from Embedding(mask_zero); the output's mask reaches an LSTM."""
    L = keras.layers
    qi, vi = keras.Input((5,), dtype="int32", name="q_ids"), keras.Input((6,), dtype="int32", name="v_ids")
    eq, ev = L.Embedding(9, 4, mask_zero=True, name="eq")(qi), L.Embedding(9, 4, mask_zero=True, name="ev")(vi)
    out, scores = L.Attention(use_scale=True, name="masked")([eq, ev], return_attention_scores=True)
    causal = L.AdditiveAttention(name="masked_causal")([eq, eq], use_causal_mask=True)
    return keras.Model([qi, vi], [out, scores, causal, L.LSTM(3, name="after")(out)], name="masked")


def _dot(keras: Any) -> Any:
    L = keras.layers
    a, b = keras.Input((5,), name="a"), keras.Input((5,), name="b")
    c, d = keras.Input((3, 5), name="c"), keras.Input((4, 3), name="d")
    e, f = keras.Input((2, 3, 4), name="e"), keras.Input((4, 5), name="f")
    g = keras.Input((4, 5), name="g")
    outs = [L.Dot(axes=-1, name="vectors")([a, b]), L.Dot(axes=(1, 2), name="pair")([c, d]),
            L.Dot(axes=2, normalize=True, name="cosine")([c, g]), L.Dot(axes=(1, 2), name="vector_matrix")([a, f]),
            L.Dot(axes=(-1, 1), name="rank4")([e, f]), L.Dot(axes=(1, 1), normalize=True, name="cosine_vectors")([a, b])]
    return keras.Model([a, b, c, d, e, f, g], outs, name="dot")


def _reversible(keras: Any) -> Any:
    L = keras.layers
    ids = keras.Input((5,), dtype="int32", name="ids")
    tied = L.ReversibleEmbedding(11, 4, mask_zero=True, logit_soft_cap=3.0, name="tied")
    untied = L.ReversibleEmbedding(11, 4, tie_weights=False, name="untied")
    h = tied(ids)
    return keras.Model(ids, [tied(L.Dense(4, name="mix")(h), reverse=True), untied(untied(ids), reverse=True),
                             L.GRU(3, name="masked_gru")(h)], name="reversible")


def _inputs(model: Any, rng: np.random.Generator) -> list[np.ndarray]:
    xs = []
    for t in model.inputs:
        shape = (3, *t.shape[1:])
        if "int" in str(t.dtype):
            ids = rng.integers(1, 9, shape)
            for row, keep in zip(ids, (shape[1], shape[1] - 2, 2)):  # padded tails of several lengths
                row[keep:] = 0
            xs.append(ids.astype(np.int32))
        else:
            xs.append(rng.normal(0.0, 1.0, shape).astype(np.float32))
    return xs


@functools.cache
def keras3_cases() -> Cases:
    """Every Keras 3 model, saved once per session, with its inputs and Keras' outputs."""
    import keras

    from ..onnx.helpers import keras_predict

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(7)
    folder = session_folder("bnc_scoring_k3_")
    cases = {}
    for name, build in (("attention", _attention), ("masked", _masked), ("dot", _dot), ("reversible", _reversible)):
        model = build(keras)
        for v in model.weights:
            if v.path.endswith(("scale", "concat_score_weight", "bias")):
                v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype(np.float32))
        xs = _inputs(model, rng)
        expected = keras_predict(model, xs)
        for fmt in ("keras", "h5"):  # the archive, and Keras 3's legacy HDF5
            path = folder / f"{name}.{fmt}"
            model.save(path)
            cases[name if fmt == "keras" else f"{name}_h5"] = (path, xs, expected)
    return cases


def rel_err(want: np.ndarray, got: np.ndarray) -> float:
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    assert want.shape == got.shape, (want.shape, got.shape)
    scale = np.abs(want).max()
    return float(np.abs(want - got).max() / (scale if scale > 0 else 1.0))


def reference_errors(cases: Cases) -> dict[str, tuple[float, set[str]]]:
    """Per case: the largest error over its outputs, and the classes the reference ran."""
    out = {}
    for name, (path, xs, expected) in cases.items():
        runner = ReferenceRunner(path, model=bnconvert.load(path))
        got = list(runner.infer({s.name: x for s, x in zip(runner.input_specs(), xs)}).values())
        assert len(got) == len(expected), name
        classes = {layer.class_name for _, layer, _ in runner.model.walk()}
        out[name] = (max(rel_err(w, g) for w, g in zip(expected, got)), classes)
    return out


@pytest.fixture(scope="module")
def keras3_errors() -> dict[str, tuple[float, set[str]]]:
    return reference_errors(keras3_cases())


@pytest.fixture(scope="module")
def tf_keras_errors() -> dict[str, tuple[float, set[str]]]:
    return reference_errors(scoring_files())


@pytest.mark.parametrize("case", [f"{name}{fmt}" for name in ("attention", "masked", "dot", "reversible") for fmt in ("", "_h5")])
def test_float64_scoring_equals_keras3(case: str, keras3_errors: dict[str, tuple[float, set[str]]]) -> None:
    error, classes = keras3_errors[case]
    assert error <= TOLERANCE, f"{case} ({', '.join(sorted(classes & CLASSES))}): {error:.2e}"


def test_float64_scoring_equals_tf_keras(tf_keras_errors: dict[str, tuple[float, set[str]]]) -> None:
    bad = {name: f"{err:.2e}" for name, (err, _) in tf_keras_errors.items() if err > TOLERANCE}
    assert not bad, f"max |tf-keras - reference| / max |tf-keras|: {bad}"


def test_every_scoring_class_is_compared(keras3_errors: dict[str, tuple[float, set[str]]],
                                         tf_keras_errors: dict[str, tuple[float, set[str]]]) -> None:
    seen = set().union(*(c for _, c in keras3_errors.values()), *(c for _, c in tf_keras_errors.values()))
    assert seen >= CLASSES, sorted(CLASSES - seen)
    assert all(catalog()[name].family == "scoring" for name in CLASSES)


def test_batch_dot_is_a_contraction() -> None:
    """The closed formula: per batch entry, tensordot on the two axes (Keras' batch_dot)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 5, 4))
    want = np.stack([np.tensordot(x[i], y[i], axes=(2, 0)) for i in range(2)])
    np.testing.assert_allclose(batch_dot(x, y, (3, 1)), want, rtol=1e-12)
    assert batch_dot(x[:, 0, 0], y[:, :, 0], (1, 1)).shape == (2, 1)


def _layer(class_name: str, config: dict[str, Any], weights: dict[str, np.ndarray] | None = None) -> Layer:
    return Layer(name="s", class_name=class_name, config={"name": "s", **config}, weights=weights or {})


@pytest.mark.parametrize(("layer", "words"), [
    (_layer("ReversibleEmbedding", {"input_dim": 4, "output_dim": 4, "quantization_mode": "int8"},
            {"embeddings": np.eye(4, dtype=np.float32)}), "quantized ('int8')"),
    (_layer("ReversibleEmbedding", {"input_dim": 4, "output_dim": 4, "reverse_dtype": "bfloat16"},
            {"embeddings": np.eye(4, dtype=np.float32)}), "reverse_dtype 'bfloat16'"),
])
def test_refused_with_its_reason(layer: Layer, words: str) -> None:
    model = chain_model([layer], [None, 4])
    with pytest.raises(UnsupportedLayerError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ReferenceRunner(Path("hand_built.h5"), model=model).infer({"input": np.ones((2, 4), np.float32)})
    with pytest.raises(UnsupportedLayerError, match=words.replace("(", r"\(").replace(")", r"\)")):
        to_onnx(model)
