"""verify(): runner choice, inputs, layouts, locate; and the built-in fold/export checks.

Keras 3 runs in this process; everything tf-keras or "without TensorFlow" runs in a subprocess.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from bnconvert.check.verify import file_kind
from bnconvert.errors import BnconvertError, FormatError
from bnconvert.pipeline import verify

from ..conftest import fixture_file
from .onnx_models import channels_last_variant, conv_bn_onnx, perturbed, save


# ------------------------------------------------------------------------------------- ONNX only
def test_identical_onnx_models_are_equivalent(tmp_path: Path) -> None:
    model = conv_bn_onnx(np.random.default_rng(0))
    a, b = save(model, tmp_path / "a.onnx"), save(model, tmp_path / "b.onnx")
    result = verify(a, b, batch=3)
    assert result and result.kind_a == result.kind_b == "onnxruntime"
    assert result.inputs[0]["shape"] == [3, 2, 5, 5]
    assert result.comparison.outputs[0].abs.max == 0.0
    assert json.loads(json.dumps(result.to_dict()))["passed"] is True
    assert "EQUIVALENT" in result.summary()


def test_perturbed_onnx_fails_and_locate_names_the_tensor(tmp_path: Path) -> None:
    model = conv_bn_onnx(np.random.default_rng(1))
    a = save(model, tmp_path / "a.onnx")
    b = save(perturbed(model, "var", 1.05), tmp_path / "b.onnx")  # only the BN node changes
    result = verify(a, b, locate=True)
    assert not result and result.comparison.outputs[0].mismatches > 0
    assert result.located is not None and result.located.first == "bn"
    assert [d.name for d in result.located.layers][:2] == ["conv", "bn"] and result.located.layers[0].passed
    assert "first diverging layer 'bn'" in result.summary()


def test_nchw_model_is_compared_through_transposes(tmp_path: Path) -> None:
    model = conv_bn_onnx(np.random.default_rng(2))
    nhwc = save(channels_last_variant(model), tmp_path / "nhwc.onnx")
    nchw = save(model, tmp_path / "nchw.onnx")
    result = verify(nhwc, nchw, batch=2)
    assert result, result.summary()
    assert result.inputs[0]["layout_b"] == "channels_last->channels_first"
    assert any("transposed back" in m for m in result.comparison.messages)
    bad = save(perturbed(model, "W", 1.01), tmp_path / "bad.onnx")
    failed = verify(nhwc, bad, locate=True)
    assert not failed and failed.located.first == "conv"  # the first common tensor that differs


def test_inputs_file_and_dynamic_dims(tmp_path: Path) -> None:
    model = conv_bn_onnx(np.random.default_rng(3))
    a = save(model, tmp_path / "a.onnx")
    x = np.random.default_rng(9).normal(size=(4, 2, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    result = verify(a, a, inputs=tmp_path / "in.npz")
    assert result and result.inputs[0]["shape"] == [4, 2, 5, 5] and "in.npz" in result.input_source
    result = verify(a, a, input_shapes={"x": (2, 2, 5, 5)})
    assert result.inputs[0]["shape"] == [2, 2, 5, 5]


def test_file_kind_sniffs_onnx_and_rejects_junk(tmp_path: Path) -> None:
    a = save(conv_bn_onnx(np.random.default_rng(4)), tmp_path / "model.h5")  # extension lies
    assert file_kind(a) == "onnx"
    assert file_kind(fixture_file("k3_chain.keras")) == "keras"
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01\x02 this is no model")
    with pytest.raises(FormatError, match="neither a Keras model file"):
        file_kind(tmp_path / "junk.bin")
    with pytest.raises(FormatError, match="no such file"):
        file_kind(tmp_path / "absent.onnx")
    with pytest.raises(FormatError, match="JSON architecture"):
        file_kind(fixture_file("k2_weights.json"))


def test_input_mismatch_is_a_usage_error(tmp_path: Path) -> None:
    a = save(conv_bn_onnx(np.random.default_rng(5)), tmp_path / "a.onnx")
    with pytest.raises(BnconvertError, match="does not fit"):
        verify(a, fixture_file("k3_dense_tanh.keras"))


# ------------------------------------------------------------------------------------- Keras 3
def _perturb_h5(src: Path, dst: Path, dataset: str, factor: float) -> None:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        f[dataset][...] = f[dataset][...] * factor


def test_keras3_keras_vs_h5_and_locate_after_perturbation(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    keras_file, h5_file = fixture_file("k3_educba.keras"), fixture_file("k3_educba.h5")
    result = verify(keras_file, h5_file, batch=2)
    assert result and result.kind_a == result.kind_b == "keras"
    assert "keras" in result.runner_a and "Keras 3" in result.runner_a
    bad = tmp_path / "bad.h5"
    _perturb_h5(h5_file, bad, "model_weights/conv2d_1/educba/conv2d_1/kernel", 1.02)
    failed = verify(keras_file, bad, batch=2, locate=True)
    assert not failed
    assert failed.located.first == "conv2d_1", failed.located.summary()
    assert [d.name for d in failed.located.layers if d.passed] == ["conv2d", "batch_normalization", "max_pooling2d", "batch_normalization_1"]


# --------------------------------------------------------------------- exports and perturbations
def _export(src: Path, dst: Path, **kwargs: object) -> Path:
    from bnconvert.pipeline import export_file

    report = export_file(src, dst, **kwargs)
    assert report.check is not None and report.check.passed, report.check.summary()
    return dst


def _perturb_onnx(src: Path, dst: Path, initializer: str, factor: float = 1.02) -> Path:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(src)
    (init,) = [t for t in model.graph.initializer if t.name == initializer]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), initializer))
    onnx.save(model, dst)
    return dst


@pytest.mark.parametrize("stem", ["k3_educba.h5", "k3_chain.keras", "k3_functional.h5", "k3_channels_first.keras", "k3_after_act.h5"])
def test_keras3_file_verifies_against_its_folded_export(stem: str, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    onnx_file = _export(fixture_file(stem), tmp_path / "model.onnx")
    result = verify(fixture_file(stem), onnx_file, batch=2)
    assert result, result.summary()
    assert result.kind_a == "keras" and result.kind_b == "onnxruntime"
    assert result.comparison.normalized_error < 1e-5


def test_nchw_export_verifies_through_transposes(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    onnx_file = _export(fixture_file("k3_educba.keras"), tmp_path / "nchw.onnx", nchw=True)
    result = verify(fixture_file("k3_educba.keras"), onnx_file, batch=2)
    assert result and result.inputs[0]["layout_b"] == "channels_last->channels_first"


@pytest.mark.parametrize(
    ("stem", "initializer", "first", "first_b"),
    [
        ("k3_educba.keras", "dense/kernel", "dense", "dense"),  # BN folded forward into it: compared as is
        ("k3_educba.keras", "conv2d_1/bias", "conv2d_1", "conv2d_1"),
        ("k3_chain.keras", "depthwise_conv2d/kernel", "batch_normalization_1", "depthwise_conv2d"),  # folded backward
        ("k3_functional.keras", "inner_seq/inner_conv/kernel", "inner_seq", "inner_seq/inner_conv"),  # nested model
        ("k3_functional.keras", "head_conv/bias", "head_conv", "head_conv"),
    ],
)
def test_locate_names_the_perturbed_layer(stem: str, initializer: str, first: str, first_b: str, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    good = _export(fixture_file(stem), tmp_path / "good.onnx")
    bad = _perturb_onnx(good, tmp_path / "bad.onnx", initializer)
    result = verify(fixture_file(stem), bad, batch=2, locate=True)
    assert not result
    assert (result.located.first, result.located.first_b) == (first, first_b), result.located.summary()
    diff = result.located.first_diff
    before = result.located.layers[: result.located.layers.index(diff)]
    assert before and all(d.passed for d in before)  # everything upstream still agrees


def test_check_export_says_keras_is_the_reference(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from bnconvert.check import DEFAULT_ATOL, DEFAULT_RTOL, check_export

    src = fixture_file("k3_conv1d.keras")
    good = _export(src, tmp_path / "good.onnx")
    result = check_export(src, good)
    assert result and result.reference_kind == "keras" and result.candidate_kind == "onnxruntime"
    assert (result.atol, result.rtol) == (DEFAULT_ATOL, DEFAULT_RTOL) and result.error < 1e-6
    assert "reference: keras" in result.headline() and result.inputs[0]["shape"] == [2, 32, 4]
    bad = _perturb_onnx(good, tmp_path / "bad.onnx", "dense/bias", 1.5)
    failed = check_export(src, bad)
    assert not failed and failed.error > DEFAULT_RTOL and failed.passed is False and failed.checked
    with pytest.raises(BnconvertError, match="export check FAILED") as info:
        failed.require()
    assert info.value.exit_code == 1 and info.value.report is failed


def test_check_written_on_a_folded_keras3_file(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from bnconvert import load
    from bnconvert.check import DEFAULT_ATOL, DEFAULT_RTOL, check_written
    from bnconvert.fold.apply import fold_model
    from bnconvert.writers import write_model

    src = fixture_file("k3_chain.keras")
    original = load(src)
    folded, _ = fold_model(original)
    out = tmp_path / "chain.folded.keras"
    write_model(folded, out, original=original)
    result = check_written(src, out)
    assert result, result.summary()
    assert result.reference_kind == result.candidate_kind == "keras"
    assert (result.atol, result.rtol) == (DEFAULT_ATOL, DEFAULT_RTOL)
    # a written file that Keras cannot load fails the check, with the reason
    broken = tmp_path / "broken.keras"
    _rename_class(out, broken, "Conv2DTranspose", "Conv2DTransposeX")
    failed = check_written(src, broken)
    assert not failed and "does not load in Keras" in failed.message and failed.comparison is None


def _rename_class(src: Path, dst: Path, old: str, new: str) -> None:
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json":
                data = data.replace(f'"class_name": "{old}"'.encode(), f'"class_name": "{new}"'.encode())
            zout.writestr(item, data)


# ------------------------------------------------------------- Keras 1 running_std, TF absent
FOLD_BOTH_WAYS = """
import json
from bnconvert import load
from bnconvert.check import check_written
from bnconvert.check.reference import ReferenceRunner
from bnconvert.fold.apply import fold_model
from bnconvert.writers import write_model
import numpy as np
src, tmp, expected = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
out = {}
for interpretation in ("variance", "std"):
    original = load(src, running_std=interpretation)
    folded, _ = fold_model(original)
    path = f"{tmp}/folded_{interpretation}.h5"
    write_model(folded, path, original=original)
    result = check_written(src, path, load_options={"running_std": "variance"})
    (y,) = ReferenceRunner(path).infer({"convolution2d_1_input": expected["x"]}).values()
    out[interpretation] = {
        "passed": bool(result), "error": result.error, "reference": result.reference_kind,
        "checked": result.candidate_kind, "truth_error": float(np.abs(y - expected["y"]).max() / np.abs(expected["y"]).max()),
    }
print(json.dumps(out))
"""


@pytest.mark.parametrize("no_tf", [False, True], ids=["with-tensorflow", "without-tensorflow"])
def test_wrong_keras1_running_std_fold_is_caught(no_tf: bool, tmp_path: Path) -> None:
    """Folding k1_tf_seq with running_std read as a std (wrong: the file holds the variance)
    gives a file the check refuses; the right reading passes. Both agree with the fixture's
    independent ground truth (``expected.npz``, computed by an equivalent Keras 3 model)."""
    from .subproc import run_json

    out = run_json(FOLD_BOTH_WAYS, str(fixture_file("k1_tf_seq.h5")), str(tmp_path),
                   str(fixture_file("k1_tf_seq.expected.npz")), no_tf=no_tf)
    right, wrong = out["variance"], out["std"]
    assert right["passed"] and right["error"] < 1e-5 and right["truth_error"] < 1e-5
    assert not wrong["passed"] and wrong["error"] > 1e-2 and wrong["truth_error"] > 1e-2
    assert right["reference"] == "reference"  # no current Keras loads a Keras 1 file: the float64 reference
    assert right["checked"] == ("reference" if no_tf else "keras")


def test_verify_cli_without_tensorflow_on_an_export(tmp_path: Path) -> None:
    from .subproc import run_python

    good = _export_no_check(fixture_file("k3_educba.keras"), tmp_path / "educba.onnx")
    bad = _perturb_onnx(good, tmp_path / "bad.onnx", "dense/kernel")
    code = "from bnconvert.cli import main\nmain()\n"
    ok = run_python(code, "verify", str(fixture_file("k3_educba.keras")), str(good), no_tf=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "own float64 computation" in ok.stdout and "EQUIVALENT" in ok.stdout
    failed = run_python(code, "verify", str(fixture_file("k3_educba.keras")), str(bad), "--locate", "--json", no_tf=True)
    assert failed.returncode == 1, failed.stderr
    report = json.loads(failed.stdout)
    assert report["a"]["kind"] == "reference" and report["locate"]["first"] == "dense"


def _export_no_check(src: Path, dst: Path) -> Path:
    import onnx

    from bnconvert import load
    from bnconvert.fold.apply import fold_model
    from bnconvert.onnx.export import to_onnx

    folded, _ = fold_model(load(src))
    onnx.save(to_onnx(folded), dst)
    return dst


def test_locate_between_original_and_folded_keras_files(tmp_path: Path) -> None:
    """Keras against Keras: the fold plan says which tensors must agree (a BN's output lives in
    the layer it was folded into), in either order of the two files."""
    pytest.importorskip("tensorflow")
    from bnconvert import load
    from bnconvert.fold.apply import fold_model
    from bnconvert.writers import write_model

    src = fixture_file("k3_chain.h5")
    original = load(src)
    folded, _ = fold_model(original)
    good = tmp_path / "chain.folded.h5"
    write_model(folded, good, original=original)
    assert verify(src, good)
    bad = tmp_path / "bad.h5"
    _perturb_h5(good, bad, "model_weights/depthwise_conv2d/chain/depthwise_conv2d/kernel", 1.02)
    forward = verify(src, bad, locate=True).located
    assert (forward.first, forward.first_b) == ("batch_normalization_1", "depthwise_conv2d")
    assert forward.layers[0].passed and forward.layers[0].note == "BN 'batch_normalization' folded into 'conv2d'"
    backward = verify(bad, src, locate=True).located
    assert (backward.first, backward.first_b) == ("depthwise_conv2d", "batch_normalization_1")
