"""Pooling in float64, with TensorFlow's padding, which Keras uses.

``same`` pads like a convolution (odd pixel after); the padded positions never count: a max
pool ignores them, an average pool divides by the number of real pixels in each window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..model import Layer
from .checks import FORMAT, POOL, boolean, pos_ints
from .facts import (
    Shape,
    ShapeRule,
    assemble,
    conv_output_length,
    no_weights,
    settings,
    split_spatial,
)
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .roles import pool
from .util import channels_first, f64, from_last, ntuple, same_pads, to_last

__all__ = ["adaptive_bins", "pool_nd"]


def pool_nd(x: np.ndarray, size: tuple[int, ...], strides: tuple[int, ...], padding: str, kind: str) -> np.ndarray:
    """Max or average pooling of ``x`` (N, *S, C)."""
    n = len(size)
    if padding == "same":
        pads = [same_pads(x.shape[1 + i], size[i], strides[i]) for i in range(n)]
        if any(a or b for a, b in pads):
            fill = -np.inf if kind == "max" else 0.0
            x = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
    else:
        pads = [(0, 0)] * n
    view = sliding_window_view(x, size, axis=tuple(range(1, n + 1)))
    view = view[(slice(None),) + tuple(slice(None, None, s) for s in strides)]  # (N, *out, C, *size)
    window = tuple(range(-n, 0))
    if kind == "max":
        return view.max(axis=window)
    total = view.sum(axis=window)
    if not any(a or b for a, b in pads):
        return total / float(np.prod(size))
    ones = np.pad(np.ones(tuple(x.shape[1 + i] - sum(pads[i]) for i in range(n))), pads)  # 1 on real pixels
    counts = sliding_window_view(ones, size)[tuple(slice(None, None, s) for s in strides)].sum(axis=window)
    return total / counts[(None, Ellipsis, None)]


def _pool_shape(n: int) -> ShapeRule:
    """Keras' pooling output: a convolution's length with ``pool_size`` as kernel, ``strides``
    defaulting to it."""

    def rule(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != n + 2:
            raise ValueError(f"rank-{len(x)} input")
        spatial, channels = split_spatial(x, c)
        size = settings(c.get("pool_size", 2), n)
        strides = settings(c.get("strides") or size, n)
        out = [conv_output_length(s, p, c.get("padding", "valid"), t) for s, p, t in zip(spatial, size, strides)]
        return [assemble(x[0], out, channels, c)]

    return rule


def _global_pool_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    spatial, channels = split_spatial(shapes[0], c)
    if c.get("keepdims"):
        return [assemble(shapes[0][0], [1] * len(spatial), channels, c)]
    return [(shapes[0][0], channels)]


_POOLS = {f"{kind}Pooling{n}D": n for kind in ("Max", "Average") for n in (1, 2, 3)}


_K1_POOL1D = (K1("pool_size", "pool_length", 2), K1("strides", "stride", None), K1("padding", "border_mode", "valid"))
_K1_POOL = (K1("pool_size", "pool_size", 2), K1("strides", "strides", None), K1("padding", "border_mode", "valid"))
#: Keras 1 argument spellings (the reader makes ``strides`` default to the pool size and
#: ``data_format`` from ``dim_ordering``)
_KERAS1 = {"MaxPooling1D": _K1_POOL1D, "AveragePooling1D": _K1_POOL1D, "MaxPooling2D": _K1_POOL, "MaxPooling3D": _K1_POOL,
           "AveragePooling2D": _K1_POOL, "AveragePooling3D": _K1_POOL}

@defines("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", keras1=_KERAS1,
         shape={name: _pool_shape(n) for name, n in _POOLS.items()}, weights=no_weights, fields=POOL,
         fold={**dict.fromkeys(("MaxPooling1D", "MaxPooling2D", "MaxPooling3D"), pool(max=True)),
               **dict.fromkeys(("AveragePooling1D", "AveragePooling2D", "AveragePooling3D"), pool(max=False))})
def pooling_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    c = layer.config
    n = int(layer.class_name[-2])
    first = channels_first(c)
    size = ntuple(c.get("pool_size", 2), n)
    strides = ntuple(c.get("strides") or size, n)
    kind = "max" if layer.class_name.startswith("Max") else "average"
    x = to_last(f64(xs[0]), first)
    return [from_last(pool_nd(x, size, strides, str(c.get("padding", "valid")).lower(), kind), first)]


@defines("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
         "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", keras1=True,
         shape=_global_pool_shape, weights=no_weights, fields={"data_format": FORMAT, "keepdims": boolean},
         fold={**dict.fromkeys(("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D"), pool(max=True, global_=True)),
               **dict.fromkeys(("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D"),
                               pool(max=False, global_=True))},
         masking={"GlobalAveragePooling1D": "own"}, mask={"GlobalAveragePooling1D": lambda layer, xs, ctx: [None]})
def global_pooling_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Max or mean over every spatial axis; ``keepdims`` keeps them as size 1. A masked
    GlobalAveragePooling1D (the only global pooling that supports masks) averages the unmasked
    steps only, ``sum(x * mask) / sum(mask)`` as every Keras does (a fully masked row divides
    0 by 0), and its output carries no mask."""
    c = layer.config
    x = f64(xs[0])
    spatial = tuple(range(2, x.ndim)) if channels_first(c) else tuple(range(1, x.ndim - 1))
    keep = bool(c.get("keepdims", False))
    mask = ctx.mask(0) if layer.class_name == "GlobalAveragePooling1D" else None
    if mask is not None:
        weight = np.expand_dims(np.asarray(mask, np.float64), 1 if channels_first(c) else 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return [np.sum(np.where(weight > 0, x, 0.0), axis=spatial, keepdims=keep)
                    / np.sum(weight, axis=spatial, keepdims=keep)]
    fn = np.max if layer.class_name.startswith("GlobalMax") else np.mean
    return [fn(x, axis=spatial, keepdims=keep)]


def adaptive_bins(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """Keras 3's adaptive pooling windows (PyTorch's): bin ``i`` covers
    ``[floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))``."""
    return [(min((i * n_in) // n_out, n_in - 1), min(-(-((i + 1) * n_in) // n_out), n_in)) for i in range(n_out)]


def _adaptive_rank(class_name: str) -> int:
    return int(class_name[-2])


def _adaptive_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """``output_size`` replaces the spatial axes (Keras' ``compute_output_shape``)."""
    x = shapes[0]
    n = len(x) - 2
    size = settings(c.get("output_size"), n)
    if len(size) != n or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"output_size {c.get('output_size')!r}")
    _, channels = split_spatial(x, c)
    return [assemble(x[0], size, channels, c)]


_ADAPTIVE = tuple(f"Adaptive{kind}Pooling{n}D" for kind in ("Average", "Max") for n in (1, 2, 3))


@defines(*_ADAPTIVE, shape=_adaptive_shape, weights=no_weights,
         fields={"output_size": pos_ints, "data_format": FORMAT})
def adaptive_pooling_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras 3 adaptive pooling: the mean or max of each :func:`adaptive_bins` window, axis by
    axis (a box's mean or max is that of its rows' means or maxima)."""
    c = layer.config
    n = _adaptive_rank(layer.class_name)
    first = channels_first(c)
    size = ntuple(c.get("output_size"), n)
    x = to_last(f64(xs[0]), first)
    reduce = np.max if "Max" in layer.class_name else np.mean
    for axis, out in zip(range(1, n + 1), size):
        parts = [reduce(np.take(x, range(a, b), axis=axis), axis=axis, keepdims=True) for a, b in adaptive_bins(x.shape[axis], out)]
        x = np.concatenate(parts, axis=axis)
    return [from_last(x, first)]
