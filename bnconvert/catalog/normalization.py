"""BatchNormalization, LayerNormalization and Normalization at inference, in float64.

BatchNormalization uses its moving statistics: ``gamma * (x - mean) / sqrt(var + eps) + beta``
on ``axis`` (an int, or several axes whose parameters hold the product of their sizes), gamma 1
and beta 0 when the layer has none (``scale``/``center`` False). Keras 1 files are already
upgraded by the readers: ``running_std`` arrives as ``moving_variance``, and a Keras 1 ``mode``
is ``config["keras1_mode"]``: mode 1 normalises each sample over its last axis,
``(x - m) / (std + eps)`` with ``std = sqrt(var + eps)``; mode 2 uses the batch's statistics,
at inference too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Layer
from . import checks
from .facts import Shape, WeightSpec, same_shape
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .util import array_value, axes_of, f64

__all__ = ["batch_norm", "broadcast_param"]


def broadcast_param(value: np.ndarray, shape: tuple[int, ...], axes: list[int]) -> np.ndarray:
    """A per-feature parameter (any layout holding ``prod(shape[axes])`` values, possibly with
    unit dimensions) shaped to broadcast against a tensor of ``shape`` normalised on ``axes``."""
    target = [1] * len(shape)
    for a in axes:
        target[a] = shape[a]
    return f64(value).reshape(target)


def batch_norm(x: np.ndarray, axes: list[int], *, gamma: np.ndarray | None, beta: np.ndarray | None,
               mean: np.ndarray, var: np.ndarray, eps: float) -> np.ndarray:
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` with the parameters on ``axes``."""
    shape = x.shape
    inv = 1.0 / np.sqrt(broadcast_param(var, shape, axes) + eps)
    if gamma is not None:
        inv = inv * broadcast_param(gamma, shape, axes)
    shift = -broadcast_param(mean, shape, axes) * inv  # per channel: x * inv + shift, one pass over x
    if beta is not None:
        shift = shift + broadcast_param(beta, shape, axes)
    y = x * inv
    y += shift
    return y


def _bn_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """gamma (``scale``), beta (``center``), the moving statistics, tf.keras' renorm state. Their
    sizes are checked together against the normalised axes by :mod:`bnconvert.readers.consistency`
    (Keras generations shape multi-axis parameters differently), so no shape here."""
    spec = [WeightSpec("gamma")] if c.get("scale", True) else []
    spec += [WeightSpec("beta")] if c.get("center", True) else []
    spec += [WeightSpec("moving_mean", trainable=False), WeightSpec("moving_variance", trainable=False)]
    if c.get("renorm"):
        spec += [WeightSpec(name, trainable=False) for name in ("moving_stddev", "renorm_mean", "renorm_stddev")]
    return spec


#: Keras 1 argument spellings (``mode`` is kept for the fold and the writers; running_std: the reader)
_KERAS1 = {"BatchNormalization": (K1("axis", "axis", -1), K1("epsilon", "epsilon", 1e-3), K1("momentum", "momentum", 0.99),
                                  K1("keras1_mode", "mode", 0))}

@defines("BatchNormalization", keras1=_KERAS1, shape=same_shape, weights=_bn_weights,
         fields={"axis": checks.opt(checks.axis), "epsilon": checks.opt(checks.finite_nonneg), "center": checks.boolean,
                 "scale": checks.boolean, "momentum": checks.opt(checks.number),
                 "virtual_batch_size": checks.opt(checks.pos_int), "renorm": checks.boolean,
                 "keras1_mode": checks.keras1_mode}, masking="keep")
def batch_normalization_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    c, w, x = layer.config, layer.weights, f64(xs[0])
    axis = c.get("axis", -1)
    if c.get("virtual_batch_size"):  # tf.keras adds a virtual-batch axis at 1 and shifts ``axis`` past it
        axis = [a - 1 if a > 0 else a for a in ([axis] if isinstance(axis, int) else axis)]
    axes = axes_of(axis, x.ndim)
    eps = float(c.get("epsilon", 1e-3) if c.get("epsilon") is not None else 1e-3)
    gamma = w.get("gamma") if c.get("scale", True) is not False else None
    beta = w.get("beta") if c.get("center", True) is not False else None
    mode = int(c.get("keras1_mode", 0) or 0)
    if mode == 1:  # Keras 1: per sample, over the last axis
        m = x.mean(axis=-1, keepdims=True)
        std = np.sqrt(x.var(axis=-1, keepdims=True) + eps)
        y = (x - m) / (std + eps)
        if gamma is not None:
            y = y * broadcast_param(gamma, x.shape, [x.ndim - 1])
        return [y if beta is None else y + broadcast_param(beta, x.shape, [x.ndim - 1])]
    if mode == 2:  # Keras 1: the batch's statistics, at inference too
        reduce = tuple(a for a in range(x.ndim) if a not in axes)
        mean, var = x.mean(axis=reduce), x.var(axis=reduce)
    else:
        mean, var = w["moving_mean"], w["moving_variance"]
    return [batch_norm(x, axes, gamma=gamma, beta=beta, mean=mean, var=var, eps=eps)]


def _layer_norm_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """gamma and beta shaped like the normalised axes of the input; Keras 3 has no beta with ``rms_scaling``."""
    shape = None
    if shapes and isinstance(shapes[0], tuple):
        dims = [shapes[0][a] for a in axes_of(c.get("axis", -1), len(shapes[0]))]
        shape = tuple(d if isinstance(d, int) else None for d in dims)
    spec = [WeightSpec("gamma", shape)] if c.get("scale", True) else []
    return spec + ([WeightSpec("beta", shape)] if c.get("center", True) and not c.get("rms_scaling") else [])


@defines("LayerNormalization", shape=same_shape, weights=_layer_norm_weights, masking="keep")
def layer_normalization_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with statistics over ``axis`` per sample.
    ``rms_scaling`` (Keras 3): ``x / sqrt(var + eps) * gamma``, the variance and not the mean
    square, as Keras computes it (``ops.nn._layer_normalization``)."""
    c, w, x = layer.config, layer.weights, f64(xs[0])
    axes = axes_of(c.get("axis", -1), x.ndim)
    eps = float(c.get("epsilon", 1e-3))
    t = tuple(axes)
    var = x.var(axis=t, keepdims=True)
    gamma, beta = w.get("gamma"), w.get("beta")
    if c.get("rms_scaling"):
        y = x / np.sqrt(var + eps)
        return [y if gamma is None else y * broadcast_param(gamma, x.shape, axes)]
    y = (x - x.mean(axis=t, keepdims=True)) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * broadcast_param(gamma, x.shape, axes)
    return [y if beta is None else y + broadcast_param(beta, x.shape, axes)]


def _normalization_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """None when mean and variance are in the config; else the adapted statistics."""
    if c.get("mean") is not None and c.get("variance") is not None:
        return []
    return [WeightSpec(name, trainable=False) for name in ("mean", "variance", "count")]


@defines("Normalization", shape=same_shape, weights=_normalization_weights, masking="keep")
def normalization_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``(x - mean) / max(sqrt(var), 1e-7)``; ``invert``: ``mean + x * max(sqrt(var), 1e-7)``.
    mean and variance come from the weights (adapted) or the config, on the kept ``axis``."""
    c, w, x = layer.config, layer.weights, f64(xs[0])
    mean = w.get("mean") if w.get("mean") is not None else array_value(c.get("mean"))
    var = w.get("variance") if w.get("variance") is not None else array_value(c.get("variance"))
    axis = c.get("axis", -1)
    keep = [] if axis is None else axes_of(axis, x.ndim)
    if np.size(mean) == 1:
        mean, var = f64(mean).reshape(()), f64(var).reshape(())
    else:
        mean, var = broadcast_param(mean, x.shape, keep), broadcast_param(var, x.shape, keep)
    scale = np.maximum(np.sqrt(var), 1e-7)
    return [mean + x * scale if c.get("invert") else (x - mean) / scale]
