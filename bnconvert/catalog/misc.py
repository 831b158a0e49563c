"""Layers that are the identity at inference, and small scaling layers.

Dropouts, noise and ActivityRegularization act only in training; InputLayer and Identity pass
their input through. Rescaling is ``x * scale + offset`` (numpy broadcasting, so a list acts
on the last axis); LayerScale (ConvNeXt) multiplies by its ``gamma``; CustomScaleLayer
(InceptionResNetV2) is ``inputs[0] + inputs[1] * scale``.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .roles import INPUT
from .util import array_value, f64

__all__ = ["IDENTITY_CLASSES"]

IDENTITY_CLASSES = ("InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity")


#: Keras 1 argument spellings of the identities Keras 1 had
_KERAS1 = {"InputLayer": (), "GaussianNoise": (K1("stddev", "sigma", 0.0),),
           **{name: (K1("rate", "p", 0.0),) for name in ("Dropout", "SpatialDropout1D", "SpatialDropout2D",
                                                        "SpatialDropout3D", "GaussianDropout")}}

@defines(*IDENTITY_CLASSES, keras1=_KERAS1, identity=True, fold={"InputLayer": INPUT})  # the others: IDENTITY
def identity_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [f64(xs[0])]


@defines("Rescaling")
def rescaling_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    c = layer.config
    scale = array_value(c.get("scale", 1.0))
    offset = array_value(c.get("offset", 0.0))
    return [f64(xs[0]) * (1.0 if scale is None else scale) + (0.0 if offset is None else offset)]


@defines("LayerScale")
def layer_scale_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    w = layer.weights
    gamma = w.get("gamma", next(iter(w.values())) if len(w) == 1 else None)
    if gamma is None:
        raise UnsupportedLayerError(f"layer {layer.label}: no gamma weight")
    return [f64(xs[0]) * f64(gamma)]


@defines("CustomScaleLayer")
def custom_scale_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [f64(xs[0]) + f64(xs[1]) * float(layer.config.get("scale", 1.0))]
