"""The Keras writers: file layouts compared with what Keras itself writes, config edits, atomic
writes, and (in child processes) real Keras loading every folded file and matching the original."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import bnconvert
from bnconvert.errors import OutputError, UnsupportedLayerError
from bnconvert.fold import fold_model
from bnconvert.io import atomic_output
from bnconvert.readers.h5 import attr_list
from bnconvert.writers import write_model
from bnconvert.writers.config_edit import edit_config
from bnconvert.writers.h5 import save_list_attr

from ..conftest import corpus_file, fixture_file


def _fold_write(src: Path, out: Path, config: Path | None = None) -> tuple[bnconvert.Model, bnconvert.Model]:
    model = bnconvert.load(src, config=config)
    folded, _ = fold_model(model)
    write_model(folded, out, original=model)
    return model, folded


def _same_weights(a: bnconvert.Model, b: bnconvert.Model) -> None:
    wa = {p: layer.weights for p, layer, _ in a.walk()}
    wb = {p: layer.weights for p, layer, _ in b.walk()}
    assert wa.keys() == wb.keys()
    for path in wa:
        assert wa[path].keys() == wb[path].keys(), path
        for k in wa[path]:
            np.testing.assert_array_equal(wa[path][k], wb[path][k], err_msg=f"{path}/{k}")


# -- legacy HDF5 --------------------------------------------------------------------------------------------
def test_keras2_h5_layout(tmp_path: Path) -> None:
    out = tmp_path / "educba.h5"
    _, folded = _fold_write(fixture_file("tfk_educba.h5"), out)
    with h5py.File(fixture_file("tfk_educba.h5")) as orig, h5py.File(out) as f:
        assert set(f.attrs) == set(orig.attrs)
        assert f.attrs["keras_version"] == orig.attrs["keras_version"] and f.attrs["backend"] == "tensorflow"
        names = attr_list(f["model_weights"], "layer_names")
        assert names == [n for n in attr_list(orig["model_weights"], "layer_names") if not n.startswith("batch_normalization")]
        assert f["model_weights"].attrs.get_id("layer_names").dtype == orig["model_weights"].attrs.get_id("layer_names").dtype
        assert attr_list(f["model_weights/conv2d_1"], "weight_names") == ["conv2d_1/kernel:0", "conv2d_1/bias:0"]
        assert "top_level_model_weights" in f["model_weights"] and "optimizer_weights" not in f
        config = json.loads(f.attrs["model_config"])
    classes = [layer["class_name"] for layer in config["config"]["layers"]]
    assert "BatchNormalization" not in classes and classes.count("Conv2D") == 2
    _same_weights(bnconvert.load(out), folded)


def test_keras3_h5_names_follow_the_input(tmp_path: Path) -> None:
    out = tmp_path / "chain.h5"
    _, folded = _fold_write(fixture_file("k3_chain.h5"), out)
    with h5py.File(out) as f:
        group = f["model_weights"]
        dw = next(n for n in attr_list(group, "layer_names") if n.startswith("depthwise"))
        assert attr_list(group[dw], "weight_names") == [f"chain/{dw}/kernel", f"chain/{dw}/bias"]
        assert f.attrs["keras_version"].startswith("3.")
        config = json.loads(f.attrs["model_config"])
    layer = next(e for e in config["config"]["layers"] if e["config"]["name"] == dw)
    assert layer["config"]["use_bias"] is True
    _same_weights(bnconvert.load(out), folded)


def test_nested_models_in_legacy_h5(tmp_path: Path) -> None:
    for name in ("tfk_functional.h5", "k3_functional.h5"):
        out = tmp_path / name
        _, folded = _fold_write(fixture_file(name), out)
        with h5py.File(out) as f:
            names = attr_list(f["model_weights/inner_seq"], "weight_names")
        assert [n.split("/")[-1].split(":")[0] for n in names] == ["kernel", "bias"]
        _same_weights(bnconvert.load(out), folded)


def test_keras1_becomes_keras2(tmp_path: Path) -> None:
    out = tmp_path / "th.h5"
    _, folded = _fold_write(fixture_file("k1_th_model.h5"), out)
    with h5py.File(out) as f:
        assert f.attrs["keras_version"].startswith("2.") and f.attrs["backend"] == "tensorflow"
        assert "training_config" not in f.attrs
        config = json.loads(f.attrs["model_config"])
        assert attr_list(f["model_weights/convolution2d_1"], "weight_names") == ["convolution2d_1/kernel:0", "convolution2d_1/bias:0"]
    layers = {e["name"]: e for e in config["config"]["layers"]}
    assert layers["input_1"]["config"]["batch_input_shape"] == [None, 3, 10, 10]
    deconv = next(e for e in layers.values() if e["class_name"] == "Conv2DTranspose")
    assert deconv["config"]["output_padding"] == [0, 0] and "keras1_output_shape" not in deconv["config"]
    assert all(e["config"].get("data_format") == "channels_first" for e in layers.values() if e["class_name"] == "Conv2D")
    assert not any("keras1" in json.dumps(e) for e in layers.values())
    _same_weights(bnconvert.load(out), folded)


def test_keras1_sequential_gets_an_input_layer_and_mode2_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "seq.h5"
    _fold_write(fixture_file("k1_tf_seq.h5"), out)
    with h5py.File(out) as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
    assert layers[0]["class_name"] == "InputLayer" and layers[0]["config"]["batch_input_shape"] == [None, 10, 10, 3]
    assert "batch_input_shape" not in layers[1]["config"]
    with pytest.raises(UnsupportedLayerError, match="mode 2"):
        _fold_write(fixture_file("k1_mode2.h5"), tmp_path / "mode2.h5")


def test_weights_only_with_architecture_becomes_a_full_model(tmp_path: Path) -> None:
    out = tmp_path / "w.h5"
    _, folded = _fold_write(fixture_file("k2_weights.h5"), out, config=fixture_file("k2_weights.json"))
    with h5py.File(out) as f:
        assert "model_config" in f.attrs and "model_weights" in f
    _same_weights(bnconvert.load(out), folded)
    model = bnconvert.load(fixture_file("k2_weights.h5"))
    with pytest.raises(OutputError, match="--config"):
        write_model(model, tmp_path / "x.h5", original=model)


def test_long_attributes_are_chunked_like_keras(tmp_path: Path) -> None:
    names = [f"layer_with_a_rather_long_name_{i:05d}" for i in range(3000)]
    with h5py.File(tmp_path / "a.h5", "w") as f:
        save_list_attr(f, "layer_names", names)
        assert "layer_names" not in f.attrs and "layer_names0" in f.attrs and "layer_names1" in f.attrs
        assert all(f.attrs[k].nbytes <= 64512 for k in f.attrs)
        assert attr_list(f, "layer_names") == names
        save_list_attr(f, "weight_names", [])
        assert f.attrs["weight_names"].shape == (0,)


# -- .keras archives ---------------------------------------------------------------------------------------
def _weights_h5(path: Path) -> h5py.File:
    import io

    return h5py.File(io.BytesIO(zipfile.ZipFile(path).read("model.weights.h5")), "r")


def _groups(f: h5py.File) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}

    def visit(path: str, obj: object) -> None:  # must return None, or h5py stops visiting
        if isinstance(obj, h5py.Group) and path.endswith("vars"):
            found[path] = sorted(obj.keys())

    f.visititems(visit)
    return found


def test_keras3_zip_layout(tmp_path: Path) -> None:
    out = tmp_path / "functional.keras"
    _, folded = _fold_write(fixture_file("k3_functional.keras"), out)
    zf = zipfile.ZipFile(out)
    assert [i.filename for i in zf.infolist()] == ["metadata.json", "config.json", "model.weights.h5"]
    assert zf.getinfo("config.json").date_time == (1980, 1, 1, 0, 0, 0)
    assert json.loads(zf.read("metadata.json"))["keras_version"] == "3.15.1"
    with _weights_h5(out) as f:
        groups = _groups(f)
        # 6 BN -> 3 left; renumbered by class order: bn_after_shared, bn_after_add, bn_fork
        assert [p for p in groups if p.startswith("layers/batch_normalization")] == [
            "layers/batch_normalization/vars", "layers/batch_normalization_1/vars", "layers/batch_normalization_2/vars"]
        assert f["layers/batch_normalization_2/vars"].attrs["name"] == "bn_fork"
        assert f["layers/dense/vars"].attrs["name"] == "head_dense" and len(f["layers/dense/vars"]) == 2
        assert "layers/sequential/layers/conv2d/vars" in groups and "layers/sequential/layers/batch_normalization/vars" not in groups
        assert "layers/functional/layers/input_layer/vars" in groups
        assert f["vars"].attrs["name"] == "functional_bn"
    config = json.loads(zf.read("config.json"))
    out_b = next(e for e in config["config"]["layers"] if e["name"] == "out_b")
    assert out_b["inbound_nodes"][0]["args"][0]["config"]["keras_history"] == ["head_dense", 0, 0]
    _same_weights(bnconvert.load(out), folded)


def test_tfkeras_zip_layout(tmp_path: Path) -> None:
    out = tmp_path / "chain.keras"
    _, folded = _fold_write(fixture_file("tfk_chain.keras"), out)
    with _weights_h5(out) as f, _weights_h5(fixture_file("tfk_chain.keras")) as orig:
        kept = {p for p in _groups(orig) if "batch_normalization" not in p}
        assert set(_groups(f)) == kept
        assert not any("name" in f[p].attrs for p in _groups(f))
    _same_weights(bnconvert.load(out), folded)


def test_tfkeras_213_zip_keeps_its_layout_and_adds_the_current_one(tmp_path: Path) -> None:
    src = corpus_file("AliElgamel9__FastNeuralStyleTransfer")
    out = tmp_path / "style.keras"
    _, folded = _fold_write(src, out)
    with _weights_h5(out) as f, _weights_h5(src) as orig:
        old = _groups(orig)
        new = _groups(f)
        assert {p for p in new if p.startswith("_layer_checkpoint_dependencies")} == set(old) - {"vars"}
        assert "_layer_checkpoint_dependencies/conv2d_2/vars" in new and "layers/conv2d_1/vars" in new
        np.testing.assert_array_equal(f["layers/conv2d_1/vars/0"][()], orig["_layer_checkpoint_dependencies/conv2d_2/vars/0"][()])
    _same_weights(bnconvert.load(out), folded)


def _to_213_layout(src: Path, dst: Path) -> None:
    """Rewrite a tf-keras 2.21 ``.keras`` as tf.keras 2.13-2.15 saved it: weights under
    ``_layer_checkpoint_dependencies/`` and every layer with weights advancing its class counter by 2."""
    import io
    import re

    zin = zipfile.ZipFile(src)
    blob = io.BytesIO()
    with h5py.File(io.BytesIO(zin.read("model.weights.h5")), "r") as old, h5py.File(blob, "w") as new:
        by_class: dict[str, list[tuple[int, str]]] = {}
        for name in old["layers"]:
            match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
            by_class.setdefault(match.group(1), []).append((int(match.group(2) or 0), name))
        for cls, items in by_class.items():
            counter = 0
            for _, name in sorted(items):
                path = cls if counter == 0 else f"{cls}_{counter}"
                old.copy(old[f"layers/{name}"], new.require_group("_layer_checkpoint_dependencies"), name=path)
                counter += 2 if len(old[f"layers/{name}/vars"]) else 1
        new.create_group("vars")
    with zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, blob.getvalue() if info.filename == "model.weights.h5" else zin.read(info))


def test_tfkeras_213_layout_with_bn_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "chain213.keras"
    _to_213_layout(fixture_file("tfk_chain.keras"), src)
    _same_weights(bnconvert.load(src), bnconvert.load(fixture_file("tfk_chain.keras")))  # the reader agrees
    out = tmp_path / "chain213.folded.keras"
    _, folded = _fold_write(src, out)
    with _weights_h5(out) as f:
        groups = _groups(f)
    assert "_layer_checkpoint_dependencies/dense_2/vars" in groups and "layers/dense_1/vars" in groups
    assert not any("batch_normalization" in p for p in groups)
    _same_weights(bnconvert.load(out), folded)


# -- config edits ------------------------------------------------------------------------------------------
def test_config_edit_rewires_keras2_chains_and_moves_the_input_shape() -> None:
    model = bnconvert.load(fixture_file("k3_dense_tanh.keras"))
    folded, _ = fold_model(model)
    functional = {"class_name": "Functional", "config": {"name": "f", "layers": [
        {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_input_shape": [None, 10]}, "inbound_nodes": []},
        {"class_name": "Dense", "name": "dense", "config": {"name": "dense", "units": 12}, "inbound_nodes": [[["x", 0, 0, {}]]]},
        {"class_name": "BatchNormalization", "name": "batch_normalization", "config": {"name": "batch_normalization"},
         "inbound_nodes": [[["dense", 0, 0, {}]]]},
        {"class_name": "Dropout", "name": "dropout", "config": {"name": "dropout"}, "inbound_nodes": [[["batch_normalization", 0, 0, {}]]]},
        {"class_name": "Activation", "name": "activation", "config": {"name": "activation"},
         "inbound_nodes": [[["dropout", 0, 0, {"training": False}]]]},
    ], "input_layers": [["x", 0, 0]], "output_layers": [["dropout", 0, 0]]}}
    sub = folded.with_layers([layer for layer in folded.layers if layer.name in ("dense", "activation")])
    sub.layers.insert(0, bnconvert.Layer("x", "InputLayer"))
    sub = sub.with_layers(sub.layers)
    edited = edit_config(functional, sub)
    layers = {e["name"]: e for e in edited["config"]["layers"]}
    assert list(layers) == ["x", "dense", "activation"]
    assert layers["activation"]["inbound_nodes"] == [[["dense", 0, 0, {"training": False}]]]
    assert edited["config"]["output_layers"] == [["dense", 0, 0]]
    assert functional["config"]["layers"][2]["class_name"] == "BatchNormalization"  # input untouched
    seq = {"class_name": "Sequential", "config": [
        {"class_name": "Dropout", "config": {"name": "dropout", "batch_input_shape": [None, 10], "dtype": "float32"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 12}},
    ]}
    keep = folded.with_layers([layer for layer in folded.layers if layer.name == "dense"])
    edited = edit_config(seq, keep)
    assert edited["config"] == [{"class_name": "Dense",
                                 "config": {"name": "dense", "units": 12, "batch_input_shape": [None, 10], "dtype": "float32"}}]
    with pytest.raises(OutputError, match="only BN and identities"):
        edit_config(seq, keep.with_layers([]))


# -- atomic writes -----------------------------------------------------------------------------------------
def test_atomic_output(tmp_path: Path) -> None:
    src = tmp_path / "in.h5"
    src.write_bytes(b"input")
    with pytest.raises(OutputError, match="input"), atomic_output(src, inputs=[src], force=True):
        pass
    target = tmp_path / "out.h5"
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match="--force"), atomic_output(target, inputs=[src]):
        pass
    with pytest.raises(RuntimeError), atomic_output(target, inputs=[src], force=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["in.h5", "out.h5"]
    with atomic_output(target, inputs=[src], force=True) as tmp:
        assert tmp.parent.parent == tmp_path and tmp.name == "out.h5"  # private folder beside the target
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["in.h5", "out.h5"]
    with pytest.raises(OutputError, match="does not exist"), atomic_output(tmp_path / "missing" / "x.h5"):
        pass


# -- real Keras loads every written file ---------------------------------------------------------------------
_CHILD = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
lib, jobs = sys.argv[1], json.loads(sys.argv[2])
if lib == "keras":
    import keras as K
    load = lambda p: K.models.load_model(p, compile=False, safe_mode=True)
else:
    import tf_keras as K
    load = lambda p: K.models.load_model(p, compile=False)
import tensorflow as tf

def run(model, xs):
    x = xs if len(xs) > 1 else xs[0]
    try:
        y = model(x, training=False)
    except Exception as exc:
        if "Unimplemented" not in type(exc).__name__:
            raise
        y = tf.function(lambda t: model(t, training=False), jit_compile=True)(x)
    y = y if isinstance(y, (list, tuple)) else [y]
    return [np.asarray(v, np.float64) for v in y]

for job in jobs:
    try:
        if job.get("save"):
            rng = np.random.default_rng(1)
            ref = load(job["ref"])
            xs = [rng.uniform(0, 1, (2, *[int(d) for d in t.shape[1:]])).astype("float32") for t in ref.inputs]
            np.savez(job["save"], x=xs[0], y=run(ref, xs)[0])
            print(json.dumps({"name": job["name"], "rel": 0.0}), flush=True)
            continue
        new = load(job["new"])
        if job.get("expected"):
            data = np.load(job["expected"])
            xs, ref = [data["x"]], [data["y"].astype(np.float64)]
        else:
            rng = np.random.default_rng(1)
            xs = [rng.uniform(0, 1, (2, *[int(d) for d in t.shape[1:]])).astype("float32") for t in new.inputs]
            ref = run(load(job["ref"]), xs)
        got = run(new, xs)
        rel = max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(ref, got))
        print(json.dumps({"name": job["name"], "rel": rel}), flush=True)
    except Exception as exc:
        print(json.dumps({"name": job["name"], "error": f"{type(exc).__name__}: {str(exc)[:300]}"}), flush=True)
"""


def _keras_runs(lib: str, jobs: list[dict[str, str]]) -> dict[str, dict]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _CHILD, lib, json.dumps(jobs)], capture_output=True, text=True, env=env, timeout=900)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            results[item["name"]] = item
    assert results, proc.stderr[-2000:]
    return results


needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow not installed")

K3_FILES = ["k3_educba", "k3_educba_neg_gamma", "k3_dense_tanh", "k3_chain", "k3_conv1d", "k3_functional", "k3_bn_variants",
            "k3_after_act", "k3_channels_first", "k3_conv3d", "k3_conv1d_transpose", "k3_conv3d_transpose",
            "k3_depthwise_conv1d", "k3_separable_conv1d"]
TFK_FILES = ["tfk_educba", "tfk_chain", "tfk_conv1d", "tfk_functional", "tfk_bn_variants"]


@needs_tf
def test_keras3_loads_every_folded_keras3_and_keras2_file(tmp_path: Path) -> None:
    jobs = []
    for stem in K3_FILES:
        for ext in (".keras", ".h5"):
            out = tmp_path / f"{stem}.folded{ext}"
            _fold_write(fixture_file(stem + ext), out)
            jobs.append({"name": out.name, "ref": str(fixture_file(stem + ext)), "new": str(out)})
    # Keras 2 .h5 written by bnconvert must load in Keras 3 too. Keras 3 cannot read tf-keras'
    # nested-model node numbering nor its multi-axis BN, so tfk_functional and tfk_bn_variants are
    # not here; tfk_chain's original fails in Keras 3 (DepthwiseConv2D "groups"), its fold does not
    for stem in ("tfk_educba", "tfk_conv1d"):
        out = tmp_path / f"{stem}.folded.h5"
        _fold_write(fixture_file(stem + ".h5"), out)
        jobs.append({"name": out.name, "ref": str(fixture_file(stem + ".h5")), "new": str(out)})
    out = tmp_path / "tfk_chain.folded.h5"
    _fold_write(fixture_file("tfk_chain.h5"), out)
    truth = tmp_path / "tfk_chain.expected.npz"  # the original's outputs, computed by tf-keras
    _keras_runs("tf_keras", [{"name": "truth", "ref": str(fixture_file("tfk_chain.h5")), "save": str(truth)}])
    jobs.append({"name": out.name, "expected": str(truth), "new": str(out)})
    for stem in ("k1_tf_seq", "k1_th_model", "k1_conv1d"):
        out = tmp_path / f"{stem}.folded.h5"
        _fold_write(fixture_file(stem + ".h5"), out)
        jobs.append({"name": out.name, "expected": str(fixture_file(stem + ".expected.npz")), "new": str(out)})
    results = _keras_runs("keras", jobs)
    bad = {k: v for k, v in results.items() if "error" in v or v["rel"] > 1e-5}
    assert not bad and len(results) == len(jobs), bad
    assert max(v["rel"] for v in results.values()) < 1e-5


@needs_tf
def test_tf_keras_loads_every_folded_keras2_and_tfkeras_file(tmp_path: Path) -> None:
    jobs = []
    for stem in TFK_FILES:
        for ext in (".keras", ".h5"):
            out = tmp_path / f"{stem}.folded{ext}"
            _fold_write(fixture_file(stem + ext), out)
            jobs.append({"name": out.name, "ref": str(fixture_file(stem + ext)), "new": str(out)})
    for stem in ("k1_tf_seq", "k1_th_model", "k1_conv1d"):
        out = tmp_path / f"{stem}.folded.h5"
        _fold_write(fixture_file(stem + ".h5"), out)
        jobs.append({"name": out.name, "expected": str(fixture_file(stem + ".expected.npz")), "new": str(out)})
    out = tmp_path / "k1_weights.folded.h5"
    _fold_write(fixture_file("k1_weights.h5"), out, config=fixture_file("k1_weights_double.json"))
    jobs.append({"name": out.name, "expected": str(fixture_file("k1_weights.expected.npz")), "new": str(out)})
    src = tmp_path / "tfk_chain_213.keras"  # a tf.keras 2.13-layout archive: tf-keras 2.21 loads its fold
    _to_213_layout(fixture_file("tfk_chain.keras"), src)
    out = tmp_path / "tfk_chain_213.folded.keras"
    _fold_write(src, out)
    jobs.append({"name": out.name, "ref": str(fixture_file("tfk_chain.keras")), "new": str(out)})
    for ext in (".h5", ".keras"):  # tf-keras cannot load its own virtual-batch BN back; folded, it can
        out = tmp_path / f"tfk_bn_virtual_batch.folded{ext}"
        _fold_write(fixture_file("tfk_bn_virtual_batch" + ext), out)
        jobs.append({"name": out.name, "expected": str(fixture_file("tfk_bn_virtual_batch.expected.npz")), "new": str(out)})
    results = _keras_runs("tf_keras", jobs)
    bad = {k: v for k, v in results.items() if "error" in v or v["rel"] > 1e-5}
    assert not bad and len(results) == len(jobs), bad


# -- byte layout: what bnconvert writes vs what Keras itself saves for the folded architecture ----------------
_SAVE_PAIR = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
lib, folder = sys.argv[1], sys.argv[2]
K = __import__(lib)
L = K.layers
def build(with_bn):
    layers = [K.Input((8, 8, 3)), L.Conv2D(4, 3, use_bias=not with_bn, name="conv")]
    layers += [L.BatchNormalization(name="bn")] if with_bn else []
    layers += ([L.Flatten(name="flat"), L.Dropout(0.5, name="drop"), L.Dense(2, name="head")] if with_bn
               else [L.Flatten(name="flat"), L.Dense(2, name="head")])
    return K.Sequential(layers, name="tiny")
rng = np.random.default_rng(0)
unfolded, expected = build(True), build(False)
for v in unfolded.weights:
    v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
for ext in (".keras", ".h5"):
    unfolded.save(os.path.join(folder, "unfolded" + ext))
    expected.save(os.path.join(folder, "expected" + ext))
"""


def _h5_layout(f: h5py.Group) -> dict[str, object]:
    layout: dict[str, object] = {}

    def visit(path: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            layout[path] = (obj.shape, str(obj.dtype))
        else:
            layout[path + "/"] = sorted(k for k in obj.attrs if k not in ("model_config", "training_config"))
            for key in ("layer_names", "weight_names", "name"):
                if key in obj.attrs:
                    value = obj.attrs[key]
                    layout[f"{path}@{key}"] = (value.tolist() if hasattr(value, "tolist") else value, obj.attrs.get_id(key).dtype.kind)

    layout["/"] = sorted(k for k in f.attrs if k not in ("model_config",))
    f.visititems(visit)
    return layout


def _config_layers(config: dict) -> list[tuple[str, list[str]]]:
    body = config["config"]
    layers = body if isinstance(body, list) else body["layers"]
    return [(e["class_name"], sorted(e["config"])) for e in layers]


@needs_tf
@pytest.mark.parametrize("lib", ["keras", "tf_keras"])
def test_written_files_have_the_layout_keras_saves(lib: str, tmp_path: Path) -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", _SAVE_PAIR, lib, str(tmp_path)], check=True, capture_output=True, env=env, timeout=600)
    for ext in (".h5", ".keras"):
        out = tmp_path / f"folded{ext}"
        _fold_write(tmp_path / f"unfolded{ext}", out)
        if ext == ".h5":
            with h5py.File(out) as ours, h5py.File(tmp_path / f"expected{ext}") as keras_file:
                assert _h5_layout(ours) == _h5_layout(keras_file)
                config_ours, config_keras = json.loads(ours.attrs["model_config"]), json.loads(keras_file.attrs["model_config"])
        else:
            with _weights_h5(out) as ours, _weights_h5(tmp_path / f"expected{ext}") as keras_file:
                assert _h5_layout(ours) == _h5_layout(keras_file)
            zo, zk = zipfile.ZipFile(out), zipfile.ZipFile(tmp_path / f"expected{ext}")
            assert [(i.filename, i.compress_type) for i in zo.infolist()] == [(i.filename, i.compress_type) for i in zk.infolist()]
            config_ours, config_keras = json.loads(zo.read("config.json")), json.loads(zk.read("config.json"))
        assert _config_layers(config_ours) == _config_layers(config_keras), ext
