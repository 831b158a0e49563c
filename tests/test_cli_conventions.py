"""The command-line conventions every command follows (issue 17, "Command line"): a reader of
stdout that goes away, ``python -m bnconvert``, ``--debug``/``-q``/``-v`` before or after the
command, ``--version``, whole help lines, a folder where a file is expected, the ONNX output's
extension, the architecture JSON beside a weights-only file, final paths in reports, wording."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bnconvert.cli import main
from bnconvert.io import atomic_output, shown_path

from .conftest import corpus_file, fixture_file

FULL = "k3_chain.h5"  # a small full model (5 BN, a bias created), no TensorFlow needed to read it


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _python_m(*args: str | Path, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "bnconvert", *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, timeout=120, check=False)


def _copy(name: str, folder: Path, as_name: str | None = None) -> Path:
    dst = folder / (as_name or name)
    shutil.copy(fixture_file(name), dst)
    return dst


# -- a reader of stdout that goes away -----------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["inspect", "FIXTURES"],
    ["fold", "--dry-run", "MODEL"],
    ["export", "--no-check", "MODEL", "-o", "OUT.onnx"],
    ["verify", "--reference", "float64", "MODEL", "MODEL"],
    ["--version"],
    ["--help"],
    ["fold", "--help"],
])
def test_stdout_closed_by_its_reader_ends_quietly(args: list[str], tmp_path: Path) -> None:
    """``bnconvert inspect DIR | head -1``: the reader is gone before anything is written (its end
    of the pipe is closed at once), so every command's first write meets a broken pipe. The run
    ends with nothing on stderr and 141 (128 + SIGPIPE), as a Unix tool ended by SIGPIPE does."""
    model = _copy(FULL, tmp_path)
    values = {"FIXTURES": str(fixture_file(FULL).parent), "MODEL": str(model), "OUT.onnx": str(tmp_path / "o.onnx")}
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "bnconvert", *[values.get(a, a) for a in args]],
                            stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    os.close(read_end)  # the reader goes away before the first line
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err.decode()) == (141, "")


def test_a_broken_pipe_of_our_own_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the reader of stdout going away ends quietly: a broken pipe elsewhere (stdout fine)
    is a bug of bnconvert's, said as one (exit 3)."""
    from bnconvert import cli
    from bnconvert.cli import inspect_cmd

    def broken(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(inspect_cmd, "collect", broken)
    monkeypatch.setattr(cli, "_stdout_gone", lambda: False)
    result = _run("inspect", fixture_file(FULL))
    assert result.exit_code == 3 and "internal error, please report: BrokenPipeError" in result.stderr


# -- python -m, --version, --help ----------------------------------------------------------------
def test_python_m_bnconvert_and_version() -> None:
    """``python -m bnconvert --version``: bnconvert's version and those of the libraries that
    decide its results, read from package metadata; TensorFlow is not imported for it."""
    proc = subprocess.run(
        [sys.executable, "-c", ("import runpy, sys; sys.argv = ['bnconvert', '--version']\n"
         "try:\n    runpy.run_module('bnconvert', run_name='__main__')\n"
         "except SystemExit as e:\n    print('exit', e.code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    out = proc.stdout
    assert out.splitlines()[0].startswith("bnconvert ") and out.splitlines()[-1] == "exit 0 False False", out
    for name in ("numpy", "h5py", "onnx", "onnxruntime"):
        assert f"  {name:<12} {metadata.version(name)}\n" in out
    for label, dist in (("keras", "keras"), ("tensorflow", "tensorflow"), ("tf_keras", "tf-keras")):
        try:
            assert f"  {label:<12} {metadata.version(dist)}\n" in out
        except metadata.PackageNotFoundError:
            assert f"  {label} " not in out
    assert _python_m("fold", "--help").stdout.decode().startswith("Usage: bnconvert fold [OPTIONS] PATH")


def test_command_list_lines_are_whole_sentences() -> None:
    help_text = _run("--help").output
    commands = help_text.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in commands] == ["export", "fold", "inspect", "verify"]
    for line in commands:  # one line each, a whole sentence: never cut with "..."
        assert line.endswith(".") and not line.endswith("..."), line


# -- --debug, --quiet, --verbose before or after the command -------------------------------------
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command(where: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.h5"
    args = ["--debug", "fold", str(missing)] if where == "before" else ["fold", "--debug", str(missing)]
    result = _run(*args)
    assert result.exit_code == 2 and "Traceback (most recent call last)" in result.stderr
    plain = _run("fold", str(missing))
    assert plain.exit_code == 2 and plain.stderr.startswith("bnconvert: error: ") and len(plain.stderr.splitlines()) == 1


def test_quiet_prints_nothing_on_success_and_errors_still(tmp_path: Path) -> None:
    model = _copy(FULL, tmp_path)
    runs: list[list[str | Path]] = [
        ["fold", "-q", "--no-check", model],
        ["-q", "export", "--no-check", model, "-o", tmp_path / "m.onnx"],
        ["inspect", "--quiet", model, fixture_file("k3_chain.keras")],
        ["verify", "-q", "--reference", "float64", model, tmp_path / "m.onnx"],
    ]
    for args in runs:
        result = _run(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (0, "", ""), args
    assert (tmp_path / "k3_chain.folded.h5").is_file() and (tmp_path / "m.onnx").is_file()
    failed = _run("fold", "-q", tmp_path / "missing.h5")
    assert failed.exit_code == 2 and failed.stdout == "" and failed.stderr.startswith("bnconvert: error: ")
    both = _run("fold", "-q", "-v", model)
    assert both.exit_code == 2 and "contradict" in both.stderr


def test_verbose_logs_to_stderr_and_stops_with_the_command(tmp_path: Path) -> None:
    model = _copy(FULL, tmp_path)
    info = _run("fold", "-v", "--dry-run", model)
    assert info.exit_code == 0 and "bnconvert: bnconvert.cli: fold finished in " in info.stderr
    assert "folded backward BN" not in info.stderr  # DEBUG needs -vv
    debug = _run("-vv", "fold", "--dry-run", model)
    assert "bnconvert: bnconvert.fold.apply: folded backward BN batch_normalization into conv2d" in debug.stderr
    assert debug.stdout == info.stdout  # the report is the same
    after = _run("fold", "--dry-run", model)
    assert after.stderr == ""  # -v of an earlier command in this process is gone


# -- a folder where a file is expected -----------------------------------------------------------
@pytest.mark.parametrize("args, what", [
    (["fold", "DIR"], "is a folder, not a model file"),
    (["fold", "MODEL", "-o", "DIR"], "is a folder; give an output file name"),
    (["fold", "MODEL", "--config", "DIR"], "is a folder, not an architecture JSON"),
    (["fold", "MODEL", "--plugin", "DIR"], "is a folder, not a Python file"),
    (["fold", "MODEL", "--replacements", "DIR"], "is a folder, not a replacements file"),
    (["export", "DIR", "-o", "OUT"], "is a folder, not a model file"),
    (["export", "MODEL", "-o", "DIR"], "is a folder; give an output file name"),
    (["verify", "DIR", "MODEL"], "is a folder, not a model file"),
    (["verify", "MODEL", "DIR"], "is a folder, not a model file"),
    (["verify", "MODEL", "MODEL", "--inputs", "DIR"], "an inputs folder without .npy files (one per model input: <input name>.npy)"),
    (["inspect", "MODEL", "--plot", "DIR"], "is a folder; give an output file name"),
    (["inspect", "MODEL", "--config", "DIR"], "is a folder, not an architecture JSON"),
])
def test_a_folder_where_a_file_is_expected_is_one_line(args: list[str], what: str, tmp_path: Path) -> None:
    folder = tmp_path / "a folder"
    folder.mkdir()
    values = {"DIR": str(folder), "MODEL": str(fixture_file(FULL)), "OUT": str(tmp_path / "o.onnx")}
    result = _run(*[values.get(a, a) for a in args])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"bnconvert: error: {folder}: {what}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a folder"]


# -- the ONNX output's extension -----------------------------------------------------------------
@pytest.mark.parametrize("name, words", [("out.h5", "(not .h5)"), ("out.keras", "(not .keras)"),
                                         ("out", "(this name has no extension)")])
def test_export_output_must_be_named_onnx(name: str, words: str, tmp_path: Path) -> None:
    out = tmp_path / name
    result = _run("export", "--no-check", fixture_file(FULL), "-o", out)
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr == f"bnconvert: error: {out}: an ONNX file is named .onnx {words}; rename it or pass --force-extension\n"
    forced = _run("export", "--no-check", fixture_file(FULL), "-o", out, "--force-extension")
    assert forced.exit_code == 0, forced.output
    assert out.read_bytes()[:2] != b"\x89H" and forced.stdout.startswith(f"{out}: opset 17, ")
    assert _run("export", "--no-check", fixture_file(FULL), "-o", tmp_path / "upper.ONNX").exit_code == 0


# -- the architecture JSON beside a weights-only file --------------------------------------------
@pytest.fixture
def weights_pair(tmp_path: Path) -> Path:
    """``k1_weights.h5`` (Keras 1 save_weights) with ``k1_weights.json`` beside it."""
    _copy("k1_weights.json", tmp_path)
    return _copy("k1_weights.h5", tmp_path)


def test_weights_only_file_uses_the_json_beside_it(weights_pair: Path, tmp_path: Path) -> None:
    twin = weights_pair.with_suffix(".json")
    note = f"architecture read from the companion file {twin}"
    folded = _run("fold", "--no-check", "--json", weights_pair)
    assert folded.exit_code == 0, folded.output
    assert json.loads(folded.stdout)["notes"][0] == note
    assert (tmp_path / "k1_weights.folded.h5").is_file()
    out = tmp_path / "w.onnx"
    exported = _run("export", "--no-check", weights_pair, "-o", out)
    assert exported.exit_code == 0 and f"  note: {note}" in exported.stdout
    verified = _run("verify", "--reference", "float64", weights_pair, out)
    assert verified.exit_code == 0 and f"note  {note}" in verified.stdout
    inspected = _run("inspect", weights_pair)
    assert inspected.exit_code == 0 and f"  note     architecture read from the companion file {twin.name}" in inspected.stdout
    # --config wins (here the same architecture, encoded twice): no companion note
    given = _run("fold", "--no-check", "--json", "--force", weights_pair, "--config", fixture_file("k1_weights_double.json"))
    assert given.exit_code == 0 and not any("companion" in n for n in json.loads(given.stdout)["notes"])


def test_full_model_keeps_its_own_architecture(tmp_path: Path) -> None:
    model = _copy(FULL, tmp_path)
    _copy("k1_weights.json", tmp_path, as_name="k3_chain.json")  # a JSON that does not fit it
    result = _run("fold", "--no-check", "--json", model)
    assert result.exit_code == 0, result.output
    assert not any("companion" in n for n in json.loads(result.stdout)["notes"])


def test_two_weights_only_files_with_different_jsons_are_refused(weights_pair: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    b = _copy("k1_weights.h5", other)
    _copy("k1_weights_double.json", other, as_name="k1_weights.json")
    result = _run("verify", weights_pair, b)
    assert result.exit_code == 2 and "give the one that fits both with --config" in result.stderr


# -- final paths in reports ----------------------------------------------------------------------
def test_shown_path_is_the_final_path(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"x")
        assert tmp.parent.name.startswith(".bnconvert-tmp-") and shown_path(tmp) == str(target)
    assert shown_path(target) == str(target) and shown_path("a/b.h5") == "a/b.h5"


def test_reports_name_the_final_path_not_the_temporary_one(weights_pair: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs on the file before it is renamed into place; the report names the file the
    user will find. Without TensorFlow in the way: export checks with onnxruntime against the
    float64 reference (a Keras 1 file), fold's written file runs in the float64 reference."""
    import importlib

    verify = importlib.import_module("bnconvert.check.verify")  # the package's 'verify' is the function
    monkeypatch.setattr(verify, "keras_available", lambda module: False)
    out = tmp_path / "w.onnx"
    exported = _run("export", "--json", weights_pair, "-o", out)
    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.stdout)
    assert report["check"]["written"] == str(out) and report["check"]["candidate"]["runner"].endswith(f": {out}")
    folded = _run("fold", weights_pair)
    assert folded.exit_code == 0, folded.output
    assert "  checked    bnconvert's own float64 computation (NumPy " in folded.stdout
    assert f"): {tmp_path / 'k1_weights.folded.h5'}\n" in folded.stdout
    for text in (exported.stdout, folded.stdout):
        assert ".bnconvert-tmp-" not in text


# -- wording -------------------------------------------------------------------------------------
@pytest.mark.corpus
def test_keras2_theano_header_and_one_layer() -> None:
    """Keras 2.1.3 with the Theano backend: its kernels are flipped, and it is not Keras 1."""
    result = _run("inspect", corpus_file("KonduitAI__dl4j-test-resources__src_main_resources_modelimport_keras_weights_batch_to_conv2d_theano_2"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith("  format   keras2-h5 (Keras 2.1.3); backend theano")
    assert lines[2] == "  theano   conv kernels flipped to cross-correlation"
    assert "keras 1" not in result.stdout and "  BN       1 layer, 1 can fold" in lines


def test_counts_agree_with_their_nouns(tmp_path: Path) -> None:
    result = _run("fold", "--dry-run", fixture_file(FULL))
    assert "  BN       5 layers: 5 folded" in result.stdout
    assert "  bias     created in 1 layer: depthwise_conv2d" in result.stdout


def test_hdf5_named_keras_folds_to_h5(tmp_path: Path) -> None:
    """tf.keras 2.10's ``model.save("m.keras")`` wrote HDF5 under ``.keras``; Keras 3 reads every
    ``.keras`` name as a zip, so the folded file is named ``.h5`` (it stays HDF5)."""
    src = _copy(FULL, tmp_path, as_name="m.keras")
    result = _run("fold", "--no-check", src)
    assert result.exit_code == 0, result.output
    out = tmp_path / "m.folded.h5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.folded.h5", "m.keras"]
    assert out.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n" and f"  wrote    {out}" in result.stdout


def test_license_is_an_spdx_expression() -> None:
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    if sys.version_info >= (3, 11):
        import tomllib

        data = tomllib.loads(text)
        assert data["project"]["license"] == "Apache-2.0"
        assert data["build-system"]["requires"] == ["setuptools>=77"]  # the first to take PEP 639's string
    else:
        assert '\nlicense = "Apache-2.0"\n' in text
