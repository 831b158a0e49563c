"""The per-sample normalisations exported to ONNX, against Keras 3, tf-keras and the published
formulas of keras-contrib and TensorFlow Addons.

The Keras 3 cases are those of ``tests/catalog/test_normalization_layers.py`` (built and run once
per module); each is exported without folding at opsets 13 (reduce axes as attributes, no ONNX
LayerNormalization) and 18 (axes as inputs), checked (onnx.checker, strict shape inference) and
run by onnxruntime. The fixture files are compared with the outputs stored beside them (tf-keras',
or the published formula's, see ``fixtures/make_norm_fixtures.py``). Errors are
``max |keras - onnx| / max |keras|``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import bnconvert
from bnconvert.errors import UnsupportedLayerError
from bnconvert.onnx import to_onnx

from ..catalog.test_normalization_layers import FILES, expected, keras3_outputs
from ..conftest import fixture_file
from .helpers import check_model, rel_err, run_onnx

#: Keras 3 warns that LayerNormalization's rms_scaling is deprecated: the cases build it on purpose
pytestmark = pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`:UserWarning")
#: the issue's bar
TOLERANCE = 1e-5
OPSETS = (13, 18)


@pytest.fixture(scope="module")
def keras3_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, float]]:
    """Every Keras 3 case exported at each opset: name -> {opset: error}."""
    errors: dict[str, dict[int, float]] = {}
    for name, (path, xs, y) in keras3_outputs(tmp_path_factory.mktemp("norm_onnx")).items():
        model = bnconvert.load(path)
        errors[name] = {}
        for opset in OPSETS:
            proto = to_onnx(model, opset=opset)
            check_model(proto)
            (got,) = run_onnx(proto, xs)
            errors[name][opset] = rel_err(y, got)
    return errors


def _keras3_names() -> list[str]:
    from ..catalog.test_normalization_layers import H5_CASES, keras3_cases

    return sorted(f"{name}_{fmt}" for name in keras3_cases() for fmt in (("keras", "h5") if name in H5_CASES else ("keras",)))


@pytest.mark.parametrize("case", _keras3_names())
def test_export_equals_keras3(case: str, keras3_errors: dict[str, dict[int, float]]) -> None:
    bad = {opset: f"{err:.2e}" for opset, err in keras3_errors[case].items() if not err <= TOLERANCE}
    assert not bad, f"{case}: onnxruntime vs Keras 3, per opset: {bad}"


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("opset", OPSETS)
def test_export_equals_tf_keras_and_the_published_formulas(file: str, opset: int) -> None:
    data = expected(file)
    proto = to_onnx(bnconvert.load(fixture_file(file)), opset=opset)
    check_model(proto)
    (got,) = run_onnx(proto, [data["x"]])
    error = rel_err(data["y"], got)
    assert error <= TOLERANCE, f"{file} at opset {opset}: {error:.2e}"


def test_group_normalization_uses_no_onnx_group_normalization() -> None:
    """ONNX GroupNormalization scales per group in opset 18 and per channel from 21: the export
    builds it from primitive ops instead, and groups between 1 and the channels reshape."""
    proto = to_onnx(bnconvert.load(fixture_file("norm_tfk_group.h5")), opset=18)
    ops = {node.op_type for node in proto.graph.node}
    assert "GroupNormalization" not in ops and "InstanceNormalization" not in ops and "Reshape" in ops


def test_export_refuses_an_instance_normalization_of_unknown_origin(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "custom.h5"
    shutil.copy(fixture_file("norm_contrib_instance.h5"), path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][2]["config"].pop("axis")
        f.attrs["model_config"] = json.dumps(config).encode()
    with pytest.raises(UnsupportedLayerError, match=r"'instance_normalization' \(InstanceNormalization: .*formula is unknown"):
        to_onnx(bnconvert.load(path))
