"""One verdict: the same pass rule and defaults in fold, export and verify, the same verdict with
and without TensorFlow, a failed check's report printed once, and "not checked" never shown as
"checked" (``--require-check`` turns it into exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bnconvert.check import DEFAULT_ATOL, DEFAULT_RTOL, check_written
from bnconvert.cli import main
from bnconvert.errors import EquivalenceError
from bnconvert.fold import FoldReport
from bnconvert.pipeline import fold_file, verify

from ..conftest import corpus_file, fixture_file
from .subproc import run_json

DENSE = "k3_dense_tanh.h5"  # small, folds 3 BN: a second or so per check


def _cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_defaults_are_one_pair_in_every_signature() -> None:
    import inspect

    from bnconvert.check import check_export
    from bnconvert.check.compare import compare_arrays, compare_outputs
    from bnconvert.pipeline import export_file

    for fn in (fold_file, export_file, verify, check_written, check_export, compare_arrays, compare_outputs):
        params = inspect.signature(fn).parameters
        assert (params["atol"].default, params["rtol"].default) == (DEFAULT_ATOL, DEFAULT_RTOL), fn.__name__
    for fn in (fold_file, export_file, verify, check_written, check_export):
        params = inspect.signature(fn).parameters
        assert params["seed"].kind is inspect.Parameter.KEYWORD_ONLY and "batch" in params, fn.__name__
    for command in ("fold", "export", "verify"):
        text = " ".join(_cli(command, "--help").output.split())
        assert "--atol" in text and "--rtol" in text and "|A-B| <= atol + rtol * max|A|" in text, command
        assert "default: 1e-05" in text and "default: 0.0001" in text, command
        assert ("--require-check" in text) == (command != "verify"), command


def test_fold_tolerances_reach_the_check_and_decide_the_exit(tmp_path: Path) -> None:
    """The same file and numbers: passes with the defaults, fails with a bound below float32
    rounding; the failed check's report is printed once (stdout), the error is one line (stderr)."""
    src = fixture_file(DENSE)
    data = json.loads(_cli("fold", src, "-o", tmp_path / "ok.h5", "--json").stdout)
    check = data["check"]
    assert check["checked"] is True and check["passed"] is True and check["status"] == "passed"
    assert (check["atol"], check["rtol"]) == (DEFAULT_ATOL, DEFAULT_RTOL)
    assert check["comparison"]["passed"] is True  # the comparison's verdict is the check's, not a second rule

    result = _cli("fold", src, "-o", tmp_path / "bad.h5", "--atol", "0", "--rtol", "1e-12")
    assert result.exit_code == 1 and not (tmp_path / "bad.h5").exists()
    assert result.stdout.count("abs diff histogram") == 1 and "fold check FAILED" in result.stdout
    assert "atol=0, rtol=1e-12" in result.stdout and "nothing written" in result.stdout
    assert result.stderr.strip().count("\n") == 0 and "abs diff" not in result.stderr
    assert "the folded model differs from the original; nothing written" in result.stderr


def test_fold_api_error_carries_its_report(tmp_path: Path) -> None:
    with pytest.raises(EquivalenceError) as info:
        fold_file(fixture_file(DENSE), tmp_path / "f.h5", atol=0.0, rtol=1e-12, seed=5, batch=3)
    report = info.value.report
    assert isinstance(report, FoldReport) and report.check is not None
    check = report.check
    assert check.passed is False and check.checked is True
    assert (check.seed, check.batch, check.rtol) == (5, 3, 1e-12)
    assert "\n" not in str(info.value) and not (tmp_path / "f.h5").exists()


def test_not_checked_is_said_and_require_check_exits_1(tmp_path: Path) -> None:
    src = fixture_file(DENSE)
    result = _cli("fold", src, "-o", tmp_path / "a.h5", "--no-check")
    assert result.exit_code == 0 and (tmp_path / "a.h5").exists()
    assert "check    fold check NOT CHECKED: --no-check" in result.stdout and "passed" not in result.stdout
    data = json.loads(_cli("fold", src, "-o", tmp_path / "b.h5", "--no-check", "--json").stdout)
    assert data["check"]["checked"] is False and data["check"]["passed"] is None
    assert data["check"]["status"] == "not checked" and data["check"]["reason"] == "--no-check"
    result = _cli("fold", src, "-o", tmp_path / "c.h5", "--no-check", "--require-check")
    assert result.exit_code == 1 and not (tmp_path / "c.h5").exists() and "NOT CHECKED" in result.stderr
    result = _cli("export", src, "-o", tmp_path / "c.onnx", "--no-check", "--require-check")
    assert result.exit_code == 1 and not (tmp_path / "c.onnx").exists()
    result = _cli("export", src, "-o", tmp_path / "d.onnx", "--no-check")
    assert result.exit_code == 0 and "check: export check NOT CHECKED: --no-check" in result.stdout


@pytest.mark.corpus
def test_a_lambda_model_is_not_checked_and_require_check_refuses_it(tmp_path: Path) -> None:
    """No runtime may run a Lambda's code: the fold is written, marked NOT CHECKED (exit 0), or
    refused with --require-check (exit 1, nothing written)."""
    src = corpus_file("svh2811")
    result = _cli("fold", src, "-o", tmp_path / "a.h5", "--json")
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)["check"]
    assert check["checked"] is False and check["passed"] is None and "Lambda" in check["reason"]
    result = _cli("fold", src, "-o", tmp_path / "b.h5", "--require-check")
    assert result.exit_code == 1 and not (tmp_path / "b.h5").exists()
    assert "fold check NOT CHECKED" in result.stdout and "--require-check" in result.stderr


def test_export_tolerances_reach_the_check(tmp_path: Path) -> None:
    src = fixture_file(DENSE)
    result = _cli("export", src, "-o", tmp_path / "bad.onnx", "--atol", "0", "--rtol", "1e-12")
    assert result.exit_code == 1 and not (tmp_path / "bad.onnx").exists()
    assert result.stdout.count("abs diff histogram") == 1 and "export check FAILED" in result.stdout
    assert result.stderr.strip().count("\n") == 0 and "does not match the original" in result.stderr


# --------------------------------------------------- the same verdict with and without TensorFlow
EYE_STATE = """
import json
from bnconvert.pipeline import fold_file
from bnconvert.pipeline import export_file
src, tmp = sys.argv[1], sys.argv[2]
out = {}
for what, report in (("fold", fold_file(src, tmp + "/f.h5")), ("export", export_file(src, tmp + "/f.onnx"))):
    c = report.check.to_dict()
    (o,) = c["comparison"]["outputs"]
    out[what] = {"passed": c["passed"], "reference": c["reference"]["kind"], "candidate": c["candidate"]["kind"],
                 "error": c["error"], "abs": o["abs"]["max"], "scale": o["max_abs_ref"], "bound": o["bound"]}
print(json.dumps(out))
"""


@pytest.mark.corpus
def test_eye_state_gets_the_same_verdict_with_and_without_tensorflow(tmp_path: Path) -> None:
    """ALbaghdadi's Eye_State model ends in a sigmoid whose outputs are 3e-5 to 7e-4 (logits of
    -7 to -10): the float64 reference says the fold is right (folded and original agree to 3e-8
    of the output), and a float32 runtime's outputs differ by ~6e-8 absolute, which is 8e-5 of an
    output that small (the sigmoid's relative error is the logit's absolute one). A rule relative
    to the output alone (max|diff|/max|ref| <= 1e-5) failed that float32 rounding; the one rule
    judges it by atol, and fold and export pass with and without TensorFlow."""
    src = corpus_file("ALbaghdadi__Eye_State")
    runs = {}
    for no_tf in (False, True):
        folder = tmp_path / ("no_tf" if no_tf else "tf")
        folder.mkdir()
        runs[no_tf] = run_json(EYE_STATE, str(src), str(folder), no_tf=no_tf)
    for what in ("fold", "export"):
        with_tf, without_tf = runs[False][what], runs[True][what]
        assert with_tf["passed"] is without_tf["passed"] is True, (what, runs)
        assert without_tf["reference"] == "reference" and with_tf["reference"] == "keras", runs
        for r in (with_tf, without_tf):
            assert r["scale"] < 1e-3 and r["abs"] < 1e-6 < r["bound"], (what, r)
    # the float32 ONNX against the float64 reference: far past 1e-5 of the output, 1e-7 absolute
    assert runs[True]["export"]["error"] > 1e-5 and runs[True]["export"]["abs"] < 2e-7, runs
    assert runs[True]["fold"]["error"] < 1e-6, runs  # the folded weights themselves are right
