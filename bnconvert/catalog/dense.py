"""Dense: ``activation(x @ kernel + bias)`` over the last axis of an input of any rank; Embedding
(read, not run: a table lookup of integer inputs, outside what bnconvert exports)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Layer
from .activations import apply_activation
from .checks import activation, boolean, pos_int
from .facts import Shape, WeightSpec, input_channels, positive
from .legacy import Keras1Arg as K1
from .record import CallContext, declares, defines
from .roles import producer
from .util import f64

__all__ = ["dense_layer"]


def _dense_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    return [(*shapes[0][:-1], c["units"])]


def _dense_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``kernel (in, units)``, ``bias (units,)``."""
    units = positive(c, "units")
    inp = input_channels({}, shapes)  # the last axis, whatever the data format
    return [WeightSpec("kernel", (inp, units)), *([WeightSpec("bias", (units,))] if c.get("use_bias", True) else [])]


#: Keras 1 argument spellings (the reader turns ``input_dim`` into an input shape)
_KERAS1 = {"Dense": (K1("units", "output_dim"), K1("activation", "activation", "linear"), K1("use_bias", "bias", True))}

@defines("Dense", keras1=_KERAS1, shape=_dense_shape, weights=_dense_weights,
         fields={"units": pos_int, "use_bias": boolean, "activation": activation}, fold=producer(("kernel", -1), ("kernel", -2), windowed=False))
def dense_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Kernel ``(in, units)``; a rank > 2 input is contracted on its last axis only."""
    y = np.matmul(f64(xs[0]), f64(layer.weights["kernel"]))
    bias = layer.weights.get("bias")
    if bias is not None and layer.config.get("use_bias", True) is not False:
        y += bias
    return [apply_activation(layer, y, ctx, in_place=True)]


def _embedding_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    return [(*shapes[0], c["output_dim"])]


def _embedding_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    return [WeightSpec("embeddings", (positive(c, "input_dim"), positive(c, "output_dim")))]


declares("Embedding", module=__name__, shape=_embedding_shape, weights=_embedding_weights)
