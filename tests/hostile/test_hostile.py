"""Every hostile file through every registered command: one clear line, exit 2, nothing written,
input untouched, nothing executed. Plus the reader's limits, and the security grep of the code."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import bnconvert
from bnconvert.cli import main
from bnconvert.errors import FormatError
from bnconvert.readers.code import code_in_config, code_in_model

from ..conftest import ROOT, fixture_file
from .conftest import CASE_IDS, CASES, EVIL_MODULE, MARKER, Case, folder_state

REFERENCE = "k3_dense_tanh.keras"  # the second model for `verify`


def _args(command: str, path: Path, work: Path, reference: Path) -> list[str]:
    """Arguments that make ``command`` read ``path`` and write (if it writes) into ``work``."""
    table = {
        "inspect": [str(path)],
        "fold": [str(path), "--no-check"],  # default output beside the input
        "export": [str(path), "-o", str(work / "out.onnx"), "--no-check"],
        "verify": [str(path), str(reference)],
    }
    if command not in table:
        pytest.fail(f"command {command!r} is registered but tests/hostile does not know its arguments: add it")
    return [command, *table[command]]


COMMANDS = sorted(main.commands)


def _run(args: list[str]):  # noqa: ANN202
    return CliRunner().invoke(main, args)


def _assert_refused(result, case: Case, path: Path) -> None:  # noqa: ANN001
    assert result.exit_code == 2, f"exit {result.exit_code}, expected 2\n{result.output}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("bnconvert: error: "), line
    assert "Traceback" not in result.output and "unexpected" not in line, line
    assert path.name in line, f"the message does not name the file: {line}"
    assert re.search(case.match, line), f"{line!r} does not say {case.match!r}"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_hostile_file(case: Case, command: str, hostile_copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = case.expected(command)
    if expected == "skip":
        pytest.skip(f"{command} on a loadable model runs a reference runtime; covered by its own tests")
    path = hostile_copy(case)
    work = path.parent
    monkeypatch.syspath_prepend(str(work))  # a custom-class payload module would be importable
    reference = tmp_path / "reference" / REFERENCE
    reference.parent.mkdir()
    reference.write_bytes(fixture_file(REFERENCE).read_bytes())
    before = folder_state(work)
    result = _run(_args(command, path, work, reference))
    assert not (work / MARKER).exists(), "a payload from the file was executed or imported"
    assert EVIL_MODULE not in sys.modules
    if expected == "refuse":
        _assert_refused(result, case, path)
        assert folder_state(work) == before, "a refused command wrote or changed a file"
    elif expected == "ok":
        assert result.exit_code == 0, result.output
        assert folder_state(work)[path.name] == before[path.name], "the input changed"
    else:  # any: success, or a clean refusal that leaves everything as it was
        assert result.exit_code in (0, 2), result.output
        if result.exit_code == 2:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("bnconvert: error: "), result.stderr
            assert "Traceback" not in result.output and "unexpected" not in lines[0]
            assert folder_state(work) == before
        assert folder_state(work)[path.name] == before[path.name], "the input changed"


@pytest.mark.parametrize("name", ["zip_bomb", "zip_bomb_lying", "zip_config_bomb", "h5_shape_bomb", "h5_compressed_bomb"])
def test_bombs_are_refused_quickly(name: str, hostile_copy) -> None:
    path = hostile_copy(next(c for c in CASES if c.name == name))
    start = time.perf_counter()
    with pytest.raises(FormatError):
        bnconvert.load(path)
    assert time.perf_counter() - start < 1.0


def test_nan_and_negative_variance_are_findings_in_inspect(hostile_copy) -> None:
    kinds = {}
    for name in ("nan_in_bn", "negative_variance", "slightly_negative_variance", "nan_in_staying_bn"):
        report = bnconvert.audit(bnconvert.load(hostile_copy(next(c for c in CASES if c.name == name))))
        kinds[name] = {f.kind for _, f in report.findings}
    assert "nan-inf" in kinds["nan_in_bn"] and "nan-inf" in kinds["nan_in_staying_bn"]
    assert "non-positive-variance" in kinds["negative_variance"]
    assert "negative-variance" in kinds["slightly_negative_variance"]


def test_code_is_found_however_deep(hostile_copy) -> None:
    for name, where in (("lambda_h5", "evil_lambda"), ("lambda_keras", "evil_lambda"), ("wrapped_lambda_h5", "'td'")):
        found = code_in_model(bnconvert.load(hostile_copy(next(c for c in CASES if c.name == name))))
        assert found and any(where in f for f in found), (name, found)
    merge = {"class_name": "Model", "config": {"layers": [{"class_name": "Merge", "config": {"mode": "x", "mode_type": "lambda"}}]}}
    assert code_in_config(merge) == ["config.config.layers[0].config.mode_type = 'lambda' (serialised bytecode)"]
    assert code_in_config({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense"}]}}) == []


def test_fixtures_and_corpus_have_no_false_alarms() -> None:
    """The guards refuse nothing a real Keras wrote (the corpus is in tests/readers/test_corpus.py)."""
    for path in sorted(ROOT.joinpath("fixtures").glob("*")):
        if path.suffix in (".h5", ".keras"):
            bnconvert.load(path)


# -- the code base never executes file content ---------------------------------------------------

_FORBIDDEN_MODULES = {"marshal", "pickle", "cPickle", "dill", "cloudpickle", "shelve", "importlib", "runpy", "yaml"}
_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
#: dynamic imports of names fixed in the code, never taken from a file (each has a test below)
_ALLOWED = {
    ("bnconvert/__init__.py", "importlib"),  # the lazy table of bnconvert's own modules
    ("bnconvert/check/keras_runner.py", "importlib"),  # tensorflow, and keras or tf_keras
    ("bnconvert/cli/common.py", "importlib"),  # importlib.metadata: --version reads package versions, imports nothing
    ("bnconvert/custom.py", "runpy"),  # --plugin: the user's own Python file, named by the user, never by a model
    ("bnconvert/replace/spec.py", "yaml"),  # a replacements file the user wrote, read with safe_load only (checked below)
}


def test_yaml_is_only_read_safely() -> None:
    """YAML's full loaders build Python objects a document names; bnconvert uses safe_load only."""
    tree = ast.parse((ROOT / "bnconvert/replace/spec.py").read_text(encoding="utf-8"))
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml"}
    assert used and used <= {"safe_load", "YAMLError"}, used


def test_library_never_unmarshals_or_evaluates() -> None:
    problems = []
    for path in sorted((ROOT / "bnconvert").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]] if node.level == 0 else []
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FORBIDDEN_CALLS:
                if (rel, node.func.id) not in _ALLOWED:
                    problems.append(f"{rel}:{node.lineno} calls {node.func.id}()")
                continue
            elif isinstance(node, ast.keyword) and node.arg in ("allow_pickle", "safe_mode") and not (
                isinstance(node.value, ast.Constant) and node.value.value is (node.arg == "safe_mode")
            ):
                problems.append(f"{rel}:{node.lineno} passes {node.arg}={ast.unparse(node.value)}")
                continue
            else:
                continue
            problems += [f"{rel}:{node.lineno} imports {n}" for n in names if n in _FORBIDDEN_MODULES and (rel, n) not in _ALLOWED]
    assert not problems, "\n".join(problems)


def test_the_allowed_dynamic_imports_take_fixed_names_only() -> None:
    assert all(module.startswith("bnconvert.") for module in bnconvert._LAZY.values())
    from bnconvert.check.keras_runner import keras_module_for
    from bnconvert.model import Source

    formats = ["keras1-h5", "keras2-h5", "keras3-h5", "keras3-zip", "tfkeras-zip", "keras2-weights"]
    assert {keras_module_for(Source(path="x", format=f)) for f in formats} == {None, "keras", "tf_keras"}
    assert keras_module_for(Source(path="x", format="keras2-h5", config={"module": "os"})) == "tf_keras"


# -- a real process: one line, exit 2, no traceback; --debug shows it ----------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from bnconvert.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["random_bytes", "zip_slip", "h5_external_link", "wrong_shape_keras"])
def test_real_process_prints_one_line(name: str, hostile_copy) -> None:
    path = hostile_copy(next(c for c in CASES if c.name == name))
    done = _cli("inspect", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error: ") and path.name in lines[0], done.stderr


def test_debug_shows_the_traceback(hostile_copy) -> None:
    path = hostile_copy(next(c for c in CASES if c.name == "zip_slip"))
    done = _cli("--debug", "export", str(path), "-o", str(path.with_suffix(".onnx")), "--no-check")
    assert done.returncode == 2
    assert "Traceback" in done.stderr and done.stderr.strip().splitlines()[-1].startswith("bnconvert: error: ")


@pytest.mark.parametrize("name", ["lambda_h5", "lambda_keras", "wrapped_lambda_h5", "custom_class_h5", "custom_class_keras"])
def test_fold_check_never_hands_code_to_keras(name: str, hostile_copy, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fold`` with its numerical check (the one place Keras may load a file): the payload stays inert."""
    path = hostile_copy(next(c for c in CASES if c.name == name))
    monkeypatch.syspath_prepend(str(path.parent))
    result = _run(["fold", str(path)])
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    assert not (path.parent / MARKER).exists() and EVIL_MODULE not in sys.modules


def test_only_the_expected_zip_members_are_read(tmp_path: Path) -> None:
    """A bomb in a member Keras does not use (assets/...) is never inflated: the model loads at once."""
    from .build_files import _deflated_zeros, _members, _raw_zip, _stored

    members = _members("k3_dense_tanh.keras")
    path = _raw_zip(tmp_path / "extra_bomb.keras", [*(_stored(n, d) for n, d in members.items()),
                                                    ("assets/bomb.bin", _deflated_zeros(2048), 8, 2 << 30, 0)])
    start = time.perf_counter()
    model = bnconvert.load(path)
    assert time.perf_counter() - start < 1.0 and len(model.layers) > 3


def test_config_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from bnconvert.readers import h5

    monkeypatch.setattr(h5, "MAX_CONFIG_CHARS", 100)
    with pytest.raises(FormatError, match="characters long"):
        h5.parse_config('{"class_name": "Sequential", "config": {"layers": []}, "pad": "' + "x" * 200 + '"}', "config.json")
    monkeypatch.undo()
    with pytest.raises(FormatError, match="nested more than 200"):
        h5.parse_config('{"a": ' + "[" * 300 + "]" * 300 + "}", "config.json")  # parses, but too deep


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "model.h5"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        bnconvert.load(fifo)
