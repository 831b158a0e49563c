"""Provenance stamps: written into folded Keras files and ONNX files in place, read back as data,
shown by ``inspect``; a hostile stamp (huge, wrong types, not JSON) is ignored with a note.

Keras 3 and tf-keras loading stamped files is tested in ``tests/test_keep.py`` (one process each)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import bnconvert
from bnconvert.check.results import CheckResult
from bnconvert.cli import main
from bnconvert.errors import InternalError
from bnconvert.fold import fold_model
from bnconvert.onnx.export import to_onnx_parts
from bnconvert.onnx.save import read_metadata_props, stamp_onnx, validate_file, write_onnx
from bnconvert.provenance import (
    H5_ATTRIBUTE,
    MAX_PROVENANCE_CHARS,
    ONNX_KEY,
    SCHEMA,
    ZIP_ENTRY,
    make_provenance,
    onnx_props,
    parse_provenance,
)
from bnconvert.readers import load
from bnconvert.writers import stamp_keras, write_model

from .conftest import fixture_file

KEPT = "batch_normalization_1"
_CHECK = {"checked": True, "passed": True, "status": "passed", "error": 2.5e-7, "atol": 1e-5, "rtol": 1e-4,
          "reference": {"kind": "keras", "runner": "Keras 3.15.1 (keras, TensorFlow 2.21.0): /tmp/x.h5"}}
#: the keys to_onnx_parts writes today that the stamp writes too (the pipeline writes them once)
_STAMPED_KEYS = {"source_file", "source_format", "keras_version", "fold_summary"}


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """k3_chain (.h5 and .keras) folded with ``keep=[KEPT]``, written and stamped."""
    folder = tmp_path_factory.mktemp("prov")
    out = {}
    for name in ("k3_chain.h5", "k3_chain.keras"):
        model = load(fixture_file(name))
        new, report = fold_model(model, keep=[KEPT])
        dst = folder / name.replace(".", ".folded.")
        fmt = write_model(new, dst, original=model)
        stamp_keras(dst, fmt, make_provenance(model.source, made="fold", fold=report, check=_CHECK))
        out[name] = dst
    return out


def _copy(src: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return dst


def _ignored(path: Path) -> list[str]:
    model = load(path)
    assert model.source.provenance is None
    notes = [n for n in model.source.notes if "provenance stamp" in n]
    assert len(notes) == 1 and "is ignored" in notes[0], model.source.notes
    return notes


# -- the stamp itself -----------------------------------------------------------------------------

def test_stamp_contents(folded):
    prov = load(folded["k3_chain.h5"]).source.provenance
    assert prov["schema"] == SCHEMA and prov["bnconvert_version"] == bnconvert.__version__ and prov["made"] == "fold"
    assert prov["when"].endswith("Z") and prov["source"] == {
        "file": "k3_chain.h5", "format": "keras3-h5", "keras_version": "3.15.1", "backend": "tensorflow"}
    assert prov["check"]["against"] == "Keras 3.15.1 (keras, TensorFlow 2.21.0)"  # no path of the check
    assert prov["fold"]["totals"]["stays"] == 1 and prov["fold"]["keep"] == [KEPT]
    entries = {bn["name"]: bn for bn in prov["fold"]["batch_norms"]}
    assert entries[KEPT]["reason"] == f"kept by --keep '{KEPT}'" and entries["batch_normalization"]["target"] == "conv2d"


def test_check_verdict_when_no_check_ran():
    skipped = CheckResult.not_run("fold", "m.h5", "--no-check")
    prov = make_provenance(None, made="fold", check=skipped)
    assert prov["check"]["checked"] is False and prov["check"]["reason"] == "--no-check"
    assert prov["fold"] is None and prov["source"]["file"] is None
    assert parse_provenance(json.dumps(prov), "test") == (prov, [])
    assert onnx_props(prov)["check"] == "not checked: --no-check"


def test_a_stamped_file_is_stamped_again_in_place(folded, tmp_path):
    for name, src in folded.items():
        dst = _copy(src, tmp_path, src.name)
        prov = make_provenance(load(src).source, made="fold", check=None, when="2000-01-01T00:00:00Z")
        stamp_keras(dst, "keras3-zip" if dst.suffix == ".keras" else "keras3-h5", prov)
        assert load(dst).source.provenance["when"] == "2000-01-01T00:00:00Z", name
        if dst.suffix == ".keras":
            assert zipfile.ZipFile(dst).namelist().count(ZIP_ENTRY) == 1


def test_a_long_fold_log_fits_hdf5(folded, tmp_path):
    """A fold log past the 64 KB HDF5 object-header limit (variable-length text lives in the heap)."""
    dst = _copy(folded["k3_chain.h5"], tmp_path, "long.h5")
    entry = {"name": "bn", "action": "stays", "target": None, "via": [], "absorbed": [], "reason": "x" * 100, "kept": None}
    fold = {"version": 1, "totals": {"batch_norms": 3000}, "keep": [], "batch_norms": [entry] * 3000,
            "dropped": [], "created_bias": []}
    stamp_keras(dst, "keras3-h5", make_provenance(None, made="fold", fold=fold))
    assert len(load(dst).source.provenance["fold"]["batch_norms"]) == 3000


# -- hostile stamps ---------------------------------------------------------------------------------

def _valid() -> dict:
    return make_provenance(None, made="fold", check=_CHECK)


_BAD_TEXT = {
    "not json": ("{not json", "not valid JSON"),
    "a list": ("[1, 2]", "not an object"),
    "other schema": (json.dumps({**_valid(), "schema": "someone-else/9"}), "schema"),
    "wrong type": (json.dumps({**_valid(), "check": {**_valid()["check"], "max_error": "tiny"}}), "'check.max_error' is a str"),
    "bad fold entry": (json.dumps({**_valid(), "fold": {"batch_norms": [{"name": 3}]}}), "'fold.batch_norms[0].name'"),
    "deep": ("[" * 100_000 + "]" * 100_000, "nested"),
    "huge": (json.dumps({**_valid(), "pad": "x" * MAX_PROVENANCE_CHARS}), "characters long"),
}


@pytest.mark.parametrize("case", sorted(_BAD_TEXT))
def test_parse_ignores_a_bad_stamp_with_a_note(case):
    text, why = _BAD_TEXT[case]
    stamp, notes = parse_provenance(text, "where")
    assert stamp is None and len(notes) == 1 and why in notes[0] and "(where) is ignored" in notes[0]


def test_hostile_hdf5_stamps_are_ignored(folded, tmp_path):
    values = {
        "json": "{not json",
        "int": np.int64(5),
        "list": np.array([b"a", b"b"]),
        "types": json.dumps({**_valid(), "when": 5}),
        "huge": "x" * (MAX_PROVENANCE_CHARS + 1),
    }
    for case, value in values.items():
        dst = _copy(folded["k3_chain.h5"], tmp_path, f"{case}.h5")
        with h5py.File(dst, "r+") as f:
            del f.attrs[H5_ATTRIBUTE]
            f.attrs[H5_ATTRIBUTE] = value
        (note,) = _ignored(dst)
        assert "root attribute 'bnconvert'" in note, case


def test_hostile_zip_stamps_are_ignored(folded, tmp_path):
    src = folded["k3_chain.keras"]
    values = {"json": b"{not json", "utf8": b"\xff\xfe{}", "huge": b" " * (MAX_PROVENANCE_CHARS + 1),
              "types": json.dumps({**_valid(), "source": {"file": ["a"]}}).encode()}
    for case, value in values.items():
        dst = tmp_path / f"{case}.keras"
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for info in zin.infolist():
                zout.writestr(info, value if info.filename == ZIP_ENTRY else zin.read(info))
        (note,) = _ignored(dst)
        assert f"archive entry '{ZIP_ENTRY}'" in note, case
    damaged = _copy(src, tmp_path, "crc.keras")  # the stamp's bytes changed after its CRC was written
    data = damaged.read_bytes()
    at = data.rindex(b'"schema"')
    damaged.write_bytes(data[:at] + b"'" + data[at + 1:])
    (note,) = _ignored(damaged)
    assert "CRC" in note


# -- ONNX -----------------------------------------------------------------------------------------------

def _export(model, tmp_path: Path, name: str, external: bool) -> Path:  # noqa: ANN001
    proto, constants = to_onnx_parts(model)
    kept = [p for p in proto.metadata_props if p.key not in _STAMPED_KEYS]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    path = tmp_path / name
    write_onnx(proto, constants, path, external_data=f"{name}.data" if external else None)
    return path


def _ort(path: Path, x: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0], sess.get_modelmeta().custom_metadata_map


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_onnx_stamp_appends_metadata_in_place(tmp_path, external):
    model = load(fixture_file("k3_chain.h5"))
    folded, report = fold_model(model, keep=[KEPT])
    path = _export(folded, tmp_path, "m.onnx", external)
    x = np.random.default_rng(0).uniform(0, 1, (2, 12, 12, 3)).astype(np.float32)
    before, _ = _ort(path, x)
    size = path.stat().st_size
    props = onnx_props(make_provenance(model.source, made="export", fold=report, check=_CHECK))
    stamp_onnx(path, props)
    assert path.stat().st_size - size < 4096  # appended, not rewritten
    validate_file(path)  # onnx.checker, full check: no duplicate metadata key
    loaded = onnx.load(str(path))
    got = {p.key: p.value for p in loaded.metadata_props}
    assert got["producer"] == f"bnconvert {bnconvert.__version__}" and got["source_file"] == "k3_chain.h5"
    assert json.loads(got[ONNX_KEY])["fold"]["keep"] == [KEPT]
    assert got["fold_summary"] == "4 of 5 BN folded (4 backward), 1 stay (1 kept by --keep)"
    assert dict(read_metadata_props(path)) == got
    after, meta = _ort(path, x)
    np.testing.assert_array_equal(after, before)
    assert meta[ONNX_KEY] == got[ONNX_KEY]
    ops = [n.op_type for n in loaded.graph.node]
    assert "BatchNormalization" in ops or "Mul" in ops  # the kept BN is in the graph
    with pytest.raises(InternalError, match="already in the file"):
        stamp_onnx(path, {"source_file": "again"})


def test_kept_bn_is_exported(tmp_path):
    model = load(fixture_file("k3_chain.h5"))
    ops_all = [n.op_type for n in onnx.load(str(_export(fold_model(model)[0], tmp_path, "a.onnx", False))).graph.node]
    ops_kept = [n.op_type for n in onnx.load(str(_export(fold_model(model, keep=[KEPT])[0], tmp_path, "b.onnx", False))).graph.node]
    assert len(ops_kept) > len(ops_all) and not {"BatchNormalization", "Mul"} & set(ops_all)


# -- inspect ------------------------------------------------------------------------------------------------

def _inspect(*args: str) -> str:
    result = CliRunner().invoke(main, ["inspect", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def test_inspect_shows_the_provenance(folded, tmp_path):
    text = _inspect(str(folded["k3_chain.h5"]))
    (line,) = [line for line in text.splitlines() if line.startswith("  made ")]
    assert f"by bnconvert {bnconvert.__version__} (fold) from k3_chain.h5 (keras3-h5, Keras 3.15.1)" in line
    assert "4 of 5 BN folded (4 backward), 1 stay (1 kept by --keep)" in line
    assert line.endswith("check: passed against Keras 3.15.1 (keras, TensorFlow 2.21.0) (max |diff| / max |reference| 2.5e-07)")
    data = json.loads(_inspect("--json", str(folded["k3_chain.keras"])))
    assert data["provenance"]["source"]["file"] == "k3_chain.keras" and data["provenance"]["fold"]["keep"] == [KEPT]
    assert json.loads(_inspect("--json", str(fixture_file("k3_chain.h5"))))["provenance"] is None
    bad = _copy(folded["k3_chain.h5"], tmp_path, "bad.h5")
    with h5py.File(bad, "r+") as f:
        f.attrs[H5_ATTRIBUTE] = "{oops"
    text = _inspect(str(bad))
    assert "  made " not in text and "note     the bnconvert provenance stamp (root attribute 'bnconvert') is ignored" in text
