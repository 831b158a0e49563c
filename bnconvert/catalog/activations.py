"""Activation functions (by Keras name) and the activation layers, in float64.

From ``keras/src/activations/activations.py`` (Keras 3) and ``tf_keras/activations.py``. One
function differs by generation: ``hard_sigmoid`` is ``relu6(x + 3) / 6`` in Keras 3 and
``clip(0.2 x + 0.5, 0, 1)`` in Keras 1/2 and tf.keras; :func:`activation` takes the generation
from the call's context. Every name of Keras 3.15's ``keras.activations`` is here (and so every
tf.keras name, a subset): ``glu`` halves the last axis, so only an ``Activation`` layer may hold it
(:data:`SHAPE_CHANGING`); ``threshold`` cannot be called from a config (:data:`UNCALLABLE`); the
parameterised functions take Keras' defaults, the only values a config can name (``hard_shrink``
and ``soft_shrink`` 0.5, ``squareplus`` b = 4, ``celu`` alpha = 1, ``glu`` and ``sparsemax`` on the
last axis). ``leaky_relu`` as an activation *name* has Keras 3's slope 0.2; the
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

__all__ = ["ACTIVATIONS", "SHAPE_CHANGING", "UNCALLABLE", "activation_name", "activation_problem", "apply_activation", "erf",
           "glu", "softmax", "sparsemax"]

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


def _sparse_plus(x: np.ndarray) -> np.ndarray:
    """0 up to -1, ``(x + 1)**2 / 4`` up to 1, then x (Keras 3 ``ops.sparse_plus``)."""
    return np.where(x <= -1.0, 0.0, np.where(x < 1.0, 0.25 * (x + 1.0) ** 2, x))


def _sparse_sigmoid(x: np.ndarray) -> np.ndarray:
    """0 up to -1, ``(x + 1) / 2`` up to 1, then 1 (Keras 3 ``ops.sparse_sigmoid``)."""
    return np.where(x <= -1.0, 0.0, np.where(x >= 1.0, 1.0, 0.5 * (x + 1.0)))


def sparsemax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Keras 3's ``ops.sparsemax``, exactly as every Keras 3 backend computes it: the logits
    sorted in descending order ``z``, their running sums ``c``, the support ``z_i - (c_i - 1)/i > 0``
    of ``k`` entries, ``tau = (sum of c_i over the support - 1) / k`` and ``max(x - tau, 0)``.
    (The published sparsemax takes ``c_k``, the support's sum, where Keras sums the running sums;
    the outputs then need not sum to 1. bnconvert computes what the file's Keras computes.)"""
    z = -np.sort(-x, axis=axis)
    c = np.cumsum(z, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    r = np.arange(1, x.shape[axis] + 1, dtype=np.float64).reshape(shape)
    support = z - (c - 1.0) / r > 0
    k = np.sum(support, axis=axis, keepdims=True)
    tau = (np.sum(np.where(support, c, 0.0), axis=axis, keepdims=True) - 1.0) / k
    return np.maximum(x - tau, 0.0)


def glu(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``a * sigmoid(b)`` of the two halves ``a``, ``b`` of ``axis`` (an odd size is refused by Keras)."""
    a, b = np.split(x, 2, axis=axis)
    return a * sigmoid(b)


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
    "hard_shrink": lambda x, g: np.where(np.abs(x) > 0.5, x, 0.0),  # threshold 0.5
    "soft_shrink": lambda x, g: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0.0)),
    "sparse_plus": lambda x, g: _sparse_plus(x),
    "sparse_sigmoid": lambda x, g: _sparse_sigmoid(x),
    "sparsemax": lambda x, g: sparsemax(x, -1),
    "squareplus": lambda x, g: 0.5 * (x + np.sqrt(x * x + 4.0)),  # b = 4
}

#: activations that change the shape of what they act on: only an ``Activation`` layer, whose
#: shape rule knows it, may hold one (Keras declares a Dense(activation="glu") output unhalved)
SHAPE_CHANGING: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"glu": lambda x, g: glu(x, -1)}

#: Keras activation names a config can name but not call: ``threshold(x, threshold, default_value)``
#: has no defaults and a config holds no arguments (Keras itself fails calling it)
UNCALLABLE = {"threshold": "keras.activations.threshold needs 'threshold' and 'default_value', which a config cannot hold"}


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
            name: str | None = cfg
        elif isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
            name = cfg["name"]
            if name == "gelu" and cfg.get("approximate"):
                return "gelu_approximate"
        else:
            name = spec.get("class_name") if spec.get("class_name") not in ("function", None) else None
        return "linear" if name == "identity" else name
    return None


def activation_problem(spec: Any, *, shape_changing: bool = False) -> str | None:
    """Why the ``activation`` config value ``spec`` cannot be computed, or None: a custom function
    (bnconvert never imports user code), an uncallable name, an unknown one, or ``glu`` outside an
    ``Activation`` layer (``shape_changing`` False)."""
    name = activation_name(spec)
    if name in ACTIVATIONS or (shape_changing and name in SHAPE_CHANGING):
        return None
    if name in SHAPE_CHANGING:
        return f"activation {name!r} halves the last axis, which only an Activation layer's output shape allows"
    if name in UNCALLABLE:
        return UNCALLABLE[name]
    if isinstance(spec, dict) and spec.get("module") not in (None, "keras.activations", "keras.src.activations"):
        return (f"activation {name!r} is a custom function (module {spec.get('module')!r}); bnconvert never runs "
                "code from a model file")
    return f"activation {name!r} is not a Keras activation bnconvert knows"


def apply_activation(layer: Layer, x: np.ndarray, ctx: CallContext, spec: Any = None, *,
                     in_place: bool = False) -> np.ndarray:
    """The layer's ``activation`` (or ``spec``) applied to ``x`` (``in_place``: ``x`` is a fresh
    array that may be overwritten, which saves a pass over memory for the common cases)."""
    value = layer.config.get("activation") if spec is None else spec
    name = activation_name(value)
    if in_place and name in ("relu", "linear"):
        return np.maximum(x, 0.0, out=x) if name == "relu" else x
    fn = ACTIVATIONS.get(name or "")
    if fn is None and layer.class_name == "Activation":
        fn = SHAPE_CHANGING.get(name or "")
    if fn is None:
        problem = activation_problem(value, shape_changing=layer.class_name == "Activation")
        raise UnsupportedLayerError(f"layer {layer.label}: {problem or f'activation {name!r} has no float64 semantics'}")
    if name == "glu" and x.shape[-1] % 2:
        raise UnsupportedLayerError(f"layer {layer.label}: glu needs an even last axis, got {x.shape[-1]}")
    return fn(x, ctx.generation)


def _activation_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """The input's shape, the last axis halved by ``glu``."""
    if activation_name(c.get("activation")) in SHAPE_CHANGING:
        last = shapes[0][-1]
        return [(*shapes[0][:-1], None if last is None else last // 2)]
    return [shapes[0]]


@defines("Activation", keras1=True, shape=_activation_shape, weights=no_weights, fields={"activation": checks.activation},
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
