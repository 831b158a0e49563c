"""The tf-keras models of the activation and scoring tests (``test_activations_k3.py`` and
``test_scoring.py`` here, their ONNX twins in ``tests/onnx``): built, run and saved as ``.h5`` in
one subprocess per session (tf-keras never shares a process with Keras 3; one TensorFlow start
for all of them)."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["activation_files", "scoring_files", "session_folder"]

#: inputs spread over every branch of the piecewise activations
ACTIVATION_SCALE = 2.5

_SCRIPT = r'''
import json, sys
import h5py
import numpy as np
import tf_keras
L = tf_keras.layers
folder = sys.argv[1]
tf_keras.utils.set_random_seed(0)
rng = np.random.default_rng(7)

def attention():
    q, v, k, s = tf_keras.Input((4, 5)), tf_keras.Input((6, 5)), tf_keras.Input((6, 5)), tf_keras.Input((6, 3))
    concat, scores = L.Attention(use_scale=True, score_mode="concat")([q, v, k], return_attention_scores=True)
    outs = [L.Attention(dropout=0.4)([q, v]), L.Attention(use_scale=True)([q, v, k]), concat, scores,
            L.Attention(score_mode="concat")([s, s], use_causal_mask=True),
            L.Attention(use_scale=True, name="old_causal")([s, s, s]),  # made causal in the file, below
            L.AdditiveAttention()([q, v, k]), L.AdditiveAttention(use_scale=False)([s, s], use_causal_mask=True)]
    return tf_keras.Model([q, v, k, s], outs)

def masked():
    qi, vi = tf_keras.Input((5,), dtype="int32"), tf_keras.Input((6,), dtype="int32")
    eq, ev = L.Embedding(9, 4, mask_zero=True)(qi), L.Embedding(9, 4, mask_zero=True)(vi)
    out, scores = L.Attention(use_scale=True)([eq, ev], return_attention_scores=True)
    causal = L.AdditiveAttention()([eq, eq], use_causal_mask=True)
    return tf_keras.Model([qi, vi], [out, scores, causal, L.LSTM(3)(out)])

def dot():
    a, b, c, d = tf_keras.Input((5,)), tf_keras.Input((5,)), tf_keras.Input((3, 5)), tf_keras.Input((4, 3))
    e, f, g = tf_keras.Input((2, 3, 4)), tf_keras.Input((4, 5)), tf_keras.Input((4, 5))
    outs = [L.Dot(axes=-1)([a, b]), L.Dot(axes=(1, 2))([c, d]), L.Dot(axes=2, normalize=True)([c, g]),
            L.Dot(axes=(1, 2))([a, f]), L.Dot(axes=(-1, 1))([e, f]), L.Dot(axes=(1, 1), normalize=True)([a, b])]
    return tf_keras.Model([a, b, c, d, e, f, g], outs)

def fourier():
    x = tf_keras.Input((5,))
    rff = L.experimental.RandomFourierFeatures
    return tf_keras.Model(x, [rff(6, scale=2.0)(x), rff(4, kernel_initializer="laplacian", trainable=True)(x)])

def inputs(model):
    xs = []
    for t in model.inputs:
        shape = (3, *t.shape[1:])
        if t.dtype.is_integer:
            ids = rng.integers(1, 9, shape)
            for row, keep in zip(ids, (shape[1], shape[1] - 2, 2)):
                row[keep:] = 0
            xs.append(ids.astype("int32"))
        else:
            xs.append(rng.normal(0.0, 1.0, shape).astype("float32"))
    return xs

def activations():
    """Every tf-keras activation name, as an Activation layer and as a Dense activation."""
    x = tf_keras.Input((4, 6))
    outs = []
    for name in ACTIVATION_NAMES:
        outs += [L.Activation(name)(x), L.Dense(5, activation=name)(x)]
    return tf_keras.Model(x, outs)

skip = {"get", "serialize", "deserialize"}
ACTIVATION_NAMES = sorted(n for n in dir(tf_keras.activations) if not n.startswith("_") and n not in skip
                          and callable(getattr(tf_keras.activations, n)))
done = {"activation_names": ACTIVATION_NAMES}
xs_activations = [(np.random.default_rng(3).normal(0.0, 1.0, (3, 4, 6)) * float(sys.argv[2])).astype("float32")]
for name, build in (("attention", attention), ("masked", masked), ("dot", dot), ("fourier", fourier),
                    ("activations", activations)):
    model = build()
    for v in model.weights:
        kind = v.name.split("/")[-1].split(":")[0]
        if kind in ("scale", "concat_score_weight", "kernel_scale"):
            v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
        elif kind == "bias":
            v.assign(rng.normal(0.0, 0.5, tuple(v.shape)).astype("float32"))
    xs = xs_activations if name == "activations" else inputs(model)
    model.save(f"{folder}/{name}.h5")
    if name == "attention":  # tf.keras up to 2.10 wrote the deprecated ``causal`` into the config
        with h5py.File(f"{folder}/{name}.h5", "r+") as f:
            config = json.loads(f.attrs["model_config"])
            for layer in config["config"]["layers"]:
                if layer["config"]["name"] == "old_causal":
                    layer["config"]["causal"] = True
            f.attrs["model_config"] = json.dumps(config)
        model = tf_keras.models.load_model(f"{folder}/{name}.h5", compile=False)  # what the file computes
    ys = model(xs if len(xs) > 1 else xs[0], training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    np.savez(f"{folder}/{name}.npz", **{f"x{i}": x for i, x in enumerate(xs)}, **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
    done[name] = [len(xs), len(ys)]
print(json.dumps(done))
'''


def session_folder(prefix: str) -> Path:
    """A temporary folder for files shared by several test modules (a cached function cannot use
    pytest's per-test folders), removed when the test process ends."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def _run() -> tuple[Path, dict]:
    folder = session_folder("bnc_a2_tfk_")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(folder), str(ACTIVATION_SCALE)], check=False,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, json.loads(done.stdout.strip().splitlines()[-1])


def _case(name: str) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    folder, counts = _run()
    n_in, n_out = counts[name]
    data = np.load(folder / f"{name}.npz")
    return folder / f"{name}.h5", [data[f"x{i}"] for i in range(n_in)], [data[f"y{i}"] for i in range(n_out)]


def scoring_files() -> dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]:
    """name -> (the tf-keras ``.h5``, its inputs, tf-keras' outputs)."""
    return {name: _case(name) for name in ("attention", "masked", "dot", "fourier")}


def activation_files() -> tuple[Path, list[np.ndarray], list[np.ndarray], list[str]]:
    """The activations model: its file, inputs, outputs and the activation name of each output."""
    path, xs, ys = _case("activations")
    return path, xs, ys, [n for name in _run()[1]["activation_names"] for n in (name, name)]
