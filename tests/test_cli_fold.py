"""``bnconvert fold``: options, exit codes, what is (not) written, the built-in Keras check, and the
"done when" models: the corpus files and Keras Applications."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import bnconvert
import bnconvert.check
from bnconvert.cli import main

from .conftest import corpus_file, fixture_file

needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow not installed")


def _copy(name: str, folder: Path) -> Path:
    dst = folder / name
    shutil.copy(fixture_file(name), dst)
    return dst


def _fold(*args: str):  # noqa: ANN202
    return CliRunner().invoke(main, ["fold", *args], catch_exceptions=False)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_default_output_and_text_report(tmp_path: Path) -> None:
    src = _copy("k3_educba.keras", tmp_path)
    result = _fold(str(src), "--no-check")
    assert result.exit_code == 0, result.output
    assert _files(tmp_path) == ["k3_educba.folded.keras", "k3_educba.keras"]
    out = result.output
    assert "5 layers: 5 folded (0 backward, 3 forward, 2 merged), 0 stay" in out
    assert "largest |gamma/sqrt(var+eps)| folded" in out and "keras3-zip -> keras3-zip" in out
    assert "batch_normalization    merge     => batch_normalization_1" in out
    assert f"wrote    {tmp_path / 'k3_educba.folded.keras'}" in out
    folded = bnconvert.load(tmp_path / "k3_educba.folded.keras")
    assert not any(layer.class_name == "BatchNormalization" for layer in folded.layers)


def test_json_report(tmp_path: Path) -> None:
    src = _copy("k3_educba_neg_gamma.keras", tmp_path)
    result = _fold(str(src), "--json", "--no-check", "-o", str(tmp_path / "out.keras"))
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["totals"] == {"batch_norms": 5, "folded": 3, "backward": 0, "forward": 3, "merged": 0, "stays": 2,
                              "identities_dropped": 0, "biases_created": 0}
    stays = {bn["name"]: bn["reason"] for bn in data["batch_norms"] if bn["action"] == "stays"}
    assert set(stays) == {"batch_normalization", "batch_normalization_2"}
    assert all("does not commute with" in r and "MaxPooling2D" in r for r in stays.values())
    largest = data["largest_fold_scale"]
    folded_scales = [bn["max_scale"] for bn in data["batch_norms"] if bn["action"] != "stays"]
    assert largest["value"] == max(folded_scales) > 0
    assert data["output"] == str(tmp_path / "out.keras") and data["output_format"] == "keras3-zip"
    assert data["check"]["status"] == "not checked" and data["check"]["checked"] is False and data["dry_run"] is False


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    src = _copy("tfk_chain.h5", tmp_path)
    result = _fold(str(src), "--dry-run", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["dry_run"] is True and data["output"] is None and data["totals"]["folded"] == 5
    assert _files(tmp_path) == ["tfk_chain.h5"]


def test_refusals_exit_2_and_write_nothing(tmp_path: Path) -> None:
    src = _copy("k3_conv1d.h5", tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["fold", str(src), "-o", str(src), "--force", "--no-check"])
    assert result.exit_code == 2 and "never overwrites its input" in result.output
    (tmp_path / "k3_conv1d.folded.h5").write_bytes(b"keep me")
    result = runner.invoke(main, ["fold", str(src), "--no-check"])
    assert result.exit_code == 2 and "already exists" in result.output
    assert (tmp_path / "k3_conv1d.folded.h5").read_bytes() == b"keep me"
    result = runner.invoke(main, ["fold", str(src), "--no-check", "-o", str(tmp_path / "x.keras")])
    assert result.exit_code == 2 and "needs the extension .h5" in result.output
    assert _files(tmp_path) == ["k3_conv1d.folded.h5", "k3_conv1d.h5"]
    result = runner.invoke(main, ["fold", str(src), "--no-check", "--force"])
    assert result.exit_code == 0 and (tmp_path / "k3_conv1d.folded.h5").read_bytes()[:4] == b"\x89HDF"


def test_non_positive_variance_is_refused(tmp_path: Path) -> None:
    src = _copy("tfk_educba.h5", tmp_path)
    with h5py.File(src, "r+") as f:
        var = f["model_weights/batch_normalization_4/batch_normalization_4/moving_variance:0"]
        var[0] = -1.0
    result = CliRunner().invoke(main, ["fold", str(src), "--no-check"])
    assert result.exit_code == 2
    assert "batch_normalization_4" in result.output and "variance + epsilon <= 0" in result.output
    assert _files(tmp_path) == ["tfk_educba.h5"]


def test_weights_only_needs_its_architecture(tmp_path: Path) -> None:
    src = _copy("k2_weights.h5", tmp_path)
    result = CliRunner().invoke(main, ["fold", str(src), "--no-check"])
    assert result.exit_code == 2 and "--config" in result.output
    result = _fold(str(src), "--no-check", "--config", str(fixture_file("k2_weights.json")))
    assert result.exit_code == 0 and "2 folded" in result.output


def test_failed_check_exits_1_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _copy("k3_dense_tanh.h5", tmp_path)
    seen = []

    real = bnconvert.check.check_written

    def differs(original, written, *, load_options=None, **kwargs):  # noqa: ANN001, ANN202, ANN003
        seen.append(Path(written))
        assert Path(written).exists() and Path(written).parent.parent == tmp_path  # checked before the rename, beside the target
        result = real(original, written, load_options=load_options, **kwargs)
        result.passed = False  # what a wrong fold would give
        return result

    monkeypatch.setattr(bnconvert.check, "check_written", differs)
    result = CliRunner().invoke(main, ["fold", str(src)])
    assert result.exit_code == 1 and "differs from the original" in result.output and "nothing written" in result.output
    assert seen and _files(tmp_path) == ["k3_dense_tanh.h5"]


# -- the built-in check with real Keras ----------------------------------------------------------------------
@needs_tf
def test_check_runs_keras_for_keras3_and_keras1_files(tmp_path: Path) -> None:
    # Keras 3 original: Keras on both sides. Keras 1 original: no Keras loads it, so the reference is
    # bnconvert's float64 reference of the original; the folded Keras 2 file runs in tf-keras.
    for name, reference in (("k3_chain.keras", "keras"), ("k1_th_model.h5", "reference")):
        src = _copy(name, tmp_path)
        result = _fold(str(src), "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["check"]["status"] == "passed", data["check"]
        assert reference in data["check"]["reference"]["kind"] and data["check"]["error"] < 1e-5
        assert data["check"]["candidate"]["kind"] == "keras"
    notes = " ".join(data["notes"])
    assert "converted from Keras 1" in notes and data["output_format"] == "keras2-h5"


# -- corpus ------------------------------------------------------------------------------------------------
CORPUS = {
    # prefix: (BN total, folded, fragments every staying BN's reason must contain (one of))
    "oarriaga__face_classification": (14, 14, []),
    "Hyperparticle__one-pixel-attack-keras": (31, 15, ["(Add) (2 inputs)", "'conv2d_1' (Conv2D) also feeds other layers"]),
    "svh2811__Driving-Behavior-Cloning": (6, 6, []),
    "Alessio1599__single-ECG-classification": (3, 3, []),
    "ALbaghdadi__Eye_State_detection": (3, 1, ["has activation relu"]),
}


@needs_tf
@pytest.mark.corpus
@pytest.mark.parametrize("prefix", sorted(CORPUS))
def test_corpus_files_fold_and_match(prefix: str, tmp_path: Path) -> None:
    total, folded, reasons = CORPUS[prefix]
    src = corpus_file(prefix)
    out = tmp_path / f"folded{src.suffix}"
    result = _fold(str(src), "--json", "-o", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["totals"]["batch_norms"] == total and data["totals"]["folded"] == folded
    for bn in data["batch_norms"]:
        if bn["action"] == "stays":
            assert any(r in bn["reason"] for r in reasons), bn
    if prefix.startswith("svh2811"):  # Lambda layers are never run: check the model after them
        assert data["check"]["status"] == "not checked" and data["check"]["checked"] is False and "Lambda" in data["check"]["reason"], data["check"]
        assert _svh2811_tail(src, out) < 1e-5
    else:
        assert data["check"]["status"] == "passed" and data["check"]["error"] < 1e-5, data["check"]
    if prefix.startswith("ALbaghdadi"):  # HDF5 under a .keras name, as the input: still HDF5
        assert out.read_bytes()[:4] == b"\x89HDF" and "Keras 3 needs it renamed" in " ".join(data["notes"])


_TAIL = r"""
import json, sys, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import h5py, numpy as np, tf_keras
def tail(path):
    with h5py.File(path) as f:
        config = json.loads(f.attrs["model_config"])
    layers = config["config"] if isinstance(config["config"], list) else config["config"]["layers"]
    layers = [l for l in layers if l["class_name"] not in ("Cropping2D", "Lambda")]   # the preprocessing head
    layers[0]["config"]["batch_input_shape"] = [None, 66, 200, 3]                  # what the Lambda resize makes
    model = tf_keras.Sequential.from_config({"name": "tail", "layers": layers})
    model.load_weights(path)  # by position over layers with weights: the head has none
    return model
x = np.random.default_rng(1).uniform(0, 1, (2, 66, 200, 3)).astype("float32")
a, b = (np.asarray(tail(p)(x, training=False), np.float64) for p in sys.argv[1:3])
print(json.dumps({"rel": float(np.abs(a - b).max() / np.abs(a).max())}))
"""


def _svh2811_tail(original: Path, folded: Path) -> float:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _TAIL, str(original), str(folded)], capture_output=True, text=True, env=env, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("{")), None)
    assert line, proc.stderr[-2000:]
    return json.loads(line)["rel"]


# -- Keras Applications ----------------------------------------------------------------------------------------
_APPS = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras
rng = np.random.default_rng(0)
for name, size in (("ResNet50", 64), ("MobileNetV2", 64), ("Xception", 75)):
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.3, 2, n)])
    model.save(os.path.join(sys.argv[1], name + ".keras"))
"""


@needs_tf
@pytest.mark.slow
def test_keras_applications_lose_every_bn_after_a_linear_convolution(tmp_path: Path) -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", _APPS, str(tmp_path)], check=True, capture_output=True, env=env, timeout=900)
    for name, expected in (("ResNet50", 53), ("MobileNetV2", 52), ("Xception", 40)):
        src = tmp_path / f"{name}.keras"
        model = bnconvert.load(src)
        after_linear_conv = [
            layer.name for layer in model.layers
            if layer.class_name == "BatchNormalization" and model[layer.calls[0][0].layer].class_name.endswith(("Conv2D", "Conv2DTranspose"))
            and model[layer.calls[0][0].layer].config.get("activation", "linear") == "linear"
        ]
        assert len(after_linear_conv) == expected
        result = _fold(str(src), "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        folded = {bn["name"] for bn in data["batch_norms"] if bn["action"] == "backward"}
        assert set(after_linear_conv) <= folded, set(after_linear_conv) - folded
        assert data["check"]["status"] == "passed" and data["check"]["error"] < 1e-5, data["check"]
        written = bnconvert.load(tmp_path / f"{name}.folded.keras")
        assert not any(layer.class_name == "BatchNormalization" for layer in written.layers)
        assert np.isfinite(data["largest_fold_scale"]["value"])
