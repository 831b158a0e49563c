"""``keep=`` (``--keep PATTERN``): the BN it names stay untouched, the rest fold; a pattern that
names no BN is an error. The folded files (stamped with their provenance) are loaded back in
Keras 3 (``safe_mode``) and tf-keras, each in one process for every case, and still compute what
the original computes, with the kept BN layer in them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bnconvert.errors import FoldError
from bnconvert.fold import fold_log, fold_model, plan_folds
from bnconvert.provenance import make_provenance
from bnconvert.readers import load
from bnconvert.writers import stamp_keras, write_model

from .check.subproc import run_json
from .conftest import fixture_file

KEPT = "batch_normalization_1"  # k3_chain / tfk_chain: Conv-BN-Depthwise-BN(kept)-Separable-BN-...
_CHECK = {"checked": True, "passed": True, "status": "passed", "error": 2.5e-7, "atol": 1e-5, "rtol": 1e-4,
          "reference": {"kind": "keras", "runner": "Keras 3.15.1 (keras, TensorFlow 2.21.0): /tmp/x.keras"}}


def _by_name(report):  # noqa: ANN001, ANN202
    return {bn.path: bn for bn in report.batch_norms}


def test_kept_bn_stays_and_the_rest_fold():
    model = load(fixture_file("k3_chain.keras"))
    folded, report = fold_model(model, keep=[KEPT])
    outcome = _by_name(report)
    assert outcome[KEPT].action == "stays" and outcome[KEPT].reason == f"kept by --keep '{KEPT}'"
    assert outcome[KEPT].kept == KEPT
    assert all(bn.action == "backward" for name, bn in outcome.items() if name != KEPT)
    assert report.totals["stays"] == 1 and report.totals["folded"] == 4
    assert report.to_dict()["kept"] == [KEPT] and report.to_dict()["keep"] == [KEPT]
    # the kept BN keeps its own parameters, exactly
    for meaning, array in model[KEPT].weights.items():
        np.testing.assert_array_equal(folded[KEPT].weights[meaning], array)
    assert [layer.name for layer in folded.layers if "batch_normalization" in layer.name] == [KEPT]


def test_globs_match_names_and_nested_paths():
    model = load(fixture_file("k3_functional.keras"))  # nested inner_seq/inner_seq_bn, inner_fn/inner_fn_bn
    by_path = {d.path: d for d in plan_folds(model, keep=["inner_seq/*"])}
    assert by_path["inner_seq/inner_seq_bn"].kept == "inner_seq/*"
    assert by_path["inner_fn/inner_fn_bn"].action == "backward"
    by_name = {d.path: d for d in plan_folds(model, keep=["inner_fn_b?", "bn_head"])}
    assert by_name["inner_fn/inner_fn_bn"].kept == "inner_fn_b?" and by_name["bn_head"].kept == "bn_head"
    assert by_name["inner_seq/inner_seq_bn"].action == "backward"
    assert not any(d.kept for d in plan_folds(model, keep=["*"]) if d.kept != "*")


def test_nothing_merges_into_a_kept_bn():
    model = load(fixture_file("k3_educba.keras"))  # batch_normalization merges into _1 without --keep
    assert {d.path: d.action for d in plan_folds(model)}["batch_normalization"] == "merge"
    decisions = {d.path: d for d in plan_folds(model, keep=["batch_normalization_1"])}
    first = decisions["batch_normalization"]
    assert first.action == "stays" and "is kept by --keep 'batch_normalization_1'" in first.reason
    folded, _ = fold_model(model, keep=["batch_normalization_1"])
    for meaning, array in model["batch_normalization_1"].weights.items():
        np.testing.assert_array_equal(folded["batch_normalization_1"].weights[meaning], array)


def test_a_pattern_matching_no_bn_is_an_error():
    model = load(fixture_file("k3_chain.keras"))
    with pytest.raises(FoldError) as info:
        fold_model(model, keep=[KEPT, "batch_norm_1", "Batch*"])  # a typo; globs are case-sensitive
    message = str(info.value)
    assert "--keep 'batch_norm_1', 'Batch*' matches no BatchNormalization layer" in message
    assert "'batch_normalization'" in message and "k3_chain.keras" in message
    assert "\n" not in message


def test_fold_log_is_compact_json():
    model = load(fixture_file("k3_educba_neg_gamma.keras"))
    _, report = fold_model(model, keep=["batch_normalization_4"])
    log = fold_log(report)
    assert json.loads(json.dumps(log)) == log
    assert set(log) == {"version", "totals", "keep", "batch_norms", "dropped", "created_bias"}
    assert [bn["name"] for bn in log["batch_norms"]] == [bn.path for bn in report.batch_norms]
    for bn in log["batch_norms"]:
        assert set(bn) == {"name", "action", "target", "via", "absorbed", "reason", "kept"}
        assert (bn["target"] is None) == (bn["action"] == "stays")
    kept = [bn for bn in log["batch_norms"] if bn["kept"]]
    assert [bn["name"] for bn in kept] == ["batch_normalization_4"] and log["keep"] == ["batch_normalization_4"]
    stays = [bn for bn in log["batch_norms"] if bn["action"] == "stays" and not bn["kept"]]
    assert stays and all("cannot fold" in bn["reason"] for bn in stays)


# -- written, stamped, loaded back by Keras -------------------------------------------------------

_K3_LOAD = """
import json, sys
import numpy as np
import keras
out = {}
for original, folded in json.loads(sys.argv[1]):
    b = keras.saving.load_model(folded, compile=False, safe_mode=True)
    out[folded] = {"bn": [l.name for l in b.layers if type(l).__name__ == "BatchNormalization"]}
    if original:
        a = keras.saving.load_model(original, compile=False)
        x = np.random.default_rng(0).uniform(0, 1, (3, *a.inputs[0].shape[1:])).astype("float32")
        ya, yb = np.asarray(a.predict(x, verbose=0), np.float64), np.asarray(b.predict(x, verbose=0), np.float64)
        out[folded]["error"] = float(np.max(np.abs(ya - yb)) / np.max(np.abs(ya)))
print(json.dumps(out))
"""

_TFK_LOAD = _K3_LOAD.replace("import keras\n", "import tf_keras\n").replace(
    "keras.saving.load_model(original, compile=False)", "tf_keras.models.load_model(original, compile=False)").replace(
    "keras.saving.load_model(folded, compile=False, safe_mode=True)", "tf_keras.models.load_model(folded, compile=False)")


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Each chain fixture folded with ``keep=[KEPT]``, written in its own format and stamped."""
    folder = tmp_path_factory.mktemp("keep")
    out = {}
    for name in ("k3_chain.keras", "k3_chain.h5", "tfk_chain.h5", "tfk_chain.keras"):
        src = fixture_file(name)
        model = load(src)
        folded, report = fold_model(model, keep=[KEPT])
        dst = folder / name.replace(".", ".folded.")
        fmt = write_model(folded, dst, original=model)
        stamp_keras(dst, fmt, make_provenance(model.source, made="fold", fold=report, check=_CHECK))
        out[name] = (str(src), str(dst))
    return out


def test_stamped_files_keep_their_provenance(stamped):
    for name, (_, dst) in stamped.items():
        model = load(dst)
        prov = model.source.provenance
        assert prov is not None and prov["source"]["file"] == name, name
        assert prov["fold"]["keep"] == [KEPT] and prov["check"]["max_error"] == 2.5e-7
        assert not [n for n in model.source.notes if "provenance" in n]
        # a fold of a stamped file does not carry the old stamp along
        again = dst.replace(".folded.", ".again.")
        write_model(fold_model(model)[0], again, original=model)
        assert load(again).source.provenance is None


def test_keras3_loads_the_stamped_files_with_the_kept_bn(stamped):
    pairs = [stamped[n] for n in ("k3_chain.keras", "k3_chain.h5")]
    pairs.append(("", stamped["tfk_chain.h5"][1]))  # Keras 3 loads the folded tf-keras file (not the original)
    got = run_json(_K3_LOAD, json.dumps(pairs))
    for original, dst in pairs:
        assert got[dst]["bn"] == [KEPT], dst
        if original:
            assert got[dst]["error"] < 1e-5, (dst, got[dst]["error"])


def test_tf_keras_loads_the_stamped_files_with_the_kept_bn(stamped):
    pairs = [stamped[n] for n in ("tfk_chain.h5", "tfk_chain.keras")]
    got = run_json(_TFK_LOAD, json.dumps(pairs))
    for _, dst in pairs:
        assert got[dst]["bn"] == [KEPT], dst
        assert got[dst]["error"] < 1e-5, (dst, got[dst]["error"])
