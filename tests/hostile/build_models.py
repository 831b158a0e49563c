"""Hostile and broken *models*: config and weights that disagree, values of the wrong kind,
NaN/Inf and negative variance, Lambda and custom-class payloads, formats behind the wrong suffix.

Payloads are armed: a Lambda's bytecode and a custom class's module create ``MARKER`` beside the
model if anything ever runs or imports them.
"""

from __future__ import annotations

import base64
import marshal
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from .build_files import _copy, _edit_h5, _edit_keras, _set_config

MARKER = "EXECUTED"  # a payload that runs creates this file beside the model
EVIL_MODULE = "bnconvert_hostile_payload"  # importing it creates MARKER too


def _payload(folder: Path) -> str:
    """base64 of a marshalled code object that creates MARKER when called (what Keras stores)."""
    marker = str(folder / MARKER)
    code = compile(f"lambda x: (open({marker!r}, 'w').write('ran'), x)[1]", "<hostile>", "eval").co_consts[0]
    return base64.b64encode(marshal.dumps(code)).decode("ascii")


def _keras2_lambda(folder: Path, name: str = "evil_lambda") -> dict:
    return {"class_name": "Lambda", "config": {
        "name": name, "trainable": True, "function": [_payload(folder), None, None], "function_type": "lambda",
        "output_shape": None, "output_shape_type": "raw", "arguments": {}}}


def _keras3_lambda(folder: Path, name: str = "evil_lambda") -> dict:
    return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None, "config": {
        "name": name, "trainable": True, "dtype": "float32",
        "function": {"class_name": "__lambda__", "config": {"code": _payload(folder), "defaults": None, "closure": None}},
        "arguments": {}}}


def _insert_layer(config: dict, entry: dict, at: int = 1) -> None:
    config["config"]["layers"].insert(at, entry)


def _payload_module(folder: Path) -> Path:
    """A module that creates MARKER when imported (put on sys.path by the tests that use it)."""
    code = f"open({str(folder / MARKER)!r}, 'w').write('imported')\n"
    (folder / f"{EVIL_MODULE}.py").write_text(code)
    return folder


def missing_layer_h5(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        del f["model_weights/dense_1"]
        names = [n for n in f["model_weights"].attrs["layer_names"] if n not in (b"dense_1", "dense_1")]
        f["model_weights"].attrs["layer_names"] = np.array(names, dtype="S")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "missing_layer.h5")


def wrong_shape_h5(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        group = f["model_weights/dense_1/dense_tanh/dense_1"]
        del group["kernel"]
        group["kernel"] = np.ones((7, 12), dtype="float32")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "wrong_shape.h5")


def wrong_shape_keras(folder: Path) -> Path:
    def weights(f: h5py.File) -> None:
        group = f["layers/dense_1/vars"]
        del group["0"]
        group["0"] = np.ones((12, 5), dtype="float32")
    return _edit_keras("k3_dense_tanh.keras", folder, weights=weights, as_name="wrong_shape.keras")


def wrong_count_h5(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        f["model_weights/dense_2"].attrs["weight_names"] = np.array([b"dense_tanh/dense_2/kernel"])
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "wrong_count.h5")


def wrong_count_keras(folder: Path) -> Path:
    def weights(f: h5py.File) -> None:
        del f["layers/batch_normalization/vars/3"]
    return _edit_keras("k3_dense_tanh.keras", folder, weights=weights, as_name="wrong_count.keras")


def bn_sizes_differ(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        group = f["model_weights/batch_normalization_1/dense_tanh/batch_normalization_1"]
        del group["gamma"]
        group["gamma"] = np.ones(11, dtype="float32")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "bn_sizes_differ.h5")


def bad_config_value(folder: Path) -> Path:
    def change(config: dict) -> None:
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "BatchNormalization":
                layer["config"]["epsilon"] = "a lot"
    return _edit_keras("k3_dense_tanh.keras", folder, config=change, as_name="bad_epsilon.keras")


def _bn_edit(array: str, values: Callable[[np.ndarray], np.ndarray], layer: str = "batch_normalization_1"):
    def edit(f: h5py.File) -> None:
        d = f[f"model_weights/{layer}/dense_tanh/{layer}/{array}"]
        d[...] = values(d[...])
    return edit


def nan_in_bn(folder: Path) -> Path:
    return _edit_h5("k3_dense_tanh.h5", folder, _bn_edit("moving_mean", lambda a: np.where(np.arange(a.size) == 3, np.nan, a)),
                    "nan_bn.h5")


def inf_in_kernel(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        d = f["model_weights/dense_1/dense_tanh/dense_1/kernel"]
        a = d[...]
        a[0, 0] = np.inf
        d[...] = a
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "inf_kernel.h5")


def negative_variance(folder: Path) -> Path:
    """var + eps <= 0 on one channel (sqrt undefined)."""
    return _edit_h5("k3_dense_tanh.h5", folder, _bn_edit("moving_variance", lambda a: np.where(np.arange(a.size) == 2, -0.5, a)),
                    "negative_variance.h5")


def slightly_negative_variance(folder: Path) -> Path:
    """var < 0 but var + eps > 0: computable, still corrupted statistics."""
    return _edit_h5("k3_dense_tanh.h5", folder, _bn_edit("moving_variance", lambda a: np.where(np.arange(a.size) == 2, -1e-4, a)),
                    "slightly_negative_variance.h5")


def nan_in_staying_bn(folder: Path) -> Path:
    """NaN in a BN that is not folded (after relu, before MaxPool with negative gammas)."""
    def weights(f: h5py.File) -> None:
        d = f["layers/batch_normalization/vars/3"]
        a = d[...]
        a[0] = np.nan
        d[...] = a
    return _edit_keras("k3_educba_neg_gamma.keras", folder, weights=weights, as_name="nan_staying_bn.keras")


def lambda_h5(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        _set_config(f, lambda c: _insert_layer(c, _keras2_lambda(folder)))
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "lambda.h5")


def lambda_keras(folder: Path) -> Path:
    return _edit_keras("k3_dense_tanh.keras", folder, config=lambda c: _insert_layer(c, _keras3_lambda(folder)),
                       as_name="lambda.keras")


def wrapped_lambda_h5(folder: Path) -> Path:
    """A Lambda hidden inside a wrapper layer (TimeDistributed)."""
    wrapper = {"class_name": "TimeDistributed", "config": {"name": "td", "trainable": True, "layer": _keras2_lambda(folder)}}

    def edit(f: h5py.File) -> None:
        _set_config(f, lambda c: _insert_layer(c, wrapper))
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "wrapped_lambda.h5")


def custom_class_keras(folder: Path) -> Path:
    _payload_module(folder)
    custom = {"module": EVIL_MODULE, "class_name": "EvilLayer", "registered_name": f"{EVIL_MODULE}>EvilLayer",
              "config": {"name": "evil", "trainable": True}}
    return _edit_keras("k3_dense_tanh.keras", folder, config=lambda c: _insert_layer(c, custom), as_name="custom.keras")


def custom_class_h5(folder: Path) -> Path:
    _payload_module(folder)
    custom = {"class_name": "EvilLayer", "module": EVIL_MODULE, "config": {"name": "evil", "trainable": True}}

    def edit(f: h5py.File) -> None:
        _set_config(f, lambda c: _insert_layer(c, custom))
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "custom.h5")


def keras_that_is_hdf5(folder: Path) -> Path:
    return _copy("k3_dense_tanh.h5", folder, "really_hdf5.keras")


def h5_that_is_zip(folder: Path) -> Path:
    return _copy("k3_dense_tanh.keras", folder, "really_zip.h5")
