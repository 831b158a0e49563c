"""tf.keras ``TFOpLambda`` / ``SlicingOpLambda`` operations, in float64.

A tf.keras functional model that calls a TensorFlow function on a Keras tensor (``x + y``,
``tf.reduce_mean(x, axis=1)``, ``x[:, 1:3]``) stores a ``TFOpLambda`` (``SlicingOpLambda`` for
``x[...]``) naming the function (``"function": "math.reduce_mean"``). The reader calls the layer
``tf.<function>`` (a leading ``compat.v1.`` removed: ``tf.transpose``, ``tf.squeeze``) and keeps
the call's arguments as :data:`~bnconvert.model.OP_ARGS`: tf.keras' ``Node.serialize`` keeps the
first argument positionally (its structure too: a list of tensors for ``tf.concat``) and files
every other argument by its name, so one table of TensorFlow's argument names per function
(:data:`.tf_op_args.PARAMETERS`, with the argument checks the shape rules and the ONNX handler
share) binds both to names. tf.keras records TensorFlow's canonical API name
(``tf.add`` -> ``math.add``, ``tf.matmul`` -> ``linalg.matmul``, ``tf.nn.swish`` -> ``nn.silu``,
``x / y`` -> ``math.truediv``, ``x + y`` -> ``__operators__.add``); those are the names defined here.

Semantics from TensorFlow's documentation of each function (numpy broadcasting; reductions over
every axis when ``axis`` is None; ``reduce_std``/``reduce_variance`` over the population;
``nn.gelu`` exact unless ``approximate``; ``nn.silu`` ``x * sigmoid(beta * x)``; ``l2_normalize``
``x / sqrt(max(sum(x^2), epsilon))``; slicing is numpy's basic indexing, which
``tf.strided_slice`` implements). Booleans (comparisons, logical operations) and integers
(``cast`` to an integer type, ``argmax``, ``tf.shape``) are held as float64 values 0/1 and whole
numbers, their values exactly; so ``tf.reshape(x, [tf.shape(x)[0], -1])`` runs (the sizes it
computes are unknown to the shape rules, which call them None). ``compat.v1.div``, which floors
integers, is left out for that reason; one gap remains: TensorFlow's ``reduce_mean`` (and
``reduce_variance``/``reduce_std``) of an *integer* tensor truncates, which these float values do not.

Refused, naming the layer and the function: a function without a record here (the allow-list of
:mod:`bnconvert.readers.code` admits many more; the catalog has no record, so the reference and
the export say so), an argument or value this module does not implement (the record says which),
and ``x == y`` / ``x != y``, which tf.keras stores without their second operand (tf.keras itself
cannot rebuild them; ``tf.einsum(eq, x, y)``, stored without any tensor, the reader refuses).
A call refused that way keeps its batch size and leaves its other sizes unknown, so that the
export reaches the handler and says why. Operation layers take no part in masking (``drop``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer, resolve_args
from .activations import (
    SELU_ALPHA,
    SELU_SCALE,
    erf,
    log_softmax,
    sigmoid,
    softmax,
    softplus,
)
from .array_ops import index_shape, reshape_target
from .facts import Shape, broadcast, conv_output_length, no_weights
from .pooling import pool_nd
from .record import CallContext, defines
from .tf_op_args import (
    PARAMETERS,
    Operand,
    TfOpProblem,
    bind,
    block_size,
    cast_kind,
    index_items,
    int_list,
    known,
    lrn_settings,
    norm_order,
    one_hot_settings,
    op_args_of,
    operand_shape,
    pool_window,
    repeat_axis,
    resize_plan,
    shape_list,
    sort_settings,
    split_sizes,
    tf_axes,
    tf_axis,
    tf_function,
    top_k_count,
)
from .util import f64

__all__ = ["GRAY_WEIGHTS", "TF_OPS", "tf_operation", "vector_norm"]


def _array(value: Any) -> np.ndarray:
    """A tensor or a constant (number, nested list) as float64."""
    return f64(value)


def _bfloat16(x: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (the top 16 bits of a float32, round-to-nearest-even), back in float64."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def _gelu(x: np.ndarray, approximate: bool) -> np.ndarray:
    if approximate:
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


# -- float64 semantics -----------------------------------------------------------------------------
_BINARY_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "__operators__.add": np.add, "math.add": np.add, "math.subtract": np.subtract, "math.multiply": np.multiply,
    "math.truediv": np.divide, "math.pow": np.power, "math.maximum": np.maximum,
    "math.minimum": np.minimum, "math.squared_difference": lambda x, y: (x - y) ** 2,
    "floor_div": np.floor_divide, "math.floormod": np.mod,
    "math.greater": np.greater, "math.greater_equal": np.greater_equal, "math.less": np.less,
    "math.less_equal": np.less_equal, "math.equal": np.equal, "math.not_equal": np.not_equal,
    "math.logical_and": lambda x, y: np.logical_and(x != 0, y != 0),
    "math.logical_or": lambda x, y: np.logical_or(x != 0, y != 0),
    "math.divide_no_nan": lambda x, y: np.divide(x, y, out=np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y))),
                                                 where=np.broadcast_to(y != 0, np.broadcast_shapes(np.shape(x), np.shape(y)))),
    "math.multiply_no_nan": lambda x, y: np.where(y == 0, 0.0, x * y),
    "math.xlogy": lambda x, y: np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y))),
}

_UNARY_OPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "math.abs": np.abs, "math.negative": np.negative, "math.square": np.square, "math.sqrt": np.sqrt,
    "math.rsqrt": lambda x: 1.0 / np.sqrt(x), "math.exp": np.exp, "math.log": np.log, "math.log1p": np.log1p,
    "math.expm1": np.expm1, "math.sigmoid": sigmoid, "math.tanh": np.tanh, "math.erf": erf, "math.sin": np.sin,
    "math.cos": np.cos, "math.reciprocal": lambda x: 1.0 / x, "math.sign": np.sign, "math.floor": np.floor,
    "math.ceil": np.ceil, "math.round": np.round,  # half to even, as tf.math.round
    "math.logical_not": lambda x: x == 0, "math.softplus": softplus,
    "nn.softsign": lambda x: x / (1.0 + np.abs(x)),
    "math.tan": np.tan, "math.atan": np.arctan, "math.asin": np.arcsin, "math.acos": np.arccos, "math.sinh": np.sinh,
    "math.cosh": np.cosh, "math.asinh": np.arcsinh, "math.acosh": np.arccosh, "math.atanh": np.arctanh,
    "math.log_sigmoid": lambda x: -softplus(-x), "math.is_nan": np.isnan,
    "nn.relu": lambda x: np.maximum(x, 0.0), "nn.relu6": lambda x: np.clip(x, 0.0, 6.0),
    "nn.elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "nn.selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
}

_REDUCE_OPS: dict[str, Callable[..., Any]] = {  # arrays, or numpy scalars over every axis
    "math.reduce_mean": np.mean, "math.reduce_sum": np.sum, "math.reduce_max": np.max, "math.reduce_min": np.min,
    "math.reduce_prod": np.prod, "math.reduce_std": np.std, "math.reduce_variance": np.var,
    "math.reduce_any": lambda x, axis, keepdims: np.any(x != 0, axis=axis, keepdims=keepdims),
    "math.reduce_all": lambda x, axis, keepdims: np.all(x != 0, axis=axis, keepdims=keepdims),
    "math.reduce_logsumexp": lambda x, axis, keepdims: _logsumexp(x, axis, keepdims),  # noqa: PLW0108 - defined below
    "math.reduce_euclidean_norm": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
}


def _logsumexp(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top
    return out if keepdims else np.squeeze(out, axis=axis)


def _first(a: dict[str, Any]) -> Any:
    return a[next(iter(a))]


def _compute(function: str, a: dict[str, Any]) -> list[np.ndarray]:
    """The outputs of ``function`` on the bound arguments ``a`` (tensors as float64 arrays)."""
    if function in _BINARY_OPS:
        return [_BINARY_OPS[function](_array(a["x"]), _array(a["y"]))]
    if function in _UNARY_OPS:
        return [_UNARY_OPS[function](_array(_first(a)))]
    if function in _REDUCE_OPS:
        x = _array(a["input_tensor"])
        axes = tf_axes(a.get("axis"), x.ndim)
        return [_REDUCE_OPS[function](x, axis=None if axes is None else tuple(axes), keepdims=bool(a.get("keepdims")))]
    if function == "math.add_n":
        return [np.asarray(sum(_array(v) for v in a["inputs"]))]
    x = _array(_first(a)) if function not in ("concat", "stack", "where") else None  # type: ignore[assignment]  # those 3 never read x
    if function == "nn.leaky_relu":
        return [np.where(x > 0, x, x * float(a.get("alpha", 0.2)))]
    if function == "nn.gelu":
        return [_gelu(x, bool(a.get("approximate", False)))]
    if function == "nn.silu":
        return [x * sigmoid(float(a.get("beta", 1.0)) * x)]
    if function in ("nn.softmax", "nn.log_softmax"):
        axis = tf_axis(a.get("axis", a.get("dim")), x.ndim, -1)
        return [(softmax if function == "nn.softmax" else log_softmax)(x, axis)]
    if function == "math.l2_normalize":
        axes = tf_axes(a.get("axis", a.get("dim")), x.ndim)
        square_sum = np.sum(x * x, axis=None if axes is None else tuple(axes), keepdims=True)
        return [x / np.sqrt(np.maximum(square_sum, float(a.get("epsilon", 1e-12))))]
    if function in ("math.argmax", "math.argmin"):
        axis = tf_axis(a.get("axis"), x.ndim, 0)
        return [(np.argmax if function == "math.argmax" else np.argmin)(x, axis=axis).astype(np.float64)]
    if function == "math.cumsum":
        axis = tf_axis(a.get("axis"), x.ndim, 0)
        y = np.flip(x, axis) if a.get("reverse") else x
        out = np.cumsum(y, axis=axis)
        if a.get("exclusive"):
            out = out - y
        return [np.flip(out, axis) if a.get("reverse") else out]
    if function == "reshape":
        return [np.reshape(x, shape_list(a.get("shape")))]
    if function == "shape":
        return [np.asarray(x.shape, dtype=np.float64)]
    if function == "transpose":
        perm = a.get("perm")
        return [np.transpose(x, None if perm is None else int_list(perm, "perm"))]
    if function == "expand_dims":
        return [np.expand_dims(x, tf_axis(a.get("axis"), x.ndim + 1))]
    if function == "squeeze":
        axes = tf_axes(a.get("axis", a.get("squeeze_dims")), x.ndim)
        return [np.squeeze(x, axis=None if axes is None else tuple(axes))]
    if function in ("concat", "stack"):
        values = [_array(v) for v in a["values"]]
        rank = values[0].ndim + (function == "stack")
        axis = tf_axis(a.get("axis", 0), rank)
        return [(np.concatenate if function == "concat" else np.stack)(values, axis=axis)]
    if function == "unstack":
        axis = tf_axis(a.get("axis", 0), x.ndim)
        return [np.take(x, i, axis=axis) for i in range(x.shape[axis])]
    if function == "tile":
        return [np.tile(x, int_list(a.get("multiples"), "multiples"))]
    if function == "repeat":
        repeats = int_list(a.get("repeats"), "repeats")
        return [np.repeat(x, repeats if len(repeats) > 1 else repeats[0], axis=repeat_axis(a, x.ndim))]
    if function == "reverse":
        return [np.flip(x, axis=tuple(tf_axes(a.get("axis"), x.ndim) or ()))]
    if function == "split":
        axis = tf_axis(a.get("axis", 0), x.ndim)
        sizes = split_sizes(a, x.shape[axis])
        return list(np.split(x, np.cumsum(cast("list[int]", sizes))[:-1], axis=axis))  # x's size is known: no None
    if function == "gather":
        if a.get("batch_dims", 0) not in (0, None):
            raise TfOpProblem(f"batch_dims {a.get('batch_dims')!r} is not supported")
        indices = np.asarray(a.get("indices"))
        if isinstance(a.get("indices"), np.ndarray) and a["indices"].dtype.kind == "f":
            raise TfOpProblem("indices computed by the model are not supported")
        return [np.take(x, indices.astype(np.int64), axis=tf_axis(a.get("axis"), x.ndim, 0))]
    if function == "pad":
        mode = str(a.get("mode", "CONSTANT")).upper()
        pads = [tuple(p) for p in np.asarray(a.get("paddings"), dtype=np.int64).tolist()]
        if mode == "CONSTANT":
            return [np.pad(x, pads, mode="constant", constant_values=float(a.get("constant_values", 0)))]
        if mode in ("REFLECT", "SYMMETRIC"):
            return [np.pad(x, pads, mode=mode.lower())]  # type: ignore[call-overload]  # reflect or symmetric; the stubs want a Literal
        raise TfOpProblem(f"pad mode {mode!r} is not one of CONSTANT, REFLECT, SYMMETRIC")
    if function == "__operators__.getitem":
        return [x[tuple(index_items(a.get("slice_spec"), x.ndim))]]
    if function == "linalg.matmul":
        b = _array(a["b"])
        if a.get("transpose_a") or a.get("adjoint_a"):
            x = np.swapaxes(x, -1, -2)
        if a.get("transpose_b") or a.get("adjoint_b"):
            b = np.swapaxes(b, -1, -2)
        return [np.matmul(x, b)]
    if function == "cast":
        kind = cast_kind(a.get("dtype"))
        if kind == "float16":
            return [x.astype(np.float16).astype(np.float64)]
        if kind == "bfloat16":
            return [_bfloat16(x)]
        return [np.trunc(x) if kind == "int" else (x != 0).astype(np.float64) if kind == "bool" else x]
    if function == "where":
        if a.get("x") is None or a.get("y") is None:
            raise TfOpProblem("tf.where without x and y (the indices of true elements) is not supported")
        return [np.where(_array(a["condition"]) != 0, _array(a["x"]), _array(a["y"]))]
    if function == "clip_by_value":
        return [np.minimum(np.maximum(x, _array(a["clip_value_min"])), _array(a["clip_value_max"]))]
    if function == "nn.bias_add":
        if a.get("data_format") not in (None, "NHWC", "NWC", "NDHWC", "N...C"):
            raise TfOpProblem(f"data_format {a.get('data_format')!r} is not supported (channels last only)")
        return [x + _array(a["bias"])]
    if function in ("ones_like", "zeros_like"):
        return [np.full(x.shape, 1.0 if function == "ones_like" else 0.0)]
    if function in ("identity", "stop_gradient", "ensure_shape"):
        return [x]
    if function == "broadcast_to":
        return [np.broadcast_to(x, shape_list(a.get("shape"))).copy()]
    if function == "roll":
        shift, axes = int_list(a.get("shift"), "shift"), int_list(a.get("axis"), "axis")
        if len(shift) != len(axes):
            raise TfOpProblem(f"shift {shift} and axis {axes} differ in length")
        return [np.roll(x, shift, axis=[tf_axis(v, x.ndim) for v in axes])]
    if function == "nn.local_response_normalization":
        radius, bias, alpha, beta = lrn_settings(a)
        squares = np.pad(x * x, [(0, 0)] * (x.ndim - 1) + [(radius, radius)])
        window = sum(squares[..., i:i + x.shape[-1]] for i in range(2 * radius + 1))
        return [x / (bias + alpha * window) ** beta]
    if function == "math.atan2":
        return [np.arctan2(_array(a["y"]), _array(a["x"]))]
    if function.startswith("image.") and function != "image.resize":
        return [_image_op(function, x)]
    if function == "math.top_k":
        order = np.argsort(-x, axis=-1, kind="stable")[..., :top_k_count(a, x.shape[-1])]  # ties: lower index first
        return [np.take_along_axis(x, order, axis=-1), order.astype(np.float64)]
    if function in ("sort", "argsort"):
        axis, descending = sort_settings(a, x.ndim)
        order = np.argsort(-x if descending else x, axis=axis, kind="stable")
        return [np.take_along_axis(x, order, axis=axis) if function == "sort" else order.astype(np.float64)]
    if function == "one_hot":
        depth, on, off, axis = one_hot_settings(a, x.ndim)
        hot = np.where(x[..., None] == np.arange(depth), on, off)
        return [np.moveaxis(hot, -1, axis)]
    if function == "nn.crelu":
        axis = tf_axis(a.get("axis", -1), x.ndim)
        return [np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=axis)]
    if function == "image.resize":
        return [resize_plan(a, x.shape).apply(x)]
    if function in ("nn.depth_to_space", "nn.space_to_depth"):
        return [_depth_space(function, x, a)]
    if function in ("norm", "linalg.normalize"):
        norm = vector_norm(x, a.get("ord", "euclidean"), a.get("axis"),
                           keepdims=function == "linalg.normalize" or bool(a.get("keepdims") or a.get("keep_dims")))
        return [x / norm, norm] if function == "linalg.normalize" else [norm]
    if function.startswith(("nn.avg_pool", "nn.max_pool")):
        size, strides, padding = pool_window(a, x.ndim - 2)
        return [pool_nd(x, size, strides, padding, "max" if "max" in function else "avg")]
    raise TfOpProblem(f"no float64 semantics for tf.{function}")


#: ``tf.image.rgb_to_grayscale``'s weights of red, green and blue
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def _image_op(function: str, x: np.ndarray) -> np.ndarray:
    """The ``tf.image`` functions of a float batch of images ``(N, H, W, C)``."""
    if x.ndim != 4:
        raise TfOpProblem(f"tf.{function} of a rank-{x.ndim} tensor: a batch of images is supported")
    if function == "image.rgb_to_grayscale":
        return np.tensordot(x, np.asarray(GRAY_WEIGHTS), axes=([-1], [0]))[..., None]
    if function == "image.grayscale_to_rgb":
        return np.concatenate([x] * 3, axis=-1)
    if function == "image.flip_left_right":
        return x[:, :, ::-1]
    if function == "image.flip_up_down":
        return x[:, ::-1]
    # per_image_standardization: (x - mean) / max(std, 1 / sqrt(pixels * channels)) per image
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    floor = 1.0 / math.sqrt(math.prod(x.shape[1:]))
    return (x - mean) / np.maximum(x.std(axis=(1, 2, 3), keepdims=True), floor)


def _depth_space(function: str, x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """``tf.nn.depth_to_space`` / ``space_to_depth`` (NHWC): output channel ``(i * bs + j) * C + c``."""
    bs = block_size(a)
    n, h, w, c = x.shape
    if function == "nn.depth_to_space":
        y = x.reshape(n, h, w, bs, bs, c // (bs * bs)).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(n, h * bs, w * bs, c // (bs * bs))
    y = x.reshape(n, h // bs, bs, w // bs, bs, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h // bs, w // bs, bs * bs * c)


def vector_norm(x: np.ndarray, order: Any, axis: Any, *, keepdims: bool) -> np.ndarray:
    """``tf.norm`` over ``axis`` (None: every axis, as one vector); see :func:`norm_order`."""
    p = norm_order(order, axis)
    axes = tf_axes(axis, x.ndim)
    over = None if axes is None else tuple(axes)
    if p == math.inf:
        return np.max(np.abs(x), axis=over, keepdims=keepdims)
    return np.sum(np.abs(x) ** p, axis=over, keepdims=keepdims) ** (1.0 / p)


# -- shapes --------------------------------------------------------------------------------------
def _shapes(function: str, a: dict[str, Any]) -> list[Shape]:
    """The output shapes of ``function`` whose tensor arguments are :class:`Operand` s."""
    if function in _BINARY_OPS:
        return [broadcast([operand_shape(a["x"]), operand_shape(a["y"])])]
    if function in _UNARY_OPS or function in ("nn.leaky_relu", "nn.gelu", "nn.silu", "nn.softmax", "nn.log_softmax",
                                              "math.l2_normalize", "math.cumsum", "ones_like", "zeros_like",
                                              "identity", "stop_gradient", "cast", "nn.bias_add", "reverse",
                                              "ensure_shape", "roll", "nn.local_response_normalization"):
        return [operand_shape(_first(a))]
    if function == "clip_by_value":
        return [broadcast([operand_shape(a[k]) for k in ("t", "clip_value_min", "clip_value_max")])]
    if function == "math.atan2":
        return [broadcast([operand_shape(a["y"]), operand_shape(a["x"])])]
    if function in ("sort", "argsort"):
        return [operand_shape(a["values"])]
    if function == "math.top_k":
        shape = operand_shape(a["input"])
        k = top_k_count(a, shape[-1])
        return [(*shape[:-1], k)] * 2
    if function == "one_hot":
        shape = operand_shape(a["indices"])
        depth, _, _, axis = one_hot_settings(a, len(shape))
        return [(*shape[:axis], depth, *shape[axis:])]
    if function == "where":
        return [broadcast([operand_shape(a[k]) for k in ("condition", "x", "y")])]
    if function == "math.add_n":
        return [broadcast([operand_shape(v) for v in a["inputs"]])]
    if function in ("concat", "stack"):
        shapes = [operand_shape(v) for v in a["values"]]
        if function == "stack":
            axis = tf_axis(a.get("axis", 0), len(shapes[0]) + 1)
            merged = broadcast(shapes)
            return [(*merged[:axis], len(shapes), *merged[axis:])]
        axis = tf_axis(a.get("axis", 0), len(shapes[0]))
        dims = [s[axis] for s in shapes]
        total = sum(dims) if all(known(d) for d in dims) else None
        merged = broadcast([s[:axis] + (1,) + s[axis + 1:] for s in shapes])
        return [(*merged[:axis], total, *merged[axis + 1:])]
    shape = operand_shape(_first(a))
    rank = len(shape)
    if function in _REDUCE_OPS or function in ("math.argmax", "math.argmin"):
        axes: list[int] | None
        if function in ("math.argmax", "math.argmin"):
            axes, keep = [tf_axis(a.get("axis"), rank, 0)], False
        else:
            axes, keep = tf_axes(a.get("axis"), rank), bool(a.get("keepdims"))
        axes = list(range(rank)) if axes is None else axes
        return [tuple(1 if i in axes else d for i, d in enumerate(shape)) if keep
                else tuple(d for i, d in enumerate(shape) if i not in axes)]
    if function == "reshape":
        target = a.get("shape")
        if isinstance(target, Operand):
            if len(target.shape) != 1 or not known(target.shape[0]):
                raise TfOpProblem(f"a target shape of shape {target.shape}")
            return [(None,) * target.shape[0]]
        if isinstance(target, (list, tuple)) and any(isinstance(d, Operand) for d in target):
            for d in target:
                if isinstance(d, Operand) and d.shape not in ((), (1,)):
                    raise TfOpProblem(f"a shape entry of shape {d.shape}, not a number")
            return [tuple(None if isinstance(d, Operand) or d == -1 else int(d) for d in target)]
        return [reshape_target(int_list(target, "shape"), shape)]
    if function == "shape":
        return [(rank,)]
    if function == "broadcast_to":
        target = a.get("shape")
        if isinstance(target, Operand):
            if len(target.shape) != 1 or not known(target.shape[0]):
                raise TfOpProblem(f"a target shape of shape {target.shape}")
            return [(None,) * target.shape[0]]
        items = target if isinstance(target, (list, tuple)) else int_list(target, "shape")
        return [tuple(None if isinstance(d, Operand) else int(d) for d in items)]
    if function == "transpose":
        perm = a.get("perm")
        perm = list(reversed(range(rank))) if perm is None else int_list(perm, "perm")
        return [tuple(shape[p] for p in perm)]
    if function == "expand_dims":
        axis = tf_axis(a.get("axis"), rank + 1)
        return [(*shape[:axis], 1, *shape[axis:])]
    if function == "squeeze":
        axes = tf_axes(a.get("axis", a.get("squeeze_dims")), rank)
        if axes is None:
            axes = [i for i, d in enumerate(shape) if d == 1]
        return [tuple(d for i, d in enumerate(shape) if i not in axes)]
    if function == "unstack":
        axis = tf_axis(a.get("axis", 0), rank)
        if not known(shape[axis]):
            raise TfOpProblem(f"unstack along axis {axis} of unknown size")
        return [shape[:axis] + shape[axis + 1:]] * shape[axis]
    if function == "tile":
        mult = int_list(a.get("multiples"), "multiples")
        return [tuple(d * m if known(d) else None for d, m in zip(shape, mult))]
    if function == "repeat":
        repeats = int_list(a.get("repeats"), "repeats")
        axis = repeat_axis(a, rank)
        size = shape[axis]
        new = (size * repeats[0] if known(size) else None) if len(repeats) == 1 else sum(repeats)
        return [(*shape[:axis], new, *shape[axis + 1:])]
    if function == "split":
        axis = tf_axis(a.get("axis", 0), rank)
        return [(*shape[:axis], s, *shape[axis + 1:]) for s in split_sizes(a, shape[axis])]
    if function == "gather":
        axis = tf_axis(a.get("axis"), rank, 0)
        return [(*shape[:axis], *np.shape(a.get("indices")), *shape[axis + 1:])]  # type: ignore[arg-type]  # an Operand has .shape
    if function == "pad":
        pads = np.asarray(a.get("paddings"), dtype=np.int64).tolist()
        return [tuple(d + p[0] + p[1] if known(d) else None for d, p in zip(shape, pads))]
    if function == "__operators__.getitem":
        index_items(a.get("slice_spec"), rank)
        return [index_shape(shape, a.get("slice_spec"))]
    if function == "linalg.matmul":
        b = operand_shape(a["b"])
        ta, tb = bool(a.get("transpose_a") or a.get("adjoint_a")), bool(a.get("transpose_b") or a.get("adjoint_b"))
        rows = shape[-1] if ta else shape[-2]
        cols = b[-2] if tb else b[-1]
        return [(*broadcast([shape[:-2], b[:-2]]), rows, cols)]
    if function in ("image.rgb_to_grayscale", "image.grayscale_to_rgb"):
        if rank != 4:
            raise TfOpProblem(f"tf.{function} of a rank-{rank} tensor: a batch of images is supported")
        return [(*shape[:3], 1 if function == "image.rgb_to_grayscale" else 3)]
    if function.startswith("image.") and function != "image.resize":
        if rank != 4:
            raise TfOpProblem(f"tf.{function} of a rank-{rank} tensor: a batch of images is supported")
        return [shape]
    if function == "nn.crelu":
        axis = tf_axis(a.get("axis", -1), rank)
        return [(*shape[:axis], shape[axis] * 2 if known(shape[axis]) else None, *shape[axis + 1:])]
    if function == "image.resize":
        h, w = int_list(a.get("size"), "size")
        resize_plan(a, shape)
        return [(shape[0], h, w, shape[3])]
    if function in ("nn.depth_to_space", "nn.space_to_depth"):
        bs = block_size(a)
        n, h, w, c = shape
        if function == "nn.depth_to_space":
            return [(n, h * bs if known(h) else None, w * bs if known(w) else None, c // (bs * bs) if known(c) else None)]
        return [(n, h // bs if known(h) else None, w // bs if known(w) else None, c * bs * bs if known(c) else None)]
    if function in ("norm", "linalg.normalize"):
        norm_order(a.get("ord", "euclidean"), a.get("axis"))
        axes = tf_axes(a.get("axis"), rank)
        axes = list(range(rank)) if axes is None else axes
        if function == "linalg.normalize":
            return [shape, tuple(1 if i in axes else d for i, d in enumerate(shape))]
        keep = bool(a.get("keepdims") or a.get("keep_dims"))
        return [tuple(1 if i in axes else d for i, d in enumerate(shape)) if keep
                else tuple(d for i, d in enumerate(shape) if i not in axes)]
    if function.startswith(("nn.avg_pool", "nn.max_pool")):
        size, strides, padding = pool_window(a, rank - 2)
        return [(shape[0], *(conv_output_length(d, k, padding, s) for d, k, s in zip(shape[1:-1], size, strides)),
                 shape[-1])]
    raise TfOpProblem(f"no shape rule for tf.{function}")


# -- the records ----------------------------------------------------------------------------------
#: every TensorFlow function this module has a record for (as tf.keras records it, ``compat.v1.``
#: removed); those of :data:`_OPERANDS_LOST` only to say why they are refused
TF_OPS: tuple[str, ...] = tuple(sorted(PARAMETERS))


class _Lookup(Sequence[Any]):
    """Input shapes as the sequence :func:`~bnconvert.model.resolve_args` indexes, each an :class:`Operand`."""

    def __init__(self, shapes: list[Shape]) -> None:
        self._shapes = shapes

    def __getitem__(self, index: Any) -> Operand:  # type: ignore[override]  # resolve_args takes ints only, never slices
        return Operand(tuple(self._shapes[index]))

    def __len__(self) -> int:
        return len(self._shapes)


def _shape_rule(function: str) -> Callable[[dict[str, Any], list[Shape]], list[Shape]]:
    def rule(config: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
        args, kwargs = op_args_of(config)
        lookup = _Lookup(shapes)
        try:
            return _shapes(function, bind(function, resolve_args(args, lookup), resolve_args(kwargs, lookup)))
        except TfOpProblem:
            # a call bnconvert refuses: its batch, the other sizes unknown, so that the export
            # reaches the handler, which (like the reference) gives the reason
            return [(shapes[0][0], *([None] * (len(shapes[0]) - 1)))]

    return rule


@defines(*(f"tf.{f}" for f in TF_OPS), weights=no_weights, masking="drop",
         shape={f"tf.{f}": _shape_rule(f) for f in TF_OPS},
         notes="tf.keras TFOpLambda/SlicingOpLambda; values per TensorFlow's documentation of the function")
def tf_operation(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """One call of a TensorFlow function, its arguments bound by :data:`.tf_op_args.PARAMETERS`."""
    try:
        args, kwargs = op_args_of(ctx)
        args, kwargs = resolve_args(args, [f64(x) for x in xs]), resolve_args(kwargs, [f64(x) for x in xs])
        outs = _compute(tf_function(layer), bind(tf_function(layer), args, kwargs))
    except TfOpProblem as exc:
        raise UnsupportedLayerError(f"layer {layer.label}: {layer.class_name}: {exc}") from None
    return [np.asarray(y, dtype=np.float64) for y in outs]
