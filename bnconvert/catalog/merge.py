"""Merge layers (and the Keras 3 operation layers sharing their names), in float64.

Element-wise merges broadcast like numpy. A Keras 3 operation layer (``x + 3.0``, ``2.0 - x``)
records its positional arguments; the constants among them come in the call's context, the
tensors in order.
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


@defines(*_OPS, shape=_elementwise_shape, weights=no_weights)
def merge_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [np.asarray(_OPS[layer.class_name](operands(xs, ctx.constants)), dtype=np.float64)]


@defines("Concatenate", shape=_concatenate_shape, weights=no_weights, fields={"axis": checks.one_axis})
def concatenate_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [np.concatenate([f64(x) for x in xs], axis=int(layer.config.get("axis", -1)))]


declares("Dot", module=__name__, weights=no_weights)  # read, not run (no shape rule yet)
