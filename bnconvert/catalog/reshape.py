"""Flatten, Reshape, Permute, RepeatVector: data movement only (batch axis untouched)."""

from __future__ import annotations

import numpy as np

from ..model import Layer
from .record import CallContext, defines
from .roles import FLATTEN, RESHAPE
from .util import channels_first, f64

__all__ = ["flatten_layer"]


@defines("Flatten", keras1=True, fold=FLATTEN)
def flatten_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Row-major flattening; a channels_first input is first made channels_last (Keras does so)."""
    x = f64(xs[0])
    if channels_first(layer.config) and x.ndim > 2:
        x = np.moveaxis(x, 1, -1)
    return [x.reshape(x.shape[0], -1)]


@defines("Reshape", keras1=True, fold=RESHAPE)
def reshape_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    x = f64(xs[0])
    target = [-1 if t is None else int(t) for t in layer.config.get("target_shape") or []]
    return [x.reshape(x.shape[0], *target)]


@defines("Permute", keras1=True)
def permute_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``dims`` are 1-based and leave the batch axis in place."""
    dims = [int(d) for d in layer.config.get("dims") or []]
    return [np.transpose(f64(xs[0]), (0, *dims))]


@defines("RepeatVector", keras1=True)
def repeat_vector_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``(N, F)`` -> ``(N, n, F)``."""
    x = f64(xs[0])
    return [np.repeat(x[:, None, :], int(layer.config.get("n", 1)), axis=1)]
