"""Inference identities (Dropout family, noise, regularisation), Rescaling, and the Keras
Applications helper layers LayerScale (ConvNeXt) and CustomScaleLayer (InceptionResNetV2).

Identities emit no node: the layer's output is the input tensor itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...catalog import identity_classes
from ..builder import Builder, Call, Tensor
from ..registry import converts, refuse
from .merge import common_layout

__all__ = ["identity_layer", "rescaling", "layer_scale", "custom_scale", "broadcast_constant"]


@converts(*identity_classes())  # InputLayer, the Dropout family, noise ...: the catalog's identities
def identity_layer(b: Builder, call: Call) -> list[Tensor]:
    return [call.x]


def _array(value: Any) -> np.ndarray | None:
    """A number, a list, or Keras 3's serialized numpy array ``{"class_name": "__numpy__", ...}``."""
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("value")
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    return arr if arr.dtype.kind == "f" else None


def broadcast_constant(b: Builder, name: str, value: np.ndarray, x: Tensor, perm: tuple) -> str:
    """A constant that broadcasts against ``x`` the numpy way (right-aligned, Keras layout),
    laid out for ``x`` held in ``perm``."""
    value = np.asarray(value, np.float32)
    if value.ndim > x.rank:
        raise ValueError(f"constant of shape {value.shape} is larger than rank {x.rank}")
    full = value.reshape((1,) * (x.rank - value.ndim) + value.shape)
    return b.const(name, np.transpose(full, perm) if value.ndim else value)


@converts("Rescaling")
def rescaling(b: Builder, call: Call) -> list[Tensor]:
    scale, offset = _array(call.config.get("scale", 1.0)), _array(call.config.get("offset", 0.0))
    if scale is None or offset is None:
        raise refuse(call, "scale/offset are not numbers")
    perm, y = b.native(call.x)
    try:
        steps = [(op, what, v) for op, what, v in (("Mul", "scale", scale), ("Add", "offset", offset))
                 if not np.all(v == (1.0 if op == "Mul" else 0.0))]
        for i, (op, what, v) in enumerate(steps):
            const = broadcast_constant(b, f"{call.name}/{what}", v, call.x, perm)
            y = b.node(op, [y, const], name=call.name if i == len(steps) - 1 else f"{call.name}/{what}")
    except ValueError as exc:
        raise refuse(call, str(exc)) from None
    return [b.tensor(call.out_shape, perm, y)]


@converts("LayerScale")
def layer_scale(b: Builder, call: Call) -> list[Tensor]:
    weights = call.layer.weights
    gamma = weights.get("gamma", next(iter(weights.values())) if len(weights) == 1 else None)
    if gamma is None:
        raise refuse(call, "expected one weight (gamma)")
    perm, x = b.native(call.x)
    const = broadcast_constant(b, f"{call.name}/gamma", gamma, call.x, perm)
    return [b.tensor(call.out_shape, perm, b.node("Mul", [x, const], name=call.name))]


@converts("CustomScaleLayer")
def custom_scale(b: Builder, call: Call) -> list[Tensor]:
    """``inputs[0] + inputs[1] * scale`` (keras.applications.inception_resnet_v2)."""
    if len(call.inputs) != 2 or "scale" not in call.config:
        raise refuse(call, "expected two inputs and a 'scale'")
    perm, (base, branch) = common_layout(b, call.inputs, call.name)
    scaled = b.node("Mul", [branch, b.const(f"{call.name}/scale", np.float32(call.config["scale"]))],
                    name=f"{call.name}/scaled")
    return [b.tensor(call.out_shape, perm, b.node("Add", [base, scaled], name=call.name))]
