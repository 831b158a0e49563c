"""BatchNormalization (every Keras 1 mode), LayerNormalization, the Normalization preprocessing layer, and the
per-sample normalisations: GroupNormalization, UnitNormalization, RMSNormalization, InstanceNormalization
(keras-contrib's and TensorFlow Addons', told apart by the catalog), and Keras 3's SpectralNormalization
(its layer, by that layer's handler). All of these are built from primitive ops
(ReduceMean, Sub, Mul, Sqrt, Div), which every opset from 13 has.

BatchNormalization that did not fold becomes an ONNX BatchNormalization when the tensor is held
with the normalised axis at position 1 (what the ONNX operator normalises), else a Mul + Add with
constants ``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s`` computed in float64.

Keras 1 modes (keras 1.2.2 ``layers/normalization.py``):

* mode 0: the running statistics, as above.
* mode 1, per sample: ``m, v`` = mean and (population) variance over the last axis of each
  sample; ``y = gamma * (x - m) / (sqrt(v + eps) + eps) + beta`` (gamma, beta on the last axis).
* mode 2, batch statistics at inference too: ``m, v`` = mean and variance over every axis but
  ``axis``, *across the batch*; ``y = gamma * (x - m) / sqrt(v + eps) + beta``. The ONNX model
  therefore gives each sample a result that depends on the rest of its batch, exactly as Keras 1 did.
"""

from __future__ import annotations

import numpy as np

from ...bn import bn_params, check_bn
from ...catalog.facts import ConfigProblem
from ...catalog.normalization import ADDONS, instance_norm_origin, rms_epsilon
from ...catalog.util import array_value
from ...catalog.wrappers import inner_layer
from ...errors import FormatError
from ...model import Layer
from ..builder import Builder, Call, Tensor
from ..layout import keras_param, position
from ..registry import converts, handlers, refuse

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm", "normalization", "rms_norm", "spectral_norm", "unit_norm"]


def _moments(b: Builder, x: str, axes: list[int], name: str) -> tuple[str, str]:
    """``(x - mean, variance)`` over held ``axes`` (keepdims), variance = mean((x - mean)^2)."""
    mean = b.reduce("ReduceMean", x, axes, keepdims=True, name=f"{name}/mean")
    centred = b.node("Sub", [x, mean], name=f"{name}/centred")
    square = b.node("Mul", [centred, centred], name=f"{name}/square")
    return centred, b.reduce("ReduceMean", square, axes, keepdims=True, name=f"{name}/variance")


def _std(b: Builder, variance: str, eps: float, name: str) -> str:
    return b.node("Sqrt", [b.node("Add", [variance, b.const(f"{name}/epsilon", np.float32(eps))], name=f"{name}/var_eps")],
                  name=f"{name}/std")


def _affine_tail(b: Builder, call: Call, y: str, gamma: np.ndarray | None, beta: np.ndarray | None,
                 rank: int, axes: list[int], perm: tuple, shape: tuple, labels: tuple[str, str] = ("gamma", "beta")) -> str:
    """``y * gamma + beta`` with per-feature parameters over Keras ``axes`` (either may be None);
    the last node writes the layer's output."""
    steps = [(w, op, v) for w, op, v in ((labels[0], "Mul", gamma), (labels[1], "Add", beta)) if v is not None]
    if not steps:
        return b.node("Identity", [y], name=call.name)
    for i, (what, op, values) in enumerate(steps):
        const = b.const(f"{call.name}/{what}", keras_param(values, rank, axes, perm, shape))
        y = b.node(op, [y, const], name=call.name if i == len(steps) - 1 else f"{call.name}/{what}")
    return y


@converts("BatchNormalization")
def batch_norm(b: Builder, call: Call) -> list[Tensor]:
    try:
        p = bn_params(call.layer)
    except FormatError as exc:
        raise refuse(call, str(exc)) from None
    x, rank = call.x, call.x.rank
    if any(not -rank <= a < rank for a in p.axis):
        raise FormatError(f"layer {call.layer.label}: config 'axis' is {list(p.axis)}, outside its rank-{rank} input")
    axes = sorted(a % rank for a in p.axis)  # bn_params already undid tf.keras' virtual_batch_size axis shift
    perm, xn = b.native(x)
    if p.mode == 1:
        return _per_sample(b, call, p.gamma, p.beta, p.epsilon)
    if p.mode == 2:
        held = [position(perm, a) for a in axes]
        centred, var = _moments(b, xn, [i for i in range(rank) if i not in held], call.name)
        y = b.node("Div", [centred, _std(b, var, p.epsilon, call.name)], name=f"{call.name}/normalised")
        return [b.tensor(call.out_shape, perm, _affine_tail(b, call, y, p.gamma, p.beta, rank, axes, perm, x.shape))]
    if p.mode != 0:
        raise refuse(call, f"Keras 1 mode {p.mode} is unknown")
    check_bn(p, f"layer {call.layer.label}")  # the BN invariant (finite, variance + epsilon > 0) the moving statistics need
    if len(axes) == 1 and rank >= 2 and position(perm, axes[0]) == 1:
        f32 = [b.const(f"{call.name}/{w}", v.astype(np.float32)) for w, v in
               (("gamma", p.gamma), ("beta", p.beta), ("moving_mean", p.mean), ("moving_variance", p.variance))]
        return [b.tensor(call.out_shape, perm, b.node("BatchNormalization", [xn, *f32], name=call.name, epsilon=p.epsilon))]
    with np.errstate(over="ignore", invalid="ignore"):
        beyond = not all(np.all(np.isfinite(v.astype(np.float32))) for v in (p.fold_scale, p.fold_shift))
    if beyond:
        raise FormatError(f"layer {call.layer.label}: its scale gamma/sqrt(var+eps) and shift (up to "
                          f"{float(np.max(np.abs(p.fold_scale))):.3g}) are beyond float32; export refuses it")
    y = _affine_tail(b, call, xn, p.fold_scale, p.fold_shift, rank, axes, perm, x.shape, labels=("scale", "shift"))
    return [b.tensor(call.out_shape, perm, y)]


def _per_sample(b: Builder, call: Call, gamma: np.ndarray, beta: np.ndarray, eps: float) -> list[Tensor]:
    x, rank = call.x, call.x.rank
    if gamma.size != x.shape[-1]:
        raise refuse(call, f"Keras 1 mode 1 scales the last axis ({x.shape[-1]}) by {gamma.size} parameters")
    perm, xn = b.native(x)
    last = position(perm, -1)
    centred, var = _moments(b, xn, [last], call.name)
    denom = b.node("Add", [_std(b, var, eps, call.name), b.const(f"{call.name}/epsilon2", np.float32(eps))],
                   name=f"{call.name}/std_eps")
    y = b.node("Div", [centred, denom], name=f"{call.name}/normalised")
    return [b.tensor(call.out_shape, perm, _affine_tail(b, call, y, gamma, beta, rank, [rank - 1], perm, x.shape))]


def _axes(value: object, rank: int) -> list[int]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return sorted({int(a) % rank for a in items})  # type: ignore[arg-type]


@converts("LayerNormalization")
def layer_norm(b: Builder, call: Call) -> list[Tensor]:
    c, w = call.config, call.layer.weights
    x, rank = call.x, call.x.rank
    axes = _axes(c.get("axis", -1), rank)
    eps = float(c.get("epsilon", 1e-3))
    gamma, beta = w.get("gamma"), w.get("beta")
    perm, xn = b.native(x)
    held = sorted(position(perm, a) for a in axes)
    if c.get("rms_scaling"):  # Keras 3: x * rsqrt(var + eps) * gamma (its variance, not the mean square)
        _, var = _moments(b, xn, held, call.name)
        y = b.node("Div", [xn, _std(b, var, eps, call.name)], name=f"{call.name}/normalised")
        return [b.tensor(call.out_shape, perm, _affine_tail(b, call, y, gamma, None, rank, axes, perm, x.shape))]
    if b.opset >= 17 and held == list(range(rank - len(axes), rank)):
        def trailing(values: np.ndarray) -> np.ndarray:
            arr = keras_param(values, rank, axes, perm, x.shape)
            return arr.reshape(arr.shape[held[0]:])

        n = int(np.prod([x.shape[a] for a in axes]))
        inputs = [xn, b.const(f"{call.name}/gamma", trailing(gamma if gamma is not None else np.ones(n)))]
        if beta is not None:
            inputs.append(b.const(f"{call.name}/beta", trailing(beta)))
        y = b.node("LayerNormalization", inputs, name=call.name, axis=held[0], epsilon=eps)
        return [b.tensor(call.out_shape, perm, y)]
    centred, var = _moments(b, xn, held, call.name)
    y = b.node("Div", [centred, _std(b, var, eps, call.name)], name=f"{call.name}/normalised")
    return [b.tensor(call.out_shape, perm, _affine_tail(b, call, y, gamma, beta, rank, axes, perm, x.shape))]


def _broadcast_stat(values: object, keep: list[int], shape: tuple) -> np.ndarray:
    """A Normalization mean/variance (a scalar, a list, Keras 3's serialized array, or the adapted
    weight) numpy-broadcast onto the kept axes from the right, size 1 on the reduced axes."""
    arr = array_value(values)
    if arr is None:
        raise ValueError("no values")
    return np.broadcast_to(arr, [int(shape[d]) for d in keep]).reshape([int(shape[d]) if d in keep else 1 for d in range(len(shape))])


@converts("Normalization")
def normalization(b: Builder, call: Call) -> list[Tensor]:
    c, w = call.config, call.layer.weights
    x, rank = call.x, call.x.rank
    mean, var = w.get("mean", c.get("mean")), w.get("variance", c.get("variance"))
    if mean is None or var is None:
        raise refuse(call, "no mean/variance (the layer was never adapted)")
    keep = _axes(c.get("axis", -1), rank)
    try:
        m = _broadcast_stat(mean, keep, x.shape)
        d = np.maximum(np.sqrt(_broadcast_stat(var, keep, x.shape)), 1e-7)  # keras.backend.epsilon()
    except (ValueError, TypeError) as exc:
        raise refuse(call, f"mean/variance do not match the input shape {x.shape}: {exc}") from None
    perm, xn = b.native(x)
    m, d = np.transpose(m, perm), np.transpose(d, perm)
    if c.get("invert"):
        y = b.node("Mul", [xn, b.const(f"{call.name}/std", d)], name=f"{call.name}/scaled")
        return [b.tensor(call.out_shape, perm, b.node("Add", [y, b.const(f"{call.name}/mean", m)], name=call.name))]
    y = b.node("Sub", [xn, b.const(f"{call.name}/mean", m)], name=f"{call.name}/centred")
    return [b.tensor(call.out_shape, perm, b.node("Div", [y, b.const(f"{call.name}/std", d)], name=call.name))]


# -- per-sample normalisations ---------------------------------------------------------------------
def _channel_at_1(b: Builder, x: Tensor, axis: int) -> tuple[tuple, str]:
    """``x`` held with Keras axis ``axis`` at position 1 (a view that has it already, else a
    Transpose to batch, ``axis``, then the other axes in order)."""
    for perm, name in x.views.items():
        if len(perm) > 1 and perm[1] == axis:
            return perm, name
    perm = (0, axis, *[a for a in range(1, x.rank) if a != axis])
    return perm, b.view(x, perm)


def _group_normalised(b: Builder, call: Call, axis: int, groups: int, eps: float) -> tuple[tuple, str]:
    """``(x - mean) / sqrt(var + eps)`` per sample and group of ``groups`` consecutive channels of
    Keras ``axis`` (statistics over the group's channels and every other non-batch axis). One group
    per channel reduces the held axes directly; otherwise the channels go to position 1 and a
    Reshape to ``(N, groups, -1)`` and back (``Shape`` of the held value: unknown sizes allowed)."""
    x, rank = call.x, call.x.rank
    channels = x.shape[axis]
    if groups == channels or groups == 1:
        perm, xn = b.native(x)
        held = [i for i in range(1, rank) if groups == 1 or i != position(perm, axis)]
        centred, var = _moments(b, xn, held, call.name)
        return perm, b.node("Div", [centred, _std(b, var, eps, call.name)], name=f"{call.name}/normalised")
    perm, xc = _channel_at_1(b, x, axis)
    grouped = b.node("Reshape", [xc, b.ints(f"{call.name}/group_shape", [0, groups, -1])], name=f"{call.name}/grouped")
    centred, var = _moments(b, grouped, [2], call.name)
    y = b.node("Div", [centred, _std(b, var, eps, call.name)], name=f"{call.name}/grouped_normalised")
    shape = b.node("Shape", [xc], name=f"{call.name}/shape")
    return perm, b.node("Reshape", [y, shape], name=f"{call.name}/normalised")


def _per_channel(call: Call, groups_key: bool) -> tuple[int, int, float, np.ndarray | None, np.ndarray | None]:
    """``(axis, groups, epsilon, gamma, beta)`` of a GroupNormalization-like config."""
    c, w, x = call.config, call.layer.weights, call.x
    axis = int(c.get("axis", -1)) % x.rank
    channels = x.shape[axis]
    if not isinstance(channels, int):
        raise refuse(call, f"the size of axis {axis} is unknown")
    groups = int(c.get("groups", 32)) if groups_key else channels
    groups = channels if groups == -1 else groups
    if groups <= 0 or channels % groups:
        raise refuse(call, f"groups {groups} do not divide the {channels} channels of axis {axis}")
    return (axis, groups, float(c.get("epsilon", 1e-3)), w.get("gamma") if c.get("scale", True) else None,
            w.get("beta") if c.get("center", True) else None)


@converts("GroupNormalization", "Addons>GroupNormalization")
def group_norm(b: Builder, call: Call) -> list[Tensor]:
    """Keras' GroupNormalization (catalog ``group_norm``) from primitive ops: ONNX's own
    GroupNormalization changed meaning between opsets 18 and 21 (per-group vs per-channel scale)."""
    if call.mask(0) is not None and call.generation < 3:
        raise refuse(call, "tf.keras weighs its statistics by the input's mask; bnconvert does not export masked statistics")
    axis, groups, eps, gamma, beta = _per_channel(call, groups_key=True)
    perm, y = _group_normalised(b, call, axis, groups, eps)
    return [b.tensor(call.out_shape, perm, _affine_tail(b, call, y, gamma, beta, call.x.rank, [axis], perm, call.x.shape))]


@converts("InstanceNormalization", "Addons>InstanceNormalization")
def instance_norm(b: Builder, call: Call) -> list[Tensor]:
    """The two published InstanceNormalizations (which one: the catalog's ``instance_norm_origin``):
    TensorFlow Addons' is a GroupNormalization with a group per channel; keras-contrib's divides
    by ``std + eps`` over every non-batch axis but ``axis`` (all of them when ``axis`` is None)."""
    try:
        origin = instance_norm_origin(call.layer.class_name, call.config)
    except ConfigProblem as exc:
        raise refuse(call, str(exc)) from None
    x, rank = call.x, call.x.rank
    if origin == ADDONS:
        axis, groups, eps, gamma, beta = _per_channel(call, groups_key=False)
        perm, y = _group_normalised(b, call, axis, groups, eps)
        return [b.tensor(call.out_shape, perm, _affine_tail(b, call, y, gamma, beta, rank, [axis], perm, x.shape))]
    c, w = call.config, call.layer.weights
    kept = [] if c.get("axis") is None else [int(c["axis"]) % rank]
    perm, xn = b.native(x)
    centred, var = _moments(b, xn, [i for i in range(1, rank) if perm[i] not in kept], call.name)
    std = b.node("Sqrt", [var], name=f"{call.name}/std")
    denom = b.node("Add", [std, b.const(f"{call.name}/epsilon", np.float32(c.get("epsilon", 1e-3)))], name=f"{call.name}/std_eps")
    y = b.node("Div", [centred, denom], name=f"{call.name}/normalised")
    gamma = w.get("gamma") if c.get("scale", True) else None
    beta = w.get("beta") if c.get("center", True) else None
    if not kept:  # keras-contrib's axis None: one gamma and one beta for the whole sample, as scalars
        steps = [(what, op, v) for what, op, v in (("gamma", "Mul", gamma), ("beta", "Add", beta)) if v is not None]
        for i, (what, op, v) in enumerate(steps):
            const = b.const(f"{call.name}/{what}", np.float32(np.ravel(v)[0]))
            y = b.node(op, [y, const], name=call.name if i == len(steps) - 1 else f"{call.name}/{what}")
        return [b.tensor(call.out_shape, perm, y if steps else b.node("Identity", [y], name=call.name))]
    return [b.tensor(call.out_shape, perm, _affine_tail(b, call, y, gamma, beta, rank, kept, perm, x.shape))]


@converts("UnitNormalization")
def unit_norm(b: Builder, call: Call) -> list[Tensor]:
    """``x / max(||x||, 1e-12)`` (Keras 3) or ``x / sqrt(max(||x||^2, 1e-12))`` (tf.keras) over ``axis``."""
    x, rank = call.x, call.x.rank
    perm, xn = b.native(x)
    held = sorted(position(perm, a) for a in _axes(call.config.get("axis", -1), rank))
    square_sum = b.reduce("ReduceSum", b.node("Mul", [xn, xn], name=f"{call.name}/square"), held, keepdims=True,
                          name=f"{call.name}/square_sum")
    floor = b.const(f"{call.name}/floor", np.float32(1e-12))
    if call.generation >= 3:
        norm = b.node("Max", [b.node("Sqrt", [square_sum], name=f"{call.name}/norm"), floor], name=f"{call.name}/norm_floored")
    else:
        norm = b.node("Sqrt", [b.node("Max", [square_sum, floor], name=f"{call.name}/square_sum_floored")],
                      name=f"{call.name}/norm")
    return [b.tensor(call.out_shape, perm, b.node("Div", [xn, norm], name=call.name))]


@converts("RMSNormalization")
def rms_norm(b: Builder, call: Call) -> list[Tensor]:
    """Keras 3 RMSNormalization: ``x / sqrt(mean(x^2) + eps) * scale`` over ``axis``."""
    c, x, rank = call.config, call.x, call.x.rank
    axes = _axes(c.get("axis", -1), rank)
    perm, xn = b.native(x)
    held = sorted(position(perm, a) for a in axes)
    mean_square = b.reduce("ReduceMean", b.node("Mul", [xn, xn], name=f"{call.name}/square"), held, keepdims=True,
                           name=f"{call.name}/mean_square")
    y = b.node("Div", [xn, _std(b, mean_square, rms_epsilon(c), call.name)], name=f"{call.name}/normalised")
    scale = call.layer.weights.get("scale")
    return [b.tensor(call.out_shape, perm, _affine_tail(b, call, y, scale, None, rank, axes, perm, x.shape, ("scale", "shift")))]


@converts("SpectralNormalization")
def spectral_norm(b: Builder, call: Call) -> list[Tensor]:
    """Keras 3 SpectralNormalization at inference: its layer with the stored kernel, exported by
    that layer's own handler (``vector_u`` serves training only)."""
    try:
        cls, config = inner_layer(call.config)
    except ConfigProblem as exc:
        raise refuse(call, str(exc)) from None
    handler = handlers().get(cls)
    if handler is None:
        raise refuse(call, f"the wrapped layer's class {cls!r} has no ONNX handler")
    weights = {k: v for k, v in call.layer.weights.items() if k != "vector_u"}
    inner = Layer(name=call.layer.name, class_name=cls, config=config, weights=weights, source_class=cls)
    try:
        return handler(b, Call(layer=inner, name=call.name, inputs=call.inputs, out_shapes=call.out_shapes,
                               source=call.source))
    except ConfigProblem as exc:
        raise refuse(call, f"wrapped {cls}: {exc}") from None
