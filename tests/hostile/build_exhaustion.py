"""Files that would make a reader hang or do work out of proportion to their size: graph cycles,
a named pipe in a folder, bzip2/LZMA zip bombs with a small declared size, a weight path thousands
of groups deep, a long ``layer_names`` with one duplicate, configs of hundreds of thousands of layers.

Each builder writes one file into ``folder`` and returns its path. They build from the bundled
fixtures where a real model is needed, and write plain configs where only the size matters.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import struct
from pathlib import Path

import h5py
import numpy as np

from .build_files import _edit_h5, _edit_keras, _members, _raw_zip, _set_config, _stored, _zip

# -- cycles ------------------------------------------------------------------------------------


def _k3_tensor(name: str, node: int = 0) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"shape": [None, 12], "dtype": "float32",
                                                         "keras_history": [name, node, 0]}}


def _k3_inbound(config: dict, layer: str, sources: list[str | tuple[str, int]]) -> None:
    """Make ``layer`` of a Keras 3 functional config take its input from ``sources`` (layer names,
    or (name, call index) pairs)."""
    entry = next(e for e in config["config"]["layers"] if e["name"] == layer)
    args = [_k3_tensor(*((s, 0) if isinstance(s, str) else s)) for s in sources]
    entry["inbound_nodes"] = [{"args": args if len(args) > 1 else args[:1], "kwargs": {}}]


def _k2_inbound(config: dict, layer: str, sources: list[str]) -> None:
    entry = next(e for e in config["config"]["layers"] if e["name"] == layer)
    entry["inbound_nodes"] = [[[s, 0, 0, {}] for s in sources]]


def _layer_names(config: dict) -> list[str]:
    return [e["name"] for e in config["config"]["layers"]]


def cycle_self_keras(folder: Path) -> Path:
    """Keras 3 .keras: 'bn_head' takes its own output as input."""
    return _edit_keras("k3_functional.keras", folder, as_name="cycle_self.keras",
                       config=lambda c: _k3_inbound(c, "bn_head", ["bn_head"]))


def cycle_pair_keras(folder: Path) -> Path:
    """Keras 3 .keras: 'pre_conv' takes the second call of 'shared_conv', which takes 'pre_conv'."""
    return _edit_keras("k3_functional.keras", folder, as_name="cycle_pair.keras",
                       config=lambda c: _k3_inbound(c, "pre_conv", [("shared_conv", 1)]))


def cycle_self_h5(folder: Path) -> Path:
    """tf.keras .h5: 'bn_head' takes its own output as input."""
    return _edit_h5("tfk_functional.h5", folder,
                    lambda f: _set_config(f, lambda c: _k2_inbound(c, "bn_head", ["bn_head"])), "cycle_self.h5")


def cycle_pair_h5(folder: Path) -> Path:
    """tf.keras .h5: 'fork_conv' and 'fork_relu' take each other's output."""
    def change(c: dict) -> None:
        _k2_inbound(c, "fork_conv", ["fork_relu"])
    return _edit_h5("tfk_functional.h5", folder, lambda f: _set_config(f, change), "cycle_pair.h5")


def cycle_nested_h5(folder: Path) -> Path:
    """tf.keras .h5: a cycle inside the nested functional model 'inner_fn'."""
    def change(c: dict) -> None:
        inner = next(e for e in c["config"]["layers"] if e["name"] == "inner_fn")
        names = _layer_names(inner)
        first, last = names[1], names[-1]  # the first layer after the input takes the last one
        _k2_inbound(inner, first, [last])
    return _edit_h5("tfk_functional.h5", folder, lambda f: _set_config(f, change), "cycle_nested.h5")


def cycle_in_sequential_in_functional_keras(folder: Path) -> Path:
    """Keras 3 .keras: the nested Sequential 'inner_seq' is called on the output of a layer
    that itself depends on 'inner_seq'."""
    def change(c: dict) -> None:
        names = _layer_names(c)
        after = list(names[names.index("inner_seq") + 1:])
        entry = next(e for e in c["config"]["layers"] if e["name"] == "inner_seq")
        args = entry["inbound_nodes"][0]["args"]
        args[0]["config"]["keras_history"] = [after[0], 0, 0]
    return _edit_keras("k3_functional.keras", folder, as_name="cycle_seq_in_fn.keras", config=change)


# -- zip bombs by other methods ----------------------------------------------------------------


def _bzip2_zeros(megabytes: int) -> bytes:
    c = bz2.BZ2Compressor(9)
    chunk = bytes(1 << 20)
    return b"".join(c.compress(chunk) for _ in range(megabytes)) + c.flush()


def _zip_lzma_zeros(megabytes: int) -> bytes:
    """A zip LZMA member (method 14): version, properties size, properties, raw LZMA1 stream."""
    filters = [{"id": lzma.FILTER_LZMA1, "preset": 0}]  # zeros compress as well at the fastest preset
    c = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=filters)
    chunk = bytes(1 << 20)
    body = b"".join(c.compress(chunk) for _ in range(megabytes)) + c.flush()
    props = lzma._encode_filter_properties(filters[0])  # what zipfile itself writes
    return struct.pack("<BBH", 9, 4, len(props)) + props + body


def _bomb(folder: Path, name: str, member: str, method: int, payload: bytes, declared: int) -> Path:
    members = _members("k3_dense_tanh.keras")
    entries = [(m, members[m]) for m in ("metadata.json", "config.json", "model.weights.h5")]
    out = [_stored(m, data) for m, data in entries if m != member]
    out.append((member, payload, method, declared, 0))
    return _raw_zip(folder / name, out)


def zip_bzip2_bomb(folder: Path, megabytes: int = 1024) -> Path:
    """model.weights.h5 declares 100 KB; its bzip2 stream (a few hundred bytes) inflates to
    ``megabytes`` MiB."""
    return _bomb(folder, "bzip2_bomb.keras", "model.weights.h5", 12, _bzip2_zeros(megabytes), 100_000)


def zip_lzma_bomb(folder: Path, megabytes: int = 1024) -> Path:
    """model.weights.h5 declares 100 KB; its LZMA stream inflates to ``megabytes`` MiB."""
    return _bomb(folder, "lzma_bomb.keras", "model.weights.h5", 14, _zip_lzma_zeros(megabytes), 100_000)


def zip_bzip2_config_bomb(folder: Path, megabytes: int = 1024) -> Path:
    """config.json declares 4 KB; its bzip2 stream inflates to ``megabytes`` MiB."""
    return _bomb(folder, "bzip2_config_bomb.keras", "config.json", 12, _bzip2_zeros(megabytes), 4096)


# -- work that grows faster than the input -----------------------------------------------------


def deep_weight_path_h5(folder: Path, depth: int = 3000) -> Path:
    """tf.keras .h5 whose 'dense' kernel is listed (and stored) ``depth`` groups deep."""
    def edit(f: h5py.File) -> None:
        group = f["model_weights/dense"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        kernel_name = next(n for n in names if "kernel" in n)
        data = group[kernel_name][()]
        deep = "/".join(["g"] * (depth - 1)) + "/kernel:0"
        group.create_dataset(deep, data=data)
        group.attrs["weight_names"] = np.array([deep if n == kernel_name else n for n in names], dtype="S")
    return _edit_h5("tfk_chain.h5", folder, edit, "deep_path.h5")


def duplicate_layer_names_h5(folder: Path, count: int = 30_000) -> Path:
    """A Keras 2 weights-only .h5 whose ``layer_names`` lists ``count`` weightless layers, one twice
    (split into ``layer_names0``, ``layer_names1``... as Keras does for long attributes)."""
    path = folder / "duplicate_names.h5"
    names = [f"layer_{i}" for i in range(count - 1)] + [f"layer_{count // 2}"]
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        per = 4000
        for i in range(0, len(names), per):
            f.attrs[f"layer_names{i // per}"] = np.array(names[i:i + per], dtype="S")
    return path


def _entry(cls: str, name: str, config: dict, source: str | None) -> dict:
    """A layer entry as lean as the reader accepts (a hostile file has no reason to be verbose):
    the tf.keras form of ``inbound_nodes``, which every reader takes."""
    entry = {"class_name": cls, "config": {"name": name, **config}, "name": name}
    if source is not None:
        entry["inbound_nodes"] = [[[source, 0, 0, {}]]]
    return entry


def _chain(count: int) -> list[tuple[str, str, dict]]:
    """A Dense + BN head, then ``count - 2`` weightless activations: (class, name, config)."""
    layers = [("Dense", "dense", {"units": 4, "activation": "linear", "use_bias": True}),
              ("BatchNormalization", "batch_normalization",
               {"axis": -1, "epsilon": 0.001, "center": True, "scale": True, "momentum": 0.99})]
    acts = ("relu", "tanh", "sigmoid", "linear")
    layers += [("Activation", f"a{i}", {"activation": acts[i % 4]}) for i in range(count - 2)]
    return layers


def _head_weights() -> bytes:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars")
        f.create_dataset("layers/dense/vars/0", data=rng.normal(size=(4, 4)).astype("float32"))
        f.create_dataset("layers/dense/vars/1", data=rng.normal(size=4).astype("float32"))
        bn = [rng.normal(size=4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, size=4)]
        for i, v in enumerate(bn):
            f.create_dataset(f"layers/batch_normalization/vars/{i}", data=v.astype("float32"))
    return buf.getvalue()


def big_config_keras(folder: Path, count: int, kind: str) -> Path:
    """A Keras 3 .keras of ``count`` layers, its input included (``kind`` Sequential or Functional)."""
    chain = _chain(count - 1)
    layers = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None, "name": "input",
               "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "input"}}]
    previous = "input"
    for cls, name, cfg in chain:
        layers.append(_entry(cls, name, cfg, previous if kind == "Functional" else None))
        previous = name
    body: dict = {"name": "big", "trainable": True, "layers": layers}
    if kind == "Functional":
        layers[0]["inbound_nodes"] = []
        body.update(input_layers=[["input", 0, 0]], output_layers=[[previous, 0, 0]])
    config = {"module": "keras", "class_name": kind, "config": body, "registered_name": None}
    members = {"metadata.json": json.dumps({"keras_version": "3.6.0"}).encode(),
               "config.json": json.dumps(config).encode(), "model.weights.h5": _head_weights()}
    return _zip(folder / f"big_{kind.lower()}_{count}.keras", members)



def nested_keras1_names_h5(folder: Path, count: int = 10_000) -> Path:
    """A Keras 2 .h5 whose one nested Sequential holds ``count`` Dense layers with weights named
    the Keras 1 way (``d7_W``, ``d7_b``): each name's owner is found by its prefix."""
    inner = [{"class_name": "Dense", "config": {"name": f"d{i}", "units": 1,
                                                **({"batch_input_shape": [None, 1]} if i == 0 else {})}}
             for i in range(count)]
    config = {"class_name": "Sequential", "config": {"name": "outer", "build_input_shape": [None, 1], "layers": [
        {"class_name": "Sequential", "config": {"name": "inner", "layers": inner}}]}}
    path = folder / "nested_keras1_names.h5"
    rng = np.random.default_rng(5)
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([b"inner"])
        group = weights.create_group("inner")
        names = [n for i in range(count) for n in (f"d{i}_W", f"d{i}_b")]
        for i in range(count):
            group.create_dataset(f"d{i}_W", data=rng.normal(size=(1, 1)).astype("float32"))
            group.create_dataset(f"d{i}_b", data=rng.normal(size=1).astype("float32"))
        group.attrs["weight_names"] = np.array(names, dtype="S")
    return path


def many_outputs_keras(folder: Path, bns: int = 1000, outputs: int = 97_000) -> Path:
    """A Keras 3 .keras whose input feeds ``bns`` BatchNormalization layers (each into an
    Activation) and ``outputs`` more Activations, all of them model outputs: every BN's forward
    fold asks whether its output is a model output."""
    layers = [{"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_shape": [None, 2]},
               "inbound_nodes": []}]
    bn = {"axis": -1, "epsilon": 0.001, "center": True, "scale": True}
    outs = []
    for i in range(bns):
        layers.append(_entry("BatchNormalization", f"bn{i}", bn, "x"))
        layers.append(_entry("Activation", f"r{i}", {"activation": "relu"}, f"bn{i}"))
        outs.append([f"r{i}", 0, 0])
    for i in range(outputs):
        layers.append(_entry("Activation", f"a{i}", {"activation": "relu"}, "x"))
        outs.append([f"a{i}", 0, 0])
    config = {"class_name": "Functional", "config": {"name": "wide", "layers": layers,
                                                     "input_layers": [["x", 0, 0]], "output_layers": outs}}
    rng = np.random.default_rng(4)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars")
        for i in range(bns):
            group = f.create_group("layers/batch_normalization" + (f"_{i}" if i else "") + "/vars")
            for k, v in enumerate([rng.normal(size=2), rng.normal(size=2), rng.normal(size=2),
                                   rng.uniform(0.5, 2, size=2)]):
                group.create_dataset(str(k), data=v.astype("float32"))
    members = {"metadata.json": json.dumps({"keras_version": "3.6.0"}).encode(),
               "config.json": json.dumps(config).encode(), "model.weights.h5": buf.getvalue()}
    return _zip(folder / "many_outputs.keras", members)


def weights_only_bn_chain_h5(folder: Path, pairs: int = 10_000) -> Path:
    """A Keras 2 weights-only .h5 of ``pairs`` Dense + BatchNormalization layers (no architecture:
    each BN is reported with the previous layer with weights in file order)."""
    path = folder / "weights_only_chain.h5"
    rng = np.random.default_rng(6)
    names = []
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        for i in range(pairs):
            for name, weights in ((f"dense_{i}", {"kernel:0": (2, 2), "bias:0": (2,)}),
                                  (f"batch_normalization_{i}", {"gamma:0": (2,), "beta:0": (2,),
                                                                "moving_mean:0": (2,), "moving_variance:0": (2,)})):
                group = f.create_group(name)
                for w, shape in weights.items():
                    value = rng.uniform(0.5, 2, size=shape) if "variance" in w else rng.normal(size=shape)
                    group.create_dataset(f"{name}/{w}", data=value.astype("float32"))
                group.attrs["weight_names"] = np.array([f"{name}/{w}" for w in weights], dtype="S")
                names.append(name)
        per = 4000
        for i in range(0, len(names), per):
            f.attrs[f"layer_names{i // per}"] = np.array(names[i:i + per], dtype="S")
    return path


def dropout_chain_keras(folder: Path, count: int = 20_000) -> Path:
    """A Keras 3 .keras: a Dense + BN head, then ``count`` Dropouts in a chain, each also read by
    its own Activation (a model output). Folding removes the Dropouts (identities at inference)."""
    layers = [{"class_name": "InputLayer", "name": "input", "config": {"name": "input", "batch_shape": [None, 4]},
               "inbound_nodes": []}]
    layers.append(_entry("Dense", "dense", {"units": 4, "activation": "linear", "use_bias": True}, "input"))
    layers.append(_entry("BatchNormalization", "batch_normalization",
                         {"axis": -1, "epsilon": 0.001, "center": True, "scale": True}, "dense"))
    previous, outs = "batch_normalization", []
    for i in range(count):
        layers.append(_entry("Dropout", f"d{i}", {"rate": 0.5}, previous))
        layers.append(_entry("Activation", f"a{i}", {"activation": "relu"}, f"d{i}"))
        outs.append([f"a{i}", 0, 0])
        previous = f"d{i}"
    config = {"class_name": "Functional", "config": {"name": "drops", "layers": layers,
                                                     "input_layers": [["input", 0, 0]], "output_layers": outs}}
    members = {"metadata.json": json.dumps({"keras_version": "3.6.0"}).encode(),
               "config.json": json.dumps(config).encode(), "model.weights.h5": _head_weights()}
    return _zip(folder / f"dropout_chain_{count}.keras", members)
