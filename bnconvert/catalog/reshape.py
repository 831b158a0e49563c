"""Flatten, Reshape, Permute, RepeatVector: data movement only (batch axis untouched)."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np

from ..model import Layer
from .checks import FORMAT, dims, pos_int, target_shape
from .facts import Shape, no_weights
from .record import CallContext, defines
from .roles import FLATTEN, RESHAPE
from .util import channels_first, f64

__all__ = ["flatten_layer"]


def _flatten_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    rest = shapes[0][1:]
    return [(shapes[0][0], None if any(s is None for s in rest) else math.prod(rest))]


def _reshape_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """``target_shape`` after the batch; its one ``-1`` is what the input's size leaves."""
    x = shapes[0]
    target = [None if t is None else int(t) for t in c["target_shape"]]
    if -1 in target:
        known = math.prod(cast("list[int]", [t for t in target if t != -1]))  # checks.target_shape: no None
        total = None if any(s is None for s in x[1:]) else math.prod(x[1:])
        target = [(total // known if total is not None and known else None) if t == -1 else t for t in target]
    return [(x[0], *target)]


def _permute_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    return [(shapes[0][0], *(shapes[0][d] for d in c["dims"]))]


def _repeat_vector_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    return [(shapes[0][0], c["n"], *shapes[0][1:])]


@defines("Flatten", keras1=True, fold=FLATTEN, shape=_flatten_shape, weights=no_weights, fields={"data_format": FORMAT})
def flatten_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Row-major flattening; a channels_first input is first made channels_last (Keras does so)."""
    x = f64(xs[0])
    if channels_first(layer.config) and x.ndim > 2:
        x = np.moveaxis(x, 1, -1)
    return [x.reshape(x.shape[0], -1)]


@defines("Reshape", keras1=True, fold=RESHAPE, shape=_reshape_shape, weights=no_weights,
         fields={"target_shape": target_shape})
def reshape_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    x = f64(xs[0])
    target = [-1 if t is None else int(t) for t in layer.config.get("target_shape") or []]
    return [x.reshape(x.shape[0], *target)]


@defines("Permute", keras1=True, shape=_permute_shape, weights=no_weights, fields={"dims": dims})
def permute_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``dims`` are 1-based and leave the batch axis in place."""
    dims = [int(d) for d in layer.config.get("dims") or []]
    return [np.transpose(f64(xs[0]), (0, *dims))]


@defines("RepeatVector", keras1=True, shape=_repeat_vector_shape, weights=no_weights, fields={"n": pos_int})
def repeat_vector_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``(N, F)`` -> ``(N, n, F)``."""
    x = f64(xs[0])
    return [np.repeat(x[:, None, :], int(layer.config.get("n", 1)), axis=1)]
