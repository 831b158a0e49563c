"""Activation functions (by Keras name) and the activation layers.

Formulas follow the Keras source of each generation. Where they differ by generation it is said:
``hard_sigmoid`` is ``relu6(x + 3) / 6`` in Keras 3 and ``clip(0.2 x + 0.5, 0, 1)`` in Keras 1/2
and tf.keras. Element-wise functions keep the input's layout; ``softmax``, ``log_softmax``,
``sparsemax`` and ``glu`` act on Keras' last axis wherever the layout holds it. Everything is
composed from opset-13 operators (TopK and CumSum for sparsemax, Shrink for the shrinks), with
the newer fused operators (Gelu, HardSwish, Mish) where the opset has them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ...catalog.activations import (  # how Keras names an activation, and what it refuses, are the catalog's facts
    activation_name,
)
from ...catalog.activations import (
    activation_problem as catalog_problem,
)
from ...model import Layer
from ..builder import Builder, Call, Tensor
from ..layout import Perm, position
from ..registry import converts, refuse

__all__ = ["ACTIVATIONS", "SHAPE_CHANGING", "activation_name", "activation_problem", "emit_activation", "fused"]

#: Keras' selu constants (keras/src/activations/activations.py)
SELU_ALPHA = 1.67326324235437728481
SELU_SCALE = 1.05070098735548049342


class _Act:
    """Arguments every activation emitter needs."""

    def __init__(self, b: Builder, name: str, out: str, axis: int, generation: int) -> None:
        self.b, self.name, self.out, self.axis, self.generation = b, name, out, axis, generation

    def op(self, op: str, inputs: list[str], step: str | None = None, **attrs: Any) -> str:
        """A node: the last step of the function (``step`` None) writes the activation's output."""
        if step is None:
            return self.b.node(op, inputs, name=self.name, out=self.out, **attrs)
        return self.b.node(op, inputs, name=f"{self.name}/{step}", **attrs)

    def c(self, what: str, value: float) -> str:
        return self.b.const(f"{self.name}/{what}", np.float32(value))


def _unary(op: str, **attrs: Any) -> Callable[[_Act, str], str]:
    return lambda a, x: a.op(op, [x], **attrs)


def _clip(lo: float, hi: float) -> Callable[[_Act, str], str]:
    return lambda a, x: a.op("Clip", [x, a.c("min", lo), a.c("max", hi)])


def _silu(a: _Act, x: str) -> str:
    return a.op("Mul", [x, a.op("Sigmoid", [x], "sigmoid")])


def _hard_sigmoid(a: _Act, x: str) -> str:
    alpha = 1.0 / 6.0 if a.generation >= 3 else 0.2
    return a.op("HardSigmoid", [x], alpha=alpha, beta=0.5)


def _hard_silu(a: _Act, x: str) -> str:
    if a.b.opset >= 14:
        return a.op("HardSwish", [x])
    return a.op("Mul", [x, a.op("HardSigmoid", [x], "hard_sigmoid", alpha=1.0 / 6.0, beta=0.5)])


def _gelu(a: _Act, x: str) -> str:
    if a.b.opset >= 20:
        return a.op("Gelu", [x], approximate="none")
    erf = a.op("Erf", [a.op("Mul", [x, a.c("inv_sqrt2", 1.0 / math.sqrt(2.0))], "scale")], "erf")
    half_x = a.op("Mul", [x, a.c("half", 0.5)], "half_x")
    return a.op("Mul", [half_x, a.op("Add", [erf, a.c("one", 1.0)], "one_plus")])


def _gelu_tanh(a: _Act, x: str) -> str:
    if a.b.opset >= 20:
        return a.op("Gelu", [x], approximate="tanh")
    cube = a.op("Mul", [a.op("Mul", [x, x], "square"), x], "cube")
    inner = a.op("Add", [x, a.op("Mul", [cube, a.c("k", 0.044715)], "k_cube")], "inner")
    t = a.op("Tanh", [a.op("Mul", [inner, a.c("sqrt_2_over_pi", math.sqrt(2.0 / math.pi))], "scaled")], "tanh")
    half_x = a.op("Mul", [x, a.c("half", 0.5)], "half_x")
    return a.op("Mul", [half_x, a.op("Add", [t, a.c("one", 1.0)], "one_plus")])


def _mish(a: _Act, x: str) -> str:
    if a.b.opset >= 18:
        return a.op("Mish", [x])
    return a.op("Mul", [x, a.op("Tanh", [a.op("Softplus", [x], "softplus")], "tanh")])


def _log_sigmoid(a: _Act, x: str) -> str:
    return a.op("Neg", [a.op("Softplus", [a.op("Neg", [x], "neg")], "softplus")])


def _tanh_shrink(a: _Act, x: str) -> str:
    return a.op("Sub", [x, a.op("Tanh", [x], "tanh")])


def _squareplus(a: _Act, x: str) -> str:
    """``(x + sqrt(x**2 + 4)) / 2`` (Keras' default b = 4)."""
    root = a.op("Sqrt", [a.op("Add", [a.op("Mul", [x, x], "square"), a.c("b", 4.0)], "plus_b")], "sqrt")
    return a.op("Mul", [a.op("Add", [x, root], "sum"), a.c("half", 0.5)])


def _sparse_plus(a: _Act, x: str) -> str:
    """0 up to -1, ``(x + 1)**2 / 4`` up to 1, then x: ``(clip(x, -1, 1) + 1)**2 / 4 + relu(x - 1)``
    (no Where: onnxruntime cannot type a Where inside a recurrent layer's Scan body)."""
    shifted = a.op("Add", [a.op("Clip", [x, a.c("min", -1.0), a.c("max", 1.0)], "clipped"), a.c("one", 1.0)], "shifted")
    quad = a.op("Mul", [a.op("Mul", [shifted, shifted], "square"), a.c("quarter", 0.25)], "quadratic")
    return a.op("Add", [quad, a.op("Relu", [a.op("Sub", [x, a.c("one_hi", 1.0)], "above")], "linear_part")])


def _sparse_sigmoid(a: _Act, x: str) -> str:
    """``clip((x + 1) / 2, 0, 1)``: 0 up to -1, 1 from 1 on, Keras' ``where`` chain exactly."""
    half = a.op("Mul", [a.op("Add", [x, a.c("one", 1.0)], "shifted"), a.c("half", 0.5)], "half")
    return a.op("Clip", [half, a.c("min", 0.0), a.c("max", 1.0)])


def _sparsemax(a: _Act, x: str) -> str:
    """Keras 3's sparsemax over the activation axis (see :func:`bnconvert.catalog.activations.sparsemax`
    for the formula, which is Keras', not the paper's): TopK sorts the whole axis (its size read
    from the tensor's shape, so any length works), CumSum gives the running sums and, over ones,
    the ranks ``1..D`` already broadcast."""
    from onnx import TensorProto, helper

    axis = a.axis
    size = a.op("Slice", [a.op("Shape", [x], "shape"), a.b.ints(f"{a.name}/axis_start", [axis]),
                          a.b.ints(f"{a.name}/axis_end", [axis + 1])], "size")
    axis_t = a.b.const(f"{a.name}/axis", np.int64(axis), np.int64)
    z = a.b.nodes_out("TopK", [x, size], ["sorted", "indices"], name=f"{a.name}/topk", axis=axis, largest=1, sorted=1)[0]
    c = a.op("CumSum", [z, axis_t], "cumsum")
    ones = a.op("ConstantOfShape", [a.op("Shape", [x], "shape_all")], "ones",
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    r = a.op("CumSum", [ones, axis_t], "ranks")
    bound = a.op("Div", [a.op("Sub", [c, a.c("one", 1.0)], "c_minus_one"), r], "bound")
    support = a.op("Greater", [a.op("Sub", [z, bound], "gap"), a.c("zero", 0.0)], "support")
    k = a.b.reduce("ReduceSum", a.op("Cast", [support], "support_float", to=TensorProto.FLOAT), [axis], keepdims=True,
                   name=f"{a.name}/k")
    safe = a.op("Where", [support, c, a.c("zero_c", 0.0)], "cumsum_safe")
    total = a.b.reduce("ReduceSum", safe, [axis], keepdims=True, name=f"{a.name}/cumsum_total")
    tau = a.op("Div", [a.op("Sub", [total, a.c("one_tau", 1.0)], "total_minus_one"), k], "tau")
    return a.op("Relu", [a.op("Sub", [x, tau], "shifted")])


def _glu(a: _Act, x: str) -> str:
    """``first_half * sigmoid(second_half)`` along the activation axis; the half size read from the
    tensor's shape (opset 13 Split would need it as a constant, Slice takes it as a value)."""
    axis = a.axis
    size = a.op("Slice", [a.op("Shape", [x], "shape"), a.b.ints(f"{a.name}/axis_start", [axis]),
                          a.b.ints(f"{a.name}/axis_end", [axis + 1])], "size")
    half = a.op("Div", [size, a.b.ints(f"{a.name}/two", [2])], "half")
    axes = a.b.ints(f"{a.name}/axes", [axis])
    first = a.op("Slice", [x, a.b.ints(f"{a.name}/zero", [0]), half, axes], "first")
    second = a.op("Slice", [x, half, size, axes], "second")
    return a.op("Mul", [first, a.op("Sigmoid", [second], "gate")])


#: Keras activation name -> emitter(act, x) -> output name
ACTIVATIONS: dict[str, Callable[[_Act, str], str]] = {
    "relu": _unary("Relu"),
    "relu6": _clip(0.0, 6.0),
    "sigmoid": _unary("Sigmoid"),
    "hard_sigmoid": _hard_sigmoid,
    "tanh": _unary("Tanh"),
    "softmax": lambda a, x: a.op("Softmax", [x], axis=a.axis),
    "log_softmax": lambda a, x: a.op("LogSoftmax", [x], axis=a.axis),
    "silu": _silu,
    "swish": _silu,
    "hard_silu": _hard_silu,
    "hard_swish": _hard_silu,
    "gelu": _gelu,
    "gelu_approximate": _gelu_tanh,
    "elu": _unary("Elu", alpha=1.0),
    "selu": _unary("Selu", alpha=SELU_ALPHA, gamma=SELU_SCALE),
    "celu": _unary("Celu", alpha=1.0),
    "softplus": _unary("Softplus"),
    "softsign": _unary("Softsign"),
    "exponential": _unary("Exp"),
    "leaky_relu": _unary("LeakyRelu", alpha=0.2),
    "mish": _mish,
    "hard_tanh": _clip(-1.0, 1.0),
    "log_sigmoid": _log_sigmoid,
    "tanh_shrink": _tanh_shrink,
    "hard_shrink": _unary("Shrink", bias=0.0, lambd=0.5),  # x where |x| > 0.5, else 0
    "soft_shrink": _unary("Shrink", bias=0.5, lambd=0.5),
    "sparse_plus": _sparse_plus,
    "sparse_sigmoid": _sparse_sigmoid,
    "sparsemax": _sparsemax,
    "squareplus": _squareplus,
}
#: activations that change the shape (only an Activation layer may hold them: the catalog's
#: :data:`~bnconvert.catalog.activations.SHAPE_CHANGING`)
SHAPE_CHANGING: dict[str, Callable[[_Act, str], str]] = {"glu": _glu}
_LINEAR = frozenset({"linear", "identity", None})


def activation_problem(layer: Layer) -> str | None:
    """Why ``layer``'s ``activation`` setting cannot be exported, or None (the reason is the
    catalog's: a custom function, ``threshold``, ``glu`` outside an Activation layer ...)."""
    if "activation" not in layer.config:
        return None
    name = activation_name(layer.config["activation"])
    if name in _LINEAR or name in ACTIVATIONS or (name in SHAPE_CHANGING and layer.class_name == "Activation"):
        return None
    return catalog_problem(layer.config["activation"], shape_changing=layer.class_name == "Activation")


def emit_activation(b: Builder, name: str | None, x: str, *, node: str, out: str, axis: int, generation: int) -> str:
    """Apply Keras activation ``name`` to ONNX value ``x``; the result is named ``out``."""
    if name is None or name in _LINEAR:
        return b.node("Identity", [x], name=node, out=out)
    emit = ACTIVATIONS.get(name) or SHAPE_CHANGING[name]
    return emit(_Act(b, node, out, axis, generation), x)


def _is_linear(call: Call) -> bool:
    return activation_name(call.config.get("activation")) in _LINEAR


def pre_activation_name(call: Call) -> str:
    """How a handler names its main output: the layer's name, unless an activation follows."""
    return call.name if _is_linear(call) else f"{call.name}/preact"


def fused(b: Builder, call: Call, y: str, perm: Perm) -> list[Tensor]:
    """The layer's own ``activation`` applied to its pre-activation value ``y`` held in ``perm``."""
    if not _is_linear(call):
        name = activation_name(call.config.get("activation"))
        y = emit_activation(b, name, y, node=f"{call.name}/{name}", out=call.name,
                            axis=position(perm, -1), generation=call.generation)
    return [b.tensor(call.out_shape, perm, y)]


# -- activation layers -----------------------------------------------------------------------
def _elementwise(b: Builder, call: Call, emit: Callable[[str, str, int], str]) -> list[Tensor]:
    perm, x = b.native(call.x)
    return [b.tensor(call.out_shape, perm, emit(x, call.name, position(perm, -1)))]


@converts("Activation")
def activation(b: Builder, call: Call) -> list[Tensor]:
    name = activation_name(call.config.get("activation"))
    if name in _LINEAR:
        return [call.x]
    problem = activation_problem(call.layer)
    if problem:
        raise refuse(call, problem)
    last = call.x.shape[-1]
    if name in SHAPE_CHANGING and isinstance(last, int) and last % 2:
        raise refuse(call, f"glu needs an even last axis, got {last}")
    return _elementwise(b, call, lambda x, n, axis: emit_activation(
        b, name, x, node=n, out=n, axis=axis, generation=call.generation))


def relu_formula(a: _Act, x: str, *, max_value: float | None, slope: float, threshold: float) -> str:
    """Keras' ``relu(x, negative_slope, max_value, threshold)`` (identical in Keras 2 and 3)."""
    if slope == 0 and threshold == 0:
        return a.op("Relu", [x]) if max_value is None else a.op("Clip", [x, a.c("min", 0.0), a.c("max", max_value)])
    if max_value is None and threshold == 0:
        return a.op("LeakyRelu", [x], alpha=slope)
    last = slope == 0
    if threshold != 0:
        mask = a.op("Cast", [a.op("Greater", [x, a.c("threshold", threshold)], "above")], "mask", to=1)
        pos = a.op("Mul", [x, mask], None if last and max_value is None else "positive")
    else:
        pos = a.op("Relu", [x], None if last and max_value is None else "positive")
    if max_value is not None:
        pos = a.op("Clip", [pos, a.c("min", 0.0), a.c("max", max_value)], None if last else "clipped")
    if slope == 0:
        return pos
    below = a.op("Sub", [a.c("threshold_n", threshold), x], "below") if threshold != 0 else a.op("Neg", [x], "neg")
    neg = a.op("Mul", [a.op("Relu", [below], "negative_part"), a.c("slope", slope)], "scaled_negative")
    return a.op("Sub", [pos, neg])


@converts("ReLU")
def relu_layer(b: Builder, call: Call) -> list[Tensor]:
    c = call.config
    max_value = c.get("max_value")
    slope = float(c.get("negative_slope") or 0.0)
    threshold = float(c.get("threshold") or 0.0)
    return _elementwise(b, call, lambda x, n, axis: relu_formula(
        _Act(b, n, n, axis, call.generation), x,
        max_value=None if max_value is None else float(max_value), slope=slope, threshold=threshold))


@converts("LeakyReLU")
def leaky_relu(b: Builder, call: Call) -> list[Tensor]:
    c = call.config
    slope = c.get("negative_slope", c.get("alpha", 0.3))
    return _elementwise(b, call, lambda x, n, axis: b.node("LeakyRelu", [x], name=n, alpha=float(slope)))


@converts("ELU")
def elu(b: Builder, call: Call) -> list[Tensor]:
    alpha = float(call.config.get("alpha", 1.0))
    return _elementwise(b, call, lambda x, n, axis: b.node("Elu", [x], name=n, alpha=alpha))


@converts("ThresholdedReLU")
def thresholded_relu(b: Builder, call: Call) -> list[Tensor]:
    theta = float(call.config.get("theta", 1.0))
    return _elementwise(b, call, lambda x, n, axis: b.node("ThresholdedRelu", [x], name=n, alpha=theta))


@converts("PReLU")
def prelu(b: Builder, call: Call) -> list[Tensor]:
    alpha = call.layer.weights.get("alpha")
    if alpha is None:
        raise refuse(call, "no alpha weight")
    perm, x = b.native(call.x)
    full = np.asarray(alpha, np.float32).reshape((1, *np.shape(alpha)))
    if full.ndim != call.x.rank:
        raise refuse(call, f"alpha of shape {np.shape(alpha)} does not match an input of rank {call.x.rank}")
    slope = b.const(f"{call.name}/alpha", np.transpose(full, perm))
    return [b.tensor(call.out_shape, perm, b.node("PRelu", [x, slope], name=call.name))]


#: the logit a masked position gets before a masked Softmax (Keras' ``_large_negative_number``)
_MASKED_LOGIT = -1e9


def _masked_logits(b: Builder, call: Call, mask: Tensor) -> tuple[Perm, str]:
    """The Softmax input with masked positions pushed to -1e9, in Keras' layout (the mask
    broadcasts from the right, as in Keras): Keras 3 (and tf.keras ``robust_masking``) replace
    them (``where``), tf.keras otherwise adds ``(1 - mask) * -1e9``."""
    from onnx import TensorProto

    from .sequence import mask_value

    keras = tuple(range(call.x.rank))
    x, m = b.view(call.x, keras), mask_value(b, mask)
    low = b.const(f"{call.name}/masked_logit", np.float32(_MASKED_LOGIT))
    if call.generation >= 3 or call.config.get("robust_masking"):
        return keras, b.node("Where", [m, x, low], name=f"{call.name}/masked")
    dropped = b.node("Not", [m], name=f"{call.name}/dropped")
    adder = b.node("Mul", [b.node("Cast", [dropped], name=f"{call.name}/dropped_float", to=TensorProto.FLOAT), low],
                   name=f"{call.name}/adder")
    return keras, b.node("Add", [x, adder], name=f"{call.name}/masked")


@converts("Softmax")
def softmax(b: Builder, call: Call) -> list[Tensor]:
    mask = call.mask(0)
    if mask is None:
        return [_softmax(b, call, *b.native(call.x), call.name)]
    # Keras 3 zeroes the masked positions afterwards (a fully masked row is all 0, not uniform)
    perm, x = _masked_logits(b, call, mask)
    call.out_masks = [mask]
    if call.generation < 3:
        return [_softmax(b, call, perm, x, call.name)]
    from .sequence import mask_value

    y = _softmax(b, call, perm, x, f"{call.name}/softmax")
    zero = b.const(f"{call.name}/zero", np.float32(0.0))
    return [b.tensor(call.out_shape, perm, b.node("Where", [mask_value(b, mask), b.view(y, perm), zero], name=call.name))]


def _softmax(b: Builder, call: Call, perm: Perm, x: str, n: str) -> Tensor:
    axis = call.config.get("axis", -1)
    if isinstance(axis, int) or (isinstance(axis, list) and len(axis) == 1):
        held = position(perm, axis if isinstance(axis, int) else axis[0])
        return b.tensor(call.out_shape, perm, b.node("Softmax", [x], name=n, axis=held))
    axes = sorted({position(perm, a) for a in axis})
    top = b.reduce("ReduceMax", x, axes, keepdims=True, name=f"{n}/max")
    e = b.node("Exp", [b.node("Sub", [x, top], name=f"{n}/shifted")], name=f"{n}/exp")
    total = b.reduce("ReduceSum", e, axes, keepdims=True, name=f"{n}/sum")
    return b.tensor(call.out_shape, perm, b.node("Div", [e, total], name=n))
