"""The runners: one call, ``infer(feeds) -> outputs``, for onnxruntime, Keras and bnconvert's export.

Keras 3 runs in this process; tf-keras runs in a subprocess (the two should not share an
interpreter); "TensorFlow absent" is simulated in a subprocess with ``sys.modules['tensorflow'] = None``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from bnconvert.check.inputs import random_inputs
from bnconvert.check.reference import ReferenceRunner
from bnconvert.check.runners import OnnxRunner, RunnerUnavailable
from bnconvert.model import Layer, Model, Source, TensorRef

from ..conftest import fixture_file
from .onnx_models import conv_bn_onnx, numpy_conv_bn
from .subproc import run_json, run_python


def test_onnx_runner_infers_and_exposes_intermediates(tmp_path: Path) -> None:
    model = conv_bn_onnx(np.random.default_rng(3))
    onnx.save(model, tmp_path / "m.onnx")
    runner = OnnxRunner(tmp_path / "m.onnx")
    specs = runner.input_specs()
    assert [(s.name, s.shape, s.dtype) for s in specs] == [("x", (None, 2, 5, 5), "float32")]
    feeds = random_inputs(specs, batch=2)
    expected = numpy_conv_bn(model, feeds["x"])
    out = runner.infer(feeds)
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], expected["y"], rtol=1e-5, atol=1e-5)
    assert runner.layer_names() == ["conv", "bn", "y"]
    inner = runner.layer_outputs(feeds, ["bn", "conv", "not_a_tensor"])
    assert set(inner) == {"bn", "conv"}
    np.testing.assert_allclose(inner["conv"], expected["conv"], rtol=1e-5, atol=1e-5)
    assert runner.infer_seconds > 0
    assert "optimisations off" in runner.describe()


def test_onnx_runner_keeps_graph_optimisations_off_by_default() -> None:
    import onnxruntime as ort

    model = conv_bn_onnx(np.random.default_rng(4))
    level = ort.GraphOptimizationLevel
    assert OnnxRunner(model).session.get_session_options().graph_optimization_level == level.ORT_DISABLE_ALL
    assert OnnxRunner(model, optimize=True).session.get_session_options().graph_optimization_level == level.ORT_ENABLE_ALL


def test_onnx_runner_errors_are_one_line(tmp_path: Path) -> None:
    from bnconvert.errors import BnconvertError, FormatError

    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(FormatError, match="onnxruntime cannot load it"):
        OnnxRunner(tmp_path / "bad.onnx")
    runner = OnnxRunner(conv_bn_onnx(np.random.default_rng(5)))
    with pytest.raises(BnconvertError, match=r"no data for inputs \['x'\]"):
        runner.infer({"other": np.zeros((1, 2, 5, 5), np.float32)})
    with pytest.raises(BnconvertError, match="onnxruntime failed to run it"):
        runner.infer({"x": np.zeros((1, 2, 4, 4), np.float32)})


# ---------------------------------------------------------------------------------------- Keras
def test_keras_runner_without_tensorflow_names_the_extra() -> None:
    code = (
        "from bnconvert.check.keras_runner import KerasRunner, keras_available\n"
        "from bnconvert.check.runners import RunnerUnavailable\n"
        "assert not keras_available('keras') and not keras_available('tf_keras')\n"
        "try:\n    KerasRunner(sys.argv[1])\nexcept RunnerUnavailable as exc:\n    print(exc)\n"
    )
    proc = run_python(code, str(fixture_file("k3_chain.keras")), no_tf=True)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'bnconvert[keras]'" in proc.stdout and "TensorFlow" in proc.stdout


def test_keras_runner_refuses_keras1_files_and_lambda() -> None:
    from bnconvert.check.keras_runner import KerasRunner, keras_module_for

    with pytest.raises(RunnerUnavailable, match="Keras 1 file"):
        KerasRunner(fixture_file("k1_tf_seq.h5"))
    lam = Model(
        "m", [Layer("inp", "InputLayer", {"batch_shape": [None, 2]}), Layer("lam", "Lambda", {}, calls=[[TensorRef("inp")]])],
        [TensorRef("inp")], [TensorRef("lam")], source=Source("x.keras", "keras3-zip"),
    )
    with pytest.raises(RunnerUnavailable, match=r"'lam' \(Lambda\) holds Python code"):
        KerasRunner("x.keras", model=lam)
    custom = Source("x.keras", "tfkeras-zip", config={"class_name": "Functional", "config": {"layers": [
        {"module": "my_package.layers", "class_name": "Mine", "config": {"name": "mine"}},
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d"}},
    ]}})
    plain = Model("m", [Layer("inp", "InputLayer", {"batch_shape": [None, 2]})], [TensorRef("inp")], [TensorRef("inp")], source=custom)
    with pytest.raises(RunnerUnavailable, match=r"modules outside Keras \(my_package.layers\)"):
        KerasRunner("x.keras", model=plain)
    assert keras_module_for(Source("a", "keras2-h5")) == "tf_keras"
    assert keras_module_for(Source("a", "tfkeras-zip")) == "tf_keras"
    assert keras_module_for(Source("a", "keras3-h5")) == "keras"
    assert keras_module_for(Source("a", "keras1-h5")) is None


def test_keras3_runner_matches_keras_and_exposes_layers() -> None:
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from bnconvert.check.keras_runner import KerasRunner

    runner = KerasRunner(fixture_file("k3_functional.keras"))
    specs = runner.input_specs()
    assert [s.name for s in specs] == ["image", "vector"] and specs[0].shape == (None, 10, 10, 3)
    feeds = random_inputs(specs, batch=2)
    out = runner.infer(feeds)
    assert list(out) == ["out_a", "out_b"]
    direct = keras.models.load_model(fixture_file("k3_functional.keras"), compile=False)
    expected = direct.predict([feeds["image"], feeds["vector"]], verbose=0)
    np.testing.assert_allclose(out["out_a"], expected[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["out_b"], expected[1], rtol=1e-6, atol=1e-6)
    inner = runner.layer_outputs(feeds, runner.layer_names())
    assert "shared_conv" not in inner  # called twice: no single output to expose
    assert {"pre_conv", "bn_after_add", "inner_seq", "inner_fn", "bn_head", "out_b"} <= set(inner)
    np.testing.assert_allclose(inner["out_b"], out["out_b"], rtol=1e-6)
    assert inner["inner_seq"].shape == (2, 10, 10, 4)


def test_keras3_runner_runs_channels_first_through_xla() -> None:
    pytest.importorskip("tensorflow")
    from bnconvert.check.keras_runner import KerasRunner

    a, b = KerasRunner(fixture_file("k3_channels_first.keras")), KerasRunner(fixture_file("k3_channels_first.h5"))
    feeds = random_inputs(a.input_specs(), batch=2)
    ya, yb = a.infer(feeds)["dense"], b.infer(feeds)["dense"]
    assert ya.shape == (2, 3) and np.all(np.isfinite(ya))
    np.testing.assert_allclose(ya, yb, rtol=1e-6, atol=1e-7)
    inner = a.layer_outputs(feeds, a.layer_names())
    assert inner["batch_normalization"].shape == (2, 4, 8, 8)  # channels_first, as Keras holds it


def test_tf_keras_runner_in_a_subprocess() -> None:
    pytest.importorskip("tf_keras")
    code = (
        "import json, numpy as np\n"
        "from bnconvert.check.keras_runner import KerasRunner\n"
        "from bnconvert.check.inputs import random_inputs\n"
        "r = KerasRunner(sys.argv[1]); feeds = random_inputs(r.input_specs(), batch=2)\n"
        "out = r.infer(feeds); inner = r.layer_outputs(feeds, r.layer_names())\n"
        "import tf_keras; m = tf_keras.models.load_model(sys.argv[1], compile=False)\n"
        "ref = m.predict([feeds['image'], feeds['vector']], verbose=0)\n"
        "print(json.dumps({'module': r.module, 'outputs': list(out), 'err': max(float(np.abs(out[k] - v).max()) for k, v in zip(out, ref)),"
        " 'inner': sorted(inner)}))\n"
    )
    proc = run_python(code, str(fixture_file("tfk_functional.h5")))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["module"] == "tf_keras" and data["outputs"] == ["out_a", "out_b"]
    assert data["err"] <= 1e-6
    assert "inner_fn" in data["inner"] and "shared_conv" not in data["inner"]


def test_keras_runner_weights_only_needs_the_architecture() -> None:
    pytest.importorskip("tf_keras")
    code = (
        "from bnconvert.check.keras_runner import KerasRunner\n"
        "from bnconvert.check.runners import RunnerUnavailable\n"
        "try:\n    KerasRunner(sys.argv[1])\nexcept RunnerUnavailable as exc:\n    print('REFUSED', exc)\n"
        "r = KerasRunner(sys.argv[1], load_options={'config': sys.argv[2]})\n"
        "print('OK', r.module, [s.shape for s in r.input_specs()])\n"
    )
    proc = run_python(code, str(fixture_file("k2_weights.h5")), str(fixture_file("k2_weights.json")))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "REFUSED" in proc.stdout and "--config" in proc.stdout
    assert "OK tf_keras [(None, 8, 8, 3)]" in proc.stdout


# ------------------------------------------------------------------------------- float64 reference
def test_float64_reference_reproduces_the_keras1_ground_truth() -> None:
    """The TensorFlow-free reference on Keras 1 files, against the fixtures' independent outputs."""
    for stem in ("k1_tf_seq", "k1_th_model", "k1_conv1d"):
        data = np.load(fixture_file(f"{stem}.expected.npz"))
        runner = ReferenceRunner(fixture_file(f"{stem}.h5"))
        assert runner.kind == "reference" and "float64" in runner.describe()
        (spec,) = runner.input_specs()
        y = runner.infer({spec.name: data["x"]})
        (out,) = y.values()
        err = np.abs(out - data["y"]).max() / np.abs(data["y"]).max()
        assert err < 1e-5, (stem, err)


def test_float64_reference_exposes_keras_named_tensors() -> None:
    runner = ReferenceRunner(fixture_file("k3_chain.keras"))
    names = runner.layer_names()
    assert {"conv2d", "batch_normalization", "depthwise_conv2d", "dense_1"} <= set(names)
    feeds = random_inputs(runner.input_specs(), batch=2)
    inner = runner.layer_outputs(feeds, ["batch_normalization", "dense_1"])
    np.testing.assert_array_equal(inner["dense_1"], runner.infer(feeds)["dense_1"])


def test_the_tensorflow_free_runner_is_the_float64_reference() -> None:
    data = run_json(
        "import json\nfrom bnconvert.check.verify import open_runner\n"
        "r, notes = open_runner(sys.argv[1])\n"
        "print(json.dumps({'kind': r.kind, 'notes': notes, 'tf': sys.modules.get('tensorflow') is not None}))\n",
        str(fixture_file("k3_chain.keras")), no_tf=True,
    )
    assert data["kind"] == "reference" and not data["tf"]
    assert "pip install 'bnconvert[keras]'" in data["notes"][0]



@pytest.mark.corpus
def test_theano_keras2_file_is_not_run_by_tf_keras() -> None:
    """Keras 2 flipped Theano conv kernels on loading; tf_keras does not, so it computes another
    function (measured on this file: max |diff| / max |out| = 1.25 against the flipped reading).
    The reference falls back to bnconvert's float64 reference of the file as read (flipped)."""
    from bnconvert.check.verify import open_runner

    from ..conftest import corpus_file

    runner, notes = open_runner(corpus_file("KonduitAI__dl4j-test-resources__src_main_resources_modelimport_keras_weights_batch_to_conv2d_theano_2"))
    assert runner.kind == "reference"
    assert "Theano backend" in notes[0] and "no reference" in notes[0]
