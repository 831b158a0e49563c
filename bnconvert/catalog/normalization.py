"""BatchNormalization, LayerNormalization, Normalization and the per-sample normalisations
(GroupNormalization, UnitNormalization, RMSNormalization, the InstanceNormalization of keras-contrib
and of TensorFlow Addons) at inference, in float64.

BatchNormalization uses its moving statistics: ``gamma * (x - mean) / sqrt(var + eps) + beta``
on ``axis`` (an int, or several axes whose parameters hold the product of their sizes), gamma 1
and beta 0 when the layer has none (``scale``/``center`` False). Keras 1 files are already
upgraded by the readers: ``running_std`` arrives as ``moving_variance``, and a Keras 1 ``mode``
is ``config["keras1_mode"]``: mode 1 normalises each sample over its last axis,
``(x - m) / (std + eps)`` with ``std = sqrt(var + eps)``; mode 2 uses the batch's statistics,
at inference too.

The per-sample normalisations use each sample's own statistics (biased variance, as
``ops.moments``/``tf.nn.moments``/``K.std``): the formula of each, and where its epsilon goes, is
in its function's docstring. A BatchNormalization next to one is a fold barrier (``_PER_SAMPLE``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from . import checks
from .facts import ConfigProblem, Shape, WeightSpec, no_weights, same_shape
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .roles import barrier
from .util import array_value, axes_of, f64
from .wrappers import inner_record, sublayer

__all__ = ["ADDONS", "CONTRIB", "READ_AS", "batch_norm", "broadcast_param", "group_norm", "instance_norm_origin", "rms_epsilon", "unit_norm"]


#: why a BatchNormalization next to a per-sample normalisation stays: the statistics are the
#: sample's own, so an affine before it is (partly) normalised away, and after it bnconvert folds
#: only into kernels (an affine after a normalisation could merge into its gamma/beta, not done)
_PER_SAMPLE = barrier("normalises each sample by its own statistics: a BN's affine before it is partly normalised "
                      "away (not a per-channel affine of the output), and bnconvert folds a BN only into kernels")


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


@defines("LayerNormalization", shape=same_shape, weights=_layer_norm_weights, masking="keep", fold=_PER_SAMPLE)
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
    mean and variance come from the weights (adapted, shaped like the kept ``axis`` dimensions)
    or the config (a scalar or an array), numpy-broadcast onto the kept dimensions from the
    right (Keras 3 aligns them right to left, tf.keras multiplies by ``ones(kept shape)``), the
    reduced axes of size 1; ``axis`` None keeps none (one mean and variance for everything)."""
    c, w, x = layer.config, layer.weights, f64(xs[0])
    mean = w.get("mean") if w.get("mean") is not None else array_value(c.get("mean"))
    var = w.get("variance") if w.get("variance") is not None else array_value(c.get("variance"))
    if mean is None or var is None:
        raise UnsupportedLayerError(f"layer {layer.label}: no mean/variance (the layer was never adapted)")
    axis = c.get("axis", -1)
    keep = [] if axis is None else axes_of(axis, x.ndim)
    target = [x.shape[d] if d in keep else 1 for d in range(x.ndim)]
    try:
        mean, var = (np.broadcast_to(f64(v), [x.shape[d] for d in keep]).reshape(target) for v in (mean, var))
    except ValueError:
        raise UnsupportedLayerError(f"layer {layer.label}: mean {np.shape(mean)} and variance {np.shape(var)} do not "
                                    f"broadcast onto the kept axes {keep} of its input {x.shape}") from None
    scale = np.maximum(np.sqrt(var), 1e-7)
    return [mean + x * scale if c.get("invert") else (x - mean) / scale]


# -- per-sample normalisations: GroupNormalization, UnitNormalization, RMSNormalization, InstanceNormalization --
def _channel_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """gamma (``scale``) then beta (``center``), one per channel of ``axis`` (GroupNormalization and
    TensorFlow Addons' InstanceNormalization); keras-contrib's ``axis: None`` holds one of each."""
    shape: tuple[int | None, ...] | None = None
    if c.get("axis", -1) is None:
        shape = (1,)
    elif shapes and isinstance(shapes[0], tuple) and isinstance(c.get("axis", -1), int):
        dim = shapes[0][c.get("axis", -1)] if -len(shapes[0]) <= c.get("axis", -1) < len(shapes[0]) else None
        shape = (dim if isinstance(dim, int) else None,)
    spec = [WeightSpec("gamma", shape)] if c.get("scale", True) else []
    return spec + ([WeightSpec("beta", shape)] if c.get("center", True) else [])


def group_norm(x: np.ndarray, axis: int, groups: int, eps: float, *, gamma: np.ndarray | None,
               beta: np.ndarray | None) -> np.ndarray:
    """Keras' GroupNormalization: channels of ``axis`` split into ``groups`` consecutive groups;
    each sample's group normalised by its mean and (biased) variance over the group's channels
    and every non-batch axis, ``(x - mean) / sqrt(var + eps)``; then ``gamma``/``beta`` per channel.
    ``groups`` equal to the channels is instance normalisation (TensorFlow Addons')."""
    axis %= x.ndim
    channels = x.shape[axis]
    if groups == -1:
        groups = channels
    if groups <= 0 or channels % groups:
        raise ConfigProblem(f"config 'groups' is {groups}, not a divisor of the {channels} channels of axis {axis}")
    last = np.moveaxis(x, axis, -1)
    grouped = last.reshape(*last.shape[:-1], groups, channels // groups)
    reduce = tuple(a for a in range(1, grouped.ndim) if a != grouped.ndim - 2)
    mean = grouped.mean(axis=reduce, keepdims=True)
    var = grouped.var(axis=reduce, keepdims=True)
    y = np.moveaxis(((grouped - mean) / np.sqrt(var + eps)).reshape(last.shape), -1, axis)
    if gamma is not None:
        y = y * broadcast_param(gamma, x.shape, [axis])
    return y if beta is None else y + broadcast_param(beta, x.shape, [axis])


def _refuse_tf_keras_mask(layer: Layer, ctx: CallContext) -> None:
    """tf.keras' GroupNormalization weighs its moments by the mask it receives (Keras 3 ignores
    masks); bnconvert computes unweighted moments only."""
    if ctx.mask(0) is not None and ctx.generation < 3:
        raise UnsupportedLayerError(f"layer {layer.label}: tf.keras' GroupNormalization weighs its statistics by the "
                                    "input's mask; bnconvert does not compute masked statistics")


def _groups(v: Any) -> bool:
    return v == -1 or checks.pos_int(v)


_groups.want = "a positive integer below 2**31, or -1 (one group per channel)"  # type: ignore[attr-defined]
_GROUP_FIELDS = {"groups": _groups, "axis": checks.one_axis,
                 "epsilon": checks.finite_nonneg, "center": checks.boolean, "scale": checks.boolean}


@defines("GroupNormalization", "Addons>GroupNormalization", shape=same_shape, weights=_channel_weights,
         fields=_GROUP_FIELDS, masking="keep", fold=_PER_SAMPLE,
         notes="tf.keras weighs the moments by the input mask (refused here); Keras 3 and TensorFlow Addons ignore masks")
def group_normalization_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras 3 / tf.keras ``GroupNormalization`` and TensorFlow Addons' (same formula, same config)."""
    c, w, x = layer.config, layer.weights, f64(xs[0])
    _refuse_tf_keras_mask(layer, ctx)
    return [group_norm(x, int(c.get("axis", -1)), int(c.get("groups", 32)), float(c.get("epsilon", 1e-3)),
                       gamma=w.get("gamma") if c.get("scale", True) else None,
                       beta=w.get("beta") if c.get("center", True) else None)]


def unit_norm(x: np.ndarray, axes: list[int], generation: int) -> np.ndarray:
    """L2 normalisation over ``axes``. Keras 3 (``ops.normalize(order=2, epsilon=1e-12)``):
    ``x * min(1/sqrt(sum x^2), 1e12)``, i.e. the norm floored at 1e-12. tf.keras
    (``tf.linalg.l2_normalize``): ``x / sqrt(max(sum x^2, 1e-12))``, the norm floored at 1e-6."""
    square_sum = np.sum(x * x, axis=tuple(axes), keepdims=True)
    if generation >= 3:
        return x / np.maximum(np.sqrt(square_sum), 1e-12)
    return x / np.sqrt(np.maximum(square_sum, 1e-12))


@defines("UnitNormalization", shape=same_shape, weights=no_weights, fields={"axis": checks.axis}, masking="keep", fold=_PER_SAMPLE,
         notes="the norm's floor: 1e-12 in Keras 3, 1e-6 in tf.keras (its sum of squares floored at 1e-12)")
def unit_normalization_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    x = f64(xs[0])
    return [unit_norm(x, axes_of(layer.config.get("axis", -1), x.ndim), ctx.generation)]


def _rms_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``scale``, shaped like the normalised axes of the input (Keras 3 ``RMSNormalization.build``)."""
    shape = None
    if shapes and isinstance(shapes[0], tuple):
        dims = [shapes[0][a] for a in axes_of(c.get("axis", -1), len(shapes[0]))]
        shape = tuple(d if isinstance(d, int) else None for d in dims)
    return [WeightSpec("scale", shape)]


def rms_epsilon(c: dict[str, Any]) -> float:
    """RMSNormalization's epsilon: the layer's default 1e-6 when the config has none, and
    ``ops.rms_normalization``'s own default (``backend.epsilon()``, 1e-7) when it says null."""
    if "epsilon" not in c:
        return 1e-6
    return 1e-7 if c["epsilon"] is None else float(c["epsilon"])


@defines("RMSNormalization", shape=same_shape, weights=_rms_weights,
         fields={"axis": checks.axis, "epsilon": checks.opt(checks.finite_nonneg)}, fold=_PER_SAMPLE)
def rms_normalization_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras 3 ``ops.rms_normalization``: ``x / sqrt(mean(x^2 over axis) + eps) * scale`` (the mean
    square, unlike LayerNormalization's ``rms_scaling``, which uses the variance)."""
    c, x = layer.config, f64(xs[0])
    axes = axes_of(c.get("axis", -1), x.ndim)
    y = x / np.sqrt(np.mean(x * x, axis=tuple(axes), keepdims=True) + rms_epsilon(c))
    scale = layer.weights.get("scale")
    return [y if scale is None else y * broadcast_param(scale, x.shape, axes)]


# -- InstanceNormalization: two published layers under one class name ---------------------------------
#: The two packages' InstanceNormalization, told apart in this one place (:func:`instance_norm_origin`):
#: - keras-contrib (``keras_contrib/layers/normalization/instancenormalization.py``): config
#:   ``axis`` (None: one mean and std over all but the batch axis), ``epsilon``, ``center``, ``scale``;
#:   ``(x - mean) / (std + eps)`` with ``std = K.std`` (biased), gamma/beta ``(C,)`` or ``(1,)``.
#: - TensorFlow Addons (``tensorflow_addons/layers/normalizations.py``): a GroupNormalization with
#:   ``groups`` = channels, registered as ``Addons>InstanceNormalization`` (the class name tf.keras
#:   writes into an ``.h5``; a ``.keras`` writes ``InstanceNormalization`` with that registered name
#:   and the ``groups`` field); ``(x - mean) / sqrt(var + eps)``.
CONTRIB, ADDONS = "keras-contrib", "TensorFlow Addons"


def instance_norm_origin(class_name: str, config: dict[str, Any]) -> str:
    """Which published InstanceNormalization a layer is: :data:`ADDONS` for the registered name or
    a config with ``groups`` (tfa's get_config writes it, keras-contrib's never does),
    :data:`CONTRIB` for a config with ``axis`` and no ``groups``; ConfigProblem otherwise (a
    custom class of the same name: its formula is unknown)."""
    if class_name == "Addons>InstanceNormalization" or "groups" in config:
        return ADDONS
    if "axis" in config:
        return CONTRIB
    raise ConfigProblem("its config is neither keras-contrib's InstanceNormalization's (axis, no groups) nor "
                        "TensorFlow Addons' (groups): its formula is unknown, so bnconvert does not run it "
                        "(--replace it with the Keras layer it computes, or register its record with --plugin)")


def _instance_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    return _channel_weights(c if "axis" in c else {**c, "axis": -1}, shapes)


def _instance_axis(v: Any) -> bool:
    return v is None or (checks.one_axis(v) and v != 0)


_instance_axis.want = "null or a non-zero axis"  # type: ignore[attr-defined]


@defines("InstanceNormalization", "Addons>InstanceNormalization", shape=same_shape, weights=_instance_weights,
         fields={"axis": _instance_axis, "epsilon": checks.finite_nonneg, "center": checks.boolean,
                 "scale": checks.boolean, "groups": checks.opt(_groups)}, masking="keep", fold=_PER_SAMPLE,
         notes="keras-contrib: (x - mean) / (std + eps); TensorFlow Addons: (x - mean) / sqrt(var + eps); "
               "told apart by instance_norm_origin")
def instance_normalization_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    c, w, x = layer.config, layer.weights, f64(xs[0])
    try:
        origin = instance_norm_origin(layer.class_name, c)
    except ConfigProblem as exc:
        raise UnsupportedLayerError(f"layer {layer.label}: {exc}") from None
    gamma = w.get("gamma") if c.get("scale", True) else None
    beta = w.get("beta") if c.get("center", True) else None
    eps = float(c.get("epsilon", 1e-3))
    axis = c.get("axis", -1)
    if origin == ADDONS:
        return [group_norm(x, int(axis), x.shape[int(axis)], eps, gamma=gamma, beta=beta)]
    kept = [] if axis is None else [int(axis) % x.ndim]
    reduce = tuple(a for a in range(1, x.ndim) if a not in kept)
    y = (x - x.mean(axis=reduce, keepdims=True)) / (x.std(axis=reduce, keepdims=True) + eps)
    if gamma is not None:
        y = y * (f64(gamma).reshape(()) if axis is None else broadcast_param(gamma, x.shape, kept))
    if beta is not None:
        y = y + (f64(beta).reshape(()) if axis is None else broadcast_param(beta, x.shape, kept))
    return [y]


#: classes every reader reads as another class, because at inference they are it: tf.keras'
#: ``experimental.SyncBatchNormalization`` only synchronises the batch statistics of training
#: across replicas (Keras 3 writes ``BatchNormalization(synchronized=True)`` instead)
READ_AS = {"SyncBatchNormalization": "BatchNormalization"}


# -- SpectralNormalization (Keras 3): its layer, as stored ----------------------------------------------
#: Keras only renormalises the wrapped kernel in training (``call(training=True)`` assigns
#: ``kernel / sigma`` from its power iteration to the layer's kernel); a folded kernel would be
#: rewritten there, and a .keras stores that kernel twice (the wrapper's ``vars/0`` and its layer's)
_SPECTRAL = barrier("Keras renormalises its kernel by its power iteration whenever it trains (and a .keras stores that "
                    "kernel twice): bnconvert does not fold into it")


def _spectral_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    record, config = inner_record(c)
    if record.shape is None:
        raise ConfigProblem(f"output shape of {record.class_name} unknown")
    return record.shape(config, shapes)


def _spectral_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """The wrapped layer's weights (``kernel``, ``bias`` ...), then ``vector_u``, the power
    iteration's vector ``(1, filters)`` (Keras' legacy .h5 order: trainable, then not)."""
    record, config = inner_record(c)
    if record.weights is None:
        raise ConfigProblem(f"weights of {record.class_name} unknown")
    return [*record.weights(config, shapes), WeightSpec("vector_u", None, trainable=False)]


@defines("SpectralNormalization", shape=_spectral_shape, weights=_spectral_weights,
         fields={"power_iterations": checks.pos_int}, fold=_SPECTRAL,
         notes="inference is the wrapped layer with its stored kernel; vector_u is only used in training")
def spectral_normalization_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras 3 ``SpectralNormalization.call(training=False)`` is ``self.layer(inputs)``: the
    wrapped layer with the kernel it stores (normalised by the last training step, if any)."""
    record, config = inner_record(layer.config)
    if record.call is None:
        raise UnsupportedLayerError(f"layer {layer.label}: wrapped class {record.class_name!r} has no float64 semantics")
    return record.call(sublayer(layer, "", record.class_name, config, ""), xs, ctx)
