"""Each format trap of docs/keras-formats.md section 1, on the corpus and on small synthetic files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bnconvert import BNParams, FormatError, load
from bnconvert.bn import bn_params
from bnconvert.readers import sniff
from bnconvert.readers.keras1 import resolve_running_std, running_std_to_variance

from ..conftest import ROOT, corpus_file


@pytest.mark.corpus
def test_keras_extension_holding_hdf5_is_sniffed() -> None:
    path = corpus_file("ALbaghdadi__Eye_State_detection")
    assert path.suffix == ".keras" and sniff(path) == "hdf5"
    model = load(path)
    assert model.source.format == "keras2-h5"
    assert bn_params(model["batch_normalization"]).axis == (3,)  # tf.keras writes the axis as a list


@pytest.mark.corpus
def test_double_encoded_architecture_json() -> None:
    json_path = corpus_file("VincentCheungM__carnd-p3__model.json")
    assert isinstance(json.loads(json_path.read_text()), str)  # a JSON string holding JSON
    model = load(corpus_file("VincentCheungM__carnd-p3__model.h5"), config=json_path)
    assert model.has_graph and model.kind == "Sequential"
    assert model.source.keras_version == "1.2.1"


@pytest.mark.corpus
def test_weight_names_need_not_match_group_names() -> None:
    model = load(corpus_file("dventimiglia__CarND-Behavioral-Cloning"))
    bn = model["Normalize"]
    assert bn.class_name == "BatchNormalization"
    with h5py.File(corpus_file("dventimiglia__CarND-Behavioral-Cloning"), "r") as f:
        names = [n.decode() for n in f["Normalize"].attrs["weight_names"]]
        assert names[0] == "Normalize_5/gamma:0"  # not the group name "Normalize"
        expected_mean = f["Normalize"][names[2]][()]
    np.testing.assert_array_equal(bn.weights["moving_mean"], expected_mean)
    assert bn_params(bn).mean.mean() > 100  # real statistics (pixel means)


@pytest.mark.corpus
def test_keras3_zip_weight_paths_differ_from_config_names() -> None:
    model = load(corpus_file("Alessio1599__single-ECG-classification"))
    names = [layer.name for layer in model if layer.class_name == "BatchNormalization"]
    assert names == ["batch_normalization_6", "batch_normalization_7", "batch_normalization_8"]
    assert [model[n].weights["gamma"].shape for n in names] == [(64,), (128,), (64,)]
    import io
    import zipfile

    with zipfile.ZipFile(corpus_file("Alessio1599__single-ECG-classification")) as zf, \
            h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r") as f:
        second_var = f["layers/batch_normalization_1/vars/3"][()]
    np.testing.assert_array_equal(model["batch_normalization_7"].weights["moving_variance"], second_var)


@pytest.mark.corpus
def test_tf_keras_213_zip_double_counted_paths() -> None:
    model = load(corpus_file("AliElgamel9__FastNeuralStyleTransfer"))
    assert model.source.format == "tfkeras-zip"
    convs = [layer for layer in model if layer.class_name == "Conv2D"]
    assert len(convs) == 23 and all("kernel" in c.weights for c in convs)
    assert convs[-1].weights["kernel"].shape == (3, 3, 16, 3)  # the 23rd conv lives at conv2d_44


def _keras1_weights_file(path: Path, names: list[str], chunk: bool) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        encoded = np.array([n.encode() for n in names])
        if chunk:
            half = len(encoded) // 2
            f.attrs["layer_names0"], f.attrs["layer_names1"] = encoded[:half], encoded[half:]
        else:
            f.attrs["layer_names"] = encoded
        for name in names:
            g = f.create_group(name)
            if name.startswith("bn"):
                ws = [f"{name}_gamma", f"{name}_beta", f"{name}_running_mean", f"{name}_running_std"]
                for w in ws:
                    g[w] = rng.uniform(0.5, 1.5, 4).astype("float32")
            else:
                ws = [f"{name}_W", f"{name}_b"]
                g[ws[0]] = rng.normal(size=(3, 3, 2, 4)).astype("float32")
                g[ws[1]] = rng.normal(size=4).astype("float32")
            g.attrs["weight_names"] = np.array([w.encode() for w in ws])


@pytest.mark.parametrize("chunk", [False, True])
def test_chunked_layer_names_are_joined(tmp_path: Path, chunk: bool) -> None:
    path = tmp_path / "w.h5"
    names = ["conv1", "bn1", "conv2", "bn2"]
    _keras1_weights_file(path, names, chunk)
    model = load(path)
    assert [layer.name for layer in model] == names
    assert model.source.format == "keras1-weights" and model.source.backend == "theano"
    assert [layer.class_name for layer in model] == ["Conv2D", "BatchNormalization"] * 2


def test_running_std_interpretations() -> None:
    rs, eps = np.array([0.25, 1.0, 4.0]), 1e-3
    x = np.array([1.0, 2.0, 3.0])
    as_var = BNParams.from_keras1([np.ones(3), np.zeros(3), np.zeros(3), rs], epsilon=eps, running_std="variance")
    np.testing.assert_allclose(as_var.apply(x), x / np.sqrt(rs + eps))
    as_std = BNParams.from_keras1([np.ones(3), np.zeros(3), np.zeros(3), rs], epsilon=eps, running_std="std")
    np.testing.assert_allclose(as_std.apply(x), x / (rs + eps))
    th107 = running_std_to_variance(rs, eps, "theano-1.0.7")
    np.testing.assert_allclose(np.sqrt(th107 + eps), np.sqrt(rs) + eps)
    assert resolve_running_std("auto", "1.2.2", "theano") == "variance"
    assert resolve_running_std("auto", "1.0.7", "theano") == "theano-1.0.7"
    assert resolve_running_std("auto", "1.0.6", "theano") == "std"
    assert resolve_running_std("auto", None, None) == "variance"
    assert resolve_running_std("std", "1.2.2", "tensorflow") == "std"


def test_legacy_and_modern_orders_round_trip() -> None:
    rng = np.random.default_rng(1)
    gamma, beta, mean, var = (rng.uniform(0.5, 2, 5) for _ in range(4))
    p = BNParams.from_keras1([gamma, beta, mean, var], epsilon=1e-3)
    q = BNParams.from_keras(p.to_keras(), epsilon=1e-3)
    np.testing.assert_allclose(q.fold_scale, gamma / np.sqrt(var + 1e-3))
    np.testing.assert_allclose(q.fold_shift, beta - mean * gamma / np.sqrt(var + 1e-3))
    only_stats = BNParams.from_keras([mean, var], center=False, scale=False, epsilon=1e-3)
    np.testing.assert_allclose(only_stats.gamma, 1.0)
    np.testing.assert_allclose(only_stats.beta, 0.0)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"not a model at all", "neither HDF5"), (b'{"class_name": "Sequential"}', "JSON architecture")],
)
def test_bad_bytes_give_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message):
        load(path)


def test_reading_never_imports_tensorflow(corpus) -> None:
    """The whole read+audit path runs with TensorFlow and Keras made unimportable."""
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'tf_keras', 'torch', 'jax'): sys.modules[name] = None\n"
        "import glob, bnconvert\n"
        f"files = [p for p in glob.glob({str(corpus)!r} + '/*') if not p.endswith(('.json', '.md'))]\n"
        "files += glob.glob(" + repr(str(ROOT / "fixtures")) + " + '/*.keras') + glob.glob(" + repr(str(ROOT / "fixtures")) + " + '/*.h5')\n"
        "n = sum(len(bnconvert.audit(bnconvert.load(p)).batch_norms) for p in files)\n"
        "assert not any(m in sys.modules and sys.modules[m] is not None for m in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(len(files), n)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    files, bns = map(int, out.stdout.split())
    assert files >= 22 and bns >= 131


def _renamed_vars(tmp_path: Path, names: dict[str, str]) -> Path:
    """k3_dense_tanh.keras with the Dense layer's ``vars/0``, ``vars/1`` stored under other names."""
    import io
    import zipfile

    src = zipfile.ZipFile(ROOT / "fixtures" / "k3_dense_tanh.keras")
    buf = io.BytesIO(src.read("model.weights.h5"))
    with h5py.File(buf, "r+") as f:
        for old, new in names.items():
            f["layers/dense/vars"].move(old, new)
    out = tmp_path / "named.keras"
    with zipfile.ZipFile(out, "w") as z:
        for item in src.infolist():
            z.writestr(item, buf.getvalue() if item.filename == "model.weights.h5" else src.read(item.filename))
    return out


def test_keras3_variables_stored_by_name_must_be_the_classs(tmp_path: Path) -> None:
    """A layer's save_own_variables may store its variables by name (IntegerLookup in tf_idf mode
    writes vars/idf_weights: tests/catalog/test_preprocessing.py reads one); names that are not
    the class's are refused, and so are numbered and named entries mixed."""
    with pytest.raises(FormatError, match=r"'dense' \(Dense\): weights stored under the names bias_x, kernel_x; the class's are kernel, bias"):
        load(_renamed_vars(tmp_path, {"0": "kernel_x", "1": "bias_x"}))
    with pytest.raises(FormatError, match="unexpected entries in vars"):
        load(_renamed_vars(tmp_path, {"1": "bias"}))
    model = load(_renamed_vars(tmp_path, {"0": "kernel", "1": "bias"}))  # the class's own names: read by name
    assert model["dense"].weights["kernel"].ndim == 2 and model["dense"].weights["bias"].ndim == 1
