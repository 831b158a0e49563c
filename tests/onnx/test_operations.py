"""Keras 3 operation layers (``keras.ops.*``) exported to ONNX, run by onnxruntime, against Keras 3.

The models are those of ``tests/catalog/test_operations.py`` (built, saved and run by Keras 3
once per session); a Keras 3 file with a BatchNormalization among operation layers also goes
through fold (the folded file loads in Keras 3 and predicts the same), inspect, export with the
built-in check, and verify.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import bnconvert
from bnconvert.cli import main
from bnconvert.errors import UnsupportedLayerError
from bnconvert.model import TensorArg
from bnconvert.onnx.export import to_onnx
from bnconvert.readers.graph import build_model

from ..catalog.test_operations import (
    CASES,
    _error,
    _functional,
    _op,
    _tensor,
    loaded,
    operation_models,  # noqa: F401 - the shared session fixture
)
from .helpers import check_model, rel_err, run_onnx

#: float32 arithmetic on both sides, relative to the largest output
TOLERANCE = 1e-5


#: every case at the default opset; reductions where ONNX moved their axes to an input (18), the
#: Squeeze/Unsqueeze/Split forms at the lowest opset and the newest
OPSET_CASES = [(case, 17) for case in CASES] + [("reductions", 13), ("reductions", 18), ("shapes", 13), ("typed", 21)]


@pytest.mark.parametrize(("case", "opset"), OPSET_CASES)
def test_onnx_export_equals_keras3(case: str, opset: int, operation_models: dict[str, Any]) -> None:  # noqa: F811
    path, xs, expected = operation_models[case]
    model = loaded(path)
    proto = to_onnx(model, opset=opset)
    check_model(proto)
    outs = run_onnx(proto, xs)
    errors = {str(ref): _error(k, o) for ref, o, k in zip(model.outputs, outs, expected)}
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= TOLERANCE, f"{case} opset {opset}: {worst} off by {errors[worst]:.2e}"


def test_keras3_file_with_operations_folds_inspects_exports_and_verifies(operation_models: dict[str, Any],  # noqa: F811
                                                                          tmp_path: Path) -> None:
    import keras

    path, xs, expected = operation_models["with_bn"]
    folded = tmp_path / "folded.keras"
    report = bnconvert.fold_file(path, folded)
    assert report.totals["folded"] == 1 and report.check is not None
    again = keras.saving.load_model(folded, compile=False)
    ys = again.predict(xs[0], verbose=0)
    assert max(rel_err(k, y) for k, y in zip(expected, ys)) <= TOLERANCE
    assert not any(type(layer).__name__ == "BatchNormalization" for layer in again.layers)

    shown = CliRunner().invoke(main, ["inspect", "--json", str(path)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["format"] == "keras3-zip" and '"foldable": 1' in shown.output

    onnx_file = tmp_path / "ops.onnx"
    exported = bnconvert.export_file(path, onnx_file)
    assert exported.check is not None and exported.check.passed and json.dumps(exported.to_dict())
    assert max(rel_err(k, o) for k, o in zip(expected, run_onnx(_load(onnx_file), xs))) <= TOLERANCE
    result = bnconvert.verify(path, onnx_file)
    assert result


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def test_an_operation_without_conversion_is_named_the_users_way() -> None:
    model = build_model(_functional(_op("Cumprod", "cumprod_1", [_tensor("x")], axis=1),
                                    _op("Add", "add", [_tensor("cumprod_1"), 1.0]), outputs=[["add", 0, 0]]))
    with pytest.raises(UnsupportedLayerError, match=r"'cumprod_1' \(keras\.ops\.cumprod: bnconvert has no ONNX conversion"):
        to_onnx(model)


def test_operation_arguments_reach_the_handler() -> None:
    """``2.0 - x``: the constant comes first, the handler keeps the order (``x - 2`` would pass a
    symmetric check)."""
    model = build_model(_functional(_op("Subtract", "subtract", [2.0, _tensor("x")]), outputs=[["subtract", 0, 0]]))
    assert model["subtract"].op_args(0) == ([2.0, TensorArg(0)], {})
    x = np.arange(8.0, dtype=np.float32).reshape(2, 4)
    (out,) = run_onnx(to_onnx(model), [x])
    np.testing.assert_allclose(out, 2.0 - x)
