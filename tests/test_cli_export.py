"""``bnconvert export``: what it writes, what it prints, and its exit codes (0, 1, 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from bnconvert.cli import main

from .conftest import corpus_file, fixture_file


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["export", *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


def test_export_folds_checks_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "chain.onnx"
    code, stdout, stderr = run(fixture_file("k3_chain.keras"), "-o", out)
    assert code == 0, stderr
    assert stderr == ""
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert "BatchNormalization" not in ops(out)
    assert "5 of 5 BatchNormalization folded" in stdout
    assert "check passed" in stdout
    assert stdout.startswith(f"{out}: opset 17, inputs and outputs shaped as in Keras, ")


def test_json_report(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    code, stdout, _ = run(fixture_file("k3_conv1d.keras"), "-o", out, "--json", "--no-check", "--opset", "13")
    assert code == 0
    report = json.loads(stdout)
    assert report["output"] == str(out) and report["opset"] == 13
    assert report["check"]["checked"] is False and report["check"]["passed"] is None
    assert report["check"]["status"] == "not checked" and report["check"]["reason"] == "--no-check"
    assert report["nodes"] == len(ops(out)) == sum(report["op_types"].values())
    assert onnx.load(out).opset_import[0].version == 13


def test_no_fold_keeps_batch_normalization(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    code, _, stderr = run(fixture_file("k3_conv1d.keras"), "-o", out, "--no-fold")
    assert code == 0, stderr
    assert "BatchNormalization" in ops(out)


def test_nchw_option(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    code, _, _ = run(fixture_file("k3_educba.keras"), "-o", out, "--nchw", "--no-check")
    assert code == 0
    dims = [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] in (1, 3) and dims[2] == dims[3] > 3  # channels first, then the square image
    assert "Transpose" in ops(out)  # only before the Flatten, which must see Keras' element order


def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    code, _, stderr = run(fixture_file("k3_conv1d.keras"), "-o", out, "--no-check")
    assert code == 2
    assert "already exists (use --force" in stderr and len(stderr.strip().splitlines()) == 1
    assert out.read_text() == "keep me"
    code, _, _ = run(fixture_file("k3_conv1d.keras"), "-o", out, "--no-check", "--force")
    assert code == 0 and ops(out)


def test_keras1_weights_only_file_with_config(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    alone = tmp_path / "k1_weights.h5"  # no k1_weights.json beside it (tests/test_cli_conventions.py: with one)
    alone.write_bytes(fixture_file("k1_weights.h5").read_bytes())
    code, _, stderr = run(alone, "-o", out)
    assert code == 2 and "--config" in stderr and not out.exists()
    code, _, stderr = run(alone, "-o", out, "--config", fixture_file("k1_weights.json"))
    assert code == 0, stderr
    expected = np.load(fixture_file("k1_weights.expected.npz"))
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = session.run(None, {session.get_inputs()[0].name: expected["x"]})[0]
    assert np.abs(y - expected["y"]).max() / np.abs(expected["y"]).max() < 1e-4


@pytest.mark.corpus
@pytest.mark.parametrize("prefix, lambdas", [
    ("ken107__", ["lambda_1"]),
    ("iamfaisalkhan__", ["lambda_1"]),
    ("svh2811__", ["lambda_1", "lambda_2"]),
])
def test_lambda_layers_are_refused_in_one_line(prefix: str, lambdas: list[str], tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    code, stdout, stderr = run(corpus_file(prefix), "-o", out)
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error: ")
    assert f"{len(lambdas)} unsupported layer" in lines[0]
    for name in lambdas:
        assert f"'{name}' (Lambda)" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_bad_opset_is_a_usage_error(tmp_path: Path) -> None:
    code, _, stderr = run(fixture_file("k3_conv1d.keras"), "-o", tmp_path / "m.onnx", "--opset", "9")
    assert code == 2 and "13<=x<=21" in stderr
    assert list(tmp_path.iterdir()) == []
