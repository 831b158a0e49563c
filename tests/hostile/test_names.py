"""Layer names (and file names) are data: whatever they hold, no output line can be forged, the
terminal never receives an escape sequence, and nothing crashes on text that cannot be encoded.

Every name here is planted in the ``config.json`` of a copy of a fixture (``.keras`` weights are
found by class and order, so the file stays readable), then the file goes through every command
and every output format.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from bnconvert.cli import error_text, main
from bnconvert.cli.inspect_cmd import _Progress
from bnconvert.errors import FormatError, InternalError
from bnconvert.text import one_line

from ..conftest import fixture_file
from .conftest import folder_state

SOURCE = "k3_dense_tanh.keras"

#: names that would take over a terminal or forge a line if printed as they are
NAMES = {
    "osc_title": "bn\x1b]0;pwned\x07",
    "csi": "bn\x1b[2J\x1b[31mred",
    "newline": "bn\nbnconvert: error: forged line",
    "carriage_return": "bn\rforged",
    "nul_del": "bn\x00x\x7f",
    "c1": "bn\x9b31m\x85next",
    "bidi": "bn\u202eevil",
    "line_separator": "bn\u2028forged",
}
#: a lone surrogate: valid in a JSON escape, invalid as UTF-8 (and in HDF5 and ONNX names)
SURROGATE = "bn\ud800x"

_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def named(folder: Path, name: str, layer: str = "batch_normalization", *, weights_found: bool = True) -> Path:
    """A copy of the fixture whose ``layer`` is called ``name``. With ``weights_found=False`` its
    weight group is renamed too, so the reader cannot find its weights: an error naming it."""
    src = zipfile.ZipFile(fixture_file(SOURCE))
    members = {n: src.read(n) for n in src.namelist()}
    config = json.loads(members["config.json"])
    for entry in config["config"]["layers"]:
        if entry["config"]["name"] == layer:
            entry["config"]["name"] = name
    members["config.json"] = json.dumps(config).encode()
    if not weights_found:
        import h5py

        buffer = io.BytesIO(members["model.weights.h5"])
        with h5py.File(buffer, "r+") as f:
            f.move(f"layers/{layer}", f"layers/{layer}_elsewhere")
        members["model.weights.h5"] = buffer.getvalue()
    path = folder / f"{layer}.keras"
    with zipfile.ZipFile(path, "w") as out:
        for member, data in members.items():
            out.writestr(member, data)
    return path


def assert_safe(text: str) -> None:
    """Nothing in ``text`` but printable characters and line breaks."""
    bad = _UNSAFE.search(text)
    assert bad is None, f"raw {bad.group()!r} reached the terminal: {text[max(0, bad.start() - 60):bad.end() + 20]!r}"
    assert not any(line.lstrip().startswith(("forged", "bnconvert: error: forged")) for line in text.splitlines()), text


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert not isinstance(result.exception, (UnicodeError, AttributeError, TypeError)), result.exception
    assert_safe(result.stdout)
    assert_safe(result.stderr)
    return result


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error: "), result.stderr
    return lines[0]


ALL = {**NAMES, "surrogate": SURROGATE}


# -- the one function ----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "shown"), [
    ("a\x1bb", "a\\x1bb"), ("a\nb", "a\\nb"), ("a\rb\tc", "a\\rb\\tc"), ("\x00", "\\x00"), ("\x7f", "\\x7f"),
    ("\x9b", "\\x9b"), ("\ud800", "\\ud800"), ("\udcff", "\\udcff"), ("\u2028", "\\u2028"), ("\u202e", "\\u202e"),
    ("plain name_1/ünïcödé 名前 C:\\path", "plain name_1/ünïcödé 名前 C:\\path"),
])
def test_one_line(raw: str, shown: str) -> None:
    assert one_line(raw) == shown
    assert one_line(one_line(raw)) == shown  # escaping twice changes nothing
    one_line(raw).encode("utf-8")  # always encodable


def test_error_lines_are_escaped_in_one_place() -> None:
    assert error_text(FormatError("m.keras: layer 'a\x1b]0;t\x07\nb'")) == "bnconvert: error: m.keras: layer 'a\\x1b]0;t\\x07\\nb'"
    assert "\n" not in error_text(InternalError("x\ny\ud800"))


def test_progress_line_escapes_file_names() -> None:
    stream = io.StringIO()
    progress = _Progress(2, stream, enabled=True)
    progress.update(1, 0, "folder/m\x1b]0;pwned\x07\udcff.keras")
    assert "\x1b" not in stream.getvalue() and "\udcff" not in stream.getvalue()
    assert "\\x1b" in stream.getvalue()


# -- inspect: table, json, jsonl, csv ------------------------------------------------------------


@pytest.mark.parametrize("key", ALL)
def test_inspect_table(key: str, tmp_path: Path) -> None:
    path = named(tmp_path, ALL[key])
    plain = CliRunner().invoke(main, ["inspect", str(fixture_file(SOURCE))])
    result = run("inspect", str(path))
    assert result.exit_code == 0, result.output
    assert one_line(ALL[key]) in result.stdout
    assert len(result.stdout.splitlines()) == len(plain.stdout.splitlines())
    columns = [line.index("<-") for line in result.stdout.splitlines() if "<-" in line]
    assert len(columns) == 3 and len(set(columns)) == 1  # the table stays aligned


@pytest.mark.parametrize("key", ALL)
def test_inspect_json_keeps_the_exact_name(key: str, tmp_path: Path) -> None:
    path = named(tmp_path, ALL[key])
    result = run("inspect", str(path), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["batch_norms"][0]["name"] == ALL[key]
    lines = run("inspect", str(path), str(fixture_file(SOURCE)), "--format", "jsonl").stdout.splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["batch_norms"][0]["name"] == ALL[key]


@pytest.mark.parametrize("key", ALL)
def test_inspect_csv(key: str, tmp_path: Path) -> None:
    path = named(tmp_path, ALL[key])
    result = run("inspect", str(path), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 4  # header + one line per BN layer
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["bn"] == one_line(ALL[key]) and rows[0]["axis"] == "-1"


def test_csv_cells_cannot_be_formulas(tmp_path: Path) -> None:
    path = named(tmp_path, "=HYPERLINK(\"http://x\";\"y\")")
    rows = list(csv.DictReader(io.StringIO(run("inspect", str(path), "--format", "csv").stdout)))
    assert rows[0]["bn"].startswith("'=")


# -- error lines -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ALL)
@pytest.mark.parametrize("command", ["inspect", "inspect-folder", "fold", "export", "verify"])
def test_error_line_naming_the_layer(command: str, key: str, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    path = named(folder, ALL[key], weights_found=False)
    out = tmp_path / "out"
    out.mkdir()
    argv = {
        "inspect": ["inspect", str(path)],
        "inspect-folder": ["inspect", str(folder)],
        "fold": ["fold", str(path), "-o", str(out / "x.keras"), "--no-check"],
        "export": ["export", str(path), "-o", str(out / "x.onnx"), "--no-check"],
        "verify": ["verify", str(path), str(path)],
    }[command]
    result = run(*argv)
    if command == "inspect-folder":  # the error record's line, then the run's summary
        assert result.exit_code == 2, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("bnconvert: error: ")]
        assert len(errors) == 1 and str(path) in errors[0], result.stderr
        assert "1 failed" in result.stderr
    else:
        assert str(path) in one_error_line(result)
    assert list(out.iterdir()) == []


# -- fold, export, verify --------------------------------------------------------------------------


@pytest.mark.parametrize("key", NAMES)
@pytest.mark.parametrize("layer", ["batch_normalization", "dense"])
def test_fold_keeps_the_name_and_prints_it_escaped(layer: str, key: str, tmp_path: Path) -> None:
    path = named(tmp_path, NAMES[key], layer)
    out = tmp_path / "folded.keras"
    result = run("fold", str(path), "-o", str(out), "--no-check")
    if "\x00" in NAMES[key]:  # a Keras file keeps layer names in HDF5 (no NUL there): refused, folded away or not
        assert "NUL" in one_error_line(result) and not out.exists()
        return
    assert result.exit_code == 0, result.output
    assert one_line(NAMES[key]) in result.stdout
    if layer == "dense":  # stays in the folded model, under its own name
        config = json.loads(zipfile.ZipFile(out).read("config.json"))
        assert NAMES[key] in [entry["config"]["name"] for entry in config["config"]["layers"]]
    assert json.loads(run("fold", str(path), "--dry-run", "--json").stdout)["batch_norms"] is not None


@pytest.mark.parametrize("key", NAMES)
def test_export_with_hostile_names(key: str, tmp_path: Path) -> None:
    path = named(tmp_path, NAMES[key], "dense")
    out = tmp_path / "m.onnx"
    result = run("export", str(path), "-o", str(out), "--no-check", "--no-fold")
    assert result.exit_code == 0, result.output
    import onnx

    onnx.checker.check_model(onnx.load(str(out)))


def test_fold_and_export_checked_with_a_hostile_name(tmp_path: Path) -> None:
    path = named(tmp_path, NAMES["newline"], "dense")
    for argv in (["fold", str(path), "-o", str(tmp_path / "f.keras")], ["export", str(path), "-o", str(tmp_path / "e.onnx")],
                 ["verify", str(path), str(fixture_file(SOURCE)), "--locate"]):
        result = run(*argv)
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("layer", ["batch_normalization", "dense"])
@pytest.mark.parametrize("command", ["fold", "export"])
def test_a_lone_surrogate_is_refused_before_anything_is_written(command: str, layer: str, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    path = named(folder, SURROGATE, layer)
    out = folder / ("out.keras" if command == "fold" else "out.onnx")
    before = folder_state(folder)
    for extra in ([], ["--no-check"]):
        result = run(command, str(path), "-o", str(out), *extra)
        line = one_error_line(result)
        assert "lone surrogate" in line and "\\ud800" in line
        assert folder_state(folder) == before


# -- file names --------------------------------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names are bytes")
def test_file_names_are_data_too(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    shutil.copy(fixture_file(SOURCE), folder / "m\x1b]0;pwned\x07.keras")
    shutil.copy(fixture_file(SOURCE), os.path.join(os.fsencode(folder), b"undecodable\xff.keras"))
    (folder / "broken\nbnconvert: error: forged.keras").write_bytes(b"PK\x03\x04 not a zip")
    for fmt in ("table", "json", "jsonl", "csv"):
        result = run("inspect", str(folder), "--format", fmt)
        assert result.exit_code == 2, result.output  # the broken file
        assert len([line for line in result.stderr.splitlines() if line.startswith("bnconvert: error:")]) == 1
    records = json.loads(run("inspect", str(folder), "--json").stdout)
    assert sorted(os.path.basename(r["file"]) for r in records) == sorted(
        ["m\x1b]0;pwned\x07.keras", "undecodable\udcff.keras", "broken\nbnconvert: error: forged.keras"])
