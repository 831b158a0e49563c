"""tf.keras ``TFOpLambda`` / ``SlicingOpLambda`` operations (``tf.math.reduce_mean``, ``x + y``,
``x[:, 1:3]``), one handler for every TensorFlow function :mod:`bnconvert.catalog.tf_ops` computes.

The call's arguments are bound by the catalog's table of TensorFlow argument names
(:func:`~bnconvert.catalog.tf_ops.bind`), with the tensors as :class:`~..builder.Tensor` s. Every
value a handler returns is a float tensor, as everywhere in the export: comparisons and logical
operations are cast to 0/1 floats (and back to bool where a function wants one), ``cast`` to an
integer type truncates and stays float, ``argmax`` gives float indices.

Layouts: element-wise functions work in whatever layout their operands are held (constants are
laid out to match, tensors of equal rank meet in their common layout), ``tf.transpose`` that
keeps the batch axis first only relabels the layout, like Permute; everything else works in
Keras' layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, numpy_helper

from ...catalog.tf_op_args import (
    TfOpProblem,
    bind,
    block_size,
    cast_kind,
    index_items,
    lrn_settings,
    norm_order,
    one_hot_settings,
    op_args_of,
    pool_window,
    resize_plan,
    sort_settings,
    tf_function,
    top_k_count,
)
from ...catalog.tf_ops import GRAY_WEIGHTS, TF_OPS
from ...model import resolve_args
from ..builder import Builder, Call, Tensor
from ..layout import Perm, channels_first, identity, position
from ..registry import converts, refuse
from .array_ops import index_nodes
from .audio import atan2
from .conv import window_pads
from .merge import common_layout
from .preprocessing import _apply_plan as apply_resize_plan

__all__ = ["tf_operation"]

_INT64_MIN = np.iinfo(np.int64).min

_BINARY = {"__operators__.add": "Add", "math.add": "Add", "math.subtract": "Sub", "math.multiply": "Mul",
           "math.truediv": "Div", "math.pow": "Pow", "math.maximum": "Max",
           "math.minimum": "Min"}
_COMPARE = {"math.greater": "Greater", "math.greater_equal": "GreaterOrEqual", "math.less": "Less",
            "math.less_equal": "LessOrEqual", "math.equal": "Equal", "math.not_equal": "Equal"}
_LOGICAL = {"math.logical_and": "And", "math.logical_or": "Or"}
_UNARY = {"math.abs": "Abs", "math.negative": "Neg", "math.sqrt": "Sqrt", "math.exp": "Exp", "math.log": "Log",
          "math.sigmoid": "Sigmoid", "math.tanh": "Tanh", "math.erf": "Erf", "math.sin": "Sin", "math.cos": "Cos",
          "math.reciprocal": "Reciprocal", "math.sign": "Sign", "math.floor": "Floor", "math.ceil": "Ceil",
          "math.round": "Round", "math.softplus": "Softplus", "nn.softsign": "Softsign",
          "nn.relu": "Relu", "nn.elu": "Elu", "nn.selu": "Selu", "math.tan": "Tan", "math.atan": "Atan",
          "math.asin": "Asin", "math.acos": "Acos", "math.sinh": "Sinh", "math.cosh": "Cosh", "math.asinh": "Asinh",
          "math.acosh": "Acosh", "math.atanh": "Atanh"}
_REDUCE = {"math.reduce_mean": "ReduceMean", "math.reduce_sum": "ReduceSum", "math.reduce_max": "ReduceMax",
           "math.reduce_min": "ReduceMin", "math.reduce_prod": "ReduceProd"}


class _Emit:
    """One call's emission: the builder, the call, and fresh names under the call's name."""

    def __init__(self, b: Builder, call: Call) -> None:
        self.b, self.call, self.name = b, call, call.name

    def sub(self, what: str) -> str:
        return f"{self.name}/{what}"

    def keras(self, t: Tensor) -> str:
        return self.b.view(t, identity(t.rank))

    def node(self, op: str, inputs: list[str], what: str | None = None, **attrs: Any) -> str:
        return self.b.node(op, inputs, name=self.sub(what) if what else self.name, **attrs)

    def out(self, name: str, perm: Perm | None = None, i: int = 0) -> Tensor:
        shape = self.call.out_shapes[i]
        return self.b.tensor(shape, perm if perm is not None else identity(len(shape)), name)

    def floats(self, name: str) -> str:
        """A bool value as 0/1 floats."""
        return self.node("Cast", [name], "float", to=TensorProto.FLOAT)

    def bools(self, name: str) -> str:
        """A float value as bool (non-zero is true)."""
        return self.node("Cast", [name], "bool", to=TensorProto.BOOL)

    def scalar(self, value: float, what: str = "constant") -> str:
        return self.b.const(f"{self.name}/{what}", np.float32(value))


def _operands(e: _Emit, values: list[Any]) -> tuple[Perm, list[str]]:
    """Element-wise operands (tensors and constants) in one layout: the tensors' common layout
    when they all have the output's rank, else Keras' layout (ONNX broadcasts numpy-style)."""
    rank = len(e.call.out_shapes[0])
    tensors = [v for v in values if isinstance(v, Tensor)]
    if tensors and all(t.rank == rank for t in tensors):
        perm, names = common_layout(e.b, tensors, e.name)
    else:
        perm, names = identity(rank), [e.keras(t) for t in tensors]
    it = iter(names)
    out = []
    for i, v in enumerate(values):
        if isinstance(v, Tensor):
            out.append(next(it))
            continue
        c = np.asarray(v, dtype=np.float64)
        if c.ndim:
            c = np.transpose(c.reshape((1,) * (rank - c.ndim) + c.shape), perm)
        out.append(e.b.const(f"{e.name}/operand{i}", c.astype(np.float32)))
    return perm, out


def _elementwise(e: _Emit, function: str, a: dict[str, Any]) -> Tensor | None:
    """Unary and binary element-wise functions; None when ``function`` is none of them."""
    if function == "math.add_n":
        perm, names = _operands(e, list(a["inputs"]))
        return e.out(e.node("Sum", names), perm)
    if function in _BINARY or function in _COMPARE or function in _LOGICAL or function in (
            "math.squared_difference", "floor_div", "math.floormod", "math.divide_no_nan", "math.multiply_no_nan",
            "math.xlogy", "math.atan2"):
        perm, (x, y) = _operands(e, [a["x"], a["y"]])
        if function == "math.atan2":
            return e.out(_atan2(e, y=y, x=x), perm)
        if function in ("math.divide_no_nan", "math.multiply_no_nan", "math.xlogy"):
            zero = e.scalar(0.0, "zero")
            guard = y if function != "math.xlogy" else x
            is_zero = e.node("Equal", [guard, zero], "is_zero")
            if function == "math.xlogy":
                safe = e.node("Where", [is_zero, e.scalar(1.0, "one"), y], "safe")
                value = e.node("Mul", [x, e.node("Log", [safe], "log")], "value")
            else:
                safe = e.node("Where", [is_zero, e.scalar(1.0, "one"), y], "safe") if function == "math.divide_no_nan" else y
                value = e.node("Div" if function == "math.divide_no_nan" else "Mul", [x, safe], "value")
            return e.out(e.node("Where", [is_zero, zero, value]), perm)
        if function in _BINARY:
            return e.out(e.node(_BINARY[function], [x, y]), perm)
        if function in _COMPARE:
            out = e.node(_COMPARE[function], [x, y], "compare")
            if function == "math.not_equal":
                out = e.node("Not", [out], "not")
            return e.out(e.floats(out), perm)
        if function in _LOGICAL:
            return e.out(e.floats(e.node(_LOGICAL[function], [e.bools(x), e.bools(y)], "logical")), perm)
        if function == "math.squared_difference":
            d = e.node("Sub", [x, y], "difference")
            return e.out(e.node("Mul", [d, d]), perm)
        floor = e.node("Floor", [e.node("Div", [x, y], "quotient")], "floor" if function == "math.floormod" else None)
        if function == "math.floormod":  # x - floor(x / y) * y: the sign of y, as TensorFlow's floormod
            return e.out(e.node("Sub", [x, e.node("Mul", [floor, y], "multiple")]), perm)
        return e.out(floor, perm)
    unary = function in _UNARY or function in (
        "math.square", "math.rsqrt", "math.log1p", "math.expm1", "math.logical_not", "nn.relu6", "nn.leaky_relu",
        "nn.gelu", "nn.silu", "identity", "stop_gradient", "ensure_shape", "ones_like", "zeros_like", "cast", "math.log_sigmoid",
        "math.is_nan")
    if not unary:
        return None
    t: Tensor = next(iter(a.values()))
    perm, x = e.b.native(t)
    if function in _UNARY:
        attrs: dict[str, Any] = {"alpha": 1.0} if function == "nn.elu" else {}
        return e.out(e.node(_UNARY[function], [x], **attrs), perm)
    if function in ("identity", "stop_gradient", "ensure_shape"):
        return t
    if function == "math.square":
        y = e.node("Mul", [x, x])
    elif function == "math.rsqrt":
        y = e.node("Reciprocal", [e.node("Sqrt", [x], "sqrt")])
    elif function == "math.log1p":
        y = e.node("Log", [e.node("Add", [x, e.scalar(1.0)], "plus_one")])
    elif function == "math.expm1":
        y = e.node("Sub", [e.node("Exp", [x], "exp"), e.scalar(1.0)])
    elif function == "math.log_sigmoid":
        y = e.node("Neg", [e.node("Softplus", [e.node("Neg", [x], "negated")], "softplus")])
    elif function == "math.is_nan":
        y = e.floats(e.node("IsNaN", [x], "is_nan"))
    elif function == "math.logical_not":
        y = e.floats(e.node("Not", [e.bools(x)], "not"))
    elif function == "nn.relu6":
        y = e.node("Clip", [x, e.scalar(0.0, "low"), e.scalar(6.0, "high")])
    elif function == "nn.leaky_relu":
        y = e.node("LeakyRelu", [x], alpha=float(a.get("alpha", 0.2)))
    elif function == "nn.gelu":
        y = _gelu(e, x, bool(a.get("approximate", False)))
    elif function == "nn.silu":
        beta = float(a.get("beta", 1.0))
        z = x if beta == 1.0 else e.node("Mul", [x, e.scalar(beta, "beta")], "scaled")
        y = e.node("Mul", [x, e.node("Sigmoid", [z], "sigmoid")])
    elif function in ("ones_like", "zeros_like"):
        fill = np.array([1.0 if function == "ones_like" else 0.0], np.float32)
        y = e.node("ConstantOfShape", [e.node("Shape", [x], "shape")], value=numpy_helper.from_array(fill))
    else:  # cast
        cast_y = _cast(e, x, cast_kind(a.get("dtype")))
        if cast_y is None:
            return t
        y = cast_y
    return e.out(y, perm)


def _atan2(e: _Emit, *, y: str, x: str) -> str:
    """``tf.math.atan2``, numpy's (ONNX has no such operator): :func:`.audio.atan2`."""
    return atan2(e.b, y, x, e.name)


def _gelu(e: _Emit, x: str, approximate: bool) -> str:
    if approximate:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = e.node("Mul", [e.node("Mul", [x, x], "square"), x], "cube")
        inner = e.node("Add", [x, e.node("Mul", [cube, e.scalar(0.044715, "coefficient")], "scaled_cube")], "inner")
        t = e.node("Tanh", [e.node("Mul", [inner, e.scalar(np.sqrt(2.0 / np.pi), "sqrt_2_over_pi")], "argument")], "tanh")
    else:  # 0.5 x (1 + erf(x / sqrt 2))
        t = e.node("Erf", [e.node("Mul", [x, e.scalar(1.0 / np.sqrt(2.0), "inv_sqrt2")], "argument")], "erf")
    half = e.node("Mul", [x, e.scalar(0.5, "half")], "half_x")
    return e.node("Mul", [half, e.node("Add", [t, e.scalar(1.0, "one")], "one_plus")])


def _cast(e: _Emit, x: str, kind: str) -> str | None:
    """``tf.cast`` held in float: None for a float type (nothing to do)."""
    if kind == "float":
        return None
    to = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16, "int": TensorProto.INT64,
          "bool": TensorProto.BOOL}[kind]
    return e.node("Cast", [e.node("Cast", [x], kind, to=to)], to=TensorProto.FLOAT)


def _axes(value: Any, rank: int) -> list[int]:
    if value is None:
        return list(range(rank))
    items = [value] if isinstance(value, (int, float)) else list(value)
    return sorted(int(v) % rank for v in items)


def _native_axes(e: _Emit, t: Tensor, keras_axes: list[int], keep: bool) -> tuple[str, list[int], Perm]:
    """``t`` in the layout it is held in (so a reduction between channels-first convolutions needs
    no Transpose), the positions there of ``keras_axes``, and the layout of the result: the same
    with ``keep``, else the held order of the remaining axes. Keras' layout when the batch axis
    would not stay first."""
    perm, x = e.b.native(t)
    if perm[0] != 0 or (0 in keras_axes and not keep):
        perm, x = identity(t.rank), e.keras(t)
    if keep:
        return x, [perm.index(a) for a in keras_axes], perm
    rest = [p for p in perm if p not in keras_axes]
    order = sorted(rest)
    return x, [perm.index(a) for a in keras_axes], tuple(order.index(p) for p in rest)


def _reduction(e: _Emit, function: str, a: dict[str, Any]) -> Tensor:
    t: Tensor = a["input_tensor"]
    keep = bool(a.get("keepdims"))
    x, axes, perm = _native_axes(e, t, _axes(a.get("axis"), t.rank), keep)
    b = e.b
    if function in _REDUCE:
        return e.out(b.reduce(_REDUCE[function], x, axes, keepdims=keep, name=e.name), perm)
    if function == "math.reduce_euclidean_norm":
        return e.out(e.node("Sqrt", [b.reduce("ReduceSum", e.node("Mul", [x, x], "squares"), axes, keepdims=keep,
                                              name=e.sub("sum"))]), perm)
    if function in ("math.reduce_any", "math.reduce_all"):
        flags = e.floats(e.bools(x))
        op = "ReduceMax" if function == "math.reduce_any" else "ReduceMin"
        return e.out(b.reduce(op, flags, axes, keepdims=keep, name=e.name), perm)
    if function == "math.reduce_logsumexp":
        top = b.reduce("ReduceMax", x, axes, keepdims=True, name=e.sub("max"))
        exp = e.node("Exp", [e.node("Sub", [x, top], "shifted")], "exp")
        total = b.reduce("ReduceSum", exp, axes, keepdims=True, name=e.sub("sum"))
        y = e.node("Add", [e.node("Log", [total], "log"), top], "keepdims" if not keep else None)
        return e.out(y if keep else e.node("Squeeze", [y, b.ints(f"{e.name}/axes", axes)]), perm)
    mean = b.reduce("ReduceMean", x, axes, keepdims=True, name=e.sub("mean"))
    d = e.node("Sub", [x, mean], "centered")
    var = b.reduce("ReduceMean", e.node("Mul", [d, d], "squares"), axes, keepdims=keep,
                   name=e.name if function == "math.reduce_variance" else e.sub("variance"))
    return e.out(var if function == "math.reduce_variance" else e.node("Sqrt", [var]), perm)


def _getitem(e: _Emit, t: Tensor, spec: Any) -> Tensor:
    """numpy basic indexing (:func:`.array_ops.index_nodes`, shared with Keras 3's ``get_item``)."""
    value = e.keras(t)
    y = index_nodes(e.b, value, index_items(spec, t.rank), e.name)
    return t if y == value else e.out(e.node("Identity", [y]))


def _transpose(e: _Emit, t: Tensor, perm_value: Any) -> Tensor:
    q = list(reversed(range(t.rank))) if perm_value is None else [int(p) for p in perm_value]
    if q[0] != 0:
        return e.out(e.node("Transpose", [e.keras(t)], perm=q))
    e.b.native(t)
    qinv = [q.index(i) for i in range(t.rank)]
    views = {tuple(qinv[p] for p in held): name for held, name in t.views.items()}
    return Tensor(shape=tuple(e.call.out_shapes[0]), views=views)


def _target(e: _Emit, target: Any) -> str:
    """A Reshape's int64 shape: constants, or entries the model computes (``tf.shape(x)[0]``,
    held as float numbers) cast and concatenated; a constant 0 is refused (ONNX reads it as
    "copy the input's size")."""
    if isinstance(target, Tensor):
        return e.node("Cast", [e.keras(target)], "target", to=TensorProto.INT64)
    items = list(target)
    if any(not isinstance(d, Tensor) and int(d) == 0 for d in items):
        raise refuse(e.call, "a zero-sized dimension in the target shape")
    if not any(isinstance(d, Tensor) for d in items):
        return e.b.ints(f"{e.name}/shape", [int(d) for d in items])
    parts = []
    for i, d in enumerate(items):
        if isinstance(d, Tensor):
            one = e.node("Reshape", [e.keras(d), e.b.ints(f"{e.name}/one", [1])], f"entry{i}")
            parts.append(e.node("Cast", [one], f"entry{i}_int", to=TensorProto.INT64))
        else:
            parts.append(e.b.ints(f"{e.name}/entry{i}", [int(d)]))
    return e.node("Concat", parts, "target", axis=0)


def _static(e: _Emit, dims: tuple, what: str) -> list[int]:
    if any(d is None for d in dims):
        raise refuse(e.call, f"{what} needs a known size")
    return [int(d) for d in dims]


def _layout_ops(e: _Emit, function: str, a: dict[str, Any]) -> list[Tensor]:
    b = e.b
    if function in ("concat", "stack"):
        operands = [v for v in a["values"] if isinstance(v, Tensor)]
        if len(operands) != len(a["values"]):
            raise refuse(e.call, "constant operands are not supported")
        if function == "concat" and all(v.rank == operands[0].rank for v in operands):
            perm, names = common_layout(b, operands, e.name)
            return [e.out(e.node("Concat", names, axis=position(perm, int(a.get("axis", 0)))), perm)]
        rank = len(e.call.out_shapes[0])
        axis = int(a.get("axis", 0)) % rank
        names = [e.keras(v) for v in operands]
        if function == "stack":
            names = [e.node("Unsqueeze", [n, b.ints(f"{e.name}/axis", [axis])], f"expand{i}") for i, n in enumerate(names)]
        return [e.out(e.node("Concat", names, axis=axis))]
    t: Tensor = next(iter(a.values()))
    x = e.keras(t)
    rank = t.rank
    if function == "nn.softmax" or function == "nn.log_softmax":
        given = a.get("axis", a.get("dim"))
        axis = int(given if given is not None else -1) % rank
        held, (at,), perm = _native_axes(e, t, [axis], True)
        return [e.out(e.node("Softmax" if function == "nn.softmax" else "LogSoftmax", [held], axis=at), perm)]
    if function == "math.l2_normalize":
        axes = _axes(a.get("axis", a.get("dim")), rank)
        total = b.reduce("ReduceSum", e.node("Mul", [x, x], "squares"), axes, keepdims=True, name=e.sub("sum"))
        floor = e.node("Max", [total, e.scalar(float(a.get("epsilon", 1e-12)), "epsilon")], "floored")
        return [e.out(e.node("Div", [x, e.node("Sqrt", [floor], "norm")]))]
    if function in ("math.argmax", "math.argmin"):
        axis = int(a.get("axis") or 0) % rank
        index = e.node("ArgMax" if function == "math.argmax" else "ArgMin", [x], "index", axis=axis, keepdims=0)
        return [e.out(e.node("Cast", [index], to=TensorProto.FLOAT))]
    if function == "math.cumsum":
        axis = int(a.get("axis") or 0) % rank
        return [e.out(e.node("CumSum", [x, b.const(f"{e.name}/axis", np.int64(axis), np.int64)],
                             exclusive=int(bool(a.get("exclusive"))), reverse=int(bool(a.get("reverse")))))]
    if function == "reshape":
        return [e.out(e.node("Reshape", [x, _target(e, a["shape"])]))]
    if function == "shape":
        return [e.out(e.node("Cast", [e.node("Shape", [x], "shape")], to=TensorProto.FLOAT))]
    if function == "transpose":
        return [_transpose(e, t, a.get("perm"))]
    if function in ("expand_dims", "squeeze"):
        out = e.call.out_shapes[0]
        if function == "expand_dims":
            axes = [int(a["axis"]) % len(out)]
            return [e.out(e.node("Unsqueeze", [x, b.ints(f"{e.name}/axes", axes)]))]
        given = a.get("axis", a.get("squeeze_dims"))
        # without an axis: the unit axes of the Keras shape, never the batch (TensorFlow would
        # drop a batch of 1 too, which the shape Keras declares for the output does not)
        axes = _axes(given, rank) if given is not None else [i for i, d in enumerate(t.shape) if i and d == 1]
        return [e.out(e.node("Squeeze", [x, b.ints(f"{e.name}/axes", axes)]))]
    if function == "tile":
        return [e.out(e.node("Tile", [x, b.ints(f"{e.name}/multiples", [int(m) for m in a["multiples"]])]))]
    if function == "repeat":
        if a.get("axis") is None:
            raise refuse(e.call, "tf.repeat without an axis (which flattens the tensor) is not supported")
        axis = int(a["axis"]) % rank
        (size,) = _static(e, (t.shape[axis],), "the repeated axis")
        repeats = np.broadcast_to(np.asarray(a["repeats"], np.int64).reshape(-1), (size,))
        indices = b.const(f"{e.name}/indices", np.repeat(np.arange(size), repeats), np.int64)
        return [e.out(e.node("Gather", [x, indices], axis=axis))]
    if function == "reverse":
        axes = _axes(a.get("axis"), rank)
        n = len(axes)
        return [e.out(e.node("Slice", [x, b.ints(f"{e.name}/starts", [-1] * n), b.ints(f"{e.name}/ends", [_INT64_MIN] * n),
                                       b.ints(f"{e.name}/axes", axes), b.ints(f"{e.name}/steps", [-1] * n)]))]
    if function in ("split", "unstack"):
        axis = int(a.get("axis") or 0) % rank
        outs = []
        if function == "unstack":
            for i in range(len(e.call.out_shapes)):
                index = b.const(f"{e.name}/index{i}", np.int64(i), np.int64)
                outs.append(e.out(e.node("Gather", [x, index], f"output{i}", axis=axis), i=i))
            return outs
        start = 0
        for i, shape in enumerate(e.call.out_shapes):
            (size,) = _static(e, (shape[axis],), "each split")
            ends = b.ints(f"{e.name}/ends{i}", [start + size])
            outs.append(e.out(e.node("Slice", [x, b.ints(f"{e.name}/starts{i}", [start]), ends,
                                               b.ints(f"{e.name}/axes{i}", [axis])], f"output{i}"), i=i))
            start += size
        return outs
    if function == "gather":
        if isinstance(a.get("indices"), Tensor):
            raise refuse(e.call, "indices computed by the model are not supported")
        axis = int(a.get("axis") or 0) % rank
        indices = b.const(f"{e.name}/indices", np.asarray(a["indices"], np.int64), np.int64)
        return [e.out(e.node("Gather", [x, indices], axis=axis))]
    if function == "pad":
        mode = str(a.get("mode", "CONSTANT")).lower()
        if mode not in ("constant", "reflect"):
            raise refuse(e.call, f"pad mode {mode.upper()} has no ONNX equivalent")
        pads = np.asarray(a["paddings"], np.int64)
        inputs = [x, b.ints(f"{e.name}/pads", [*pads[:, 0], *pads[:, 1]])]
        if mode == "constant":
            inputs.append(e.scalar(float(a.get("constant_values", 0)), "value"))
        return [e.out(e.node("Pad", inputs, mode=mode))]
    if function == "__operators__.getitem":
        return [_getitem(e, t, a.get("slice_spec"))]
    if function == "linalg.matmul":
        other = a["b"]
        y = e.keras(other) if isinstance(other, Tensor) else e.b.const(f"{e.name}/b", np.asarray(other, np.float32))
        yrank = other.rank if isinstance(other, Tensor) else np.ndim(other)
        if a.get("transpose_a") or a.get("adjoint_a"):
            x = e.node("Transpose", [x], "a_t", perm=[*range(rank - 2), rank - 1, rank - 2])
        if a.get("transpose_b") or a.get("adjoint_b"):
            y = e.node("Transpose", [y], "b_t", perm=[*range(yrank - 2), yrank - 1, yrank - 2])
        return [e.out(e.node("MatMul", [x, y]))]
    if function == "where":
        perm, (c, xv, yv) = _operands(e, [a["condition"], a["x"], a["y"]])
        return [e.out(e.node("Where", [e.bools(c), xv, yv]), perm)]
    if function == "clip_by_value":
        perm, (v, low, high) = _operands(e, [t, a["clip_value_min"], a["clip_value_max"]])
        return [e.out(e.node("Min", [e.node("Max", [v, low], "floor"), high]), perm)]
    if function == "nn.bias_add":
        if a.get("data_format") not in (None, "NHWC", "NWC", "NDHWC", "N...C"):
            raise refuse(e.call, f"data_format {a.get('data_format')!r} is not supported")
        perm, (v, bias) = _operands(e, [t, a["bias"]])
        return [e.out(e.node("Add", [v, bias]), perm)]
    if function == "broadcast_to":
        return [e.out(e.node("Expand", [x, _target(e, a["shape"])]))]
    if function == "roll":
        shifts, axes = a["shift"], a["axis"]
        shifts, axes = (list(v) if isinstance(v, (list, tuple)) else [v] for v in (shifts, axes))
        y = x
        for i, (shift, axis) in enumerate(zip(shifts, axes)):
            axis = int(axis) % rank
            (size,) = _static(e, (t.shape[axis],), "the rolled axis")
            k = int(shift) % size
            if not k:
                continue
            tail = e.node("Slice", [y, b.ints(f"{e.name}/tail_starts{i}", [size - k]), b.ints(f"{e.name}/tail_ends{i}", [size]),
                                    b.ints(f"{e.name}/axes{i}", [axis])], f"tail{i}")
            head = e.node("Slice", [y, b.ints(f"{e.name}/head_starts{i}", [0]), b.ints(f"{e.name}/head_ends{i}", [size - k]),
                                    b.ints(f"{e.name}/head_axes{i}", [axis])], f"head{i}")
            y = e.node("Concat", [tail, head], f"rolled{i}", axis=axis)
        return [e.out(e.node("Identity", [y]))]
    if function == "nn.local_response_normalization":
        radius, lrn_bias, alpha, beta = lrn_settings(a)
        size = 2 * radius + 1  # ONNX divides alpha by the window size, TensorFlow does not
        y = e.node("LRN", [b.spatial_view(t, "channels_last")], size=size, alpha=alpha * size, beta=beta, bias=lrn_bias)
        return [e.out(y, channels_first(rank))]
    if function.startswith("image.") and function != "image.resize":
        return [_image_op(e, function, t)]
    if function in ("math.top_k", "sort", "argsort"):
        if function == "math.top_k":
            axis, descending, k = rank - 1, True, top_k_count(a, t.shape[-1])
        else:
            axis, descending = sort_settings(a, rank)
            (k,) = _static(e, (t.shape[axis],), "the sorted axis")
        values, indices = b.nodes_out("TopK", [x, b.ints(f"{e.name}/k", [k])], ["values", "indices"], name=e.name,
                                      axis=axis, largest=int(descending), sorted=1)  # ties: lower index first, as TF
        as_float = e.node("Cast", [indices], "indices_float", to=TensorProto.FLOAT)
        if function == "sort":
            return [e.out(values)]
        if function == "argsort":
            return [e.out(as_float)]
        return [e.out(values), e.out(as_float, i=1)]
    if function == "one_hot":
        depth, on, off, axis = one_hot_settings(a, rank)
        # TensorFlow gives a negative index all off values; ONNX counts it from the end
        negative = e.node("Less", [x, e.scalar(0.0, "zero")], "negative")
        index = e.node("Where", [negative, e.scalar(float(depth), "beyond"), x], "index")
        values = b.const(f"{e.name}/values", np.asarray([off, on], np.float32))
        depth_value = b.const(f"{e.name}/depth", np.int64(depth), np.int64)
        return [e.out(e.node("OneHot", [e.node("Cast", [index], "index_int", to=TensorProto.INT64), depth_value, values],
                             axis=axis))]
    if function == "nn.crelu":
        axis = int(a.get("axis", -1)) % rank
        perm, held = e.b.native(t)
        at = perm.index(axis)
        parts = [e.node("Relu", [held], "positive"), e.node("Relu", [e.node("Neg", [held], "negated")], "negative")]
        return [e.out(e.node("Concat", parts, axis=at), perm)]
    if function == "image.resize":
        try:
            plan = resize_plan(a, t.shape)
        except TfOpProblem as exc:
            raise refuse(e.call, str(exc)) from None
        return [apply_resize_plan(b, e.call, plan)]
    if function in ("nn.depth_to_space", "nn.space_to_depth"):
        bs = block_size(a)
        op = "DepthToSpace" if function == "nn.depth_to_space" else "SpaceToDepth"
        attrs = {"mode": "DCR"} if op == "DepthToSpace" else {}  # TensorFlow's channel order
        y = e.node(op, [b.spatial_view(t, "channels_last")], blocksize=bs, **attrs)
        return [e.out(y, channels_first(4))]
    if function in ("norm", "linalg.normalize"):
        return _norm(e, function, t, a)
    if function.startswith(("nn.avg_pool", "nn.max_pool")):
        ksize, strides, padding = pool_window(a, rank - 2)
        pool_attrs = window_pads(e.call, list(t.shape[1:-1]), list(ksize), list(strides), [1] * len(ksize), padding)
        is_max = "max" in function
        if not is_max:
            pool_attrs["count_include_pad"] = 0
        y = e.node("MaxPool" if is_max else "AveragePool", [b.spatial_view(t, "channels_last")],
                   kernel_shape=list(ksize), strides=list(strides), **pool_attrs)
        return [e.out(y, channels_first(rank))]
    raise refuse(e.call, f"tf.{function} has no ONNX emission")


def _image_op(e: _Emit, function: str, t: Tensor) -> Tensor:
    """The ``tf.image`` functions of a batch of images, in the layout it is held in."""
    if t.rank != 4:
        raise refuse(e.call, f"tf.{function} of a rank-{t.rank} tensor: a batch of images is supported")
    b = e.b
    x, positions, perm = _native_axes(e, t, [1, 2, 3], True)
    row, col, channel = positions
    if function == "image.rgb_to_grayscale":
        shape = [1, 1, 1, 1]
        shape[channel] = 3
        weights = b.const(f"{e.name}/weights", np.asarray(GRAY_WEIGHTS, np.float32).reshape(shape))
        return e.out(b.reduce("ReduceSum", e.node("Mul", [x, weights], "weighted"), [channel], keepdims=True,
                              name=e.name), perm)
    if function == "image.grayscale_to_rgb":
        return e.out(e.node("Concat", [x, x, x], axis=channel), perm)
    if function in ("image.flip_left_right", "image.flip_up_down"):
        axis = col if function == "image.flip_left_right" else row
        return e.out(e.node("Slice", [x, b.ints(f"{e.name}/starts", [-1]), b.ints(f"{e.name}/ends", [_INT64_MIN]),
                                      b.ints(f"{e.name}/axes", [axis]), b.ints(f"{e.name}/steps", [-1])]), perm)
    sizes = _static(e, tuple(t.shape[1:]), "per_image_standardization")
    mean = b.reduce("ReduceMean", x, [1, 2, 3], keepdims=True, name=e.sub("mean"))
    centered = e.node("Sub", [x, mean], "centered")
    variance = b.reduce("ReduceMean", e.node("Mul", [centered, centered], "squares"), [1, 2, 3], keepdims=True,
                        name=e.sub("variance"))
    floor = e.scalar(1.0 / np.sqrt(float(np.prod(sizes))), "floor")
    scale = e.node("Max", [e.node("Sqrt", [variance], "std"), floor], "adjusted_std")
    return e.out(e.node("Div", [centered, scale]), perm)


def _norm(e: _Emit, function: str, t: Tensor, a: dict[str, Any]) -> list[Tensor]:
    """``tf.norm`` (and ``tf.linalg.normalize``: the tensor over its norm, and the norm)."""
    b, x = e.b, e.keras(t)
    p = norm_order(a.get("ord", "euclidean"), a.get("axis"))
    axes = _axes(a.get("axis"), t.rank)
    keep = function == "linalg.normalize" or bool(a.get("keepdims") or a.get("keep_dims"))
    magnitude = e.node("Abs", [x], "abs")
    name = e.sub("norm") if function == "linalg.normalize" else e.name
    if p == np.inf:
        norm = b.reduce("ReduceMax", magnitude, axes, keepdims=keep, name=name)
    elif p == 2.0:
        norm = e.node("Sqrt", [b.reduce("ReduceSum", e.node("Mul", [x, x], "squares"), axes, keepdims=keep,
                                        name=e.sub("sum"))], "norm" if function == "linalg.normalize" else None)
    elif p == 1.0:
        norm = b.reduce("ReduceSum", magnitude, axes, keepdims=keep, name=name)
    else:
        powered = e.node("Pow", [magnitude, e.scalar(p, "ord")], "powered")
        total = b.reduce("ReduceSum", powered, axes, keepdims=keep, name=e.sub("sum"))
        norm = e.node("Pow", [total, e.scalar(1.0 / p, "inverse_ord")], "norm" if function == "linalg.normalize" else None)
    if function == "norm":
        return [e.out(norm)]
    return [e.out(e.node("Div", [x, norm])), e.out(e.node("Identity", [norm], "norm_out"), i=1)]


@converts(*(f"tf.{f}" for f in TF_OPS))
def tf_operation(b: Builder, call: Call) -> list[Tensor]:
    function = tf_function(call.layer)
    try:
        args, kwargs = op_args_of(call)
        a = bind(function, resolve_args(args, call.inputs), resolve_args(kwargs, call.inputs))
    except TfOpProblem as exc:
        raise refuse(call, f"{call.layer.class_name}: {exc}") from None
    e = _Emit(b, call)
    try:
        if function.startswith("math.reduce_"):
            return [_reduction(e, function, a)]
        y = _elementwise(e, function, a)
        return [y] if y is not None else _layout_ops(e, function, a)
    except TfOpProblem as exc:
        raise refuse(call, f"{call.layer.class_name}: {exc}") from None
