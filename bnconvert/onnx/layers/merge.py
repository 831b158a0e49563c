"""Merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate).

All operands are brought to one layout: the one most of them already have (ties: the first
operand's), so a residual Add of two channels-first tensors stays channels-first. An operand of
lower rank is aligned the Keras way (``expand_dims`` at axis 1 until the ranks agree).

Masks differ between Keras generations, and both are followed (by the generation that wrote
the file). Keras 3: the output mask of Add, Subtract, Average, Multiply, Maximum and Minimum is
the OR of the input masks, none when an input has none; Multiply treats masked entries as 1 and
zeroes the result outside the output mask, Maximum and Minimum take a masked entry from the
other operands (``_apply_merge_op_and_or_mask``); Concatenate broadcasts each mask to its
input (all True for an input without one), concatenates and takes ``any`` over the last axis.
tf.keras (and Keras 2): values ignore masks; the output mask is the AND of the masks given
(Concatenate: masks expanded by a unit last axis, ``all`` over the last axis after the concat).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from onnx import TensorProto

from ..builder import Builder, Call, Tensor
from ..layout import Perm, identity, position
from ..registry import converts, refuse
from .sequence import bool_tensor, mask_value

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


_BINARY = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Maximum": "Max", "Minimum": "Min"}
_VARIADIC = {"Add": "Sum", "Average": "Mean", "Maximum": "Max", "Minimum": "Min"}


@converts("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def elementwise(b: Builder, call: Call) -> list[Tensor]:
    cls = call.layer.class_name
    if any(m is not None for m in call.masks):
        masks = [call.mask(i) for i in range(len(call.inputs))]
        call.out_masks = [_combined_mask(b, call, masks)]
        if call.generation >= 3 and cls in ("Multiply", "Maximum", "Minimum") and len(call.inputs) > 1:
            return [_masked_values(b, call, masks)]
    perm, names = common_layout(b, call.inputs, call.name)
    shape = call.out_shape
    if len(names) == 1:
        return [b.tensor(shape, perm, names[0])]
    if cls == "Subtract" and len(names) != 2:
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
    if any(m is not None for m in call.masks):
        call.out_masks = [_concatenated_mask(b, call, axis)]
    return [b.tensor(call.out_shape, perm, y)]


# -- masks -------------------------------------------------------------------------------------
def _combined_mask(b: Builder, call: Call, masks: list[Tensor | None]) -> Tensor | None:
    """The output mask of an element-wise merge: Keras 3 ORs the masks (none if one is missing),
    tf.keras ANDs the masks it was given."""
    if call.generation >= 3:
        if any(m is None for m in masks):
            return None
        op = "Or"
    else:
        masks = [m for m in masks if m is not None]
        op = "And"
    y = mask_value(b, masks[0])  # type: ignore[arg-type]
    for i, m in enumerate(masks[1:], start=1):
        y = b.node(op, [y, mask_value(b, m)], name=f"{call.name}/mask" if i == len(masks) - 1 else f"{call.name}/mask{i}")  # type: ignore[arg-type]
    return bool_tensor(b, masks[0].shape, y)  # type: ignore[union-attr]


def _masked_values(b: Builder, call: Call, masks: list[Tensor | None]) -> Tensor:
    """Keras 3 Multiply, Maximum and Minimum of masked operands, step by step as Keras computes
    them, in Keras' layout (each mask gets a unit last axis and broadcasts over the features)."""
    cls = call.layer.class_name
    rank = max(t.rank for t in call.inputs)
    xs = [b.view(_raise_rank(b, t, rank, f"{call.name}/operand{i}"), identity(rank)) for i, t in enumerate(call.inputs)]
    axes = b.ints(f"{call.name}/feature_axis", [-1])
    ms = [None if m is None else b.node("Unsqueeze", [mask_value(b, m), axes], name=f"{call.name}/mask{i}_expand")
          for i, m in enumerate(masks)]
    if cls == "Multiply":
        every = all(m is not None for m in ms)
        one = b.const(f"{call.name}/one", np.float32(1.0))
        product: str | None = None
        out_mask: str | None = None
        for i, (x, m) in enumerate(zip(xs, ms)):
            if m is not None:
                x = b.node("Where", [m, x, one], name=f"{call.name}/unmasked{i}")
                if every:
                    out_mask = m if out_mask is None else b.node("Or", [out_mask, m], name=f"{call.name}/or{i}")
            product = x if product is None else b.node("Mul", [product, x], name=f"{call.name}/product{i}")
        assert product is not None
        if out_mask is not None:
            product = b.node("Where", [out_mask, product, b.const(f"{call.name}/zero", np.float32(0.0))], name=call.name)
        return b.tensor(call.out_shape, identity(rank), product)
    op = "Max" if cls == "Maximum" else "Min"
    y, out_mask = xs[0], ms[0]
    for i, (x, m) in enumerate(zip(xs[1:], ms[1:]), start=1):
        if m is not None:
            x = b.node("Where", [m, x, y], name=f"{call.name}/fill{i}")
        if out_mask is not None:
            y = b.node("Where", [out_mask, y, x], name=f"{call.name}/keep{i}")
        out_mask = b.node("Or", [out_mask, m], name=f"{call.name}/or{i}") if m is not None and out_mask is not None else None
        y = b.node(op, [y, x], name=call.name if i == len(xs) - 1 else f"{call.name}/step{i}")
    return b.tensor(call.out_shape, identity(rank), y)


def _concatenated_mask(b: Builder, call: Call, axis: int) -> Tensor:
    """Concatenate's output mask: per input, its mask brought to the input's rank (Keras 3:
    broadcast to the input's shape; tf.keras: a unit last axis) or all True without one;
    concatenated on the layer's axis, then ``any`` (Keras 3) or ``all`` (tf.keras) over the last axis."""
    keras3 = call.generation >= 3
    rank = call.x.rank
    parts = []
    for i, t in enumerate(call.inputs):
        m = call.mask(i)
        name = f"{call.name}/mask{i}"
        full = b.node("Shape", [b.view(t, identity(t.rank))], name=f"{name}/input_shape")
        if m is None:
            parts.append(b.node("Expand", [b.const(f"{name}/true", np.bool_(True), np.bool_), full], name=f"{name}/ones"))
            continue
        value = mask_value(b, m)
        if m.rank < rank:
            value = b.node("Unsqueeze", [value, b.ints(f"{name}/axes", list(range(m.rank, rank)))], name=f"{name}/expand")
            if keras3:
                value = b.node("Expand", [value, full], name=f"{name}/broadcast")
        parts.append(value)
    joined = b.node("Concat", parts, name=f"{call.name}/masks", axis=axis % rank)
    as_float = b.node("Cast", [joined], name=f"{call.name}/masks_float", to=TensorProto.FLOAT)
    reduced = b.reduce("ReduceMax" if keras3 else "ReduceMin", as_float, [rank - 1], keepdims=False,
                       name=f"{call.name}/mask_{'any' if keras3 else 'all'}")
    return bool_tensor(b, call.out_shape[:-1], b.node("Cast", [reduced], name=f"{call.name}/mask", to=TensorProto.BOOL))
