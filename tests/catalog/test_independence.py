"""The TensorFlow-free check is independent of the ONNX export.

With TensorFlow unimportable, the reference of ``export`` is the float64 reference runner (the
catalog's semantics), not bnconvert's own export: an ONNX handler broken on purpose must make the
check fail and name the output that differs, and ``--no-fold`` no longer compares a graph with
itself (the error is float32 rounding: small, never exactly 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..check.subproc import run_python
from ..conftest import fixture_file

#: export from the command line after replacing one ONNX handler by a broken one (argv[1] names it)
BROKEN_EXPORT = r"""
from bnconvert.onnx import registry
table = registry.handlers()
broken = sys.argv[1]
real = table[broken]

def drop_bias(b, call):
    weights = call.layer.weights
    call.layer.weights = {k: v for k, v in weights.items() if k != "bias"}
    try:
        return real(b, call)
    finally:
        call.layer.weights = weights

def swap_axes(b, call):  # flatten as if the tensor were channels_first: the pixel and channel axes swapped
    config = call.layer.config
    call.layer.config = {**config, "data_format": "channels_first"}
    try:
        return real(b, call)
    finally:
        call.layer.config = config

table[broken] = drop_bias if broken == "Dense" else swap_axes
from bnconvert.cli import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize("broken", ["Dense", "Flatten"], ids=["dense-drops-its-bias", "flatten-swaps-axes"])
def test_a_broken_onnx_handler_fails_the_tensorflow_free_check(broken: str, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    proc = run_python(BROKEN_EXPORT, broken, "export", str(fixture_file("k3_chain.h5")), "-o", str(out), "--no-fold",
                      no_tf=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "export check FAILED" in text and "own float64 computation" in text
    assert "output 'dense_1'" in text and "FAILED" in text  # the check names the output that differs
    assert not out.exists()


def test_no_fold_export_is_checked_against_the_float64_reference(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    proc = run_python("from bnconvert.cli import main\nmain(sys.argv[1:])\n", "export", str(fixture_file("k3_chain.h5")),
                      "-o", str(out), "--no-fold", "--json", no_tf=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check = json.loads(proc.stdout)["check"]
    assert check["reference"]["kind"] == "reference" and "float64" in check["reference"]["runner"]
    assert check["candidate"]["kind"] == "onnxruntime"
    assert 0.0 < check["error"] < 1e-5, check["error"]  # float32 rounding, not a graph compared with itself


def test_verify_float64_locates_a_broken_layer(tmp_path: Path) -> None:
    """``verify --reference float64 --locate`` names the first layer the broken handler changed."""
    bad = tmp_path / "bad.onnx"
    made = run_python(BROKEN_EXPORT, "Dense", "export", str(fixture_file("k3_chain.h5")), "-o", str(bad), "--no-fold",
                      "--no-check", no_tf=True)
    assert made.returncode == 0, made.stderr
    proc = run_python("from bnconvert.cli import main\nmain(sys.argv[1:])\n", "verify", str(fixture_file("k3_chain.h5")),
                      str(bad), "--reference", "float64", "--locate", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["a"]["kind"] == "reference" and report["locate"]["first"] == "dense"


def test_verify_reference_keras_without_tensorflow_is_a_usage_error(tmp_path: Path) -> None:
    """``--reference keras`` never falls back silently: without TensorFlow it is exit 2, saying why."""
    out = tmp_path / "m.onnx"
    made = run_python("from bnconvert.cli import main\nmain(sys.argv[1:])\n", "export", str(fixture_file("k3_chain.h5")),
                      "-o", str(out), "--no-check", no_tf=True)
    assert made.returncode == 0, made.stderr
    proc = run_python("from bnconvert.cli import main\nmain(sys.argv[1:])\n", "verify", str(fixture_file("k3_chain.h5")),
                      str(out), "--reference", "keras", no_tf=True)
    assert proc.returncode == 2 and "--reference keras" in proc.stderr and "not installed" in proc.stderr
