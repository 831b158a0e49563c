"""``bnconvert verify A B``: exit codes, the report, and statistics that agree with numpy."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from bnconvert.cli import main

from .check.onnx_models import conv_bn_onnx, perturbed, save
from .check.subproc import run_python


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["verify", *args])
    return result.exit_code, result.stdout, result.stderr


def run_cli(*args: str, no_tf: bool = False) -> subprocess.CompletedProcess[str]:
    """``bnconvert`` in a fresh interpreter (optionally with TensorFlow made unimportable)."""
    return run_python("from bnconvert.cli import main\nmain()\n", *args, no_tf=no_tf)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str]:
    model = conv_bn_onnx(np.random.default_rng(11))
    return save(model, tmp_path / "a.onnx"), save(perturbed(model, "gamma", 1.003), tmp_path / "b.onnx")


def direct_outputs(path: str, x: np.ndarray) -> np.ndarray:
    """The output straight from onnxruntime, without bnconvert (optimisations off, as verify does)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def numpy_stats(a: np.ndarray, b: np.ndarray) -> dict[str, dict[str, float]]:
    absdiff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(absdiff == 0, 0.0, absdiff / np.abs(a.astype(np.float64)))
    out = {}
    for key, v in (("abs", absdiff.ravel()), ("rel", rel.ravel())):
        out[key] = {
            "max": v.max(), "mean": v.mean(), "median": np.median(v),
            "p90": np.percentile(v, 90), "p95": np.percentile(v, 95), "p99": np.percentile(v, 99),
        }
    return out


def test_identical_models_exit_0(pair: tuple[str, str]) -> None:
    code, out, _ = invoke(pair[0], pair[0])
    assert code == 0 and "EQUIVALENT" in out and "NOT EQUIVALENT" not in out


def test_json_statistics_agree_with_numpy(pair: tuple[str, str]) -> None:
    code, out, _ = invoke(*pair, "--json", "--batch", "3", "--seed", "5")
    assert code == 1
    report = json.loads(out)
    x = np.random.default_rng(5).uniform(0, 1, (3, 2, 5, 5)).astype(np.float32)
    a, b = direct_outputs(pair[0], x), direct_outputs(pair[1], x)
    expected = numpy_stats(a, b)
    got = report["comparison"]["outputs"][0]
    for kind in ("abs", "rel"):
        for key, value in expected[kind].items():
            assert got[kind][key] == pytest.approx(value, rel=1e-9, abs=1e-15), (kind, key)
    absdiff = np.abs(a.astype(np.float64) - b)
    assert got["worst_index"] == list(np.unravel_index(np.argmax(absdiff), a.shape))
    bound = 1e-5 + 1e-4 * np.abs(a.astype(np.float64)).max()  # the defaults: atol 1e-5, rtol 1e-4
    assert got["bound"] == pytest.approx(bound, rel=1e-12)
    assert got["mismatches"] == int(np.count_nonzero(absdiff > bound)) > 0
    assert report["inputs"][0]["shape"] == [3, 2, 5, 5] and "seed 5" in report["input_source"]


def test_printed_statistics_agree_with_numpy(pair: tuple[str, str]) -> None:
    code, out, _ = invoke(*pair)
    assert code == 1 and "NOT EQUIVALENT" in out
    x = np.random.default_rng(1).uniform(0, 1, (1, 2, 5, 5)).astype(np.float32)
    expected = numpy_stats(direct_outputs(pair[0], x), direct_outputs(pair[1], x))
    for kind, title in (("abs", "abs diff"), ("rel", "rel diff")):
        line = next(line for line in out.splitlines() if line.strip().startswith(title))
        printed = dict(re.findall(r"(max|mean|median|p90|p95|p99) (\S+)", line))
        assert set(printed) == {"max", "mean", "median", "p90", "p95", "p99"}
        for key, value in expected[kind].items():
            assert float(printed[key]) == pytest.approx(value, rel=5e-4), (kind, key)  # printed to 4 digits
    assert "abs diff histogram" in out


def test_tolerances_decide_the_exit_code(pair: tuple[str, str]) -> None:
    assert invoke(*pair, "--atol", "1")[0] == 0  # |A-B| <= atol + rtol * max|A|: either term may cover it
    assert invoke(*pair, "--rtol", "1")[0] == 0
    assert invoke(*pair, "--atol", "1e-9", "--rtol", "1e-9")[0] == 1


def test_locate_names_the_perturbed_node(pair: tuple[str, str]) -> None:
    code, out, _ = invoke(*pair, "--locate", "--json")
    assert code == 1
    assert json.loads(out)["locate"]["first"] == "bn"


def test_bad_input_and_usage_exit_2(pair: tuple[str, str], tmp_path: Path) -> None:
    code, _, err = invoke(pair[0], str(tmp_path / "absent.onnx"))
    assert code == 2 and "no such file" in err
    code, _, err = invoke(*pair, "--range", "1,0")
    assert code == 2 and "--range" in err
    code, _, err = invoke(*pair, "--input-shape", "x:1x2x5")
    assert code == 2 and "input 'x'" in err
    code, _, err = invoke(*pair, "--input-shape", "nope:1x2x5x5")
    assert code == 2 and "not inputs of the model" in err
    code, _, _ = invoke(*pair, "--batch", "0")
    assert code == 2
    (tmp_path / "junk.bin").write_bytes(b"junk junk junk")
    code, _, err = invoke(pair[0], str(tmp_path / "junk.bin"))
    assert code == 2 and "neither a Keras model file" in err
    assert err.count("\n") == 1  # one line, no traceback


def test_dynamic_dims_name_the_input(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["img"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "H", "W", 3])],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "dyn.onnx")
    code, _, err = invoke(path, path)
    assert code == 2 and "input 'img'" in err and "--input-shape img:1xNxNx3" in err
    code, out, _ = invoke(path, path, "--input-shape", "img:2x7x9x3")
    assert code == 0 and "img [2x7x9x3]" in out


def test_a_dynamic_sequence_length_is_set_for_the_check(tmp_path: Path) -> None:
    """Text and time-series models leave the time axis open: verify gives it the built-in
    checks' length and says so; --input-shape still decides."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["seq"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["N", "T", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 3])],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "seq.onnx")
    code, out, _ = invoke(path, path)
    assert code == 0 and "seq [1x32x3]" in out and "input 'seq': dynamic axes [1] set to 32" in out
    code, out, _ = invoke(path, path, "--input-shape", "seq:2x5x3")
    assert code == 0 and "seq [2x5x3]" in out and "set to 32" not in out


def test_verify_onnx_without_tensorflow(pair: tuple[str, str]) -> None:
    proc = run_cli("verify", *pair, "--locate", no_tf=True)
    assert proc.returncode == 1, proc.stderr
    assert "first diverging layer 'bn'" in proc.stdout


def test_inputs_file_and_ort_optimize(pair: tuple[str, str], tmp_path: Path) -> None:
    x = np.random.default_rng(3).normal(size=(2, 2, 5, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = invoke(pair[0], pair[0], "--inputs", str(tmp_path / "x.npy"), "--ort-optimize", "--json")
    report = json.loads(out)
    assert code == 0 and report["input_source"] == "file x.npy" and report["inputs"][0]["shape"] == [2, 2, 5, 5]
    assert "ORT_ENABLE_ALL" in report["a"]["runner"]
    code, out, _ = invoke(pair[0], pair[0])
    assert "ORT_DISABLE_ALL" in out


def test_help_documents_tolerances_and_exit_codes() -> None:
    result = CliRunner().invoke(main, ["verify", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "|A-B| <= atol + rtol * max|A|" in text and "default: 1e-05" in text and "default: 0.0001" in text
    assert "0 equivalent, 1 not equivalent, 2 bad input or usage" in text


@pytest.mark.parametrize("stem", ["k3_educba.h5", "tfk_functional.h5", "k1_th_model.h5", "tfk_chain.keras"])
def test_verify_model_h5_against_its_export(stem: str, tmp_path: Path) -> None:
    """``bnconvert verify model.h5 model.onnx`` passes on bnconvert's own (folded) exports, each
    Keras generation in a fresh interpreter (tf-keras and Keras 3 never share one)."""
    from bnconvert.pipeline import export_file

    from .conftest import fixture_file

    src = fixture_file(stem)
    onnx_file = tmp_path / "model.onnx"
    export_file(src, onnx_file, check=False)
    proc = run_cli("verify", str(src), str(onnx_file), "--batch", "2", "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    expected = "reference" if stem.startswith("k1_") else "keras"
    assert report["a"]["kind"] == expected and report["comparison"]["normalized_error"] < 1e-5
