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
from bnconvert.check.reference import ReferenceRunner
from bnconvert.fold import fold_model
from bnconvert.pipeline import export_file
from bnconvert.readers import load
from bnconvert.writers import write_model

from ..conftest import fixture_file


def _altered(path: Path):
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


def test_an_error_in_the_reference_ahead_reaches_the_caller_and_nothing_is_written(tmp_path: Path, monkeypatch) -> None:
    def broken(self, feeds):
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


def test_large_models_are_checked_one_side_after_the_other(monkeypatch) -> None:
    verify_mod = importlib.import_module("bnconvert.check.verify")  # the package exports a function of that name

    model = load(fixture_file("k1_tf_seq.h5"))
    monkeypatch.setattr(verify_mod, "AHEAD_MAX_BYTES", model.weight_bytes() - 1)
    assert verify_mod.start_reference(fixture_file("k1_tf_seq.h5"), model) is None
    monkeypatch.setattr(verify_mod, "AHEAD_MAX_BYTES", model.weight_bytes())
    ahead = verify_mod.start_reference(fixture_file("k1_tf_seq.h5"), model)
    assert ahead is not None and ahead.result().outputs
