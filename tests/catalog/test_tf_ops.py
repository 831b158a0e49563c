"""tf.keras TFOpLambda / SlicingOpLambda operations: the float64 reference against tf-keras.

tf-keras builds small functional models calling TensorFlow functions on Keras tensors (every
function :mod:`bnconvert.catalog.tf_ops` computes, most options), runs them and saves them, all
in ONE subprocess (:func:`tf_keras_cases`, shared with ``tests/onnx/test_tf_ops.py``); bnconvert
reads the files and runs them with the float64 reference. The error is ``max |keras - reference|
/ max |keras|`` per model output, named by its position and its layer.
"""

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
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.catalog import catalog
from bnconvert.catalog.tf_ops import TF_OPS
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError

from ..conftest import sequence_corpus_dir

#: the catalog classes this module compares with tf-keras (test_semantics' coverage leaves them here)
TF_OP_CLASSES = frozenset(f"tf.{f}" for f in TF_OPS)

#: float32 rounding of a small model, relative to the largest output
TOLERANCE = 1e-5

#: the cases tf-keras builds: name -> file (the .keras one is tf-keras' own zip format)
CASES = {"elementwise": "elementwise.h5", "unary": "unary.h5", "reductions": "reductions.h5", "shapes": "shapes.h5",
         "slicing": "slicing.h5", "image": "image.h5", "image_zip": "image_zip.keras", "images": "images.h5",
         "dynamic": "dynamic.h5", "symmetric": "symmetric.h5"}
#: cases with float64 semantics that the ONNX export refuses (tests/onnx/test_tf_ops.py checks the reason)
NOT_EXPORTED = {"symmetric": "SYMMETRIC"}
#: files bnconvert must refuse, and the words the one-line reason must hold
REFUSED = {"cumprod": ("'tf.math.cumprod'",), "lost": ("tf.__operators__.eq", "stores only its first operand"),
           "matrix_norm": ("'tf.compat.v1.norm", "tf.norm: ord 2 over 2 axes (a matrix norm)")}

_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
import tf_keras
L = tf_keras.layers
folder = sys.argv[1]
tf_keras.utils.set_random_seed(0)

def two():
    return tf_keras.Input((4, 6), name="x"), tf_keras.Input((4, 6), name="y")

def elementwise():
    x, y = two()
    outs = [x + y, tf.add(x, 1.5), x - y, x * 2.0, 2.0 - x, x / y, tf.math.divide(x, 3.0), x // 3.0, tf.math.pow(y, 2.5), x ** 2,
            tf.maximum(x, y), tf.minimum(x, 0.25), tf.math.squared_difference(x, y), x // y, x % y,
            x > y, x >= 0.5, x < y, tf.math.less_equal(x, y), tf.math.equal(x, x), tf.math.not_equal(x, y),
            tf.math.logical_and(x > 0, y > 1), tf.math.logical_or(x > 0, y > 1), tf.math.logical_not(x > 0),
            x + tf.constant([[1.0, 2, 3, 4, 5, 6]]), tf.constant([0.5, 1, 2, 3, 4, 5]) * x,
            tf.where(x > y, x, y), tf.where(x > 0, x, 0.0), tf.clip_by_value(x, -0.5, 0.5), tf.nn.bias_add(x, [1.0, 2, 3, 4, 5, 6]),
            tf.compat.v1.where(x > y, y, x), tf.math.divide_no_nan(x, tf.nn.relu(x - 0.5)),
            tf.math.multiply_no_nan(x, tf.nn.relu(y - 1.0)), tf.math.xlogy(tf.nn.relu(x), y), tf.math.atan2(x, y - 1.2),
            tf.math.atan2(y - 1.2, x), tf.math.atan2(x, tf.nn.relu(x)), tf.compat.v1.nn.softmax(x, dim=1),
            tf.compat.v1.reduce_sum(x, reduction_indices=[1], keep_dims=True)]
    return [x, y], outs

def unary():
    x, y = two()
    outs = [tf.abs(x), -x, tf.square(x), tf.sqrt(y), tf.math.rsqrt(y), tf.exp(x), tf.math.log(y), tf.math.log1p(y),
            tf.math.expm1(x), tf.sigmoid(x), tf.nn.sigmoid(x), tf.tanh(x), tf.math.erf(x), tf.sin(x), tf.cos(x),
            tf.math.reciprocal(y), tf.sign(x), tf.floor(x * 3.0), tf.math.ceil(x * 3.0), tf.round(x * 3.0),
            tf.math.softplus(x), tf.nn.softsign(x), tf.nn.relu(x), tf.nn.relu6(x * 4.0), tf.nn.elu(x), tf.nn.selu(x),
            tf.nn.leaky_relu(x, alpha=0.1), tf.nn.gelu(x), tf.nn.gelu(x, approximate=True), tf.nn.silu(x),
            tf.nn.silu(x, beta=2.0), tf.nn.softmax(x, axis=1), tf.nn.softmax(x), tf.nn.log_softmax(x),
            tf.math.l2_normalize(x, axis=-1), tf.cast(x * 3.0, tf.int32), tf.cast(tf.floor(x), tf.bool),
            tf.cast(x * 100.0, tf.float16), tf.cast(tf.cast(x * 100.0, tf.bfloat16), tf.float32), tf.cast(x, tf.float32),
            tf.ones_like(x), tf.zeros_like(x), tf.identity(x),
            tf.math.tan(x), tf.math.atan(x), tf.math.asin(tf.tanh(x)), tf.math.acos(tf.tanh(x)), tf.math.sinh(x),
            tf.math.cosh(x), tf.math.asinh(x), tf.math.acosh(y + 1.0), tf.math.atanh(tf.tanh(x) * 0.9),
            tf.math.log_sigmoid(x), tf.math.is_nan(tf.math.log(x)), tf.nn.crelu(x), tf.nn.crelu(x, axis=1)]
    return [x, y], outs

def reductions():
    x, y = two()
    outs = [tf.reduce_mean(x, axis=1, keepdims=True), tf.reduce_sum(x, axis=[1, 2]), tf.reduce_max(x, 1),
            tf.reduce_min(x, -1, keepdims=True), tf.reduce_prod(y, 1), tf.math.reduce_std(x, -1),
            tf.math.reduce_variance(x, axis=1), tf.math.reduce_logsumexp(x, axis=-1), tf.reduce_any(x > 1, axis=1),
            tf.reduce_all(x > -1, axis=2), tf.reduce_mean(x, axis=[-2, -1]), tf.math.argmax(x, axis=-1),
            tf.math.argmin(x, axis=1), tf.math.cumsum(x, axis=1), tf.math.cumsum(x, axis=2, exclusive=True, reverse=True),
            *tf.math.top_k(x, k=3), tf.math.top_k(x).indices, tf.sort(x, axis=1), tf.sort(x, direction="DESCENDING"),
            tf.argsort(x), tf.argsort(x, axis=1, direction="DESCENDING"), tf.one_hot(tf.argmax(x, -1), 6),
            tf.one_hot(tf.cast(x * 3.0, tf.int32), 3, on_value=2.0, off_value=-1.0, axis=1)]
    return [x, y], outs

def shapes():
    x, y = two()
    halves = tf.split(x, 2, axis=-1)
    parts = tf.split(x, [1, -1], axis=1)
    rows = tf.unstack(x, axis=1)
    image = tf.reshape(x, (-1, 2, 2, 6))
    outs = [tf.reshape(x, (-1, 24)), tf.reshape(x, (-1, 2, 12)), tf.transpose(x, perm=[0, 2, 1]),
            tf.transpose(x, [1, 0, 2]), tf.transpose(x), tf.expand_dims(x, 1), tf.expand_dims(x, -1), tf.squeeze(tf.expand_dims(x, 1), axis=1),
            tf.squeeze(x[:, 1:2, :]), tf.concat([x, y], axis=-1), tf.concat([x, y], 1), tf.stack([x, y], axis=1),
            tf.stack([x, y], axis=-1), rows[0], rows[3], tf.tile(x, [1, 2, 1]), tf.repeat(x, 2, axis=1),
            tf.repeat(x, [1, 2, 0, 3, 1, 1], axis=2), tf.reverse(x, [1]), halves[0], halves[1], parts[0], parts[1],
            tf.gather(x, [0, 2], axis=2), tf.gather(x, [[3, 1], [0, 0]], axis=1),
            tf.pad(x, [[0, 0], [1, 2], [0, 1]]), tf.pad(x, [[0, 0], [1, 1], [2, 0]], constant_values=0.5),
            tf.pad(x, [[0, 0], [1, 2], [2, 1]], mode="REFLECT"), tf.matmul(x, y, transpose_b=True),
            tf.matmul(x, y, transpose_a=True), x @ tf.transpose(y, [0, 2, 1]),
            tf.matmul(x, tf.constant(np.linspace(-1.0, 1.0, 18).reshape(6, 3), tf.float32)),
            tf.broadcast_to(x[:, :1], tf.shape(x)), tf.broadcast_to(x[:, :, 2:3], [3, 4, 5]), tf.roll(x, 2, axis=1),
            tf.roll(x, [1, -2], axis=[1, 2]), tf.add_n([x, y, x]), tf.ensure_shape(x, [None, 4, 6]),
            tf.nn.local_response_normalization(image, depth_radius=2, bias=1.5, alpha=0.3, beta=0.75), tf.nn.lrn(image)]
    return [x, y], outs

def slicing():
    x, y = two()
    outs = [x[..., 0], x[:, 1:3], x[:, None, ::2, 1], x[:, ::-1], x[:, -1], x[:, 1:-1, 2:], x[:, :, -2::-2],
            x[..., None], x[:, 2, 3], x[:, tf.newaxis, 1:, ...], y[:, 3:0:-1, ::3]]
    return [x, y], outs

def image():
    i = tf_keras.Input((5, 5, 3), name="image")
    a = tf.nn.relu(L.Conv2D(4, 3, padding="same")(i))
    b = a * 2.0 + tf.constant([0.1, 0.2, 0.3, 0.4])
    c = L.Conv2D(4, 1)(b)
    d = tf.concat([a, c], axis=-1)
    e = tf.math.maximum(c, a) - tf.math.reduce_mean(c, axis=[1, 2], keepdims=True)
    f = L.Conv2D(2, 1)(tf.nn.silu(e))
    outs = [tf.reduce_mean(d, axis=[1, 2]), f, tf.transpose(c, [0, 3, 1, 2]), c[:, 1:4, :, 0:2],
            L.Conv2D(2, 1)(tf.transpose(c, [0, 2, 1, 3])), tf.nn.softmax(d, axis=-1), tf.squeeze(tf.reduce_max(f, 1, keepdims=True), 1)]
    return [i], outs

def images():
    i = tf_keras.Input((6, 6, 8), name="image")
    c = L.Conv2D(8, 1)(i)
    mean, variance = tf.nn.moments(c, axes=[1, 2])
    unit, length = tf.linalg.normalize(c, axis=-1)
    outs = [tf.image.resize(c, (9, 12)), tf.image.resize(c, (4, 3), method="nearest"),
            tf.image.resize(c, (8, 5), method="bicubic"), tf.image.resize(c, (4, 4), method="area"),
            tf.image.resize(c, (3, 4), antialias=True), tf.nn.depth_to_space(c, 2), tf.nn.space_to_depth(c, 2),
            L.Conv2D(2, 1)(tf.nn.depth_to_space(c, 2)), tf.norm(c, axis=-1), tf.norm(c, ord=1, axis=2, keepdims=True),
            tf.norm(c, ord=np.inf, axis=1), tf.norm(c, ord=3, axis=-1), tf.norm(c, axis=[1, 2]),
            tf.math.reduce_euclidean_norm(c, axis=-1), unit, length, mean, variance,
            tf.nn.avg_pool2d(c, 3, 2, "SAME"), tf.nn.max_pool2d(c, 2, 2, "VALID"), tf.nn.max_pool2d(c, [1, 3, 3, 1], 1, "SAME"),
            tf.nn.avg_pool1d(tf.reshape(c, (-1, 36, 8)), 4, 3, "VALID"), tf.nn.max_pool1d(tf.reshape(c, (-1, 36, 8)), 3, 2, "SAME"),
            tf.nn.avg_pool3d(tf.reshape(c, (-1, 6, 6, 2, 4)), [2, 3, 1], 2, "SAME"),
            tf.image.rgb_to_grayscale(c[..., :3]), L.Conv2D(2, 1)(tf.image.rgb_to_grayscale(c[..., 2:5])),
            tf.image.grayscale_to_rgb(c[..., :1]), tf.image.flip_left_right(c), L.Conv2D(2, 1)(tf.image.flip_up_down(c)),
            tf.image.per_image_standardization(c),
            tf.nn.max_pool3d(tf.reshape(c, (-1, 6, 6, 2, 4)), 2, [1, 2, 1], "VALID"), tf.stop_gradient(c)]
    return [i], outs

def symmetric():
    x, y = two()
    return [x, y], [tf.pad(x, [[0, 0], [2, 1], [0, 3]], mode="SYMMETRIC"), tf.pad(y, [[0, 0], [1, 1], [1, 1]], "symmetric")]

def lost_operands():
    x, y = two()
    return [x, y], [x == y, x != y]

def matrix_norm():
    x, y = two()
    return [x, y], [tf.norm(x, ord=2, axis=[1, 2])]

def refused_cumprod():
    x, y = two()
    return [x, y], [tf.math.cumprod(x, axis=1)]

def dynamic():
    x, y = two()
    size = tf.shape(x)
    return [x, y], [tf.reshape(x, [size[0], -1]), tf.reshape(y, [-1, size[1] * 3, 2]), tf.cast(size[2], tf.float32) * x,
                    tf.reshape(x, tf.shape(y))]

BUILDERS = {"elementwise": elementwise, "unary": unary, "reductions": reductions, "shapes": shapes,
            "slicing": slicing, "image": image, "images": images, "cumprod": refused_cumprod, "dynamic": dynamic,
            "lost": lost_operands, "symmetric": symmetric,
            "matrix_norm": matrix_norm}
rng = np.random.default_rng(0)
done = {}
for name, build in BUILDERS.items():
    inputs, outs = build()
    model = tf_keras.Model(inputs, outs)
    for v in model.weights:
        if "bias" in v.name:
            v.assign(rng.normal(0.0, 0.5, tuple(v.shape)).astype("float32"))
    xs = [rng.normal(0.0, 1.0, (3, *t.shape[1:])).astype("float32") for t in model.inputs]
    if len(xs) > 1:
        xs[1] = rng.uniform(0.5, 2.0, xs[1].shape).astype("float32")  # y: positive, away from 0 (divisors, logs)
    ys = model(xs, training=False)
    names = [f"{i}:{t.node.layer.name}" for i, t in enumerate(model.outputs)]
    model.save(f"{folder}/{name}.h5")
    if name == "image":
        model.save(f"{folder}/image_zip.keras")
    np.savez(f"{folder}/{name}.npz", **{f"x{i}": x for i, x in enumerate(xs)},
             **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
    done[name] = {"inputs": len(xs), "outputs": names}
done["image_zip"] = done["image"]
for path in sys.argv[2:]:  # real files tf-keras loads (tests/test_tf_ops_e2e.py): their outputs on seeded inputs
    model = tf_keras.models.load_model(path, compile=False)
    xs = [rng.normal(0.0, 1.0, (3, *t.shape[1:])).astype("float32") for t in model.inputs]
    ys = model(xs if len(xs) > 1 else xs[0], training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    name = path.rsplit("/", 1)[-1]
    np.savez(f"{folder}/{name}.npz", **{f"x{i}": x for i, x in enumerate(xs)},
             **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
    done[name] = {"inputs": len(xs), "outputs": [f"{i}:{t.node.layer.name}" for i, t in enumerate(model.outputs)]}
print(json.dumps(done))
"""


#: real files with TFOpLambda layers that tf-keras loads, from the sequence corpus
#: (``tests/test_tf_ops_e2e.py``): tf-keras runs them in the same subprocess when present
CORPUS_FILES = ("tmakian99__GeoLife-Trajectories__model_weights_transformer_model.h5",)


@functools.cache
def tf_keras_cases() -> tuple[Path, dict[str, Any]]:
    """The folder of tf-keras' files and outputs, made once per test session (one subprocess),
    and per case (a corpus file: by its file name) its number of inputs and its output names."""
    folder = Path(tempfile.mkdtemp(prefix="bnconvert_tf_ops_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    corpus = [str(sequence_corpus_dir() / name) for name in CORPUS_FILES if (sequence_corpus_dir() / name).is_file()]
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(folder), *corpus], check=False, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, json.loads(done.stdout.strip().splitlines()[-1])


def case_data(name: str) -> tuple[Path, list[np.ndarray], list[np.ndarray], list[str]]:
    """``(file, inputs, tf-keras outputs, output layer names)`` of one case."""
    folder, info = tf_keras_cases()
    data = np.load(folder / f"{name.removesuffix('_zip')}.npz")
    xs = [data[f"x{i}"] for i in range(info[name]["inputs"])]
    names = info[name]["outputs"]
    path = sequence_corpus_dir() / name if name in CORPUS_FILES else folder / CASES.get(name, f"{name}.h5")
    return path, xs, [data[f"y{i}"] for i in range(len(names))], names


def rel_error(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    assert ref.shape == out.shape, (ref.shape, out.shape)
    scale = np.abs(ref).max() if ref.size else 0.0
    return float(np.abs(ref - out).max() / (scale if scale > 0 else 1.0)) if ref.size else 0.0


@functools.cache
def _reference(name: str) -> tuple[dict[str, float], frozenset[str]]:
    path, xs, ys, names = case_data(name)
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    outs = list(runner.infer({s.name: x for s, x in zip(runner.input_specs(), xs)}).values())
    assert len(outs) == len(ys)
    classes = frozenset(layer.class_name for _, layer, _ in runner.model.walk())
    return {n: rel_error(y, o) for n, y, o in zip(names, ys, outs)}, classes


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_reference_equals_tf_keras(name: str) -> None:
    errors, _ = _reference(name)
    bad = {k: f"{v:.1e}" for k, v in errors.items() if v > TOLERANCE}
    assert not bad, f"{name}: tf-keras and the float64 reference differ (max |diff| / max): {bad}"
    print(f"{name}: largest error {max(errors.values()):.2e} over {len(errors)} outputs")


def test_every_tf_operation_is_compared_with_tf_keras() -> None:
    """Each function of the catalog's tf_ops family appears in some case (the coverage of
    ``test_semantics`` leaves these classes to this module)."""
    refused = [bnconvert.load(case_data(name)[0]) for name in REFUSED]
    seen = frozenset().union(*(_reference(name)[1] for name in CASES),
                             *({layer.class_name for layer in model.layers} for model in refused))
    runnable = {name for name in TF_OP_CLASSES if catalog()[name].call is not None}
    missing = sorted(runnable - seen)
    assert not missing, f"tf operations no case exercises: {missing}"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_function_without_semantics_is_refused_naming_layer_and_function(name: str) -> None:
    path, xs, _, _ = case_data(name)
    with pytest.raises(UnsupportedLayerError) as info:
        runner = ReferenceRunner(path, model=bnconvert.load(path))
        runner.infer({s.name: x for s, x in zip(runner.input_specs(), xs)})
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in REFUSED[name]), message


def test_an_argument_bnconvert_does_not_implement_is_refused_by_name() -> None:
    """An argument outside TensorFlow's signature as bnconvert knows it is refused, naming it
    (never ignored); shape inference keeps the batch so that the export can say why too."""
    from bnconvert.model import OP_ARGS
    from bnconvert.onnx import to_onnx

    path, xs, _, _ = case_data("reductions")
    model = bnconvert.load(path)
    layer = next(layer for layer in model.layers if layer.class_name == "tf.math.reduce_std")
    args, kwargs = layer.call_kwargs[0][OP_ARGS]
    layer.call_kwargs[0][OP_ARGS] = (args, {**kwargs, "ddof": 1})
    runner = ReferenceRunner(path, model=model)
    with pytest.raises(UnsupportedLayerError, match=f"'{layer.name}'.*tf.math.reduce_std: argument 'ddof'"):
        runner.infer({s.name: x for s, x in zip(runner.input_specs(), xs)})
    with pytest.raises(UnsupportedLayerError, match=f"'{layer.name}'.*argument 'ddof'"):
        to_onnx(model)


@pytest.mark.parametrize(("target", "expected"), [([3, 4], (3, 4)), (5, (5,)), (None, (2, None))])
def test_broadcast_to_shape_rule_takes_a_list_a_number_or_refuses(target: Any, expected: tuple[Any, ...]) -> None:
    """The shape rule reads ``shape`` as the reference does (a list, or one number); anything else
    is a call bnconvert refuses (batch kept, other sizes unknown), never a TypeError."""
    from bnconvert.model import OP_ARGS, TensorArg

    rule = catalog()["tf.broadcast_to"].shape
    assert rule is not None
    assert rule({OP_ARGS: ([TensorArg(0)], {"shape": target})}, [(2, 1)]) == [expected]
