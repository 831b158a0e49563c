"""The tf-keras models of the scoring tests (``test_scoring.py`` here, ``tests/onnx/test_scoring.py``):
built, run and saved as ``.h5`` in one subprocess per session (tf-keras never shares a process
with Keras 3)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["scoring_files"]

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
    outs = [L.Attention()([q, v]), L.Attention(use_scale=True)([q, v, k]), concat, scores,
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

done = {}
for name, build in (("attention", attention), ("masked", masked), ("dot", dot), ("fourier", fourier)):
    model = build()
    for v in model.weights:
        if v.name.split("/")[-1].split(":")[0] in ("scale", "concat_score_weight", "bias", "kernel_scale"):
            v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
    xs = inputs(model)
    model.save(f"{folder}/{name}.h5")
    if name == "attention":  # tf.keras up to 2.10 wrote the deprecated ``causal`` into the config
        with h5py.File(f"{folder}/{name}.h5", "r+") as f:
            config = json.loads(f.attrs["model_config"])
            for layer in config["config"]["layers"]:
                if layer["config"]["name"] == "old_causal":
                    layer["config"]["causal"] = True
            f.attrs["model_config"] = json.dumps(config)
    custom = {"RandomFourierFeatures": L.experimental.RandomFourierFeatures}  # not in tf-keras' own registry
    loaded = tf_keras.models.load_model(f"{folder}/{name}.h5", compile=False, custom_objects=custom)  # the file's outputs
    ys = loaded(xs if len(xs) > 1 else xs[0], training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    np.savez(f"{folder}/{name}.npz", **{f"x{i}": x for i, x in enumerate(xs)}, **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
    done[name] = [len(xs), len(ys)]
print(json.dumps(done))
'''


@functools.cache
def scoring_files() -> dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]:
    """name -> (the tf-keras ``.h5``, its inputs, tf-keras' outputs)."""
    folder = Path(tempfile.mkdtemp(prefix="bnc_scoring_tfk_"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(folder)], check=False, capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    out = {}
    for name, (n_in, n_out) in counts.items():
        data = np.load(folder / f"{name}.npz")
        out[name] = (folder / f"{name}.h5", [data[f"x{i}"] for i in range(n_in)], [data[f"y{i}"] for i in range(n_out)])
    return out
