"""Keras 3 operation layers (``keras.ops.*``): the reader's form, shape inference and the float64
semantics against Keras 3 itself.

A few functional models use every operation the catalog has a record for, with the argument
forms real models use (constants on either side, axis int/list/None, keepdims, slices with
negative steps, ``None`` and ``...``, list arguments, several outputs); Keras 3 saves and runs
them once per session (:func:`operation_models`, shared with ``tests/onnx/test_operations.py``),
bnconvert reads them back and runs them in float64.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.catalog import catalog
from bnconvert.check.reference import ReferenceRunner, run_reference
from bnconvert.errors import UnsupportedLayerError
from bnconvert.model import TensorArg
from bnconvert.onnx import to_onnx
from bnconvert.readers.graph import build_model
from bnconvert.shapes import infer_shapes

#: every class the catalog runs for Keras 3 operation layers (compared here, not in test_semantics)
OPERATION_CLASSES = frozenset(name for name in catalog() if name.startswith("keras.ops."))
#: float32 rounding of a small model, relative to the largest output
TOLERANCE = 1e-5


def _models() -> dict[str, Any]:
    import keras
    from keras import ops

    L = keras.layers
    a, b = keras.Input((4, 6), name="a"), keras.Input((4, 6), name="b")
    pos = ops.abs(a) + 0.25
    elementwise = [
        a + 3.0, 2.0 - b, a * b, a / pos, ops.divide(b, pos), ops.true_divide(3.0, pos), ops.power(pos, 1.5), 2.0 ** a, ops.maximum(a, b),
        ops.minimum(a, 0.1), ops.floor_divide(a, 0.3), ops.mod(a, 0.7), ops.negative(a), ops.absolute(b), ops.sqrt(pos),
        ops.square(a), ops.exp(a), ops.log(pos), ops.log1p(pos), ops.expm1(a), ops.sin(a), ops.cos(a), ops.tan(a * 0.3),
        ops.tanh(a), ops.floor(a * 2), ops.ceil(a * 2), ops.round(a * 3), ops.round(a, 1), ops.sign(a),
        ops.reciprocal(pos), ops.rsqrt(pos), ops.erf(a), ops.clip(a, -0.5, 0.7), ops.sigmoid(a), ops.relu(a),
        ops.relu6(a * 4), ops.silu(a), ops.softplus(a), ops.softsign(a), ops.selu(a), ops.log_sigmoid(a),
        ops.hard_sigmoid(a), ops.hard_silu(a), ops.hard_tanh(a * 2), ops.sparse_plus(a), ops.tanh_shrink(a),
        ops.elu(a, 0.5), ops.celu(a, 2.0), ops.leaky_relu(a, 0.1), ops.gelu(a), ops.gelu(a, approximate=False),
        ops.squareplus(a, 2.0), ops.softmax(a, axis=1), ops.log_softmax(a), ops.stop_gradient(a),
        ops.exp2(a), ops.log2(pos), ops.log10(pos), ops.arcsin(ops.tanh(a)), ops.arccos(ops.tanh(a)), ops.arctan(a),
        ops.sinh(a), ops.cosh(a), ops.arcsinh(a), ops.arccosh(pos + 1.0), ops.arctanh(ops.tanh(a) * 0.9), ops.cbrt(a),
        ops.trunc(a * 3),
    ]
    reductions = [
        ops.mean(a, axis=1, keepdims=True), ops.sum(a, axis=[1, 2]), ops.max(a, axis=-1), ops.min(a, axis=1, keepdims=True),
        ops.amax(a, axis=1), ops.amin(b, axis=-1), ops.prod(a, axis=1), ops.std(a, axis=-1), ops.var(a, axis=[1]),
        ops.logsumexp(a, axis=[1, 2]), ops.max(a, axis=1, initial=0.3), ops.sum(a, axis=None), ops.mean(a),
        ops.norm(a, axis=-1), ops.norm(a, ord=1, axis=1, keepdims=True), ops.norm(a, axis=[1, 2]),
        ops.normalize(a), ops.normalize(a, axis=1, order=1), ops.normalize(a * 1e-9, epsilon=1e-3),
    ]
    shapes = [
        ops.matmul(a, ops.transpose(b, (0, 2, 1))), ops.matmul(a, ops.ones((6, 3))), ops.einsum("bij,bkj->bik", a, b),
        ops.einsum("...j,...j->...", a, b), ops.reshape(a, (-1, 24)), ops.reshape(a, (-1, 3, 8)), ops.transpose(a),
        ops.expand_dims(a, 1), ops.expand_dims(a, [0, -1]), ops.squeeze(ops.expand_dims(a, 2), 2), ops.squeeze(a[:, :1]),
        a[..., 0], a[:, 1:3], a[:, None], a[:, ::-1], a[:, -1, 1:5:2], a[:, ::-2, -1:], a[:, 2], a[..., None, 1:],
        ops.concatenate([a, b], axis=-1), ops.concatenate([a, b]), ops.stack([a, b], axis=1), ops.stack([a, b], axis=-1),
        *ops.split(a, 2, axis=1), *ops.split(a, [1, 4], axis=-1), ops.tile(a, (1, 2, 1)), ops.tile(a, 2),
        ops.repeat(a, 2, axis=2), ops.repeat(a, 3, axis=1),
        ops.flip(a, axis=1), ops.flip(a), ops.swapaxes(a, 1, 2), ops.moveaxis(a, 1, -1),
        ops.moveaxis(ops.expand_dims(a, 1), [1, 2], [3, 1]),
        ops.cumsum(a, axis=1), ops.take(a, [2, 0, -1], axis=1), ops.take(a, ops.cast(ops.abs(b[:, 0, :2]) * 3, "int32"), axis=2),
        ops.pad(a, [[0, 0], [1, 2], [2, 0]]), ops.pad(a, [[0, 0], [1, 1], [0, 3]], constant_values=0.5),
        ops.pad(a, [[0, 0], [2, 1], [1, 1]], mode="reflect"), ops.pad(a, [[0, 0], [2, 1], [1, 1]], mode="symmetric"),
    ]
    typed = [
        a > b, a >= 0.2, ops.less(a, b), ops.less_equal(a, 0.0), ops.equal(ops.round(a), ops.round(b)),
        ops.not_equal(ops.round(a), 0.0), ops.logical_and(a > 0, b < 0), ops.logical_or(a > 1, b > 1),
        ops.logical_xor(a > 0, b > 0), ops.logical_not(a > 0), ops.where(a > 0, a, b), ops.where(a > b, 1.0, a),
        ops.cast(a * 3, "int32"), ops.cast(a, "bool"), ops.cast(ops.cast(a * 3, "int32"), "float32") + 0.5,
        ops.cast(a > 0, "float32") * b, ops.cast(a * 3, "int32") + 2, ops.cast(a * 3, "int32") / 2,
        ops.argmax(a, axis=1), ops.argmin(a, axis=-1, keepdims=True), ops.any(a > 1, axis=-1), ops.all(a > -2, axis=[1, 2]),
        ops.zeros_like(a), ops.ones_like(a), ops.ones_like(a, dtype="int32"),
        ops.one_hot(ops.cast(a * 2, "int32"), 4), ops.one_hot(ops.cast(b * 2 + 1, "int32"), 3, axis=1),
        ops.cumsum(a > 0, axis=-1),
    ]
    x = keras.Input((5, 5, 3), name="img")
    h = L.Conv2D(4, 3, padding="same", name="conv")(x)
    h = L.BatchNormalization(name="bn")(h)
    h = ops.relu(h) * 0.5 + ops.mean(h, axis=[1, 2], keepdims=True)
    h = L.Conv2D(3, 1, name="conv2")(h[:, 1:, :-1])
    with_bn = keras.Model(x, [ops.sum(h, axis=-1), L.GlobalAveragePooling2D()(h)], name="with_bn")
    return {
        "elementwise": keras.Model([a, b], elementwise, name="elementwise"),
        "reductions": keras.Model([a, b], reductions, name="reductions"),
        "shapes": keras.Model([a, b], shapes, name="shapes"),
        "typed": keras.Model([a, b], typed, name="typed"),
        "with_bn": with_bn,
    }


@pytest.fixture(scope="session")
def operation_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]:
    """name -> (the saved .keras file, inputs, Keras 3's outputs); ``<name>_h5`` the same in a Keras 3 .h5.
    Built once per session although two modules use the fixture (each registers its own copy)."""
    if _BUILT:
        return _BUILT
    import keras

    from ..onnx.helpers import inputs_for, keras_predict, randomize

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("operations")
    cases = {}
    for name, model in _models().items():
        randomize(model)
        xs = inputs_for(model)
        expected = keras_predict(model, xs)
        for fmt in ("keras", "h5") if name in ("elementwise", "with_bn") else ("keras",):
            path = folder / f"{name}.{fmt}"
            model.save(path)
            cases[name if fmt == "keras" else f"{name}_h5"] = (path, xs, expected)
    _BUILT.update(cases)
    return cases


_BUILT: dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]] = {}


@functools.cache
def loaded(path: Path) -> bnconvert.Model:
    """A model file read once per session (the tests only read it)."""
    return bnconvert.load(path)


def _error(ref: Any, out: Any) -> float:
    """``max |ref - out| / max |ref|``; infinite where one is NaN and the other is not."""
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    assert ref.shape == out.shape, (ref.shape, out.shape)
    if not np.array_equal(np.isnan(ref), np.isnan(out)):
        return float("inf")
    ref, out = np.nan_to_num(ref), np.nan_to_num(out)
    scale = np.abs(ref).max() if ref.size else 0.0
    return float(np.abs(ref - out).max() / (scale if scale > 0 else 1.0)) if ref.size else 0.0


CASES = ["elementwise", "elementwise_h5", "reductions", "shapes", "typed", "with_bn", "with_bn_h5"]


@pytest.mark.parametrize("case", CASES)
def test_float64_reference_equals_keras3(case: str, operation_models: dict[str, Any]) -> None:
    path, xs, expected = operation_models[case]
    model = loaded(path)
    outs = run_reference(model, xs)
    assert len(outs) == len(expected)
    errors = {str(ref): _error(k, r) for ref, r, k in zip(model.outputs, outs, expected)}
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= TOLERANCE, f"{case}: {worst} ({model[worst.split('[')[0]].class_name}) off by {errors[worst]:.2e}"
    shapes = infer_shapes(model)  # the shape rules agree with what Keras computed, batch left open
    for ref, k in zip(model.outputs, expected):
        assert shapes[ref] is not None and len(shapes[ref]) == np.ndim(k), (ref, shapes[ref])
        assert all(d is None or d == n for d, n in zip(shapes[ref], np.shape(k))), (ref, shapes[ref], np.shape(k))


def test_every_operation_record_is_compared_with_keras3(operation_models: dict[str, Any]) -> None:
    ran = {layer.class_name for case in CASES for _, layer, _ in loaded(operation_models[case][0]).walk()}
    missing = sorted(OPERATION_CLASSES - ran)
    assert not missing, f"keras.ops records no Keras comparison exercises: {missing}"


def test_records_are_named_after_keras_ops_functions() -> None:
    import keras

    wrong = sorted(n for n in OPERATION_CLASSES if not hasattr(keras.ops, n.removeprefix("keras.ops.")))
    assert not wrong, wrong
    assert all(catalog()[n].masking == "drop" for n in OPERATION_CLASSES)


# -- the reader's form ----------------------------------------------------------------------------------
def _tensor(name: str) -> dict[str, Any]:
    return {"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "dtype": "float32", "keras_history": [name, 0, 0]}}


def _functional(*layers: dict[str, Any], outputs: list[list[Any]]) -> dict[str, Any]:
    entry = {"module": "keras.layers", "class_name": "InputLayer", "name": "x",
             "config": {"name": "x", "batch_shape": [None, 4], "dtype": "float32"}, "inbound_nodes": []}
    return {"class_name": "Functional", "config": {"name": "m", "layers": [entry, *layers],
                                                   "input_layers": [["x", 0, 0]], "output_layers": outputs}}


def _op(cls: str, name: str, args: list[Any], kwargs: dict[str, Any] | None = None, module: str = "keras.src.ops.numpy",
        **config: Any) -> dict[str, Any]:
    return {"module": module, "class_name": cls, "name": name, "config": {"name": name, **config},
            "inbound_nodes": [{"args": args, "kwargs": kwargs or {}}]}


def test_keras3_call_arguments_are_kept_with_tensor_placeholders() -> None:
    model = build_model(_functional(
        _op("Power", "power", [2.0, _tensor("x")]),
        _op("GetItem", "get_item", [_tensor("x"), [{"class_name": "__ellipsis__", "config": {}}, None,
                                                   {"class_name": "__slice__", "config": {"start": 3, "stop": None, "step": -1}}]]),
        _op("Concatenate", "concatenate", [[_tensor("x"), _tensor("power")]], axis=-1),
        _op("Multiply", "multiply", [_tensor("x"), {"class_name": "__numpy__", "config": {"value": [1, 2, 3, 4], "dtype": "int32"}}]),
        _op("RGBToHSV", "hsv", [_tensor("x")], module="keras.src.ops.image"),
        outputs=[["concatenate", 0, 0]]))
    power, item, cat, mul = (model[n] for n in ("power", "get_item", "concatenate", "multiply"))
    assert (power.class_name, power.source_class, power.label) == ("keras.ops.power", "Power", "'power' (Power)")
    assert power.op_args(0) == ([2.0, TensorArg(0)], {})
    assert item.class_name == "keras.ops.get_item" and item.op_args(0) == ([TensorArg(0), [Ellipsis, None, slice(3, None, -1)]], {})
    assert [str(r) for r in cat.calls[0]] == ["x", "power"] and cat.op_args(0) == ([[TensorArg(0), TensorArg(1)]], {})
    args, _ = mul.op_args(0)
    assert args[1].dtype == np.int32 and args[1].tolist() == [1, 2, 3, 4]
    assert model["hsv"].class_name == "keras.ops.image.rgb_to_hsv"
    shapes = infer_shapes(model)
    assert shapes[model.outputs[0]] == (None, 8)


def test_an_operation_without_semantics_is_refused_by_its_name() -> None:
    model = build_model(_functional(_op("Cumprod", "cumprod_3", [_tensor("x")], axis=1), outputs=[["cumprod_3", 0, 0]]))
    model.source = None
    with pytest.raises(UnsupportedLayerError, match=r"'cumprod_3' \(keras\.ops\.cumprod: bnconvert has no semantics"):
        run_reference(model, [np.zeros((2, 4))])


def test_indexing_by_a_tensor_is_refused_naming_the_layer() -> None:
    model = build_model(_functional(_op("GetItem", "get_item", [_tensor("x"), [_tensor("x")]]), outputs=[["get_item", 0, 0]]))
    with pytest.raises(UnsupportedLayerError, match=r"'get_item' \(keras\.ops\.get_item: indexing by a tensor\)"):
        run_reference(model, [np.zeros((2, 4))])


def test_a_slice_step_of_0_is_refused_naming_the_layer() -> None:
    """numpy and Keras raise on it; bnconvert refuses it in one line (the index is normalised in one
    place, catalog.array_ops.normalise_index, for the reference, the shape rule and both ONNX getitems)."""
    step0 = {"class_name": "__slice__", "config": {"start": None, "stop": None, "step": 0}}
    model = build_model(_functional(_op("GetItem", "get_item", [_tensor("x"), [step0]]), outputs=[["get_item", 0, 0]]))
    with pytest.raises(UnsupportedLayerError, match=r"'get_item' \(keras\.ops\.get_item: a slice step of 0\)"):
        run_reference(model, [np.zeros((2, 4))])
    with pytest.raises(UnsupportedLayerError, match=r"1 unsupported layer: 'get_item' \(GetItem"):
        to_onnx(model)  # its shape rule refuses it first


def test_dead_mask_operations_are_dropped_live_ones_run() -> None:
    """Keras 3 records the mask it computed for a call as operations nothing reads (NotEqual after a
    mask_zero Embedding): the reference drops them, whatever their class."""
    model = build_model(_functional(
        _op("Cumprod", "dead", [_tensor("x")], axis=1),
        _op("Add", "add", [_tensor("x"), 1.5]),
        outputs=[["add", 0, 0]]))
    runner = ReferenceRunner("hand_built.keras", model=model)
    assert [layer.name for layer in runner.model.layers] == ["x", "add"]
    (out,) = runner.infer({"x": np.arange(8.0).reshape(2, 4)}).values()
    np.testing.assert_array_equal(out, np.arange(8.0).reshape(2, 4) + 1.5)


def test_every_keras3_operation_class_is_named_like_its_keras_ops_function() -> None:
    """The reader's names (snake case, the odd ones from a table) against keras.ops itself, for
    every operation class Keras 3 has; the list telling operations in a Keras 3 .h5 holds them all."""
    import importlib
    import inspect

    import keras
    from keras.src.ops.operation import Operation

    from bnconvert.readers.graph import (
        _KERAS3_IMAGE_OPERATIONS,
        _KERAS3_OPERATIONS,
        operation_name,
    )

    wrong, unlisted = [], []
    for part in ("numpy", "nn", "math", "core", "image", "linalg"):
        module = importlib.import_module(f"keras.src.ops.{part}")
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and issubclass(cls, Operation) and cls.__module__ == module.__name__):
                continue
            name = operation_name({"module": module.__name__, "class_name": cls.__name__})
            target: Any = keras
            for attr in (name or "").split(".")[1:]:
                target = getattr(target, attr, None)
            if target is None and cls.__name__ not in ("SegmentReduction", "Function"):  # abstract bases
                wrong.append((cls.__name__, name))
            if cls.__name__ not in (_KERAS3_IMAGE_OPERATIONS if part == "image" else _KERAS3_OPERATIONS):
                unlisted.append(cls.__name__)
    assert not wrong, wrong
    assert not unlisted, unlisted


def test_reference_split_over_threads_keeps_batch_wide_operations_whole(operation_models: dict[str, Any]) -> None:
    """``ops.sum(x)`` and ``ops.mean(x)`` reduce over the batch too: the reference must not run
    slices of the batch apart (its threads); element-wise operations may be."""
    path, xs, expected = operation_models["reductions"]
    runner = ReferenceRunner(path, model=loaded(path))
    runner.threads = 2
    outs = list(runner.infer(dict(zip([s.name for s in runner.input_specs()], xs))).values())
    assert max(_error(k, o) for k, o in zip(expected, outs)) <= TOLERANCE
