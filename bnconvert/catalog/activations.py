"""Activation functions (by Keras name) and the activation layers, in float64.

From ``keras/src/activations/activations.py`` (Keras 3) and ``tf_keras/activations.py``. One
function differs by generation: ``hard_sigmoid`` is ``relu6(x + 3) / 6`` in Keras 3 and
``clip(0.2 x + 0.5, 0, 1)`` in Keras 1/2 and tf.keras; :func:`activation` takes the generation
from the call's context. ``leaky_relu`` as an activation *name* has Keras 3's slope 0.2; the
``LeakyReLU`` layer defaults to 0.3 in every generation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from . import checks
from .facts import Shape, WeightSpec, no_weights, same_shape
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .util import axes_of, f64

__all__ = ["ACTIVATIONS", "activation_name", "apply_activation", "softmax", "erf"]

SELU_ALPHA = 1.67326324235437728481
SELU_SCALE = 1.05070098735548049342


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, element-wise in float64 (scipy when present, else the standard library)."""
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:
        return np.vectorize(math.erf, otypes=[np.float64])(x)
    return scipy_erf(x)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def softmax(x: np.ndarray, axes: int | tuple[int, ...] = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axes, keepdims=True))
    return e / np.sum(e, axis=axes, keepdims=True)


def log_softmax(x: np.ndarray, axes: int | tuple[int, ...] = -1) -> np.ndarray:
    shifted = x - np.max(x, axis=axes, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axes, keepdims=True))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow


def _hard_sigmoid_k3(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _hard_sigmoid_k2(x: np.ndarray) -> np.ndarray:
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


#: Keras activation name -> (x, generation) -> y
ACTIVATIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "linear": lambda x, g: x,
    "relu": lambda x, g: np.maximum(x, 0.0),
    "relu6": lambda x, g: np.clip(x, 0.0, 6.0),
    "sigmoid": lambda x, g: sigmoid(x),
    "hard_sigmoid": lambda x, g: _hard_sigmoid_k3(x) if g >= 3 else _hard_sigmoid_k2(x),
    "tanh": lambda x, g: np.tanh(x),
    "softmax": lambda x, g: softmax(x, -1),
    "log_softmax": lambda x, g: log_softmax(x, -1),
    "silu": lambda x, g: x * sigmoid(x),
    "swish": lambda x, g: x * sigmoid(x),
    "hard_silu": lambda x, g: x * _hard_sigmoid_k3(x),
    "hard_swish": lambda x, g: x * _hard_sigmoid_k3(x),
    "gelu": lambda x, g: _gelu(x),
    "gelu_approximate": lambda x, g: _gelu_tanh(x),
    "elu": lambda x, g: elu(x, 1.0),
    "selu": lambda x, g: SELU_SCALE * elu(x, SELU_ALPHA),
    "celu": lambda x, g: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),  # alpha = 1
    "softplus": lambda x, g: softplus(x),
    "softsign": lambda x, g: x / (np.abs(x) + 1.0),
    "exponential": lambda x, g: np.exp(x),
    "leaky_relu": lambda x, g: np.where(x >= 0, x, 0.2 * x),
    "mish": lambda x, g: x * np.tanh(softplus(x)),
    "hard_tanh": lambda x, g: np.clip(x, -1.0, 1.0),
    "log_sigmoid": lambda x, g: -softplus(-x),
    "tanh_shrink": lambda x, g: x - np.tanh(x),
}


def activation_name(spec: Any) -> str | None:
    """The Keras name of an ``activation`` config value: a string, Keras 3's serialized function
    ``{"class_name": "function", "config": "relu"}`` (or ``{"name": "gelu", "approximate": True}``),
    None for the identity. ``gelu_approximate`` is gelu with ``approximate=True``."""
    if spec is None:
        return "linear"
    if isinstance(spec, str):
        return "linear" if spec == "identity" else spec
    if isinstance(spec, dict):
        cfg = spec.get("config")
        if isinstance(cfg, str):
            name = cfg
        elif isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
            name = cfg["name"]
            if name == "gelu" and cfg.get("approximate"):
                return "gelu_approximate"
        else:
            name = spec.get("class_name") if spec.get("class_name") not in ("function", None) else None
        return "linear" if name == "identity" else name
    return None


def apply_activation(layer: Layer, x: np.ndarray, ctx: CallContext, spec: Any = None, *,
                     in_place: bool = False) -> np.ndarray:
    """The layer's ``activation`` (or ``spec``) applied to ``x`` (``in_place``: ``x`` is a fresh
    array that may be overwritten, which saves a pass over memory for the common cases)."""
    name = activation_name(layer.config.get("activation") if spec is None else spec)
    if in_place and name in ("relu", "linear"):
        return np.maximum(x, 0.0, out=x) if name == "relu" else x
    fn = ACTIVATIONS.get(name or "")
    if fn is None:
        raise UnsupportedLayerError(f"layer {layer.label}: activation {name!r} has no float64 semantics")
    return fn(x, ctx.generation)


@defines("Activation", keras1=True, shape=same_shape, weights=no_weights, fields={"activation": checks.activation},
         masking="keep")
def activation_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [apply_activation(layer, f64(xs[0]), ctx)]


@defines("ReLU", shape=same_shape, weights=no_weights, masking="keep")
def relu_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras' ``relu(x, negative_slope, max_value, threshold)``: x above the threshold (else 0),
    clipped at max_value, minus ``slope * relu(threshold - x)``."""
    c, x = layer.config, f64(xs[0])
    slope = float(c.get("negative_slope") or 0.0)
    threshold = float(c.get("threshold") or 0.0)
    max_value = c.get("max_value")
    y = np.where(x > threshold, x, 0.0)
    if max_value is not None:
        y = np.clip(y, 0.0, float(max_value))
    if slope:
        y = y - slope * np.maximum(threshold - x, 0.0)
    return [y]


@defines("LeakyReLU", keras1={"LeakyReLU": (K1("alpha", "alpha", 0.3),)}, shape=same_shape, weights=no_weights,
         masking="keep")
def leaky_relu_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    c, x = layer.config, f64(xs[0])
    slope = float(c.get("negative_slope", c.get("alpha", 0.3)))
    return [np.where(x >= 0, x, slope * x)]


@defines("ELU", keras1={"ELU": (K1("alpha", "alpha", 1.0),)}, shape=same_shape, weights=no_weights, masking="keep")
def elu_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [elu(f64(xs[0]), float(layer.config.get("alpha", 1.0)))]


@defines("ThresholdedReLU", keras1={"ThresholdedReLU": (K1("theta", "theta", 1.0),)}, shape=same_shape, weights=no_weights,
         masking="keep")
def thresholded_relu_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    x = f64(xs[0])
    return [np.where(x > float(layer.config.get("theta", 1.0)), x, 0.0)]


def _prelu_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``alpha``: the input's shape without the batch, size 1 on the (1-based) ``shared_axes``."""
    if not shapes or not isinstance(shapes[0], tuple):
        return [WeightSpec("alpha")]
    shape = [d if isinstance(d, int) else None for d in shapes[0][1:]]
    shared = c.get("shared_axes") or []
    for axis in [shared] if isinstance(shared, int) else shared:
        shape[int(axis) - 1] = 1
    return [WeightSpec("alpha", tuple(shape))]


@defines("PReLU", keras1={"PReLU": (K1("shared_axes", "shared_axes", None),)}, shape=same_shape, weights=_prelu_weights,
         masking="keep")
def prelu_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``relu(x) - alpha * relu(-x)``; ``alpha`` has the input's shape without the batch, with
    size 1 on ``shared_axes``."""
    x = f64(xs[0])
    alpha = f64(layer.weights["alpha"])
    return [np.maximum(x, 0.0) - alpha * np.maximum(-x, 0.0)]


def _keep_mask(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    return [ctx.mask(0)]


@defines("Softmax", shape=same_shape, weights=no_weights, masking="own", mask=_keep_mask,
         notes="with a mask: Keras 3 where(mask, x, -1e9), then masked outputs zeroed (a fully masked softmax "
               "is 0); tf.keras x + (1 - mask) * -1e9 (robust_masking: where), outputs not zeroed")
def softmax_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Softmax over ``axis`` (an int or several axes, normalised together). With a mask
    (broadcast from the right, as Keras does) the masked positions count as -1e9: Keras 3 and
    tf.keras ``robust_masking`` replace them (``where(mask, x, -1e9)``), tf.keras otherwise adds
    ``(1 - mask) * -1e9``; Keras 3 then sets the masked outputs to 0, so that a softmax whose
    every position is masked gives zeros rather than a uniform distribution. The output keeps
    the mask."""
    x = f64(xs[0])
    mask = ctx.mask(0)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if ctx.generation >= 3 or layer.config.get("robust_masking"):
            x = np.where(mask, x, -1e9)
        else:  # x - 1e9 as the model's float32 rounds it (float64 would keep x visible in a fully masked row)
            x = np.where(mask, x, (x.astype(np.float32) + np.float32(-1e9)).astype(np.float64))
    axes = tuple(axes_of(layer.config.get("axis", -1), x.ndim))
    y = softmax(x, axes)
    return [np.where(mask, y, 0.0) if mask is not None and ctx.generation >= 3 else y]
