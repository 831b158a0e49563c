"""Independent references for files Keras 3 cannot load in the test process.

* tf-keras (Keras 2 files): run in a subprocess, so Keras 3 and tf-keras never share a process.
  A file tf-keras cannot load itself (a tf.keras 2.13 ``.keras``) is rebuilt there from its
  architecture JSON with the weights bnconvert read (this tests the export, not the reader).
* Keras 1 files: the equivalent Keras 3 model, rebuilt from bnconvert's model with the Keras 1
  semantics of ``docs/keras-formats.md`` (mode 2 BN runs with batch statistics: ``training=True``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bnconvert.layerspec import weight_spec
from bnconvert.model import Model

_TFK_SCRIPT = r"""
import json, sys
import numpy as np
import tf_keras
for job in json.load(open(sys.argv[1])):
    if job["config"] is not None:
        model = tf_keras.models.model_from_json(job["config"])
        weights = np.load(job["weights"])
        for layer in model.layers:
            n = sum(1 for k in weights.files if k.startswith(layer.name + "::"))
            if n:
                layer.set_weights([weights[f"{layer.name}::{i}"] for i in range(n)])
    else:
        model = tf_keras.models.load_model(job["path"], compile=False)
    data = np.load(job["inputs"])
    xs = [data[f"x{i}"] for i in range(len(data.files))]
    ys = model(xs if len(xs) > 1 else xs[0], training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    np.savez(job["out"], *[np.asarray(y) for y in ys])
"""


def tfk_predict(jobs: list[tuple[str | os.PathLike[str], list[np.ndarray], Model | None]]) -> list[list[np.ndarray]]:
    """tf-keras' outputs, one subprocess for all ``(path, inputs, rebuild_from)`` jobs.

    ``rebuild_from``: build the model from the file's config with that bnconvert model's weights
    instead of loading the file.
    """
    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for k, (path, xs, rebuild_from) in enumerate(jobs):
            job: dict[str, Any] = {"path": str(path), "config": None, "weights": None,
                                   "inputs": f"{tmp}/x{k}.npz", "out": f"{tmp}/y{k}.npz"}
            np.savez(job["inputs"], **{f"x{i}": x for i, x in enumerate(xs)})
            if rebuild_from is not None:
                assert rebuild_from.source is not None and rebuild_from.source.config is not None
                job["config"] = json.dumps(rebuild_from.source.config)
                job["weights"] = f"{tmp}/w{k}.npz"
                np.savez(job["weights"], **_keras_order(rebuild_from))
            specs.append(job)
        Path(f"{tmp}/jobs.json").write_text(json.dumps(specs))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        done = subprocess.run([sys.executable, "-c", _TFK_SCRIPT, f"{tmp}/jobs.json"], capture_output=True, text=True,
                              env=env, timeout=900)
        if done.returncode:
            raise RuntimeError(f"tf-keras failed: {done.stderr.strip().splitlines()[-3:]}")
        results = []
        for job in specs:
            out = np.load(job["out"])
            results.append([out[f"arr_{i}"] for i in range(len(out.files))])
        return results


def _keras_order(model: Model) -> dict[str, np.ndarray]:
    arrays = {}
    for layer in model.layers:
        spec = weight_spec(layer.class_name, layer.config) or []
        for i, (meaning, _) in enumerate(spec):
            arrays[f"{layer.name}::{i}"] = layer.weights[meaning]
    return arrays


_ARGS = {
    "Dense": ("units", "activation", "use_bias"),
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "data_format", "activation", "use_bias", "dilation_rate"),
    "Reshape": ("target_shape",),
    "BatchNormalization": ("axis", "epsilon", "center", "scale"),
    "Activation": ("activation",),
    "MaxPooling2D": ("pool_size", "strides", "padding", "data_format"),
    "Flatten": (),
    "Dropout": ("rate",),
}


def keras1_equivalent(model: Model) -> Any:
    """The Keras 3 model computing what a Keras 1 Sequential ``model`` computed."""
    import keras

    first = model.layers[0]
    inp = keras.Input(tuple(first.config["batch_shape"][1:]))
    x = inp
    for layer in model.layers[1:]:
        args = {k: layer.config[k] for k in _ARGS[layer.class_name] if k in layer.config}
        k_layer = getattr(keras.layers, layer.class_name)(**args)
        mode2 = layer.class_name == "BatchNormalization" and layer.config.get("keras1_mode") == 2
        x = k_layer(x, training=True) if mode2 else k_layer(x)
        spec = weight_spec(layer.class_name, layer.config) or []
        if spec:
            k_layer.set_weights([layer.weights[m] for m, _ in spec])
    return keras.Model(inp, x)


_TFK_SEMANTICS = r"""
import sys
import numpy as np
import tf_keras
L = tf_keras.layers
inp = tf_keras.Input((5, 6, 3))
x = L.Conv2D(4, 3, padding="same", activation="hard_sigmoid")(inp)
x = L.UpSampling2D(2, interpolation="bilinear")(x)
x = L.ThresholdedReLU(theta=0.6)(x)
y = L.Conv2D(3, 1)(inp)
y = L.LeakyReLU(alpha=0.25)(y)
y = L.UpSampling2D((2, 2))(y)
out = L.Concatenate()([x, y])
model = tf_keras.Model(inp, L.Dense(2, activation="selu")(out))
model.save(sys.argv[1])
xs = np.random.default_rng(1).normal(0, 2, (2, 5, 6, 3)).astype("float32")
np.savez(sys.argv[2], x=xs, y=model(xs, training=False).numpy())
"""


def tfk_semantics_file(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A tf-keras ``.h5`` whose layers compute differently in Keras 3 (hard_sigmoid is 0.2x+0.5,
    bilinear UpSampling uses half-pixel centres, ThresholdedReLU, LeakyReLU ``alpha``), with
    tf-keras' own output."""
    path, out = folder / "tfk_semantics.h5", folder / "tfk_semantics.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _TFK_SEMANTICS, str(path), str(out)], capture_output=True, text=True,
                          env=env, timeout=600)
    if done.returncode:
        raise RuntimeError(f"tf-keras failed: {done.stderr.strip().splitlines()[-3:]}")
    data = np.load(out)
    return path, data["x"], data["y"]
