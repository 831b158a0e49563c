"""How bnconvert reads a tf.keras ``TFOpLambda`` call: TensorFlow's argument names per function,
their binding, and the checks of argument values the float64 semantics (:mod:`.tf_ops`), the
shape rules and the ONNX handler all make the same way.

tf.keras' ``Node.serialize`` keeps a call's first argument positionally and files every other
argument by its name; :func:`bind` names them all by :data:`PARAMETERS`. A value bnconvert does
not implement raises :class:`TfOpProblem` with the reason (the caller names the layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from ..model import OP_ARGS, Layer
from .array_ops import normalise_index
from .facts import CALL_KWARGS, Shape
from .preprocessing import RESIZE_METHODS, ResizePlan

__all__ = [
    "PARAMETERS",
    "Operand",
    "TfOpProblem",
    "bind",
    "block_size",
    "cast_kind",
    "index_items",
    "int_list",
    "known",
    "lrn_settings",
    "norm_order",
    "one_hot_settings",
    "op_args_of",
    "operand_shape",
    "pool_window",
    "repeat_axis",
    "resize_plan",
    "shape_list",
    "sort_settings",
    "split_sizes",
    "tf_axes",
    "tf_axis",
    "tf_function",
    "top_k_count",
]


class TfOpProblem(Exception):
    """A call this module cannot compute (an argument it lacks, an operand tf.keras did not store):
    the message is the reason; the caller names the layer."""


@dataclass(frozen=True)
class Operand:
    """A tensor argument seen by a shape rule: only its shape is known."""

    shape: Shape


# -- argument names ------------------------------------------------------------------------------
_UNARY = ("x", "name")
_BINARY = ("x", "y", "name")
_REDUCE = ("input_tensor", "axis", "keepdims", "name")

#: TensorFlow function (as tf.keras records it, ``compat.v1.`` removed) -> its argument names in
#: order (the first is the call's first argument); ``name`` is accepted and ignored everywhere
PARAMETERS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys((
        "__operators__.add", "math.add", "math.subtract", "math.multiply", "math.truediv", "math.pow", "math.maximum", "math.minimum",
        "math.squared_difference", "floor_div", "math.floormod", "math.greater", "math.greater_equal", "math.less", "math.less_equal", "math.equal",
        "math.not_equal", "math.logical_and", "math.logical_or", "math.divide_no_nan", "math.multiply_no_nan", "math.xlogy"
    ), _BINARY),
    "math.atan2": ("y", "x", "name"),
    "nn.crelu": ("features", "name", "axis"),
    "__operators__.eq": ("self", "other"), "__operators__.ne": ("self", "other"),
    **dict.fromkeys((
        "math.abs", "math.negative", "math.square", "math.sqrt", "math.rsqrt", "math.exp", "math.log", "math.log1p", "math.expm1", "math.sigmoid",
        "math.tanh", "math.erf", "math.sin", "math.cos", "math.reciprocal", "math.sign", "math.floor", "math.ceil", "math.round", "math.logical_not",
        "math.softplus", "nn.softsign", "math.tan", "math.atan", "math.asin", "math.acos", "math.sinh", "math.cosh", "math.asinh", "math.acosh",
        "math.atanh", "math.log_sigmoid", "math.is_nan"
    ), _UNARY),
    **dict.fromkeys(("nn.relu", "nn.relu6", "nn.elu", "nn.selu"), ("features", "name")),
    "nn.leaky_relu": ("features", "alpha", "name"),
    "nn.gelu": ("features", "approximate", "name"),
    "nn.silu": ("features", "beta"),
    "nn.softmax": ("logits", "axis", "name", "dim"), "nn.log_softmax": ("logits", "axis", "name", "dim"),
    "math.l2_normalize": ("x", "axis", "epsilon", "name", "dim"),
    **dict.fromkeys((
        "math.reduce_mean", "math.reduce_sum", "math.reduce_max", "math.reduce_min", "math.reduce_prod", "math.reduce_std", "math.reduce_variance",
        "math.reduce_logsumexp", "math.reduce_any", "math.reduce_all"
    ), _REDUCE),
    "math.argmax": ("input", "axis", "output_type", "name"), "math.argmin": ("input", "axis", "output_type", "name"),
    "math.cumsum": ("x", "axis", "exclusive", "reverse", "name"),
    "reshape": ("tensor", "shape", "name"),
    "shape": ("input", "out_type", "name"),
    "transpose": ("a", "perm", "name", "conjugate"),
    "expand_dims": ("input", "axis", "name"),
    "squeeze": ("input", "axis", "name", "squeeze_dims"),
    "concat": ("values", "axis", "name"),
    "stack": ("values", "axis", "name"),
    "unstack": ("value", "num", "axis", "name"),
    "tile": ("input", "multiples", "name"),
    "repeat": ("input", "repeats", "axis", "name"),
    "reverse": ("tensor", "axis", "name"),
    "split": ("value", "num_or_size_splits", "axis", "num", "name"),
    "gather": ("params", "indices", "validate_indices", "name", "axis", "batch_dims"),
    "pad": ("tensor", "paddings", "mode", "name", "constant_values"),
    "__operators__.getitem": ("tensor", "slice_spec", "var"),
    "linalg.matmul": ("a", "b", "transpose_a", "transpose_b", "adjoint_a", "adjoint_b", "a_is_sparse", "b_is_sparse",
                      "output_type", "grad_a", "grad_b", "name"),
    "cast": ("x", "dtype", "name"),
    "where": ("condition", "x", "y", "name"),
    "clip_by_value": ("t", "clip_value_min", "clip_value_max", "name"),
    "nn.bias_add": ("value", "bias", "data_format", "name"),
    "ones_like": ("input", "dtype", "name"), "zeros_like": ("input", "dtype", "name"),
    "identity": ("input", "name"), "ensure_shape": ("x", "shape", "name"),
    "broadcast_to": ("input", "shape", "name"),
    "roll": ("input", "shift", "axis", "name"),
    "math.add_n": ("inputs", "name"),
    "math.top_k": ("input", "k", "sorted", "index_type", "name"),
    **{f"image.{f}": ("images", "name") for f in ("rgb_to_grayscale", "grayscale_to_rgb")},
    **{f"image.{f}": ("image",) for f in ("flip_left_right", "flip_up_down", "per_image_standardization")},
    "sort": ("values", "axis", "direction", "name"),
    "argsort": ("values", "axis", "direction", "stable", "name"),
    "one_hot": ("indices", "depth", "on_value", "off_value", "axis", "dtype", "name"),
    "nn.local_response_normalization": ("input", "depth_radius", "bias", "alpha", "beta", "name"),
    "stop_gradient": ("input", "name"),
    "image.resize": ("images", "size", "method", "preserve_aspect_ratio", "antialias", "name"),
    "nn.depth_to_space": ("input", "block_size", "data_format", "name"),
    "nn.space_to_depth": ("input", "block_size", "data_format", "name"),
    "norm": ("tensor", "ord", "axis", "keepdims", "name", "keep_dims"),
    "math.reduce_euclidean_norm": _REDUCE,
    "linalg.normalize": ("tensor", "ord", "axis", "name"),
    **{f"nn.{kind}_pool{n}": ("input", "ksize", "strides", "padding", "data_format", "name")
       for kind in ("avg", "max") for n in ("1d", "2d", "3d")},
}

#: arguments whose value never changes the result (sparsity hints, gradients, index validation)
_IGNORED = frozenset({"name", "a_is_sparse", "b_is_sparse", "grad_a", "grad_b", "validate_indices", "output_type", "index_type",
                       "out_type"})

#: calls tf.keras stores without some of their tensors, so nobody can rebuild them
_OPERANDS_LOST = {
    "__operators__.eq": "tf.keras stores only its first operand (`x == y`)",
    "__operators__.ne": "tf.keras stores only its first operand (`x != y`)",
}


def tf_function(layer: Layer) -> str:
    """The TensorFlow function of ``layer`` as tf.keras records it (``math.reduce_mean``)."""
    return layer.class_name.removeprefix("tf.")


def bind(function: str, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by TensorFlow's names (positional ones named by :data:`PARAMETERS`);
    :class:`TfOpProblem` for an argument the function does not take or an operand tf.keras lost."""
    if function in _OPERANDS_LOST:
        raise TfOpProblem(_OPERANDS_LOST[function])
    names = PARAMETERS[function]
    if len(args) > len(names):
        raise TfOpProblem(f"{len(args)} positional arguments, {function} takes {len(names)}")
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise TfOpProblem(f"argument {key!r} is not one bnconvert implements")
        if key in bound:
            raise TfOpProblem(f"argument {key!r} given twice")
        bound[key] = value
    return {k: v for k, v in bound.items() if k not in _IGNORED}


def op_args_of(source: Any) -> tuple[list[Any], dict[str, Any]]:
    """The ``(args, kwargs)`` of an operation call: from a :class:`CallContext`, a handler's call
    (``op_args``) or a shape rule's config (``config[CALL_KWARGS][OP_ARGS]``)."""
    pair = getattr(source, "op_args", None)
    if pair is None and isinstance(source, dict):
        pair = source.get(OP_ARGS) or (source.get(CALL_KWARGS) or {}).get(OP_ARGS)
    if pair is None and hasattr(source, "kwarg"):
        pair = source.kwarg(OP_ARGS)
    if pair is None:
        raise TfOpProblem("the file records no call arguments for this operation")
    args, kwargs = pair
    return list(args), dict(kwargs)


# -- helpers -------------------------------------------------------------------------------------
def tf_axes(value: Any, rank: int) -> list[int] | None:
    """A TensorFlow ``axis`` (None, int, list) as sorted non-negative axes (None: every axis)."""
    if value is None:
        return None
    items = [value] if isinstance(value, (int, float)) else list(value)
    out = sorted(int(a) % rank for a in items)
    if len(set(out)) != len(out):
        raise TfOpProblem(f"axis {value!r} repeats an axis")
    return out


def tf_axis(value: Any, rank: int, default: int = 0) -> int:
    """One TensorFlow ``axis`` (``default`` when None) as a non-negative axis of a rank-``rank`` tensor."""
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or not -rank <= value < rank:
        raise TfOpProblem(f"axis {value!r} is not an axis of a rank-{rank} tensor")
    return value % rank


def operand_shape(value: Any) -> Shape:
    """The shape of a tensor argument (:class:`Operand`) or of a constant."""
    return value.shape if isinstance(value, Operand) else tuple(np.shape(value))


def int_list(value: Any, what: str) -> list[int]:
    """A constant integer or list of integers (``shape``, ``multiples``, ``perm`` ...) as a list."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TfOpProblem(f"{what} {value!r} is not a list of integers (a shape computed from tensors is not supported)")
    return [int(v) for v in value]


def shape_list(value: Any) -> list[int]:
    """A reshape target whose entries may be numbers the model computed (``tf.shape(x)[0]``)."""
    if isinstance(value, (list, tuple)):
        value = [int(np.asarray(d).reshape(-1)[0]) if isinstance(d, np.ndarray) and d.size == 1 else d for d in value]
    elif isinstance(value, np.ndarray):
        value = [int(d) for d in value.reshape(-1)]
    return int_list(value, "shape")


#: TensorFlow dtypes ``cast`` may produce, by how their values look in float64
_FLOAT_DTYPES = frozenset({"float32", "float64", "double", "float", "bfloat16", "float16", "half"})
_INT_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})


def cast_kind(dtype: Any) -> str:
    """``float``, ``float16``, ``bfloat16``, ``int`` or ``bool`` for a ``tf.cast`` dtype;
    :class:`TfOpProblem` for any other."""
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name in ("float16", "half"):
        return "float16"
    if name == "bfloat16":
        return "bfloat16"
    if name in _FLOAT_DTYPES:
        return "float"
    if name in _INT_DTYPES:
        return "int"
    if name == "bool":
        return "bool"
    raise TfOpProblem(f"cast to {name!r} is not supported")


def split_sizes(a: dict[str, Any], size: int | None) -> list[int | None]:
    """The sizes ``tf.split`` cuts an axis of ``size`` into (None where ``size`` is unknown):
    ``num_or_size_splits`` equal parts, or the sizes given (one ``-1`` takes the rest)."""
    spec = a.get("num_or_size_splits")
    if known(spec):
        if spec <= 0 or (size is not None and size % spec):
            raise TfOpProblem(f"num_or_size_splits {spec} does not divide the axis of size {size}")
        return [None if size is None else size // spec] * spec
    sizes = int_list(spec, "num_or_size_splits")
    if sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        raise TfOpProblem(f"num_or_size_splits {sizes} is not a list of sizes with at most one -1")
    rest = None if size is None else size - sum(s for s in sizes if s != -1)
    if rest is not None and (rest < 0 or (-1 not in sizes and rest != 0)):
        raise TfOpProblem(f"num_or_size_splits {sizes} does not add up to the axis of size {size}")
    return [rest if s == -1 else s for s in sizes]


def repeat_axis(a: dict[str, Any], rank: int) -> int:
    """``tf.repeat``'s axis; without one TensorFlow flattens the tensor first, which is refused."""
    if a.get("axis") is None:
        raise TfOpProblem("tf.repeat without an axis (which flattens the tensor) is not supported")
    return tf_axis(a["axis"], rank)


def sort_settings(a: dict[str, Any], rank: int) -> tuple[int, bool]:
    """``(axis, descending)`` of ``tf.sort``/``tf.argsort``."""
    direction = a.get("direction", "ASCENDING")
    if direction not in ("ASCENDING", "DESCENDING"):
        raise TfOpProblem(f"direction {direction!r} is not 'ASCENDING' or 'DESCENDING'")
    return tf_axis(a.get("axis", -1), rank), direction == "DESCENDING"


def top_k_count(a: dict[str, Any], size: int | None) -> int:
    """``k`` of ``tf.math.top_k``: a constant no larger than the last axis; unsorted output refused."""
    k = a.get("k", 1)
    if not known(k) or k < 1 or (size is not None and k > size):
        raise TfOpProblem(f"k {k!r} is not a constant between 1 and the last axis' size {size}")
    if a.get("sorted") is False:
        raise TfOpProblem("sorted=False (an unspecified order) is not supported")
    return k


def one_hot_settings(a: dict[str, Any], rank: int) -> tuple[int, float, float, int]:
    """``(depth, on_value, off_value, axis)`` of ``tf.one_hot`` on indices of ``rank`` (float
    values only: ``dtype`` must be a float type)."""
    depth = a.get("depth")
    if not known(depth) or depth < 1:
        raise TfOpProblem(f"depth {depth!r} is not a positive integer")
    if a.get("dtype") not in (None, "float32", "float64", "float16"):
        raise TfOpProblem(f"dtype {a.get('dtype')!r} is not supported")
    on, off = a.get("on_value"), a.get("off_value")
    if not all(v is None or isinstance(v, (int, float)) for v in (on, off)):
        raise TfOpProblem("on_value/off_value computed by the model are not supported")
    axis = a.get("axis")
    return depth, 1.0 if on is None else float(on), 0.0 if off is None else float(off), \
        rank if axis in (None, -1) else tf_axis(axis, rank + 1)


def lrn_settings(a: dict[str, Any]) -> tuple[int, float, float, float]:
    """``(depth_radius, bias, alpha, beta)`` of ``tf.nn.local_response_normalization`` (TF's defaults)."""
    radius = a.get("depth_radius", 5)
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 0:
        raise TfOpProblem(f"depth_radius {radius!r} is not a non-negative integer")
    return radius, float(a.get("bias", 1.0)), float(a.get("alpha", 1.0)), float(a.get("beta", 0.5))


def resize_plan(a: dict[str, Any], shape: Shape) -> ResizePlan:
    """``tf.image.resize`` of images ``shape`` (N, H, W, C), as the Resizing layer (which calls it)."""
    if len(shape) != 4 or not all(known(d) for d in shape[1:3]):
        raise TfOpProblem(f"tf.image.resize of a tensor of shape {shape}: a batch of images of known size is supported")
    if a.get("preserve_aspect_ratio"):
        raise TfOpProblem("preserve_aspect_ratio=True is not supported")
    method = str(a.get("method", "bilinear"))
    if method not in RESIZE_METHODS:
        raise TfOpProblem(f"method {method!r} is not one of {RESIZE_METHODS}")
    h, w = int_list(a.get("size"), "size")
    return ResizePlan(size=(shape[1], shape[2]), target=(h, w), method=method, antialias=bool(a.get("antialias")))


def block_size(a: dict[str, Any]) -> int:
    """The ``block_size`` of depth_to_space/space_to_depth; only NHWC is supported."""
    if a.get("data_format", "NHWC") != "NHWC":
        raise TfOpProblem(f"data_format {a.get('data_format')!r} is not supported")
    bs = a.get("block_size")
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 2:
        raise TfOpProblem(f"block_size {bs!r} is not an integer >= 2")
    return bs


def norm_order(order: Any, axis: Any) -> float:
    """``ord`` of ``tf.norm`` over ``axis``: 2 for 'euclidean'/'fro', a positive number, or
    infinity. A number over two axes asks for a matrix norm (``ord=2``: the largest singular
    value), which is refused; 'euclidean'/'fro' there is the square root of the sum of squares."""
    if order in ("euclidean", "fro", None):
        return 2.0
    if isinstance(axis, (list, tuple)) and len(axis) > 1:
        raise TfOpProblem(f"ord {order!r} over {len(axis)} axes (a matrix norm) is not supported")
    if isinstance(order, (int, float)) and not isinstance(order, bool) and order > 0:
        return float(order)
    raise TfOpProblem(f"ord {order!r} is not 'euclidean', 'fro' or a positive number")


def pool_window(a: dict[str, Any], n: int) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """``(ksize, strides, padding)`` of ``tf.nn.*_pool*`` over ``n`` spatial axes (channels last)."""
    if a.get("data_format") not in (None, "NWC", "NHWC", "NDHWC"):
        raise TfOpProblem(f"data_format {a.get('data_format')!r} is not supported")
    padding = a.get("padding")
    if padding not in ("VALID", "SAME"):
        raise TfOpProblem(f"padding {padding!r} is not 'VALID' or 'SAME'")

    def window(value: Any, what: str) -> tuple[int, ...]:
        items = int_list(value, what)
        if len(items) == n + 2:
            items = items[1:-1]
        if len(items) == 1:
            items = items * n
        if len(items) != n or min(items) < 1:
            raise TfOpProblem(f"{what} {value!r} does not give {n} window sizes")
        return tuple(items)

    return window(a.get("ksize"), "ksize"), window(a.get("strides"), "strides"), padding.lower()


def known(d: Any) -> TypeGuard[int]:
    """Whether ``d`` is a known size (an int, not None or a bool)."""
    return isinstance(d, int) and not isinstance(d, bool)


def index_items(spec: Any, rank: int) -> list[Any]:
    """A getitem ``slice_spec`` (the reader's python slices, Ellipsis, None, ints) as one entry
    per axis, as the Keras 3 ``get_item`` record reads it."""
    try:
        return normalise_index(spec, rank)
    except ValueError as exc:
        raise TfOpProblem(f"slice_spec: {exc} is not supported") from None
