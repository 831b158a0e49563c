"""Layers that are the identity at inference, small scaling layers, and Masking.

Dropouts, noise and ActivityRegularization act only in training; InputLayer and Identity pass
their input through. Rescaling is ``x * scale + offset`` (numpy broadcasting, so a list acts
on the last axis); LayerScale (ConvNeXt) multiplies by its ``gamma``; CustomScaleLayer
(InceptionResNetV2) is ``inputs[0] + inputs[1] * scale``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from . import checks
from .facts import Shape, WeightSpec, no_weights, same_shape
from .legacy import Keras1Arg as K1
from .record import CallContext, declares, defines
from .roles import INPUT, MASK_BARRIER
from .util import array_value, f64

__all__ = ["IDENTITY_CLASSES"]

IDENTITY_CLASSES = ("InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity")


#: Keras 1 argument spellings of the identities Keras 1 had
_KERAS1 = {"InputLayer": (), "GaussianNoise": (K1("stddev", "sigma", 0.0),),
           **{name: (K1("rate", "p", 0.0),) for name in ("Dropout", "SpatialDropout1D", "SpatialDropout2D",
                                                        "SpatialDropout3D", "GaussianDropout")}}

@defines(*IDENTITY_CLASSES, keras1=_KERAS1, identity=True, fold={"InputLayer": INPUT},  # the others: IDENTITY
         shape=same_shape, weights=no_weights, masking={name: "keep" for name in IDENTITY_CLASSES if name != "InputLayer"},
         fields={"InputLayer": {"batch_shape": checks.opt(checks.shape), "batch_input_shape": checks.opt(checks.shape)}})
def identity_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [f64(xs[0])]


@defines("Rescaling", shape=same_shape, weights=no_weights, masking="keep")
def rescaling_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    c = layer.config
    scale = array_value(c.get("scale", 1.0))
    offset = array_value(c.get("offset", 0.0))
    return [f64(xs[0]) * (1.0 if scale is None else scale) + (0.0 if offset is None else offset)]


def _layer_scale_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """ConvNeXt's ``gamma (projection_dim,)`` (Keras 3 leaves it unnamed: it is read by position)."""
    dim = c.get("projection_dim")
    return [WeightSpec("gamma", (dim,) if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None)]


@defines("LayerScale", shape=same_shape, weights=_layer_scale_weights)
def layer_scale_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    w = layer.weights
    gamma = w.get("gamma", next(iter(w.values())) if len(w) == 1 else None)
    if gamma is None:
        raise UnsupportedLayerError(f"layer {layer.label}: no gamma weight")
    return [f64(xs[0]) * f64(gamma)]


@defines("CustomScaleLayer", shape=same_shape, weights=no_weights)
def custom_scale_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [f64(xs[0]) + f64(xs[1]) * float(layer.config.get("scale", 1.0))]


def _lambda_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """Never run: a declared ``output_shape`` (without the batch) is trusted, else the input's shape
    (:mod:`bnconvert.readers.consistency` does not hold that guess against the weights)."""
    declared = c.get("output_shape")
    if isinstance(declared, (list, tuple)) and all(isinstance(d, (int, type(None))) for d in declared):
        return [(shapes[0][0], *declared)]
    return [shapes[0]]


def _mask_value(layer: Layer) -> float:
    value = layer.config.get("mask_value", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsupportedLayerError(f"layer {layer.label}: mask_value {value!r} is not a number")
    return float(value)


def _kept_steps(layer: Layer, x: np.ndarray) -> np.ndarray:
    """``Masking.compute_mask``: a step is kept when any feature differs from ``mask_value``
    (NaN differs from everything); the incoming mask is replaced, not combined."""
    return np.any(f64(x) != _mask_value(layer), axis=-1)


def _masking_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    return [_kept_steps(layer, xs[0])]


@defines("Masking", shape=same_shape, weights=no_weights, fold=MASK_BARRIER, masking="own", mask=_masking_masks,
         notes="masked steps: Keras 3 where(mask, x, 0); Keras 1/2 and tf.keras x * mask (inf/NaN give NaN)")
def masking_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Masked steps set to zero: Keras 3 selects (``where(mask, x, 0)``), Keras 1/2 and tf.keras
    multiply by the mask; the two differ only for ``mask_value`` infinite (``inf * 0`` is NaN)."""
    x = f64(xs[0])
    keep = _kept_steps(layer, x)[..., None]
    return [np.where(keep, x, 0.0) if ctx.generation >= 3 else x * keep]


# Read, not run: a Lambda's code is never executed.
declares("Lambda", module=__name__, shape=_lambda_shape, weights=no_weights)
