"""``bnconvert inspect`` over many files: folders, formats, error records, parallel reads, the plot."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing.context
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bnconvert import batch
from bnconvert.audit import audit_file
from bnconvert.cli import inspect_cmd, main
from bnconvert.errors import BnconvertError, OutputError

from .conftest import fixture_file, require_corpus

GOOD = ["k3_chain.keras", "k1_mode2.h5", "tfk_bn_variants.keras"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["inspect", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Good models, a weights-only .h5 with its JSON, a truncated file, non-model files, a subfolder."""
    root = tmp_path / "models"
    root.mkdir()
    for name in GOOD:
        shutil.copy(fixture_file(name), root / name)
    shutil.copy(fixture_file("k1_weights.h5"), root / "k1_weights.h5")
    shutil.copy(fixture_file("k1_weights.json"), root / "k1_weights.json")
    (root / "broken.h5").write_bytes(fixture_file("k3_chain.h5").read_bytes()[:4000])
    (root / "README.txt").write_text("not a model\n")
    shutil.copy(fixture_file("k1_mode2.expected.npz"), root / "arrays.npz")  # a zip, but not a Keras one
    (root / "empty.keras").write_bytes(b"")
    (root / "sub").mkdir()
    shutil.copy(fixture_file("k3_conv1d.keras"), root / "sub" / "k3_conv1d.keras")
    return root


def expected_order(root: Path) -> list[str]:
    return [str(root / n) for n in ("broken.h5", "k1_mode2.h5", "k1_weights.h5", "k3_chain.keras", "tfk_bn_variants.keras")]


def jsonl(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def plain(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(record))


# --- finding the files -------------------------------------------------------------------------

def test_collect_recognises_models_by_content_and_pairs_companions(folder: Path) -> None:
    found = batch.collect([folder])
    assert [t.path for t in found.tasks] == expected_order(folder)
    assert found.skipped == 3  # README.txt, arrays.npz, empty.keras
    assert found.paired == 1 and found.unsearched == 1
    weights = next(t for t in found.tasks if t.path.endswith("k1_weights.h5"))
    assert weights.companion == str(folder / "k1_weights.json")
    assert all(t.companion is None for t in found.tasks if t is not weights)

    deep = batch.collect([folder], recursive=True)
    assert [t.path for t in deep.tasks] == [*expected_order(folder), str(folder / "sub" / "k3_conv1d.keras")]
    assert deep.unsearched == 0
    # named twice (file and folder): audited once; named explicitly: audited whatever it is
    again = batch.collect([folder / "k3_chain.keras", folder, folder / "README.txt"])
    assert [t.path for t in again.tasks].count(str(folder / "k3_chain.keras")) == 1
    assert again.tasks[-1].path == str(folder / "README.txt")


def test_config_option_replaces_companions(folder: Path) -> None:
    arch = str(folder / "k1_weights.json")
    found = batch.collect([folder], config=arch)
    assert all(t.companion is None and t.config == arch for t in found.tasks)


# --- formats -----------------------------------------------------------------------------------

def test_jsonl_has_one_record_per_model_file_with_the_json_fields(folder: Path) -> None:
    code, out, _ = run(str(folder), "--format", "jsonl")
    assert code == 2  # broken.h5
    records = jsonl(out)
    assert [r["file"] for r in records] == expected_order(folder)
    by_name = {Path(r["file"]).name: r for r in records}
    for name in GOOD:
        single = json.loads(run(str(folder / name), "--json")[1])
        assert by_name[name] == single
        assert by_name[name] == {**plain(audit_file(folder / name)), "config_file": None}
    assert set(by_name["broken.h5"]) == {"file", "error"}


def test_json_is_a_list_of_the_jsonl_records(folder: Path) -> None:
    code, out, _ = run(str(folder), "--format", "json")
    assert code == 2
    assert json.loads(out) == jsonl(run(str(folder), "--format", "jsonl")[1])
    assert json.loads(run(str(folder), "--json")[1]) == json.loads(out)


def test_csv_has_one_row_per_bn_layer(folder: Path) -> None:
    code, out, _ = run(str(folder), "--format", "csv")
    assert code == 2
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == inspect_cmd.CSV_COLUMNS
    records = {r["file"]: r for r in jsonl(run(str(folder), "--format", "jsonl")[1])}
    error_rows = [r for r in rows if r["error"]]
    assert [r["file"] for r in error_rows] == [str(folder / "broken.h5")]
    assert error_rows[0]["error"] == records[str(folder / "broken.h5")]["error"]
    assert error_rows[0]["bn"] == ""
    bn_rows = [r for r in rows if not r["error"]]
    expected = [(f, bn) for f, rec in records.items() if "error" not in rec for bn in rec["batch_norms"]]
    assert len(bn_rows) == len(expected) == sum(rec["summary"]["batch_norms"] for rec in records.values() if "error" not in rec)
    for row, (file, bn) in zip(bn_rows, expected):
        rec = records[file]
        assert (row["file"], row["format"], row["keras_version"], row["bn"]) == (file, rec["format"], rec["keras_version"] or "", bn["name"])
        assert int(row["channels"]) == bn["channels"]
        assert row["axis"] == ",".join(str(a) for a in bn["axis"])
        assert row["fold_action"] == bn["fold"]["action"] and row["fold_reason"] == bn["fold"]["reason"]
        assert row["findings"] == ";".join(f["kind"] for f in bn["findings"])
        for column, key in (("gamma", "gamma"), ("variance", "moving_variance"), ("mean", "moving_mean")):
            for part in ("min", "median", "max"):
                assert float(row[f"{column}_{part}"]) == pytest.approx(bn["statistics"][key][part], rel=1e-12)
        if bn["input_from"]:
            assert row["input_from"] == f"{bn['input_from']['layer']} ({bn['input_from']['class']})"
    flagged = [r for r in bn_rows if r["findings"]]
    assert {k for r in flagged for k in r["findings"].split(";")} >= {"keras1-mode-2", "near-zero-variance", "multi-axis"}


def test_csv_keeps_files_without_bn(tmp_path: Path) -> None:
    record = {"file": "a.h5", "format": "keras2-h5", "keras_version": "2.3.1", "batch_norms": []}
    assert inspect_cmd.csv_rows(record) == [["a.h5", "keras2-h5", "2.3.1"] + [""] * (len(inspect_cmd.CSV_COLUMNS) - 3)]


def test_table_lists_every_good_file_and_errors_go_to_stderr(folder: Path) -> None:
    code, out, err = run(str(folder))
    assert code == 2
    for name in GOOD:
        assert str(folder / name) in out
    assert "broken.h5" not in out
    error_lines = [line for line in err.splitlines() if line.startswith("bnconvert: error:")]
    assert len(error_lines) == 1 and str(folder / "broken.h5") in error_lines[0]
    assert "Traceback" not in err


# --- errors, skips, summary, exit codes --------------------------------------------------------

def test_summary_counts_files_bn_findings_failures_and_skips(folder: Path) -> None:
    _, out, err = run(str(folder), "--format", "jsonl")
    records = [r for r in jsonl(out) if "error" not in r]
    bns = sum(r["summary"]["batch_norms"] for r in records)
    foldable = sum(r["summary"]["foldable"] for r in records)
    assert "5 model files: 4 audited, 1 failed; 3 other files skipped; 1 architecture JSON companion used" in err
    assert f"BN layers: {bns}, foldable {foldable} ({foldable / bns:.0%})" in err
    assert "1 subfolder not searched (add --recursive)" in err
    assert "keras1-mode-2 1" in err and "near-zero-variance 1" in err
    assert "\r" not in err  # not a terminal: no progress bar


def test_companion_architecture_is_used_and_said(folder: Path) -> None:
    records = jsonl(run(str(folder), "--format", "jsonl")[1])
    weights = next(r for r in records if r["file"].endswith("k1_weights.h5"))
    assert weights["config_file"] == str(folder / "k1_weights.json")
    assert any("companion" in n and "k1_weights.json" in n for n in weights["notes"])
    explicit = audit_file(fixture_file("k1_weights.h5"), config=fixture_file("k1_weights.json"))
    assert weights["batch_norms"] == plain(explicit)["batch_norms"]
    assert weights["model_kind"] == explicit["model_kind"] != "weights-only"


def test_all_good_files_exit_0_and_strict_exits_1(folder: Path) -> None:
    (folder / "broken.h5").unlink()
    assert run(str(folder), "--format", "jsonl")[0] == 0
    assert run(str(folder), "--format", "jsonl", "--strict")[0] == 1
    (folder / "k1_mode2.h5").unlink()
    (folder / "tfk_bn_variants.keras").unlink()
    assert run(str(folder), "--format", "jsonl", "--strict")[0] == 0


def test_a_folder_without_models_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    code, out, err = run(str(tmp_path))
    assert code == 2 and out == ""
    assert "no model file found" in err and "1 other file skipped" in err


def test_an_unlistable_folder_is_reported_and_fails_the_run(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # what os.walk lists with; root can read anything, so simulate
        if Path(path).name == "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    (folder / "broken.h5").unlink()
    monkeypatch.setattr(os, "scandir", scandir)
    code, out, err = run(str(folder), "--recursive", "--format", "jsonl")
    assert code == 2  # every file read fine, but a folder was left out
    assert len(jsonl(out)) == 4 and all("batch_norms" in r for r in jsonl(out))
    assert f"bnconvert: error: {folder / 'sub'}: cannot list the folder (Permission denied)" in err
    assert "1 folder could not be listed" in err


def test_error_record_is_one_line_and_others_survive(folder: Path) -> None:
    (folder / "zip_without_weights.keras").write_bytes(_zip_with_config_only())
    records = jsonl(run(str(folder), "--format", "jsonl", "--jobs", "2")[1])
    errors = [r for r in records if "error" in r]
    assert sorted(Path(r["file"]).name for r in errors) == ["broken.h5", "zip_without_weights.keras"]
    assert all("\n" not in r["error"] and r["error"] for r in errors)
    assert sum("batch_norms" in r for r in records) == 4


def _zip_with_config_only() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("config.json", "{}")
    return buffer.getvalue()


# --- parallel, streaming -----------------------------------------------------------------------

def test_jobs_2_gives_the_records_of_jobs_1(folder: Path) -> None:
    one = run(str(folder), "--recursive", "--format", "jsonl", "--jobs", "1")
    two = run(str(folder), "--recursive", "--format", "jsonl", "--jobs", "2")
    assert one[0] == two[0] == 2
    assert one[1] == two[1]
    assert len(jsonl(two[1])) == 6


def test_records_stream_with_a_bounded_window(folder: Path) -> None:
    tasks = batch.collect([folder], recursive=True).tasks * 4
    pulled = 0

    def source():  # counts how far the pool has read ahead
        nonlocal pulled
        for task in tasks:
            pulled += 1
            yield task

    stream = batch.audit_records(source(), jobs=2)
    first = next(stream)
    assert first["file"] == tasks[0].path
    assert pulled <= 1 + 2 * 2  # not the whole list: memory stays flat however many files
    rest = list(stream)
    assert pulled == len(tasks) == 1 + len(rest)
    assert [r["file"] for r in [first, *rest]] == [t.path for t in tasks]


class _CrashingPath(str):
    """A path whose unpickling kills the worker process, as a segfault in a native library would."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (3,))


def test_a_worker_crash_fails_only_its_file(folder: Path) -> None:
    good = [str(folder / n) for n in GOOD]
    tasks = [batch.Task(good[0]), batch.Task(_CrashingPath(folder / "crash.h5")), batch.Task(good[1]), batch.Task(good[2])]
    records = list(batch.audit_records(tasks, jobs=2))
    assert [r["file"] for r in records] == [good[0], str(folder / "crash.h5"), good[1], good[2]]
    assert "process reading this file died" in records[1]["error"]
    assert all("batch_norms" in r for i, r in enumerate(records) if i != 1)


def test_a_crash_on_the_first_file_is_that_file_s_error(folder: Path) -> None:
    tasks = [batch.Task(_CrashingPath(folder / "crash.h5")), batch.Task(str(folder / GOOD[0]))]
    records = list(batch.audit_records(tasks, jobs=2))
    assert "error" in records[0] and "batch_norms" in records[1]


class _DyingProcess(multiprocessing.context.SpawnProcess):
    def run(self) -> None:  # in the child: exit before doing any work
        os._exit(5)


class _DyingContext(multiprocessing.context.SpawnContext):
    Process = _DyingProcess


def test_workers_that_cannot_run_at_all_are_one_clear_error(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "_context", _DyingContext)
    tasks = [batch.Task(str(folder / n)) for n in GOOD]
    with pytest.raises(BnconvertError, match="--jobs 1"):
        list(batch.audit_records(tasks, jobs=2))


def test_audit_record_never_raises_and_is_plain_data(folder: Path) -> None:
    for task in batch.collect([folder]).tasks:
        record = batch.audit_record(task)
        assert json.loads(json.dumps(record)) == record


# --- the plot ----------------------------------------------------------------------------------

def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_plot_option_writes_a_png(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "bn.png"
    code, _, err = run(str(folder), "--recursive", "--format", "jsonl", "--plot", str(out))
    assert code == 2
    width, height = png_size(out)
    assert 800 <= width <= 4000 and 600 <= height <= 3000
    assert f"plot written to {out}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bn.png", "models"]  # no temporary left


def _bn(name: str, scale: tuple[float, float, float], var: tuple[float, float, float], *kinds: tuple[str, str]) -> dict[str, Any]:
    trio = lambda t: dict(zip(("min", "median", "max"), t))  # noqa: E731
    return {"name": name, "statistics": {"fold_scale_abs": trio(scale), "moving_variance": trio(var)},
            "findings": [{"kind": k, "severity": s, "message": "m"} for k, s in kinds]}


def synthetic_records() -> list[dict[str, Any]]:
    return [
        {"file": "/models/a.h5", "batch_norms": [
            _bn("bn1", (0.5, 1.0, 2.0), (0.1, 1.0, 3.0)),
            _bn("bn2", (0.0, 0.3, 40.0), (1e-9, 0.5, 2.0), ("near-zero-variance", "warning"), ("dead-channels", "warning")),
        ], "summary": {}},
        {"file": "/models/b.keras", "batch_norms": [_bn("bn", (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), ("fused-epsilon", "info"))]},
        {"file": "/models/c.h5", "error": "c.h5: damaged"},
        {"file": "/models/d.keras", "batch_norms": []},
    ]


def test_plot_data_keeps_what_the_figure_needs() -> None:
    from bnconvert.plot import PlotData

    data = PlotData()
    for record in synthetic_records():
        data.add(record)
    assert data.files == ["/models/a.h5", "/models/b.keras", "/models/c.h5", "/models/d.keras"]
    assert data.failed == [False, False, True, False]
    assert data.bn_counts == [2, 1, 0, 0]
    assert [p.level for p in data.layers] == ["clean", "warning", "info"]
    assert [p.file_index for p in data.layers] == [0, 0, 1]
    assert data.layers[1].scale == (0.0, 0.3, 40.0) and data.layers[1].variance == (1e-9, 0.5, 2.0)
    assert data.findings[0] == {"near-zero-variance": 1, "dead-channels": 1}


def test_render_draws_ranges_on_log_axes_and_findings_per_file() -> None:
    from bnconvert.plot import PlotData, render

    data = PlotData()
    for record in synthetic_records():
        data.add(record)
    fig = render(data)
    scale_ax, var_ax, findings_ax = fig.axes[:3]
    assert scale_ax.get_yscale() == var_ax.get_yscale() == "log"
    low, high = var_ax.get_ylim()
    assert low < 1e-9 < 3.0 < high  # the lone tiny variance is within reach (robust floor)
    assert scale_ax.get_ylim()[1] > 40.0
    assert "below the axis" in " ".join(t.get_text() for t in scale_ax.get_legend().get_texts())  # min 0 on a log axis
    assert [t.get_text() for t in var_ax.get_xticklabels()] == ["#1 bn1", "#1 bn2", "#2 bn"]
    labels = [t.get_text() for t in findings_ax.get_yticklabels()]
    assert labels[0].startswith("#1 a.h5") and len(labels) == 4
    assert {t.get_text() for t in findings_ax.get_legend().get_texts()} == {"near-zero-variance", "dead-channels", "fused-epsilon"}
    texts = {t.get_text() for t in findings_ax.texts}
    assert {"FAILED to read", "no BN layer"} <= texts
    assert "4 files" in fig._suptitle.get_text() and "3 BN layers, 2 with findings, 1 file failed to read" in fig._suptitle.get_text()

    single = PlotData()
    single.add(synthetic_records()[0])
    assert len(render(single).axes) == 2  # one file: no findings-per-file panel


def test_plot_records_is_atomic_and_checks_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    from bnconvert.plot import plot_records

    out = tmp_path / "plot.png"
    plot_records(synthetic_records(), out)
    width, height = png_size(out)
    assert width >= 800 and height >= 600
    before = out.read_bytes()

    def broken_savefig(self: Any, fh: Any, **kwargs: Any) -> None:
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OutputError, match="No space left"):
        plot_records(synthetic_records(), out, force=True)  # without force an existing file is refused
    assert out.read_bytes() == before  # the old image is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary left
    monkeypatch.undo()

    with pytest.raises(OutputError, match=r"\.xyz"):
        plot_records(synthetic_records(), tmp_path / "plot.xyz")
    with pytest.raises(OutputError, match="does not exist"):
        plot_records(synthetic_records(), tmp_path / "missing" / "plot.png")


def test_a_bad_plot_target_is_refused_before_reading(folder: Path, tmp_path: Path) -> None:
    code, out, err = run(str(folder), "--format", "jsonl", "--plot", str(tmp_path / "no" / "bn.png"))
    assert code == 2 and out == ""
    assert err.strip() == f"bnconvert: error: {tmp_path / 'no' / 'bn.png'}: the folder {tmp_path / 'no'} does not exist"


def test_plot_without_matplotlib_is_a_clear_error(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    from bnconvert.plot import require_matplotlib

    with pytest.raises(BnconvertError, match=r"bnconvert\[plot\]"):
        require_matplotlib()
    code, out, err = run(str(folder), "--plot", str(tmp_path / "x.png"))
    assert code == 2 and out == ""  # refused before reading anything
    assert "pip install 'bnconvert[plot]'" in err and "Traceback" not in err


def test_the_cli_imports_no_matplotlib() -> None:
    import subprocess

    code = "import sys, bnconvert.cli, bnconvert.batch; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}).returncode == 0


def test_inspecting_one_file_imports_only_what_it_needs() -> None:
    # commands are imported when named; process pools only with --jobs > 1
    import subprocess

    code = (
        "import sys\n"
        "from bnconvert.cli import main\n"
        f"try: main(['inspect', {str(fixture_file('k3_chain.h5'))!r}])\n"
        "except SystemExit: pass\n"
        "heavy = ['onnx', 'onnxruntime', 'tensorflow', 'keras', 'multiprocessing', 'concurrent.futures.process',\n"
        "         'bnconvert.onnx', 'bnconvert.check', 'bnconvert.writers']\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "sys.exit('imported: ' + ', '.join(loaded) if loaded else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "conv" in done.stdout  # it did inspect the file


# --- the corpus --------------------------------------------------------------------------------

@pytest.mark.corpus
def test_corpus_recursive_jsonl_plot(tmp_path: Path) -> None:
    corpus = require_corpus()
    heads = {p: p.read_bytes()[:8] for p in sorted(corpus.rglob("*")) if p.is_file()}
    models = [str(p) for p, h in heads.items() if h.startswith((b"\x89HDF\r\n\x1a\n", b"PK\x03\x04"))]
    companions = [p for p in heads if p.suffix == ".json" and p.with_suffix(".h5") in heads]
    assert len(models) == 22 and len(companions) == 2  # the corpus README's counts

    out = tmp_path / "bn.png"
    result = CliRunner().invoke(main, ["inspect", str(corpus), "--recursive", "--jobs", "2", "--format", "jsonl",
                                       "--plot", str(out)])
    records = jsonl(result.stdout)
    assert sorted(r["file"] for r in records) == sorted(models)
    assert all(("error" in r) != ("batch_norms" in r) for r in records)
    failed = [r for r in records if "error" in r]
    assert result.exit_code == (2 if failed else 0), failed
    used = [r for r in records if r.get("config_file")]
    assert sorted(Path(r["config_file"]) for r in used) == sorted(companions)
    assert all(r["model_kind"] != "weights-only" for r in used)
    assert "22 model files" in result.stderr and "0 other files skipped" in result.stderr
    assert "2 architecture JSON companions used" in result.stderr
    width, height = png_size(out)
    assert width >= 1000 and height >= 800


def test_progress_line_is_redrawn_in_place_and_cleared() -> None:
    stream = io.StringIO()
    progress = inspect_cmd._Progress(4, stream, enabled=True)
    progress.update(1, 0, "/m/a.h5")
    progress.update(4, 1, "/m/d.keras")  # the last one is always drawn, however soon
    progress.clear()
    text = stream.getvalue()
    assert "\n" not in text
    frames = text.split("\r")
    assert frames[1].startswith("[#####...............] 1/4 files  a.h5")
    assert frames[2].startswith("[####################] 4/4 files, 1 failed  d.keras")
    assert frames[3].strip() == "" and frames[-1] == ""
    silent = io.StringIO()
    inspect_cmd._Progress(4, silent, enabled=False).update(1, 0, "x")
    assert silent.getvalue() == ""
