"""The legacy classes' float64 semantics (:mod:`bnconvert.catalog.legacy_layers`) against Keras.

LocallyConnected1D/2D against tf_keras 2.21 (the last Keras that has them), in each of its three
kernel layouts (``implementation`` 1, 2, 3), valid and same padding, strides, both data formats,
with and without bias: tf_keras builds, runs and saves the models in one subprocess (never in
the process of Keras 3), bnconvert reads the saved ``.h5`` and the float64 reference runs it.
The same process loads the Keras 1 fixtures bnconvert folded and wrote as Keras 2 files.
The Keras 1 classes (no installed Keras has them) are checked against the hand-computed Keras 1
outputs of their fixtures in ``tests/readers/test_legacy_layers.py``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import bnconvert
from bnconvert.catalog import catalog
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError
from bnconvert.model import Layer

from ..conftest import FIXTURES, fixture_file

#: the float64 reference against Keras' float32: ``max |diff| / max |keras|``
TOLERANCE = 1e-5
#: the catalog classes this module and tests/readers/test_legacy_layers.py compare with Keras (or
#: with Keras 1's own arithmetic): test_semantics' coverage test counts them as compared
LEGACY_CLASSES = frozenset({"LocallyConnected1D", "LocallyConnected2D", "Highway", "MaxoutDense", "SReLU",
                            "ParametricSoftplus", "Merge"})

_TFK_SCRIPT = r"""
import json, sys
import numpy as np
import tf_keras
L = tf_keras.layers
folder = sys.argv[1]
CF = "channels_first"

def branches(shape, *layers):
    inp = tf_keras.Input(shape)
    return tf_keras.Model(inp, [layer(inp) for layer in layers])

CASES = {
    "local1d": lambda: branches((7, 3),
        L.LocallyConnected1D(4, 3, strides=2, activation="tanh"),
        L.LocallyConnected1D(4, 2, padding="same", implementation=2),
        L.LocallyConnected1D(3, 3, strides=2, padding="same", implementation=3, use_bias=False),
        L.LocallyConnected1D(2, 2, implementation=2, data_format=CF),
        L.LocallyConnected1D(2, 2, strides=2, implementation=3, data_format=CF)),
    "local2d": lambda: branches((6, 5, 4),
        L.LocallyConnected2D(4, 3, activation="relu"),
        L.LocallyConnected2D(3, (3, 2), strides=(2, 1), data_format=CF),
        L.LocallyConnected2D(3, (2, 3), strides=(1, 2), padding="same", implementation=2, data_format=CF),
        L.LocallyConnected2D(2, 2, strides=2, padding="same", implementation=3),
        L.LocallyConnected2D(2, 3, implementation=3, data_format=CF, use_bias=False),
        L.LocallyConnected2D(3, (2, 2), strides=(2, 1), implementation=2)),
    "local_chain": lambda: tf_keras.Sequential([tf_keras.Input((8, 8, 2)), L.LocallyConnected2D(3, 3, strides=2),
                                                L.Flatten(), L.Dense(2)]),
}

tf_keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
done = {}
for name, build in CASES.items():
    model = build()
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.5, tuple(v.shape)).astype("float32"))
    xs = [rng.normal(0.0, 1.0, (3, *t.shape[1:])).astype("float32") for t in model.inputs]
    ys = model(xs[0], training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    model.save(f"{folder}/{name}.h5")
    if name == "local2d":  # every implementation; the .keras archive once
        model.save(f"{folder}/{name}.keras")
    np.savez(f"{folder}/{name}.npz", x0=xs[0], **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
    done[name] = len(ys)
# Keras 1 fixtures folded and written by bnconvert (as Keras 2 .h5): tf_keras must load and run them
import glob, os
for path in sorted(glob.glob(f"{folder}/folded_*.h5")):
    stem = os.path.basename(path)[len("folded_"):-3]
    data = np.load(os.path.join(sys.argv[2], f"{stem}.expected.npz"))
    xs = [data[k] for k in sorted(data.files) if k.startswith("x")]
    model = tf_keras.models.load_model(path, compile=False)
    np.save(f"{folder}/folded_{stem}.npy", np.asarray(model(xs if len(xs) > 1 else xs[0], training=False)))
print(json.dumps(done))
"""

#: Keras 1 fixtures whose folded files tf_keras loads (tests/readers/test_legacy_layers.py checks them)
FOLDED_KERAS1 = ("k1_legacy_local1d", "k1_legacy_local2d", "k1_legacy_merge_seq", "k1_legacy_dot", "k1_legacy_conv",
                 "k1_legacy_conv3d")


@functools.cache
def tf_keras_files() -> tuple[Path, dict[str, int]]:
    """The tf_keras models (built, run and saved once per session, in their own process):
    the folder and, per case, how many outputs it has. Shared with the ONNX export tests."""
    folder = Path(tempfile.mkdtemp(prefix="bnconvert_legacy_"))
    for stem in FOLDED_KERAS1:
        bnconvert.fold_file(fixture_file(f"{stem}.h5"), folder / f"folded_{stem}.h5")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _TFK_SCRIPT, str(folder), str(FIXTURES)], check=False, capture_output=True, text=True,
                          env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, json.loads(done.stdout.strip().splitlines()[-1])


def rel_err(want: np.ndarray, got: np.ndarray) -> float:
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    assert want.shape == got.shape, (want.shape, got.shape)
    scale = np.abs(want).max()
    return float(np.abs(want - got).max() / (scale if scale > 0 else 1.0))


CASES = ("local1d", "local2d", "local_chain")


@pytest.mark.parametrize("case", CASES)
def test_float64_reference_equals_tf_keras(case: str) -> None:
    folder, counts = tf_keras_files()
    data = np.load(folder / f"{case}.npz")
    runner = ReferenceRunner(folder / f"{case}.h5", model=bnconvert.load(folder / f"{case}.h5"))
    (spec,) = runner.input_specs()
    outs = list(runner.infer({spec.name: data["x0"]}).values())
    assert len(outs) == counts[case]
    errors = [rel_err(data[f"y{i}"], out) for i, out in enumerate(outs)]
    print(f"{case}: float64 reference vs tf_keras, max relative error {max(errors):.2e}")
    assert max(errors) < TOLERANCE, errors


def test_tf_keras_keras_archive_reads_the_same() -> None:
    """The same model saved by tf_keras as a ``.keras`` archive (weights under ``vars/<i>``)."""
    case = "local2d"
    folder, _ = tf_keras_files()
    data = np.load(folder / f"{case}.npz")
    runner = ReferenceRunner(folder / f"{case}.keras")
    (spec,) = runner.input_specs()
    outs = list(runner.infer({spec.name: data["x0"]}).values())
    assert max(rel_err(data[f"y{i}"], out) for i, out in enumerate(outs)) < TOLERANCE


def test_a_keras2_file_without_implementation_is_implementation_1(tmp_path: Path) -> None:
    """Keras 2.0-2.2.2 wrote no ``implementation`` (their only layout was implementation 1's)."""
    import h5py

    folder, _ = tf_keras_files()
    data = np.load(folder / "local2d.npz")
    path = tmp_path / "keras2.h5"
    path.write_bytes((folder / "local2d.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["config"].get("implementation") == 1:
                del layer["config"]["implementation"]
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.1.6"
    runner = ReferenceRunner(path)
    (spec,) = runner.input_specs()
    outs = list(runner.infer({spec.name: data["x0"]}).values())
    assert max(rel_err(data[f"y{i}"], out) for i, out in enumerate(outs)) < TOLERANCE


def test_the_three_tf_keras_layouts_are_read_with_their_shapes() -> None:
    """Implementation 1 keeps one matrix per output position, 2 a dense kernel over input and
    output positions, 3 the connected entries only (input (6, 5, 4))."""
    folder, _ = tf_keras_files()
    model = bnconvert.load(folder / "local2d.h5")
    shapes = [(layer.config.get("implementation"), layer.weights["kernel"].shape)
              for layer in model.layers if layer.class_name == "LocallyConnected2D"]
    # channels_last 3x3 -> 4x3 outputs; channels_first (C=6, 5x4) 3x2 stride (2, 1) -> 2x3;
    # channels_first same (2, 3) stride (1, 2) -> 5x2; 2x2 stride 2 same -> 3x3, windows clipped at
    # the border; channels_first 3x3 on 5x4 -> 3x2 (3 * 2 windows of 9 pixels, 6 channels, 2 filters)
    assert shapes[0] == (1, (12, 36, 4))
    assert shapes[1] == (1, (6, 36, 3))
    assert shapes[2] == (2, (6, 5, 4, 3, 5, 2))
    assert shapes[3][0] == 3 and len(shapes[3][1]) == 1
    assert shapes[4] == (3, (3 * 2 * 9 * 6 * 2,))


def _layer(class_name: str, config: dict, **weights: np.ndarray) -> Layer:
    layer = Layer("legacy", class_name, config)
    layer.weights = weights
    return layer


def test_cos_merge_is_keras1_cosine_proximity() -> None:
    """Keras 1.2.2 ``Merge(mode='cos')``: ``a.b / max(sqrt(a.a b.b), 1e-7)`` as ``(N, 1)``; a zero
    vector gives 0 (the epsilon floor), not NaN."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    a[2] = 0.0
    record = catalog()["Merge"]
    (y,) = record.call(_layer("Merge", {"mode": "cos", "dot_axes": -1}), [a, b], None)  # type: ignore[arg-type]
    want = np.array([np.dot(u, v) / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-7) for u, v in zip(a, b)])[:, None]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=0)
    assert record.shape({"mode": "cos", "dot_axes": [1, 1]}, [(None, 5), (None, 5)]) == [(None, 1)]


def test_a_merge_whose_mode_is_python_code_is_refused_not_run() -> None:
    record = catalog()["Merge"]
    layer = _layer("Merge", {"mode": None, "keras1_merge_mode": "<python function>"})
    with pytest.raises(UnsupportedLayerError, match="Python code, which bnconvert never runs"):
        record.call(layer, [np.ones((2, 3)), np.ones((2, 3))], None)  # type: ignore[arg-type]
    cos3d = _layer("Merge", {"mode": "cos", "dot_axes": -1})
    with pytest.raises(UnsupportedLayerError, match="two \\(batch, features\\) inputs"):
        record.call(cos3d, [np.ones((2, 3, 4)), np.ones((2, 3, 4))], None)  # type: ignore[arg-type]


def test_srelu_is_the_tensorflow_backend_formula() -> None:
    """Keras 1.2.2 SReLU with ``K.relu(x, alpha, max_value)`` of its TensorFlow backend, piecewise:
    ``t_l + a_l (x - t_l)`` left of ``t_l``, ``x`` in between, ``t_r + a_r (x - t_r)`` right of
    ``t_r = t_l + |t_right|``."""
    x = np.linspace(-3, 3, 61).reshape(1, 61)
    t_l, a_l, t_r, a_r = np.full(61, -0.5), np.full(61, 0.2), np.full(61, -1.5), np.full(61, 0.7)
    (y,) = catalog()["SReLU"].call(_layer("SReLU", {}, t_left=t_l, a_left=a_l, t_right=t_r, a_right=a_r), [x], None)  # type: ignore[arg-type]
    tr = t_l + np.abs(t_r)
    want = np.where(x <= t_l, t_l + a_l * (x - t_l), np.where(x >= tr, tr + a_r * (x - tr), x))
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
