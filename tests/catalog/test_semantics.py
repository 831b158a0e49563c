"""Every catalog class's float64 semantics against Keras itself.

Keras 3: the layer configurations of the ONNX layer tests (``tests/onnx/test_layers.py``) are
built, given non-trivial weights, saved, read back by bnconvert and run by the float64 reference
runner; Keras computes the same model in float32. tf-keras (a separate process, so that it never
shares one with Keras 3): the classes it has, in its own spelling and semantics (``hard_sigmoid``
``0.2x + 0.5``, ``LeakyReLU(alpha)``, ``ThresholdedReLU``). The error measure is
``max |keras - reference| / max |reference|``: float32 rounding, about 1e-7 per operation.

All Keras models are built and run once per session (one fixture per Keras), then checked case
by case, so the whole file costs a few seconds of Keras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.catalog import catalog
from bnconvert.check.reference import ReferenceRunner
from bnconvert.onnx.registry import supported_classes

from ..conftest import fixture_file
from .test_attention import ATTENTION_CLASSES
from .test_legacy_layers import LEGACY_CLASSES
from .test_normalization_layers import NORMALIZATION_CLASSES
from .test_operations import OPERATION_CLASSES
from .test_preprocessing import PREPROCESSING_CLASSES
from .test_scoring import CLASSES as SCORING_CLASSES
from .test_sequences import SEQUENCE_CLASSES
from .test_tf_ops import TF_OP_CLASSES

#: float32 rounding of a small model: a few 1e-7, relative to the largest output
TOLERANCE = 1e-6


def _error(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    assert ref.shape == out.shape, (ref.shape, out.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ref - out).max() / (scale if scale > 0 else 1.0))


def _reference(path: Path, xs: list[np.ndarray]) -> tuple[list[np.ndarray], set[str]]:
    """The float64 reference's outputs for the file, and the classes it ran (nested included)."""
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    feeds = {s.name: x for s, x in zip(runner.input_specs(), xs)}
    classes = {layer.class_name for _, layer, _ in runner.model.walk() if layer.model is None}
    return list(runner.infer(feeds).values()), classes


# -- Keras 3 ---------------------------------------------------------------------------------------
def _keras3_cases() -> dict[str, tuple[Any, list[np.ndarray] | None, str]]:
    """name -> (builder, inputs or None for the default, file format)."""
    from ..onnx import test_layers as t

    cases: dict[str, tuple[Any, Any, str]] = {name: (build, None, "keras") for name, build in t.CASES.items()}
    for name, build in t.GRAPHS.items():
        for fmt in ("keras", "h5"):
            cases[f"{name}_{fmt}"] = (build, None, fmt)
    for act in t.ACTIVATIONS:
        cases[f"activation_{act}"] = (lambda a=act: t.seq((3, 5), t.L.Dense(6, activation=a), t.L.Activation(a)),
                                      0.5 if act == "exponential" else 3.0, "keras")
    cases["identity_layer"] = (lambda: t.seq((4, 3), t.L.Identity(), t.L.Dense(2)), None, "keras")
    cases["conv_transpose_dilated_valid"] = (lambda: t.seq((5, 3), t.L.Conv1DTranspose(4, 3, dilation_rate=2)), None, "keras")
    cases["separable_dilated"] = (lambda: t.seq((9, 9, 3), t.L.SeparableConv2D(4, 3, dilation_rate=2, padding="same")),
                                  None, "keras")
    cases["divide_operation"] = (_divide, None, "keras")
    cases["avgpool1d_same_stride"] = (lambda: t.seq((10, 3), t.L.AveragePooling1D(3, strides=2, padding="same")),
                                      None, "keras")
    return cases


def _divide() -> Any:
    import keras

    inp = keras.Input((4, 3), name="inp")
    x = keras.layers.Dense(3)(inp)
    d = inp * inp + 1.0  # a denominator far from 0: the quotient is well conditioned
    return keras.Model(inp, [keras.ops.divide(x, 3.0), keras.ops.divide(2.0, d), keras.ops.divide(x, d)])


def _adapted_normalization() -> Any:
    from ..onnx import test_layers as t

    norm = t.L.Normalization(axis=-1)
    norm.adapt(np.random.default_rng(0).normal(2.0, 3.0, (64, 4, 3)).astype(np.float32))
    return t.seq((4, 3), norm, t.L.Dense(2))


@pytest.fixture(scope="module")
def keras3_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[float, set[str]]]:
    """Every Keras 3 case run by Keras and by the float64 reference: name -> (error, classes)."""
    pytest.importorskip("keras")
    import keras

    from ..onnx.helpers import inputs_for, keras_predict, randomize

    keras.utils.set_random_seed(0)  # the kernels Keras draws too: the same errors every run
    folder = tmp_path_factory.mktemp("keras3")
    cases = _keras3_cases()
    cases["normalization_adapted"] = (_adapted_normalization, None, "keras")
    results = {}
    for name, (build, scale, fmt) in sorted(cases.items()):
        model = build()
        randomize(model)
        if name.startswith("helpers"):
            for v in model.weights:
                if v.path.endswith("gamma"):
                    v.assign(np.linspace(-1.0, 2.0, v.shape[0]).astype(np.float32))
        xs = inputs_for(model)
        if scale is not None:
            xs = [x * np.float32(scale) for x in xs]
        expected = keras_predict(model, xs)
        path = folder / f"{name}.{fmt}"
        model.save(path)
        outs, classes = _reference(path, xs)
        assert len(outs) == len(expected), name
        results[name] = (max(_error(r, k) for r, k in zip(outs, expected)), classes)
    return results


@pytest.mark.parametrize("case", sorted(_keras3_cases()) + ["normalization_adapted"])
def test_float64_reference_equals_keras3(case: str, keras3_results: dict[str, tuple[float, set[str]]]) -> None:
    error, classes = keras3_results[case]
    assert error <= TOLERANCE, f"{case} ({', '.join(sorted(classes))}): max |keras - reference| / max = {error:.2e}"


# -- tf-keras ----------------------------------------------------------------------------------------
_TFK_CASES = r"""
import json, sys
import numpy as np
import tf_keras
L = tf_keras.layers
folder = sys.argv[1]
CF = "channels_first"

def seq(shape, *layers):
    return tf_keras.Sequential([tf_keras.Input(shape), *layers])

def merges():
    a, b = tf_keras.Input((4, 4, 3)), tf_keras.Input((4, 4, 3))
    x = L.Conv2D(3, 1)(a)
    outs = [L.Add()([x, b]), L.Subtract()([x, b]), L.Multiply()([x, b]), L.Average()([x, b]),
            L.Maximum()([x, b]), L.Minimum()([x, b]), L.Concatenate(axis=1)([x, b])]
    return tf_keras.Model([a, b], outs)

CASES = {
    "dense": lambda: seq((3, 5), L.Dense(4, activation="hard_sigmoid"), L.Dense(3, activation="selu")),
    "conv1d": lambda: seq((9, 4), L.Conv1D(6, 3, padding="causal", dilation_rate=2), L.Conv1D(4, 3, groups=2, strides=2, padding="same")),
    "conv2d": lambda: seq((7, 9, 3), L.Conv2D(4, 3, strides=2, padding="same", activation="relu"), L.Conv2D(2, (2, 3))),
    "conv3d": lambda: seq((5, 6, 7, 2), L.Conv3D(3, 3, strides=2, padding="same")),
    "depthwise": lambda: seq((7, 7, 3), L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same"),
                             L.DepthwiseConv1D(2) if False else L.Reshape((-1, 6)), L.DepthwiseConv1D(3, depth_multiplier=2)),
    "separable": lambda: seq((8, 8, 3), L.SeparableConv2D(5, 3, strides=2, depth_multiplier=2, padding="same"),
                             L.Reshape((-1, 5)), L.SeparableConv1D(4, 3, padding="same")),
    "transpose": lambda: seq((4, 5, 3), L.Conv2DTranspose(4, 3, strides=2, padding="same"), L.Reshape((-1, 4)),
                             L.Conv1DTranspose(3, 3, strides=2)),
    "transpose3d": lambda: seq((3, 4, 5, 2), L.Conv3DTranspose(3, 2, strides=2, padding="same")),
    "bn_ln": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.BatchNormalization(epsilon=1e-5), L.LayerNormalization(),
                         L.BatchNormalization(axis=1)),
    "pools": lambda: seq((7, 9, 3), L.MaxPooling2D(3, strides=2, padding="same"), L.AveragePooling2D(2, padding="same"),
                         L.GlobalAveragePooling2D()),
    "pools_1d_3d": lambda: seq((5, 6, 7, 2), L.MaxPooling3D(2, padding="same"), L.AveragePooling3D(2, padding="same"),
                               L.GlobalMaxPooling3D()),
    "pools_1d": lambda: seq((9, 3), L.MaxPooling1D(2), L.AveragePooling1D(3, strides=2, padding="same"),
                            L.GlobalMaxPooling1D()),
    "global_avg": lambda: seq((9, 3), L.GlobalAveragePooling1D()),
    "global_3d": lambda: seq((4, 5, 6, 3), L.GlobalAveragePooling3D()),
    "global_max_2d": lambda: seq((4, 5, 3), L.GlobalMaxPooling2D()),
    "activations": lambda: seq((3, 5), L.Dense(6), L.LeakyReLU(alpha=0.25), L.ELU(alpha=0.7), L.Dense(6),
                               L.ThresholdedReLU(theta=0.3), L.Dense(6), L.PReLU(), L.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2),
                               L.Softmax(axis=1), L.Activation("hard_sigmoid")),
    "activation_names": lambda: seq((3, 5), L.Dense(6, activation="gelu"), L.Dense(6, activation="swish"),
                                    L.Dense(6, activation="softplus"), L.Dense(6, activation="elu"),
                                    L.Dense(6, activation="softsign"), L.Dense(6, activation="exponential")),
    "spatial": lambda: seq((6, 7, 3), L.ZeroPadding2D(((1, 2), (0, 3))), L.Cropping2D(((1, 0), (2, 1))),
                           L.UpSampling2D(2, interpolation="bilinear"), L.UpSampling2D((1, 2))),
    "spatial_1d_3d": lambda: seq((3, 4, 5, 2), L.ZeroPadding3D((1, 0, 2)), L.Cropping3D(((1, 1), (0, 2), (2, 0))),
                                 L.UpSampling3D((1, 2, 1)), L.Reshape((-1, 2)), L.ZeroPadding1D((2, 1)),
                                 L.Cropping1D((1, 2)), L.UpSampling1D(2)),
    "reshaping": lambda: seq((4, 5, 3), L.Permute((3, 1, 2)), L.Flatten(), L.Dense(3), L.RepeatVector(2),
                             L.Reshape((3, 2))),
    "channels_first": lambda: seq((3, 6, 6), L.Conv2D(4, 3, padding="same", data_format=CF),
                                  L.MaxPooling2D(2, data_format=CF), L.Flatten(data_format=CF)),
    "preprocessing": lambda: seq((4, 3), L.Rescaling(0.5, offset=-1.0),
                                 L.Normalization(mean=[0.1, 0.5, -0.2], variance=[2.0, 0.5, 1.5])),
    "identities": lambda: seq((5, 5, 3), L.Dropout(0.5), L.SpatialDropout2D(0.3), L.GaussianNoise(1.0),
                              L.GaussianDropout(0.3), L.AlphaDropout(0.2), L.ActivityRegularization(0.1),
                              L.Reshape((-1, 3)), L.SpatialDropout1D(0.2), L.Reshape((5, 5, 1, 3)),
                              L.SpatialDropout3D(0.2), L.Conv3D(2, 1)),
    "merges": merges,
}

tf_keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
done = {}
for name, build in CASES.items():
    model = build()
    for v in model.weights:
        kind = v.name.split("/")[-1].split(":")[0]
        shape = tuple(v.shape)
        if kind == "moving_variance":
            v.assign(rng.uniform(0.3, 2.0, shape).astype("float32"))
        elif kind in ("moving_mean", "beta", "bias"):
            v.assign(rng.normal(0.0, 0.5, shape).astype("float32"))
        elif kind == "gamma":
            v.assign((rng.uniform(0.5, 1.5, shape) * np.where(rng.random(shape) < 0.2, -1, 1)).astype("float32"))
        elif kind == "alpha":
            v.assign(rng.uniform(0.05, 0.5, shape).astype("float32"))
    xs = [rng.normal(0.0, 2.0, (2, *t.shape[1:])).astype("float32") for t in model.inputs]
    ys = model(xs if len(xs) > 1 else xs[0], training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    model.save(f"{folder}/{name}.h5")
    np.savez(f"{folder}/{name}.npz", **{f"x{i}": x for i, x in enumerate(xs)}, **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
    done[name] = [len(xs), len(ys)]
print(json.dumps(done))
"""


@pytest.fixture(scope="module")
def tfkeras_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[float, set[str]]]:
    """tf-keras' cases (built and run in one subprocess), against the float64 reference."""
    pytest.importorskip("tf_keras")
    folder = tmp_path_factory.mktemp("tfkeras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _TFK_CASES, str(folder)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    results = {}
    for name, (n_in, n_out) in counts.items():
        data = np.load(folder / f"{name}.npz")
        outs, classes = _reference(folder / f"{name}.h5", [data[f"x{i}"] for i in range(n_in)])
        assert len(outs) == n_out, name
        results[name] = (max(_error(r, data[f"y{i}"]) for i, r in enumerate(outs)), classes)
    return results


def test_float64_reference_equals_tf_keras(tfkeras_results: dict[str, tuple[float, set[str]]]) -> None:
    bad = {name: f"{err:.2e}" for name, (err, _) in tfkeras_results.items() if err > TOLERANCE}
    assert not bad, f"tf-keras and the float64 reference differ (max |diff| / max): {bad}"


# -- coverage ----------------------------------------------------------------------------------------
#: classes neither Keras can build in a file bnconvert reads as that class (none today)
NOT_BUILDABLE: frozenset[str] = frozenset()


def test_every_onnx_handled_class_has_a_complete_catalog_record() -> None:
    """A handled class needs its float64 semantics, its output-shape rule and its weights."""
    table = catalog()
    missing = sorted(set(supported_classes()) - set(table))
    assert not missing, f"ONNX handlers without a catalog record: {missing}"
    incomplete = {name: [fact for fact in ("call", "shape", "weights") if not callable(getattr(table[name], fact))]
                  for name in supported_classes()}
    incomplete = {name: facts for name, facts in incomplete.items() if facts}
    assert not incomplete, f"ONNX-handled classes whose catalog record lacks a fact: {incomplete}"
    for name, record in table.items():
        assert record.class_name == name and record.family


def test_a_record_without_semantics_is_neither_run_nor_exported() -> None:
    """Classes read but not run (call None) must not be in the ONNX registry: the export would
    have no independent reference for them."""
    unrun = sorted(name for name, record in catalog().items() if record.call is None)
    assert unrun and not set(unrun) & set(supported_classes()), unrun


def test_every_catalog_class_is_compared_with_keras(keras3_results: dict[str, tuple[float, set[str]]],
                                                    tfkeras_results: dict[str, tuple[float, set[str]]]) -> None:
    seen = set().union(*(c for _, c in keras3_results.values()), *(c for _, c in tfkeras_results.values()))
    runnable = {name for name, record in catalog().items() if record.call is not None}
    untested = sorted(runnable - seen - NOT_BUILDABLE - SEQUENCE_CLASSES - LEGACY_CLASSES - TF_OP_CLASSES
                      - NORMALIZATION_CLASSES - PREPROCESSING_CLASSES - SCORING_CLASSES - OPERATION_CLASSES
                      - ATTENTION_CLASSES)  # own modules
    assert not untested, f"catalog classes no Keras comparison exercises: {untested}"


def test_largest_difference_is_float32_rounding(keras3_results: dict[str, tuple[float, set[str]]],
                                                tfkeras_results: dict[str, tuple[float, set[str]]]) -> None:
    worst = max([*keras3_results.items(), *tfkeras_results.items()], key=lambda kv: kv[1][0])
    print(f"largest float64-vs-Keras difference: {worst[1][0]:.3e} ({worst[0]})")
    assert worst[1][0] <= TOLERANCE


# -- Keras 1 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", ["k1_tf_seq", "k1_th_model", "k1_conv1d"])
def test_keras1_files_against_their_ground_truth(stem: str) -> None:
    """Keras 1 files (no current Keras loads them) against the fixtures' independent outputs."""
    data = np.load(fixture_file(f"{stem}.expected.npz"))
    runner = ReferenceRunner(fixture_file(f"{stem}.h5"))
    (spec,) = runner.input_specs()
    (out,) = runner.infer({spec.name: data["x"]}).values()
    assert _error(data["y"], out) < 1e-6
