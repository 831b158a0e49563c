"""Keras 3 operation layers (``keras.ops.*``, ``x + 3.0``, ``x[..., 0]``) as ONNX.

This module holds the element-wise operations, reductions, norms and products and the type
bookkeeping every operation handler shares; :mod:`.array_ops` the operations that move, select and
convert entries. Each handler reads the call's arguments (:attr:`~bnconvert.onnx.builder.Call.op_args`: tensors
as :class:`~bnconvert.model.TensorArg`, constants as the reader normalised them) and the
operation's config, and works in Keras' own layout (every operand viewed in the identity layout).

Types: every Keras layer's tensor is float32 in the graph; an operation may make booleans
(comparisons, logical operations), integers (``cast``, ``argmax``) or floats. The element type of
each tensor an operation makes is kept here (:func:`value_type`); operands are brought to Keras'
promoted type (a float among them: float32; else the integer; booleans for logical operations)
and constants are written in it. A graph output that is not float32 is cast to float32 by the
exporter (the values are those Keras gives).
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
from onnx import TensorProto

from ...catalog.operations import (
    KERAS_EPSILON,
    einsum_parts,
    norm_order,
    reduction_axes,
)
from ...model import TensorArg
from ..builder import Builder, Call, Tensor
from ..layout import Perm, identity
from ..registry import converts, refuse
from .activations import emit_activation
from .merge import common_layout

__all__ = ["value_type"]

_K = "keras.ops."
FLOAT, BOOL, INT32, INT64 = TensorProto.FLOAT, TensorProto.BOOL, TensorProto.INT32, TensorProto.INT64
_NUMPY: dict[int, type] = {FLOAT: np.float32, BOOL: np.bool_, INT32: np.int32, INT64: np.int64}
_BIG = 2**62

#: element types of the tensors operations made that are not float32
_TYPES: WeakKeyDictionary[Tensor, int] = WeakKeyDictionary()


def value_type(t: Tensor) -> int:
    """The ONNX element type of ``t`` (float32 unless an operation made it otherwise)."""
    return _TYPES.get(t, FLOAT)


def _out(b: Builder, call: Call, value: str, elem: int = FLOAT, shape: tuple | None = None,
         perm: Perm | None = None) -> Tensor:
    """The call's output ``value``, held in ``perm`` (Keras' layout by default)."""
    shape = call.out_shape if shape is None else shape
    t = b.tensor(shape, identity(len(shape)) if perm is None else perm, value)
    if elem != FLOAT:
        _TYPES[t] = elem
    return t


def _kind(elem: int) -> str:
    return "f" if elem == FLOAT else "b" if elem == BOOL else "i"


def _constant_type(value: Any) -> int:
    kind = np.asarray(value).dtype.kind
    return FLOAT if kind in "fc" else BOOL if kind == "b" else INT64


def _promoted(types: list[int], weak: list[int]) -> int:
    """Keras' result type of tensors of ``types`` and Python constants of ``weak`` types (a
    Python number does not widen a tensor's type, but a float makes an integer tensor float)."""
    every = types + weak
    if FLOAT in every:
        return FLOAT
    ints = [t for t in types if _kind(t) == "i"]
    if ints:
        return INT64 if INT64 in ints else INT32
    return INT64 if any(_kind(t) == "i" for t in weak) else BOOL


def _cast(b: Builder, value: str, have: int, want: int, name: str) -> str:
    return value if have == want else b.node("Cast", [value], name=name, to=want)


def _operand_values(call: Call, n: int) -> list[Any]:
    """The first ``n`` operands of the call (TensorArgs and constants, in order)."""
    args, kwargs = call.op_args or ([TensorArg(i) for i in range(len(call.inputs))], {})
    names = ("x1", "x2") if n == 2 else ("x",)
    values = list(args[:n]) + [kwargs[k] for k in names[len(args):n] if k in kwargs]
    if len(values) != n or any(v is None for v in values):
        raise refuse(call, f"expects {n} operands, the file gives {len(values)}")
    return values


def _operands(b: Builder, call: Call, n: int, *, logical: bool = False) -> tuple[list[str], int]:
    """The first ``n`` operands (tensors and constants, in order), in one promoted type, in Keras' layout."""
    out, want, _ = _promote(b, call, _operand_values(call, n), logical=logical)
    return out, want


def _elementwise_operands(b: Builder, call: Call, n: int, *, logical: bool = False) -> tuple[list[str], int, Perm]:
    """:func:`_operands` of an element-wise operation, in the layout its tensors are held in when
    they all have the output's rank (``x + 3.0`` between channels-first convolutions needs no
    Transpose), and that layout."""
    return _promote(b, call, _operand_values(call, n), logical=logical, held=True)


def _promote(b: Builder, call: Call, values: list[Any], *, logical: bool = False,
             held: bool = False) -> tuple[list[str], int, Perm]:
    """``values`` (TensorArgs and constants) as ONNX values of one type (Keras' promoted one, or
    bool), in Keras' layout, or with ``held`` in the tensors' common layout when they all have
    the output's rank; and that layout (constants broadcast numpy-style are laid out to match)."""
    tensors = [call.inputs[v.index] for v in values if isinstance(v, TensorArg)]
    weak = [_constant_type(v) for v in values if not isinstance(v, TensorArg)]
    want = BOOL if logical else _promoted([value_type(t) for t in tensors], weak)
    rank = len(call.out_shape)
    perm, views = identity(rank), [b.view(t, identity(t.rank)) for t in tensors]
    if held and tensors and all(t.rank == rank for t in tensors):
        perm, views = common_layout(b, tensors, call.name)
    held_views = iter(views)
    out = []
    for i, v in enumerate(values):
        if isinstance(v, TensorArg):
            t = call.inputs[v.index]
            out.append(_cast(b, next(held_views), value_type(t), want, f"{call.name}/cast{i}"))
            continue
        c = np.asarray(v)
        if c.ndim and perm != identity(rank):
            c = np.transpose(c.reshape((1,) * (rank - c.ndim) + c.shape), perm)
        out.append(b.const(f"{call.name}/constant{i}", c, _NUMPY[want]))
    return out, want, perm


def _one(b: Builder, call: Call) -> tuple[str, int]:
    """The one operand of a unary operation, in its own type."""
    (x,), elem = _operands(b, call, 1)
    return x, elem


# -- element-wise -----------------------------------------------------------------------------
_ARITHMETIC = {"add": "Add", "subtract": "Sub", "multiply": "Mul", "power": "Pow", "maximum": "Max", "minimum": "Min"}
_COMPARE = {"equal": "Equal", "less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
            "greater_equal": "GreaterOrEqual"}
_LOGICAL = {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}


@converts(*(_K + n for n in [*_ARITHMETIC, *_COMPARE, *_LOGICAL, "not_equal", "divide", "true_divide", "floor_divide",
                             "mod"]))
def binary(b: Builder, call: Call) -> list[Tensor]:
    name = call.layer.class_name.removeprefix(_K)
    (x, y), elem, perm = _elementwise_operands(b, call, 2, logical=name in _LOGICAL)
    if name in _LOGICAL:
        return [_out(b, call, b.node(_LOGICAL[name], [x, y], name=call.name), BOOL, perm=perm)]
    if name in _COMPARE or name == "not_equal":
        if elem == BOOL:  # ONNX compares numbers: booleans as 0/1
            x, y = (b.node("Cast", [v], name=f"{call.name}/number{i}", to=INT32) for i, v in enumerate((x, y)))
        if name == "not_equal":
            same = b.node("Equal", [x, y], name=f"{call.name}/equal")
            return [_out(b, call, b.node("Not", [same], name=call.name), BOOL, perm=perm)]
        return [_out(b, call, b.node(_COMPARE[name], [x, y], name=call.name), BOOL, perm=perm)]
    if elem == BOOL:
        raise refuse(call, "arithmetic on booleans is not supported")
    if name in ("divide", "true_divide", "floor_divide", "mod"):
        if elem != FLOAT:  # Keras divides integers as floats; floor division and mod are exact on them
            x, y = (b.node("Cast", [v], name=f"{call.name}/float{i}", to=FLOAT) for i, v in enumerate((x, y)))
        if name in ("divide", "true_divide"):
            return [_out(b, call, b.node("Div", [x, y], name=call.name), perm=perm)]
        floor = b.node("Floor", [b.node("Div", [x, y], name=f"{call.name}/div")], name=f"{call.name}/floor")
        if name == "mod":  # numpy's mod takes the divisor's sign: x - floor(x / y) * y
            floor = b.node("Sub", [x, b.node("Mul", [floor, y], name=f"{call.name}/times")], name=f"{call.name}/mod")
        return [_out(b, call, _cast(b, floor, FLOAT, elem, call.name), elem, perm=perm)]
    return [_out(b, call, b.node(_ARITHMETIC[name], [x, y], name=call.name), elem, perm=perm)]


_UNARY = {"negative": "Neg", "absolute": "Abs", "sqrt": "Sqrt", "exp": "Exp", "log": "Log", "sin": "Sin",
          "cos": "Cos", "tan": "Tan", "tanh": "Tanh", "floor": "Floor", "ceil": "Ceil", "sign": "Sign",
          "reciprocal": "Reciprocal", "erf": "Erf", "stop_gradient": "Identity", "arcsin": "Asin", "arccos": "Acos",
          "arctan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "arcsinh": "Asinh", "arccosh": "Acosh", "arctanh": "Atanh"}
_FLOAT_ONLY = {"sqrt", "exp", "log", "sin", "cos", "tan", "tanh", "reciprocal", "erf", "log1p", "expm1", "rsqrt", "exp2",
               "log2", "log10", "cbrt", "arcsin", "arccos", "arctan", "sinh", "cosh", "arcsinh", "arccosh", "arctanh"}
#: keras.ops functions that are Keras activations of the same name and defaults (keras.ops.gelu is not: approximate)
_ACTIVATIONS = ("sigmoid", "relu", "relu6", "silu", "softplus", "softsign", "selu", "log_sigmoid", "hard_sigmoid",
                "hard_silu", "hard_tanh", "sparse_plus", "tanh_shrink")
_PARAMETERISED = ("clip", "round", "elu", "celu", "leaky_relu", "gelu", "squareplus", "softmax", "log_softmax")


@converts(*(_K + n for n in [*_UNARY, *_ACTIVATIONS, *_PARAMETERISED, "square", "log1p", "expm1", "rsqrt", "logical_not",
                             "exp2", "log2", "log10", "cbrt", "trunc"]))
def unary(b: Builder, call: Call) -> list[Tensor]:
    name = call.layer.class_name.removeprefix(_K)
    if name in ("softmax", "log_softmax"):  # along axes of Keras' layout
        (x,), elem = _operands(b, call, 1)
        return [_out(b, call, _parameterised(b, call, name, _float(b, call, x, elem), call.x.rank))]
    if name == "logical_not":
        (x,), _, perm = _elementwise_operands(b, call, 1, logical=True)
        return [_out(b, call, b.node("Not", [x], name=call.name), BOOL, perm=perm)]
    (x,), elem, perm = _elementwise_operands(b, call, 1)
    if elem == BOOL or (elem != FLOAT and (name in _FLOAT_ONLY or name in _ACTIVATIONS or name in _PARAMETERISED)):
        x, elem = b.node("Cast", [x], name=f"{call.name}/float", to=FLOAT), FLOAT
    if name in _UNARY:
        return [_out(b, call, b.node(_UNARY[name], [x], name=call.name), elem, perm=perm)]
    one = b.const(f"{call.name}/one", np.ones((), _NUMPY[elem]), _NUMPY[elem]) if elem != BOOL else ""
    if name == "square":
        return [_out(b, call, b.node("Mul", [x, x], name=call.name), elem, perm=perm)]
    if name == "log1p":
        return [_out(b, call, b.node("Log", [b.node("Add", [x, one], name=f"{call.name}/plus1")], name=call.name), perm=perm)]
    if name == "expm1":
        return [_out(b, call, b.node("Sub", [b.node("Exp", [x], name=f"{call.name}/exp"), one], name=call.name), perm=perm)]
    if name in ("log2", "log10"):
        scale = b.const(f"{call.name}/scale", np.float32(1.0 / np.log(2.0 if name == "log2" else 10.0)))
        return [_out(b, call, b.node("Mul", [b.node("Log", [x], name=f"{call.name}/ln"), scale], name=call.name), perm=perm)]
    if name == "exp2":
        return [_out(b, call, b.node("Pow", [b.const(f"{call.name}/two", np.float32(2.0)), x], name=call.name), perm=perm)]
    if name == "cbrt":  # sign(x) |x|^(1/3): Pow of a negative base is NaN
        root = b.node("Pow", [b.node("Abs", [x], name=f"{call.name}/abs"), b.const(f"{call.name}/third", np.float32(1 / 3))],
                      name=f"{call.name}/root")
        return [_out(b, call, b.node("Mul", [b.node("Sign", [x], name=f"{call.name}/sign"), root], name=call.name), perm=perm)]
    if name == "trunc":
        if elem != FLOAT:
            return [_out(b, call, b.node("Identity", [x], name=call.name), elem, perm=perm)]
        down = b.node("Floor", [b.node("Abs", [x], name=f"{call.name}/abs")], name=f"{call.name}/floor")
        return [_out(b, call, b.node("Mul", [b.node("Sign", [x], name=f"{call.name}/sign"), down], name=call.name), perm=perm)]
    if name == "rsqrt":
        return [_out(b, call, b.node("Reciprocal", [b.node("Sqrt", [x], name=f"{call.name}/sqrt")], name=call.name), perm=perm)]
    rank = call.x.rank
    if name in _ACTIVATIONS:
        return [_out(b, call, emit_activation(b, name, x, node=call.name, out=call.name, axis=rank - 1,
                                              generation=3), perm=perm)]
    return [_out(b, call, _parameterised(b, call, name, x, rank), perm=perm)]


def _float(b: Builder, call: Call, x: str, elem: int) -> str:
    return x if elem == FLOAT else b.node("Cast", [x], name=f"{call.name}/float", to=FLOAT)


def _parameterised(b: Builder, call: Call, name: str, x: str, rank: int) -> str:
    c, n = call.config, call.name

    def const(tag: str, value: float) -> str:
        return b.const(f"{n}/{tag}", np.float32(value))

    if name == "clip":
        lo, hi = c.get("x_min"), c.get("x_max")
        y = x if lo is None else b.node("Max", [x, const("min", lo)], name=f"{n}/lower")
        return y if hi is None else b.node("Min", [y, const("max", hi)], name=n)
    if name == "round":
        decimals = int(c.get("decimals", 0) or 0)
        if decimals == 0:
            return b.node("Round", [x], name=n)
        scale = const("scale", 10.0 ** decimals)
        return b.node("Div", [b.node("Round", [b.node("Mul", [x, scale], name=f"{n}/scaled")], name=f"{n}/round"), scale],
                      name=n)
    if name == "elu":
        return b.node("Elu", [x], name=n, alpha=float(c.get("alpha", 1.0)))
    if name == "celu":
        return b.node("Celu", [x], name=n, alpha=float(c.get("alpha", 1.0)))
    if name == "leaky_relu":
        return b.node("LeakyRelu", [x], name=n, alpha=float(c.get("negative_slope", 0.2)))
    if name == "gelu":
        act = "gelu_approximate" if c.get("approximate", True) else "gelu"
        return emit_activation(b, act, x, node=n, out=n, axis=rank - 1, generation=3)
    if name == "squareplus":
        root = b.node("Sqrt", [b.node("Add", [b.node("Mul", [x, x], name=f"{n}/square"), const("b", c.get("b", 4))],
                                      name=f"{n}/plus_b")], name=f"{n}/sqrt")
        return b.node("Mul", [b.node("Add", [x, root], name=f"{n}/sum"), const("half", 0.5)], name=n)
    axis = c.get("axis", -1)
    axes = [int(a) % rank for a in axis] if isinstance(axis, (list, tuple)) else [int(axis) % rank]
    if len(axes) == 1:
        return b.node("Softmax" if name == "softmax" else "LogSoftmax", [x], name=n, axis=axes[0])
    top = b.reduce("ReduceMax", x, axes, keepdims=True, name=f"{n}/max")
    shifted = b.node("Sub", [x, top], name=f"{n}/shifted")
    e = b.node("Exp", [shifted], name=f"{n}/exp")
    total = b.reduce("ReduceSum", e, axes, keepdims=True, name=f"{n}/sum")
    if name == "softmax":
        return b.node("Div", [e, total], name=n)
    return b.node("Sub", [shifted, b.node("Log", [total], name=f"{n}/log")], name=n)


# -- reductions -------------------------------------------------------------------------------
_REDUCE = {"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin", "amax": "ReduceMax",
           "amin": "ReduceMin", "prod": "ReduceProd"}


@converts(*(_K + n for n in [*_REDUCE, "std", "var", "logsumexp", "any", "all"]))
def reduction(b: Builder, call: Call) -> list[Tensor]:
    name = call.layer.class_name.removeprefix(_K)
    c, n = call.config, call.name
    if c.get("dtype") is not None:
        raise refuse(call, f"dtype {c['dtype']!r} is not supported")
    (x,), elem = _operands(b, call, 1)
    rank, keep = call.x.rank, bool(c.get("keepdims", False))
    axes = list(reduction_axes(c.get("axis"), rank))
    if name in ("any", "all"):
        as_float = _cast(b, x, elem, FLOAT, f"{n}/float")
        if elem != BOOL:  # truth of a number: not zero
            as_float = b.node("Cast", [b.node("Not", [b.node("Equal", [as_float, b.const(f"{n}/zero", np.float32(0))],
                                                              name=f"{n}/is_zero")], name=f"{n}/truth")],
                              name=f"{n}/truth_float", to=FLOAT)
        y = b.reduce("ReduceMax" if name == "any" else "ReduceMin", as_float, axes, keepdims=keep, name=f"{n}/reduce")
        return [_out(b, call, b.node("Cast", [y], name=n, to=BOOL), BOOL)]
    if name in ("mean", "std", "var", "logsumexp") and elem != FLOAT:
        x, elem = b.node("Cast", [x], name=f"{n}/float", to=FLOAT), FLOAT
    if elem == BOOL:
        raise refuse(call, f"{name} of booleans is not supported")
    if name in _REDUCE:
        y = b.reduce(_REDUCE[name], x, axes, keepdims=keep, name=n if c.get("initial") is None else f"{n}/reduce")
        if name in ("max", "min") and c.get("initial") is not None:
            y = b.node("Max" if name == "max" else "Min", [y, b.const(f"{n}/initial", np.asarray(c["initial"]), _NUMPY[elem])],
                       name=n)
        return [_out(b, call, y, elem)]
    if name == "logsumexp":
        top = b.reduce("ReduceMax", x, axes, keepdims=True, name=f"{n}/max")
        finite = b.node("Where", [b.node("IsInf", [top], name=f"{n}/inf"), b.const(f"{n}/zero", np.float32(0)), top],
                        name=f"{n}/shift")
        total = b.reduce("ReduceSum", b.node("Exp", [b.node("Sub", [x, finite], name=f"{n}/shifted")], name=f"{n}/exp"),
                         axes, keepdims=True, name=f"{n}/sum")
        y = b.node("Add", [b.node("Log", [total], name=f"{n}/log"), finite], name=f"{n}/lse" if not keep else n)
        if not keep:
            y = b.node("Squeeze", [y, b.ints(f"{n}/axes", axes)], name=n)
        return [_out(b, call, y)]
    mean = b.reduce("ReduceMean", x, axes, keepdims=True, name=f"{n}/mean")
    dev = b.node("Sub", [x, mean], name=f"{n}/deviation")
    var = b.reduce("ReduceMean", b.node("Mul", [dev, dev], name=f"{n}/square"), axes, keepdims=keep,
                   name=n if name == "var" else f"{n}/var")
    return [_out(b, call, var if name == "var" else b.node("Sqrt", [var], name=n))]


def _vector_norm(b: Builder, x: str, kind: str, axes: list[int], keepdims: bool, name: str) -> str:
    if kind == "l1":
        return b.reduce("ReduceL1", x, axes, keepdims=keepdims, name=name)
    return b.node("Sqrt", [b.reduce("ReduceSumSquare", x, axes, keepdims=keepdims, name=f"{name}/sum_square")], name=name)


@converts(_K + "norm", _K + "normalize")
def norm(b: Builder, call: Call) -> list[Tensor]:
    """``norm``: the vector norms and Frobenius; ``normalize`` as Keras computes it (order 2:
    ``x * min(1 / sqrt(sum x^2), 1 / epsilon)``, else ``x / max(norm, epsilon)``)."""
    x, elem = _one(b, call)
    x = _cast(b, x, elem, FLOAT, f"{call.name}/float")
    normalize = call.layer.class_name.endswith("normalize")
    try:
        kind, axes = norm_order(call.config, "order" if normalize else "ord", call.x.rank)
    except ValueError as exc:
        raise refuse(call, str(exc)) from None
    n = call.name
    if not normalize:
        return [_out(b, call, _vector_norm(b, x, kind, list(axes), bool(call.config.get("keepdims", False)), n))]
    eps = call.config.get("epsilon")
    eps = KERAS_EPSILON if eps is None else float(eps)
    if kind == "l2":
        inv = b.node("Reciprocal", [_vector_norm(b, x, kind, list(axes), True, f"{n}/norm")], name=f"{n}/inverse")
        inv = b.node("Min", [inv, b.const(f"{n}/limit", np.float32(1.0 / eps))], name=f"{n}/limited")
        return [_out(b, call, b.node("Mul", [x, inv], name=n))]
    denom = b.node("Max", [_vector_norm(b, x, kind, list(axes), True, f"{n}/norm"), b.const(f"{n}/eps", np.float32(eps))],
                   name=f"{n}/denominator")
    return [_out(b, call, b.node("Div", [x, denom], name=n))]


@converts(_K + "argmax", _K + "argmin")
def arg_reduction(b: Builder, call: Call) -> list[Tensor]:
    axis = call.config.get("axis")
    if axis is None:
        raise refuse(call, "argmax/argmin over the flattened tensor (axis None) is not supported")
    (x,), elem = _operands(b, call, 1)
    x = _cast(b, x, elem, FLOAT, f"{call.name}/float")
    op = "ArgMax" if call.layer.class_name.endswith("argmax") else "ArgMin"
    y = b.node(op, [x], name=call.name, axis=int(axis) % call.x.rank, keepdims=int(bool(call.config.get("keepdims"))),
               select_last_index=0)
    return [_out(b, call, y, INT64)]


# -- products ---------------------------------------------------------------------------------
@converts(_K + "matmul")
def matmul(b: Builder, call: Call) -> list[Tensor]:
    (x, y), elem = _operands(b, call, 2)
    if elem != FLOAT:
        raise refuse(call, "matmul of integers is not supported")
    return [_out(b, call, b.node("MatMul", [x, y], name=call.name))]


@converts(_K + "einsum")
def einsum(b: Builder, call: Call) -> list[Tensor]:
    args, _ = call.op_args or ([], {})
    if not all(isinstance(a, TensorArg) for a in args) or not args:
        raise refuse(call, "constant einsum operands are not supported")
    tensors = [call.inputs[a.index] for a in args]
    if any(value_type(t) != FLOAT for t in tensors):
        raise refuse(call, "einsum of integers is not supported")
    equation = str(call.config["subscripts"]).replace(" ", "")  # numpy's spelling is ONNX's, ellipsis included
    try:
        einsum_parts(equation, [t.rank for t in tensors])
    except ValueError as exc:
        raise refuse(call, str(exc)) from None
    views = [b.view(t, identity(t.rank)) for t in tensors]
    return [_out(b, call, b.node("Einsum", views, name=call.name, equation=equation))]
