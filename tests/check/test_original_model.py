"""The built-in checks take the original model already read (``original_model``) instead of
reading the file a second time: the TensorFlow-free reference is built from that model.

A Keras 1 file makes the reference bnconvert's float64 reference even with TensorFlow installed
(no current Keras loads it), so these tests need no subprocess.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from bnconvert.check import check_export, check_written
from bnconvert.check.inputs import random_inputs
from bnconvert.check.reference import ReferenceRunner
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
    assert same and same.reference_kind == "reference"
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
    assert result.reference_kind == "reference" and result
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


# -- the reference started ahead (export's TensorFlow-free check) ------------------------------
def test_export_runs_the_tensorflow_free_reference_ahead_once(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    verify_mod = importlib.import_module("bnconvert.check.verify")  # the package exports a function of that name

    started, runs = [], []
    real_start, real_infer = verify_mod.start_reference, ReferenceRunner.infer

    def start(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        ahead = real_start(*args, **kwargs)
        started.append(ahead)
        return ahead

    def infer(self, feeds):  # noqa: ANN001, ANN202
        runs.append(sorted(feeds))
        return real_infer(self, feeds)

    monkeypatch.setattr(verify_mod, "start_reference", start)
    monkeypatch.setattr(ReferenceRunner, "infer", infer)
    report = export_file(fixture_file("k1_tf_seq.h5"), tmp_path / "m.onnx")  # Keras 1: no Keras runs it
    assert started and started[0] is not None
    assert report.check["reference"]["kind"] == "reference" and "passed" in report.check_summary
    assert len(runs) == 1  # the outputs computed ahead were the ones compared
    assert not started[0]._thread.is_alive()


def test_an_error_in_the_reference_ahead_reaches_the_caller_and_nothing_is_written(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    def broken(self, feeds):  # noqa: ANN001, ANN202
        raise RuntimeError("reference exploded")

    monkeypatch.setattr(ReferenceRunner, "infer", broken)
    out = tmp_path / "m.onnx"
    try:
        export_file(fixture_file("k1_tf_seq.h5"), out)
    except RuntimeError as exc:
        assert "reference exploded" in str(exc)
    else:
        raise AssertionError("the reference's error was lost")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_large_models_are_checked_one_side_after_the_other(monkeypatch) -> None:  # noqa: ANN001
    verify_mod = importlib.import_module("bnconvert.check.verify")  # the package exports a function of that name

    model = load(fixture_file("k1_tf_seq.h5"))
    monkeypatch.setattr(verify_mod, "AHEAD_MAX_BYTES", model.weight_bytes() - 1)
    assert verify_mod.start_reference(fixture_file("k1_tf_seq.h5"), model) is None
    monkeypatch.setattr(verify_mod, "AHEAD_MAX_BYTES", model.weight_bytes())
    ahead = verify_mod.start_reference(fixture_file("k1_tf_seq.h5"), model)
    assert ahead is not None and ahead.result().outputs
