"""Preprocessing layers and adaptive pooling exported to ONNX, against Keras 3 and tf-keras.

The models, inputs and Keras outputs are those of ``tests/catalog/test_preprocessing.py`` (built
once per session): each saved file is read back by bnconvert, exported, checked, run by
onnxruntime and compared with what Keras computed, ``max |diff| / max |keras|`` per output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.errors import UnsupportedLayerError
from bnconvert.onnx import to_onnx

from ..catalog.test_preprocessing import (  # noqa: F401
    TOLERANCE,
    keras3_cases,
    refused_files,
    rel_error,
    tfkeras_cases,
)
from .helpers import check_model, run_onnx


def _export_errors(cases: dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]], opset: int = 17) -> dict[str, list[float]]:
    results = {}
    for name, (path, xs, ys) in cases.items():
        proto = to_onnx(bnconvert.load(path), opset=opset)
        check_model(proto)
        outs = run_onnx(proto, xs)
        assert len(outs) == len(ys), name
        results[name] = [rel_error(y, o) for y, o in zip(ys, outs)]
    return results


def _bad(results: dict[str, list[float]]) -> dict[str, str]:
    return {f"{name}[{i}]": f"{e:.2e}" for name, errors in results.items() for i, e in enumerate(errors) if e > TOLERANCE}


def test_onnx_export_equals_keras3(tmp_path_factory: pytest.TempPathFactory) -> None:
    results = _export_errors(keras3_cases(tmp_path_factory))
    assert len(results) >= 6 and not _bad(results), _bad(results)


@pytest.mark.parametrize("opset", [13, 21])
def test_reductions_at_other_opsets(tmp_path_factory: pytest.TempPathFactory, opset: int) -> None:
    """The cases whose handlers reduce (AutoContrast, adaptive max, encodings, the mel dB floor):
    reduction axes moved from an attribute to an input at opset 18."""
    cases = {k: v for k, v in keras3_cases(tmp_path_factory).items()
             if k.split(".")[0] in ("identities", "adaptive", "categorical", "mel")}
    results = _export_errors(cases, opset)
    assert len(results) == 4 and not _bad(results), _bad(results)


def test_onnx_export_equals_tf_keras(tmp_path_factory: pytest.TempPathFactory) -> None:
    results = _export_errors(tfkeras_cases(tmp_path_factory))
    assert len(results) >= 4 and not _bad(results), _bad(results)


@pytest.mark.parametrize(("cls", "words"), [("StringLookup", "run it before the model"), ("RandomCrop", "CenterCrop or Resizing")])
def test_export_refuses_in_one_line_with_what_to_do(refused_files: dict[str, Path], cls: str, words: str) -> None:  # noqa: F811
    with pytest.raises(UnsupportedLayerError) as info:
        to_onnx(bnconvert.load(refused_files[cls]), opset=17)
    message = str(info.value)
    assert "\n" not in message and cls in message and words in message, message


def test_resize_graph_is_matmuls_not_a_resize_op(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every interpolation is a product with fixed matrices (or a Gather): no op whose
    coordinate convention could differ from TensorFlow's."""
    path, _, _ = keras3_cases(tmp_path_factory)["resizing.keras"]
    ops: Any = {node.op_type for node in to_onnx(bnconvert.load(path), opset=17).graph.node}
    assert "Resize" not in ops and {"MatMul", "Gather"} <= ops, ops


def test_atan2_matches_numpy_with_signed_zeros() -> None:
    """STFTSpectrogram's ``angle``: ONNX has no atan2; the composed one agrees with numpy on every
    quadrant, the axes and the four signed zeros."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from bnconvert.onnx.builder import Builder
    from bnconvert.onnx.layers.audio import atan2

    b = Builder(17)
    out = atan2(b, b.claim("y"), b.claim("x"), "angle")
    graph = helper.make_graph(b.nodes, "atan2", [helper.make_tensor_value_info(v, TensorProto.FLOAT, [None]) for v in "yx"],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None])],
                              [numpy_helper.from_array(v, k) for k, v in b.constants.items()])
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    y = np.array([0.0, -0.0, 0.0, -0.0, 1, -1, 1, -1, 0, -0.0, 2.5, -3, 0.0, -0.0], np.float32)
    x = np.array([1, 1, -1, -1, 0, 0, -1, -1, 0, -0.0, -0.1, 4, -0.0, 0.0], np.float32)
    got = session.run(None, {"y": y, "x": x})[0]
    assert np.allclose(got, np.arctan2(y, x), rtol=1e-6, atol=1e-6), (got, np.arctan2(y, x))
