"""A real tf.keras transformer with TFOpLambda residual adds, end to end (issue 16).

``tmakian99__GeoLife-Trajectories__model_weights_transformer_model.h5`` (sequence corpus, Keras
2.11): four encoder blocks of MultiHeadAttention, LayerNormalization, Conv1D and sixteen
``tf.__operators__.add`` TFOpLambda layers whose second operand is a tensor passed as ``y=``.
``bnconvert export`` writes it (through the command line, without its own check), and the ONNX
outputs and the float64 reference's are compared with tf-keras', which loads the original file
and runs it on seeded inputs in the subprocess of ``tests/catalog/test_tf_ops.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bnconvert
from bnconvert.check.reference import ReferenceRunner

from .catalog.test_tf_ops import CORPUS_FILES, case_data, rel_error
from .conftest import sequence_corpus_file
from .onnx.helpers import check_model, run_onnx

#: max |ours - tf-keras| / max |tf-keras|, the issue's bar
TOLERANCE = 1e-5
GEOLIFE = CORPUS_FILES[0]


@pytest.fixture(scope="module")
def geolife(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The corpus file and its ONNX export, written by ``bnconvert export --no-check``."""
    from click.testing import CliRunner

    from bnconvert.cli import main

    path = sequence_corpus_file(GEOLIFE.removesuffix(".h5"))
    out = tmp_path_factory.mktemp("geolife") / "model.onnx"
    result = CliRunner().invoke(main, ["export", str(path), "-o", str(out), "--no-check"])
    assert result.exit_code == 0, result.output + str(result.exception)
    return path, out


def test_geolife_reads_its_tf_operations_as_tensor_additions() -> None:
    model = bnconvert.load(sequence_corpus_file(GEOLIFE.removesuffix(".h5")))
    adds = [layer for layer in model.layers if layer.source_class == "TFOpLambda"]
    assert len(adds) == 16 and {layer.class_name for layer in adds} == {"tf.__operators__.add"}
    assert all(len(call) == 2 for layer in adds for call in layer.calls)  # x and y=, both tensors


def test_geolife_export_equals_tf_keras(geolife: tuple[Path, Path]) -> None:
    import onnx

    _, onnx_path = geolife
    _, xs, ys, _ = case_data(GEOLIFE)
    proto = onnx.load(str(onnx_path))
    check_model(proto)
    (out,) = run_onnx(proto, xs)
    error = rel_error(ys[0], out)
    assert error <= TOLERANCE, f"ONNX vs tf-keras: {error:.2e}"


def test_geolife_float64_reference_equals_tf_keras() -> None:
    path, xs, ys, _ = case_data(GEOLIFE)
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    (out,) = runner.infer({s.name: x for s, x in zip(runner.input_specs(), xs)}).values()
    error = rel_error(ys[0], np.asarray(out))
    assert error <= TOLERANCE, f"float64 reference vs tf-keras: {error:.2e}"
