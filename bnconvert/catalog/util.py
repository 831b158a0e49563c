"""Small helpers the family modules share: config values as tuples, layouts, Keras padding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ntuple", "pairs", "channels_first", "to_last", "from_last", "same_pads", "array_value", "f64"]


def f64(x: Any) -> np.ndarray:
    """``x`` as a float64 array (no copy when it already is one)."""
    return np.asarray(x, dtype=np.float64)


def ntuple(value: Any, n: int) -> tuple[int, ...]:
    """A Keras int-or-tuple setting (``kernel_size``, ``strides`` ...) as ``n`` ints."""
    if isinstance(value, (int, float)):
        return (int(value),) * n
    values = tuple(int(v) for v in value)
    return values * n if len(values) == 1 else values


def pairs(value: Any, n: int) -> list[tuple[int, int]]:
    """A ZeroPadding/Cropping setting as ``n`` (before, after) pairs: ``1``, ``(1, 2)`` (one per
    axis, symmetric; for one axis ``(before, after)``) or ``((1, 2), (3, 4))``."""
    if isinstance(value, (int, float)):
        return [(int(value), int(value))] * n
    value = list(value)
    if n == 1 and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return [(int(value[0]), int(value[1]))]
    out = []
    for v in value:
        if isinstance(v, (int, float)):
            out.append((int(v), int(v)))
        else:
            a, b = v
            out.append((int(a), int(b)))
    return out


def channels_first(config: dict[str, Any]) -> bool:
    return config.get("data_format") == "channels_first"


def to_last(x: np.ndarray, first: bool) -> np.ndarray:
    """A channels_first tensor ``(N, C, *S)`` viewed as ``(N, *S, C)`` (no copy)."""
    return np.moveaxis(x, 1, -1) if first and x.ndim > 2 else x


def from_last(y: np.ndarray, first: bool) -> np.ndarray:
    """The inverse of :func:`to_last`."""
    return np.moveaxis(y, -1, 1) if first and y.ndim > 2 else y


def same_pads(size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding, which Keras uses: output ``ceil(size / stride)``, the odd
    pixel of padding after."""
    k_eff = (k - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def array_value(value: Any) -> np.ndarray | None:
    """A number, a list, or Keras 3's serialized numpy array (``{"class_name": "__numpy__",
    "config": {"value": ...}}``) as float64; None when absent."""
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("value")
    if value is None:
        return None
    return np.asarray(value, dtype=np.float64)


def axes_of(value: Any, rank: int) -> list[int]:
    """A Keras ``axis`` setting (int, list, tuple) as sorted non-negative axes."""
    items: Sequence[Any] = [value] if isinstance(value, (int, float)) else list(value)
    return sorted(int(a) % rank for a in items)
