"""Merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate) and the Keras 3
operation layers of the same names (``x + 3.0`` in a functional model, which also carry constants).

All operands are brought to one layout: the one most of them already have (ties: the first
operand's), so a residual Add of two channels-first tensors stays channels-first. An operand of
lower rank is aligned the Keras way (``expand_dims`` at axis 1 until the ranks agree).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..builder import Builder, Call, Tensor
from ..layout import Perm, identity, position
from ..registry import converts, refuse

__all__ = ["common_layout", "elementwise", "concatenate"]


def _raise_rank(b: Builder, t: Tensor, rank: int, name: str) -> Tensor:
    if t.rank == rank:
        return t
    axes = list(range(1, rank - t.rank + 1))
    y = b.node("Unsqueeze", [b.view(t, identity(t.rank)), b.ints(f"{name}/axes", axes)], name=f"{name}/expand")
    return b.tensor((t.shape[0], *([1] * len(axes)), *t.shape[1:]), identity(rank), y)


def common_layout(b: Builder, tensors: list[Tensor], name: str) -> tuple[Perm, list[str]]:
    """One layout for all ``tensors`` and their ONNX names in it."""
    rank = max(t.rank for t in tensors)
    tensors = [_raise_rank(b, t, rank, f"{name}/operand{i}") for i, t in enumerate(tensors)]
    for t in tensors:
        b.native(t)
    votes = Counter(perm for t in tensors for perm in t.views)
    first = next(iter(tensors[0].views))
    best = max(votes.values())
    perm = first if votes[first] == best else next(p for p in votes if votes[p] == best)
    return perm, [b.view(t, perm) for t in tensors]


def _operands(b: Builder, call: Call) -> tuple[Perm, list[str], tuple]:
    perm, names = common_layout(b, call.inputs, call.name)
    if not call.constants:
        return perm, names, call.out_shape
    it = iter(names)
    ordered = []
    for i, value in enumerate(call.constants):
        ordered.append(next(it) if value is None else b.const(f"{call.name}/constant{i}", np.float32(value)))
    return perm, ordered, call.out_shape


_BINARY = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Divide": "Div", "TrueDivide": "Div",
           "Maximum": "Max", "Minimum": "Min"}
_VARIADIC = {"Add": "Sum", "Average": "Mean", "Maximum": "Max", "Minimum": "Min"}


@converts("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Divide", "TrueDivide")
def elementwise(b: Builder, call: Call) -> list[Tensor]:
    cls = call.layer.class_name
    perm, names, shape = _operands(b, call)
    if len(names) == 1:
        return [b.tensor(shape, perm, names[0])]
    if cls in ("Subtract", "Divide", "TrueDivide") and len(names) != 2:
        raise refuse(call, f"expects 2 inputs, got {len(names)}")
    if cls == "Average" or (len(names) > 2 and cls in _VARIADIC):
        return [b.tensor(shape, perm, b.node(_VARIADIC[cls], names, name=call.name))]
    y = names[0]
    for i, other in enumerate(names[1:], start=2):
        last = i == len(names)
        y = b.node(_BINARY[cls], [y, other], name=call.name if last else f"{call.name}/step{i - 1}")
    return [b.tensor(shape, perm, y)]


@converts("Concatenate")
def concatenate(b: Builder, call: Call) -> list[Tensor]:
    if any(t.rank != call.x.rank for t in call.inputs):
        raise refuse(call, "inputs of different ranks")
    perm, names = common_layout(b, call.inputs, call.name)
    axis = int(call.config.get("axis", -1))
    y = b.node("Concat", names, name=call.name, axis=position(perm, axis))
    return [b.tensor(call.out_shape, perm, y)]
