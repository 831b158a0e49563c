"""Merge layers (and the Keras 3 operation layers sharing their names), in float64.

Element-wise merges broadcast like numpy. A Keras 3 operation layer (``x + 3.0``, ``2.0 - x``)
records its positional arguments; the constants among them come in the call's context, the
tensors in order.

Masks (the values never depend on them): Keras 3's element-wise merges give no mask when any
input has none, else the OR of the masks; Keras 1/2 and tf.keras the AND of the masks given
(none when none is). Concatenate concatenates per-input masks (all True for an input without
one, broadcast over the features) on its axis and reduces the last axis: Keras 3 with ``any``,
tf.keras with ``all``. Keras 3 operation layers (``x + y`` on tensors) drop masks; bnconvert
cannot tell them from the merge layer of the same name and applies the merge layer's rule.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np

from ..model import Layer
from . import checks
from .facts import Shape, broadcast, no_weights
from .record import CallContext, declares, defines
from .util import f64

__all__ = ["operands"]


def operands(xs: list[np.ndarray], constants: Any) -> list[np.ndarray]:
    """The call's arguments in order: tensors from ``xs``, numbers from ``constants``."""
    if not constants:
        return [f64(x) for x in xs]
    tensors = iter(xs)
    return [f64(next(tensors)) if c is None else np.float64(c) for c in constants]


_OPS = {
    "Add": lambda args: reduce(np.add, args),
    "Subtract": lambda args: args[0] - args[1],
    "Multiply": lambda args: reduce(np.multiply, args),
    "Average": lambda args: reduce(np.add, args) / len(args),
    "Maximum": lambda args: reduce(np.maximum, args),
    "Minimum": lambda args: reduce(np.minimum, args),
    "Divide": lambda args: args[0] / args[1],
    "TrueDivide": lambda args: args[0] / args[1],
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
         masking={name: "own" for name in _MERGE_LAYERS}, mask={name: _merge_masks for name in _MERGE_LAYERS})
def merge_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [np.asarray(_OPS[layer.class_name](operands(xs, ctx.constants)), dtype=np.float64)]


@defines("Concatenate", shape=_concatenate_shape, weights=no_weights, fields={"axis": checks.one_axis},
         masking="own", mask=_concatenate_masks)
def concatenate_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [np.concatenate([f64(x) for x in xs], axis=int(layer.config.get("axis", -1)))]


declares("Dot", module=__name__, weights=no_weights)  # read, not run (no shape rule yet); its output has no mask
