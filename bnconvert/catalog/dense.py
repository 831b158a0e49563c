"""Dense: ``activation(x @ kernel + bias)`` over the last axis of an input of any rank; Embedding:
a row lookup of integer ids.

Masks: Dense keeps its input's mask (``supports_masking`` with the default ``compute_mask``).
Embedding makes one with ``mask_zero``: ``ids != 0``, compared on the ids as they arrive, before
Keras casts non-integer ids to int32 (so an id 0.5 looks up row 0 but is not masked); without
``mask_zero`` its output carries no mask, whatever its input carried.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BnconvertError
from ..model import Layer
from .activations import apply_activation
from .checks import activation, boolean, pos_int
from .facts import Shape, WeightSpec, input_channels, positive
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .roles import producer
from .util import f64

__all__ = ["dense_layer", "embedding_layer"]


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
         fields={"units": pos_int, "use_bias": boolean, "activation": activation}, fold=producer(("kernel", -1), ("kernel", -2), windowed=False),
         masking="keep")
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


def _embedding_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """``Embedding.compute_mask``: ``ids != 0`` with ``mask_zero``, else none."""
    return [np.asarray(xs[0]) != 0 if layer.config.get("mask_zero") else None]


@defines("Embedding", shape=_embedding_shape, weights=_embedding_weights, masking="own", mask=_embedding_masks,
         notes="float ids are cast to int32 (truncated toward zero) as Keras does; the mask compares the uncast ids")
def embedding_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``embeddings[ids]``: ids that are not int32/int64 are cast to int32 first (truncation toward
    zero, Keras' ``ops.cast``); an id outside ``[0, input_dim)`` is refused (TensorFlow's gather
    raises on CPU, where other backends clamp or return zeros)."""
    ids = np.asarray(xs[0])
    if ids.dtype not in (np.int32, np.int64):
        with np.errstate(invalid="ignore"):
            ids = ids.astype(np.int32)
    table = f64(layer.weights["embeddings"])
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise BnconvertError(f"layer {layer.label}: id {bad} is outside the table of {table.shape[0]} rows")
    return [table[ids]]
