"""MultiHeadAttention, GroupQueryAttention and EinsumDense exported to ONNX, run by onnxruntime,
against Keras 3 and tf_keras (the files and Keras' outputs of ``tests/catalog/test_attention.py``,
built once per session) and, for batch sizes and sequence lengths Keras was not run at, against
the float64 reference that test holds to Keras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError
from bnconvert.onnx import to_onnx

from ..catalog.test_attention import (
    TOLERANCE,
    all_cases,
    attention_cases,
    case_data,
    rel_error,
)
from .helpers import check_model, run_onnx


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return attention_cases(tmp_path_factory)


def test_export_equals_keras(cases: dict[str, dict[str, Any]]) -> None:
    """Every case and file at opset 17, the Keras 3 files at opsets 13 and 21 too: onnxruntime
    within 1e-5 of Keras."""
    errors, ops = {}, set()
    for gen, name, fmt, path in all_cases(cases):
        xs, expected = case_data(cases[gen][name], name)
        model = bnconvert.load(path)
        for opset in (13, 17, 21) if (gen, fmt) == ("k3", "keras") else (17,):
            proto = to_onnx(model, opset=opset)
            if opset == 17:
                check_model(proto)
            outs = run_onnx(proto, xs)
            assert len(outs) == len(expected), (gen, name)
            errors[f"{gen}/{name}.{fmt}@{opset}"] = max(rel_error(k, o) for k, o in zip(expected, outs))
            ops |= {node.op_type for node in proto.graph.node}
    bad = {case: f"{e:.2e}" for case, e in errors.items() if e > TOLERANCE}
    assert not bad, f"onnxruntime vs Keras (max |diff| / max): {bad}"
    assert len(errors) >= 20 and {"Einsum", "Softmax", "Where", "Range"} <= ops, sorted(ops)


def test_dynamic_batch_and_sequence_length(cases: dict[str, dict[str, Any]]) -> None:
    """A model with a free sequence length (causal self-attention): the export keeps batch and
    length dynamic and matches the float64 reference at sizes Keras was not run at."""
    for gen in ("k3", "tfk"):
        info = cases[gen]["mha_dynamic"]
        path = Path(info["folder"]) / f"mha_dynamic.{info['formats'][0]}"
        model = bnconvert.load(path)
        proto = to_onnx(model)
        dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        assert isinstance(dims[0], str) and isinstance(dims[1], str) and dims[2] == 6, dims
        runner = ReferenceRunner(path, model=model)
        name = runner.input_specs()[0].name
        for batch, steps in ((3, 7), (1, 2)):
            x = np.random.default_rng(steps).normal(0.0, 1.0, (batch, steps, 6)).astype(np.float32)
            ref = next(iter(runner.infer({name: x}).values()))
            assert rel_error(ref, run_onnx(proto, [x])[0]) <= TOLERANCE


def test_attention_axes_keras_refuses_are_refused(cases: dict[str, dict[str, Any]]) -> None:
    """A config Keras would not build (the same attention axis twice) is refused with the axes
    named, not exported with a guess."""
    model = bnconvert.load(Path(cases["k3"]["mha_masks"]["folder"]) / "mha_masks.keras")
    model["mha_keras_mask"].config["attention_axes"] = [1, 1]
    with pytest.raises(UnsupportedLayerError, match=r"mha_keras_mask.*'attention_axes' \[1, 1\] are not distinct"):
        to_onnx(model)


def test_quantized_einsum_dense_is_refused(cases: dict[str, dict[str, Any]]) -> None:
    model = bnconvert.load(Path(cases["k3"]["einsum"]["folder"]) / "quantized.keras")
    with pytest.raises(UnsupportedLayerError, match=r"quantized \(int8\)"):
        to_onnx(model)
