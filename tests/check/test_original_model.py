"""The built-in checks take the original model already read (``original_model``) instead of
reading the file a second time: the TensorFlow-free reference is built from that model.

A Keras 1 file makes the reference bnconvert's unfolded export even with TensorFlow installed
(no current Keras loads it), so these tests need no subprocess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnconvert.check import check_export, check_written
from bnconvert.check.inputs import random_inputs
from bnconvert.check.runners import ExportRunner
from bnconvert.fold import fold_model
from bnconvert.onnx import export_file
from bnconvert.readers import load
from bnconvert.writers import write_model

from ..conftest import fixture_file


def _altered(path: Path):  # noqa: ANN202
    """The model of ``path`` with one kernel doubled: what the check must see if it uses it."""
    model = load(path)
    layer = next(layer for layer in model.layers if "kernel" in layer.weights)
    layer.weights = {**layer.weights, "kernel": np.asarray(layer.weights["kernel"]) * 2}
    return model


def test_check_export_uses_the_model_it_is_given(tmp_path: Path) -> None:
    src = fixture_file("k1_tf_seq.h5")
    out = tmp_path / "m.onnx"
    export_file(src, out, check=False)
    same = check_export(src, out, original_model=load(src))
    assert same and same.reference_kind == "bnconvert-export"
    assert check_export(src, out)  # reading the file again agrees
    altered = check_export(src, out, original_model=_altered(src))
    assert not altered and altered.error > 1e-3


def test_check_written_uses_the_model_it_is_given(tmp_path: Path) -> None:
    src = fixture_file("k1_tf_seq.h5")
    original = load(src)
    folded, _ = fold_model(original)
    out = tmp_path / "folded.h5"
    write_model(folded, out, original=original)
    result = check_written(src, out, original_model=original)
    assert result.reference_kind == "bnconvert-export" and result
    assert not check_written(src, out, original_model=_altered(src))


def test_a_released_export_runner_still_runs_without_the_arrays() -> None:
    # what the built-in checks do once onnxruntime holds the weights: drop bnconvert's copy
    src = fixture_file("k1_tf_seq.h5")
    runner = ExportRunner(src, model=load(src))
    feeds = random_inputs(runner.input_specs(), batch=2)
    before = runner.infer(feeds)
    names = runner.layer_names()[:2]
    assert set(runner.layer_outputs(feeds, names)) == set(names)
    runner.release_weights()
    assert runner.model is None and not runner.onnx._initializers
    after = runner.infer(feeds)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)
    assert runner.layer_outputs(feeds, names) == {}  # intermediates would need the arrays again
