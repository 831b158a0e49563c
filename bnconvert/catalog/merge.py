"""Merge layers, in float64.

Element-wise merges broadcast like numpy. (The Keras 3 operation layers of the same meaning,
``x + 3.0``, are ``keras.ops.add`` ... in :mod:`.operations`.)

Masks: Keras 3's element-wise merges give no mask when any input has none, else the OR of the
masks; Keras 1/2 and tf.keras the AND of the masks given (none when none is). Values ignore the
masks except in Keras 3's Multiply (a masked entry counts as 1, and the product is 0 outside the
output mask when every input has one) and Maximum/Minimum (a masked entry takes the running
result's value, and the other way round: ``_apply_merge_op_and_or_mask``). Concatenate concatenates per-input masks (all True for an input without
one, broadcast over the features) on its axis and reduces the last axis: Keras 3 with ``any``,
tf.keras with ``all``.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np

from ..model import Layer
from . import checks
from .facts import Shape, broadcast, no_weights
from .record import CallContext, defines
from .util import f64

__all__: list[str] = []

_OPS = {
    "Add": lambda args: reduce(np.add, args),
    "Subtract": lambda args: args[0] - args[1],
    "Multiply": lambda args: reduce(np.multiply, args),
    "Average": lambda args: reduce(np.add, args) / len(args),
    "Maximum": lambda args: reduce(np.maximum, args),
    "Minimum": lambda args: reduce(np.minimum, args),
}


def _elementwise_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """Broadcasting: ``(N, H, W, C) * (N, 1, 1, C)`` is ``(N, H, W, C)`` (squeeze-and-excite),
    also when ``H``, ``W`` are unknown (MobileNetV3 at any input size)."""
    return [broadcast(shapes)]


def _concatenate_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    x = shapes[0]
    axis = c.get("axis", -1) % len(x)
    dims = [s[axis] for s in shapes]
    total = None if any(d is None for d in dims) else sum(dims)
    return [(*x[:axis], total, *x[axis + 1:])]


def _merge_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """``Merge.compute_mask`` of the file's generation (see the module docstring)."""
    masks = [ctx.mask(i) for i in range(len(xs))]
    given = [np.asarray(m, bool) for m in masks if m is not None]
    if ctx.generation >= 3:
        return [reduce(np.logical_or, given) if given and len(given) == len(masks) else None]
    return [reduce(np.logical_and, given) if given else None]


def _concatenate_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """``Concatenate.compute_mask`` of the file's generation (see the module docstring)."""
    masks = [ctx.mask(i) for i in range(len(xs))]
    if all(m is None for m in masks):
        return [None]
    parts = []
    for x, m in zip(xs, masks):
        if m is None:
            parts.append(np.ones(np.shape(x), bool))
        elif np.ndim(m) < np.ndim(x):
            m = np.asarray(m, bool)[..., None]
            parts.append(np.broadcast_to(m, np.shape(x)) if ctx.generation >= 3 else m)
        else:
            parts.append(np.asarray(m, bool))
    joined = np.concatenate(parts, axis=int(layer.config.get("axis", -1)))
    return [np.any(joined, axis=-1) if ctx.generation >= 3 else np.all(joined, axis=-1)]


_MERGE_LAYERS = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")


@defines(*_OPS, shape=_elementwise_shape, weights=no_weights,
         masking=dict.fromkeys(_MERGE_LAYERS, "own"), mask=dict.fromkeys(_MERGE_LAYERS, _merge_masks))
def merge_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    if ctx.masks is not None and ctx.generation >= 3:
        if layer.class_name == "Multiply":
            return [_masked_multiply(xs, ctx)]
        if layer.class_name in ("Maximum", "Minimum"):
            return [_masked_extreme(np.maximum if layer.class_name == "Maximum" else np.minimum, xs, ctx)]
    return [np.asarray(_OPS[layer.class_name]([f64(x) for x in xs]), dtype=np.float64)]


def _entry_mask(mask: np.ndarray | None, x: np.ndarray) -> np.ndarray | None:
    """A ``(N, T)`` mask broadcast to ``x``'s shape (``expand_dims(mask, -1)``), as Keras 3 does."""
    return None if mask is None else np.broadcast_to(np.asarray(mask, bool)[..., None], np.shape(x))


def _masked_multiply(xs: list[np.ndarray], ctx: CallContext) -> np.ndarray:
    """Keras 3 ``Multiply._merge_function`` with masks."""
    masks = [_entry_mask(ctx.mask(i), x) for i, x in enumerate(xs)]
    present = [m for m in masks if m is not None]
    out_mask = reduce(np.logical_or, present) if len(present) == len(masks) else None
    factors = [f64(x) if m is None else np.where(m, f64(x), 1.0) for x, m in zip(xs, masks)]
    out = reduce(np.multiply, factors)
    return np.where(out_mask, out, 0.0) if out_mask is not None else out


def _masked_extreme(op: Any, xs: list[np.ndarray], ctx: CallContext) -> np.ndarray:
    """Keras 3 ``Merge._apply_merge_op_and_or_mask`` (Maximum, Minimum) with masks."""
    out, out_mask = f64(xs[0]), _entry_mask(ctx.mask(0), xs[0])
    for i, x in enumerate(xs[1:], start=1):
        x, mask = f64(x), _entry_mask(ctx.mask(i), x)
        if mask is not None:
            x = np.where(mask, x, out)
        if out_mask is not None:
            out = np.where(out_mask, out, x)
        out_mask = np.logical_or(out_mask, mask) if mask is not None and out_mask is not None else None
        out = op(out, x)
    return out


@defines("Concatenate", shape=_concatenate_shape, weights=no_weights, fields={"axis": checks.one_axis},
         masking="own", mask=_concatenate_masks)
def concatenate_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [np.concatenate([f64(x) for x in xs], axis=int(layer.config.get("axis", -1)))]
