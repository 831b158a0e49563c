"""``bnconvert inspect`` on one file: the table, the JSON object, and the exit codes (0, 1, 2)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from bnconvert.audit import audit_file
from bnconvert.cli import main

from .conftest import fixture_file

CLEAN = "k3_chain.keras"  # 5 BN, all fold, no finding
FLAGGED = "k1_mode2.h5"  # a Keras 1 mode-2 BN: a warning finding


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["inspect", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_table_lists_every_bn_layer_with_its_fold() -> None:
    path = fixture_file(CLEAN)
    expected = audit_file(path)
    code, out, err = run(str(path))
    assert code == 0
    assert err == ""  # one file: no progress, no summary
    assert out.splitlines()[0] == str(path)
    assert f"BN       {len(expected['batch_norms'])} layers, {expected['summary']['foldable']} can fold" in out
    for bn in expected["batch_norms"]:
        line = next(row for row in out.splitlines() if row.strip().startswith(bn["name"] + " "))
        assert f"<- {bn['fold']['target']}" in line
        assert str(bn["channels"]) in line.split()


def test_json_is_the_audit_of_the_file() -> None:
    path = fixture_file(CLEAN)
    code, out, err = run(str(path), "--json")
    assert code == 0 and err == ""
    report = json.loads(out)
    assert isinstance(report, dict)
    assert report == {**json.loads(json.dumps(audit_file(path))), "config_file": None}
    assert [bn["name"] for bn in report["batch_norms"]] == [f"batch_normalization{s}" for s in ("", "_1", "_2", "_3", "_4")]
    assert all(bn["fold"]["action"] == "backward" for bn in report["batch_norms"])


def test_format_json_equals_json_alias() -> None:
    path = str(fixture_file(CLEAN))
    assert run(path, "--json")[1] == run(path, "--format", "json")[1]


def test_json_with_another_format_is_a_usage_error() -> None:
    code, _, err = run(str(fixture_file(CLEAN)), "--json", "--format", "csv")
    assert code == 2
    assert "--json" in err and "Traceback" not in err


def test_strict_exits_1_on_warning_findings_and_still_prints() -> None:
    path = str(fixture_file(FLAGGED))
    code, out, _ = run(path)
    assert code == 0
    assert "keras1-mode-2" in out
    code, out, _ = run(path, "--strict")
    assert code == 1
    assert "keras1-mode-2" in out
    assert run(str(fixture_file(CLEAN)), "--strict")[0] == 0


def test_truncated_file_exits_2_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.h5"
    broken.write_bytes(fixture_file("k3_chain.h5").read_bytes()[:4000])
    code, out, err = run(str(broken))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("bnconvert: error: ") and str(broken) in lines[0]
    assert "Traceback" not in err
    assert run(str(broken), "--strict")[0] == 2  # a failure outranks findings


def test_bad_file_in_json_mode_is_an_error_record(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    code, out, err = run(str(missing), "--json")
    assert code == 2
    assert json.loads(out) == {"file": str(missing), "error": f"{missing}: no such file"}
    assert err.startswith("bnconvert: error: ") and "Traceback" not in err


def test_architecture_json_named_alone_says_what_to_do() -> None:
    code, _, err = run(str(fixture_file("k1_weights.json")))
    assert code == 2
    assert "--config" in err and "Traceback" not in err


def test_config_option_reads_a_weights_only_file() -> None:
    weights, arch = fixture_file("k1_weights.h5"), fixture_file("k1_weights.json")
    code, out, _ = run(str(weights), "--config", str(arch), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["config_file"] == str(arch)
    assert report["batch_norms"] == json.loads(json.dumps(audit_file(weights, config=arch)))["batch_norms"]


def test_a_stateful_recurrent_layer_is_noted_with_what_bnconvert_does() -> None:
    """Stateful layers (plain or inside Bidirectional) run from zero states: inspect says so."""
    from bnconvert.audit import stateful_notes
    from bnconvert.model import Layer, Model, TensorRef

    inp = Layer("x", "InputLayer", {"batch_shape": [2, 5, 3]})
    lstm = Layer("lstm", "LSTM", {"units": 4, "stateful": True}, calls=[[TensorRef("x")]])
    bi = Layer("bi", "Bidirectional", {"layer": {"class_name": "GRU", "config": {"units": 2, "stateful": True}}},
               calls=[[TensorRef("lstm")]])
    plain = Layer("gru", "GRU", {"units": 2, "stateful": False}, calls=[[TensorRef("bi")]])
    notes = stateful_notes(Model("m", [inp, lstm, bi, plain], [TensorRef("x")], [TensorRef("gru")]))
    assert [n.split(" is ")[0] for n in notes] == ["'lstm' (LSTM)", "'bi' (Bidirectional)"]
    assert all("zero initial states" in n for n in notes)
