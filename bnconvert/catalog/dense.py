"""Dense: ``activation(x @ kernel + bias)`` over the last axis of an input of any rank."""

from __future__ import annotations

import numpy as np

from ..model import Layer
from .activations import apply_activation
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .roles import producer
from .util import f64

__all__ = ["dense_layer"]


#: Keras 1 argument spellings (the reader turns ``input_dim`` into an input shape)
_KERAS1 = {"Dense": (K1("units", "output_dim"), K1("activation", "activation", "linear"), K1("use_bias", "bias", True))}

@defines("Dense", keras1=_KERAS1, fold=producer(("kernel", -1), ("kernel", -2), windowed=False))
def dense_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Kernel ``(in, units)``; a rank > 2 input is contracted on its last axis only."""
    y = np.matmul(f64(xs[0]), f64(layer.weights["kernel"]))
    bias = layer.weights.get("bias")
    if bias is not None and layer.config.get("use_bias", True) is not False:
        y += bias
    return [apply_activation(layer, y, ctx, in_place=True)]
