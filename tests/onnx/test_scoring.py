"""Attention, AdditiveAttention, Dot, ReversibleEmbedding and RandomFourierFeatures exported to
ONNX, against Keras 3 and tf-keras.

The files, inputs and Keras outputs are those of ``tests/catalog/test_scoring.py`` (every option
of each class, Keras masks included); each is exported at opsets 13 and 21, checked (full
checker, strict shape inference) and run by onnxruntime. A dynamic sequence length runs too: the
causal mask is built from the scores' runtime shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bnconvert
from bnconvert.onnx import to_onnx

from ..catalog.test_scoring import TOLERANCE, keras3_cases, rel_err
from ..catalog.tfkeras_cases import scoring_files
from .helpers import check_model, run_onnx


def _errors(cases: dict, opset: int) -> dict[str, float]:
    out = {}
    for name, (path, xs, expected) in cases.items():
        proto = to_onnx(bnconvert.load(path), opset=opset)
        check_model(proto)
        got = run_onnx(proto, xs)
        assert len(got) == len(expected), name
        out[name] = max(rel_err(w, g) for w, g in zip(expected, got))
    return out


@pytest.mark.parametrize("opset", (13, 21))
def test_onnx_scoring_equals_keras3(opset: int) -> None:
    bad = {n: f"{e:.2e}" for n, e in _errors(keras3_cases(), opset).items() if e > TOLERANCE}
    assert not bad, f"opset {opset}: max |keras 3 - onnx| / max |keras 3|: {bad}"


@pytest.mark.parametrize("opset", (13, 21))
def test_onnx_scoring_equals_tf_keras(opset: int) -> None:
    bad = {n: f"{e:.2e}" for n, e in _errors(scoring_files(), opset).items() if e > TOLERANCE}
    assert not bad, f"opset {opset}: max |tf-keras - onnx| / max |tf-keras|: {bad}"


def test_causal_attention_at_another_sequence_length(tmp_path: Path) -> None:
    """A model declared with a dynamic length: the exported causal mask follows the runtime length
    (7 steps here), as Keras' does; compared with the float64 reference, itself checked against Keras."""
    import keras

    from bnconvert.check.reference import ReferenceRunner

    s = keras.Input((None, 3), name="s")
    model = keras.Model(s, keras.layers.Attention(use_scale=True, name="causal")([s, s], use_causal_mask=True))
    x = np.random.default_rng(2).normal(size=(2, 7, 3)).astype(np.float32)
    expected = np.asarray(model(x))
    path = tmp_path / "dynamic.keras"
    model.save(path)
    proto = to_onnx(bnconvert.load(path), opset=17)
    check_model(proto)
    (got,) = run_onnx(proto, [x])
    assert rel_err(expected, got) <= TOLERANCE
    (ref,) = ReferenceRunner(path).infer({"s": x}).values()
    assert rel_err(ref, got) <= TOLERANCE
