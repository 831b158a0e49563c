"""Pure numpy folding kernels: arrays in, new arrays out, float64 inside, never mutating inputs.

The per-channel vectors are float64; each kernel is read once and multiplied in float64 through
numpy's cast buffers, rounded once to its own dtype (no float64 copy of a whole kernel).

A BatchNormalization at inference is the per-channel affine ``y = s*x + t`` with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean*s``.

Backward fold (linear producer -> BN), along the producer's output-channel axis::

    W' = W * s          b' = b*s + t          (b = 0 when the layer has no bias)

Forward fold (BN -> consumer), along the consumer's input-channel axis, exact for Dense and for
``valid`` convolutions (every window sees the shifted value, never a padded zero)::

    W' = W * s          b' = b + sum over kernel and input of W * t

:func:`fold_backward`, :func:`fold_forward` and :func:`stays_bn_weights` check every result to
be finite in the dtype it is stored in: a huge gamma over a tiny variance can give ``s`` beyond
float32 (``3.4e38``), and a folded kernel of Inf would be a broken model written without
complaint (:class:`FoldOverflow`).

Keras kernel layouts (the same for channels_last and channels_first):

=====================================  =========================  ==============================
class                                  kernel                     output channel / input channel
=====================================  =========================  ==============================
Dense                                  ``(in, out)``              axis -1 / axis -2
Conv1D/2D/3D (``groups`` g)            ``(*k, in/g, out)``        axis -1 / axis -2 within group
Conv1D/2D/3DTranspose                  ``(*k, filters, in)``      axis -2 / axis -1
DepthwiseConv1D/2D (multiplier dm)     ``(*k, C, dm)``            ``c*dm + m`` / axis -2
SeparableConv1D/2D                     depthwise ``(*k, C, dm)``, pointwise ``(*1, C*dm, out)``
=====================================  =========================  ==============================

Recurrent layers fold forward only, into their *input* kernel (the recurrent kernel reads the
state, which the BN never touches). SimpleRNN/LSTM/GRU ``kernel (F, G)`` (``G`` = gates * units)
is read like a Dense at every step, so ``W' = W * s[:, None]`` and ``t @ W`` joins the bias the
input projection adds: the ``(G,)`` bias of SimpleRNN, LSTM and GRU ``reset_after=False`` (Keras'
GRU adds it to ``x @ W`` for all three gates, outside the reset gate's product), row 0 of GRU's
``(2, G)`` bias with ``reset_after`` (row 1, the recurrent bias, is multiplied by the reset gate
and must not move). ConvLSTM's ``kernel (*k, C, 4f)`` is a convolution of each step's image:
the convolution rule above.

Each class's catalog record states these axes in its fold role (:mod:`bnconvert.catalog.roles`);
:func:`fold_backward` and :func:`fold_forward` pick the kernel from the role, never from the name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ..catalog import FoldRole, fold_role
from ..errors import FoldError

__all__ = [
    "Affine",
    "FoldOverflow",
    "compose",
    "fold_backward",
    "fold_forward",
    "fold_bn",
    "scale_output",
    "scale_depthwise_output",
    "scale_conv_input",
    "scale_depthwise_input",
    "scale_separable_input",
    "scale_dense_input",
    "scale_recurrent_input",
    "fold_backward_role",
    "fold_forward_role",
    "features_of",
    "flatten_features",
    "dense_input_affine",
    "stays_bn_weights",
]

#: ``(s, t)``: the per-channel affine ``x -> s*x + t``
Affine = tuple[np.ndarray, np.ndarray]


class FoldOverflow(FoldError):
    """A fold whose new weights do not fit their dtype (Inf/NaN after rounding). The message reads
    on from "folding 'bn' into 'conv' ..." (the caller names the layers and the file)."""


def _f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _finite(s: np.ndarray, *arrays: np.ndarray) -> None:
    """FoldOverflow unless every array is finite (each already in the dtype it will be stored in)."""
    for a in arrays:
        if a is not None and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            with np.errstate(invalid="ignore"):
                biggest = float(np.max(np.abs(_f64(s)))) if np.size(s) else float("nan")
            raise FoldOverflow(f"gives values beyond {a.dtype} (gamma/sqrt(var+eps) up to {biggest:.3g})")


def _dtype(kernel: np.ndarray) -> np.dtype:
    kind = np.asarray(kernel).dtype
    return kind if kind.kind == "f" else np.dtype("float32")


def _scaled(kernel: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``kernel * factor`` (broadcast) in float64, rounded once to the kernel's dtype: the same
    numbers as ``(float64(kernel) * factor).astype(dtype)`` without a float64 copy of the kernel
    (numpy casts through small buffers), so a fold reads each kernel once and writes it once."""
    k = np.asarray(kernel)
    out = np.empty(np.broadcast_shapes(k.shape, np.shape(factor)), dtype=_dtype(kernel))
    np.multiply(k, factor, out=out, dtype=np.float64, casting="same_kind")
    return out


def _bias(bias: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n) if bias is None else _f64(bias).reshape(-1)


def _check(s: np.ndarray, t: np.ndarray, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    s, t = _f64(s).reshape(-1), _f64(t).reshape(-1)
    if s.size != n or t.size != n:
        raise FoldError(f"{what}: the BN has {s.size} channels but the layer has {n}")
    return s, t


def compose(first: Affine, second: Affine) -> Affine:
    """The affine ``second(first(x))``: ``s = s2*s1``, ``t = s2*t1 + t2``."""
    s1, t1 = _f64(first[0]), _f64(first[1])
    s2, t2 = _f64(second[0]), _f64(second[1])
    return s2 * s1, s2 * t1 + t2


# -- backward: scale the output channels ----------------------------------------------------------
def scale_output(kernel: np.ndarray, bias: np.ndarray | None, s: np.ndarray, t: np.ndarray, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Dense/Conv (``axis=-1``) or Conv*Transpose (``axis=-2``): ``W*s`` on ``axis``, ``b*s + t``."""
    w = np.asarray(kernel)
    n = w.shape[axis]
    s, t = _check(s, t, n, "backward fold")
    shape = [1] * w.ndim
    shape[axis] = n
    new_w = _scaled(w, s.reshape(shape))
    new_b = _bias(bias, n) * s + t
    return new_w, new_b.astype(new_w.dtype)


def scale_depthwise_output(kernel: np.ndarray, bias: np.ndarray | None, s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DepthwiseConv: kernel ``(*k, C, dm)``, output channel ``c*dm + m``."""
    w = np.asarray(kernel)
    c, dm = w.shape[-2], w.shape[-1]
    s, t = _check(s, t, c * dm, "backward fold into a depthwise convolution")
    new_w = _scaled(w, s.reshape(c, dm))
    new_b = _bias(bias, c * dm) * s + t
    return new_w, new_b.astype(new_w.dtype)


# -- forward: scale the input channels ------------------------------------------------------------
def scale_dense_input(kernel: np.ndarray, bias: np.ndarray | None, s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``(in, out)`` reading ``s*x + t``: ``W*s[:, None]``, ``b + t @ W``."""
    w = np.asarray(kernel)
    s, t = _check(s, t, w.shape[0], "forward fold into Dense")
    new_b = _bias(bias, w.shape[1]) + t @ _f64(w)
    new_w = _scaled(w, s[:, None])
    return new_w, new_b.astype(new_w.dtype)


def scale_recurrent_input(
    kernel: np.ndarray, bias: np.ndarray | None, s: np.ndarray, t: np.ndarray, *, split: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A recurrent layer's input kernel ``(F, G)`` reading ``s*x + t``: ``W*s[:, None]``, and
    ``t @ W`` added to the input bias: the ``(G,)`` bias, or row 0 of a ``(2, G)`` one (``split``:
    GRU ``reset_after``, whose row 1 is the recurrent bias). A missing bias is created in the
    layout the layer will have once ``use_bias`` is true."""
    w = np.asarray(kernel)
    s, t = _check(s, t, w.shape[0], "forward fold into a recurrent layer")
    gates = w.shape[1]
    if not split:
        return scale_dense_input(w, bias, s, t)
    b = np.zeros((2, gates)) if bias is None else _f64(bias).reshape(2, gates).copy()
    b[0] += t @ _f64(w)
    new_w = _scaled(w, s[:, None])
    return new_w, b.astype(new_w.dtype)


def scale_conv_input(
    kernel: np.ndarray, bias: np.ndarray | None, s: np.ndarray, t: np.ndarray, *, groups: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Conv ``(*k, in/groups, out)`` with ``valid`` padding reading ``s*x + t``.

    Output channel ``o`` of group ``g = o // (out/groups)`` reads input channel ``g*in_g + j``
    through ``W[..., j, o]``.
    """
    w = np.asarray(kernel)
    in_g, out = w.shape[-2], w.shape[-1]
    if groups < 1 or out % groups:
        raise FoldError(f"forward fold: {out} filters cannot be split into {groups} groups")
    s, t = _check(s, t, in_g * groups, "forward fold into a convolution")
    out_g = out // groups
    # per (j, o): the input channel that kernel entry reads
    channel = (np.arange(out) // out_g)[None, :] * in_g + np.arange(in_g)[:, None]
    new_w = _scaled(w, s[channel])
    spatial = tuple(range(w.ndim - 2))
    new_b = _bias(bias, out) + (w.sum(axis=spatial, dtype=np.float64) * t[channel]).sum(axis=0)
    return new_w, new_b.astype(new_w.dtype)


def scale_depthwise_input(kernel: np.ndarray, bias: np.ndarray | None, s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DepthwiseConv ``(*k, C, dm)`` with ``valid`` padding reading ``s*x + t``."""
    w = np.asarray(kernel)
    c, dm = w.shape[-2], w.shape[-1]
    s, t = _check(s, t, c, "forward fold into a depthwise convolution")
    new_w = _scaled(w, s[:, None])
    spatial = tuple(range(w.ndim - 2))
    shift = (w.sum(axis=spatial, dtype=np.float64) * t[:, None]).reshape(-1)  # (C, dm) -> c*dm + m
    new_b = _bias(bias, c * dm) + shift
    return new_w, new_b.astype(new_w.dtype)


def scale_separable_input(
    depthwise: np.ndarray, pointwise: np.ndarray, bias: np.ndarray | None, s: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SeparableConv with ``valid`` padding reading ``s*x + t``: the scale goes into the depthwise
    kernel, the shift travels through both kernels into the bias."""
    dw = np.asarray(depthwise)
    pw = np.asarray(pointwise)
    c = dw.shape[-2]
    s, t = _check(s, t, c, "forward fold into a separable convolution")
    new_dw = _scaled(dw, s[:, None])
    spatial = tuple(range(dw.ndim - 2))
    mid = (dw.sum(axis=spatial, dtype=np.float64) * t[:, None]).reshape(-1)  # shift of each intermediate channel
    pw2 = _f64(pw).reshape(-1, pw.shape[-1])  # (C*dm, out): pointwise kernels are 1x1
    new_b = _bias(bias, pw.shape[-1]) + mid @ pw2
    return new_dw, pw.copy(), new_b.astype(_dtype(pointwise))


# -- dispatch by the catalog's fold role ---------------------------------------------------------
def _groups(config: dict[str, Any]) -> int:
    return int(config.get("groups", 1) or 1)


def _checked(move: Callable[..., dict[str, np.ndarray]]) -> Callable[..., dict[str, np.ndarray]]:
    """``move`` with numpy's overflow warnings off and its new arrays checked to be finite."""
    @functools.wraps(move)
    def run(role: FoldRole, weights: dict[str, np.ndarray], s: np.ndarray, t: np.ndarray, *,
            config: dict[str, Any], what: str = "") -> dict[str, np.ndarray]:
        with np.errstate(over="ignore", invalid="ignore"):
            w = move(role, weights, s, t, config=config, what=what)
        _finite(s, *(w[k] for k in w if w[k] is not weights.get(k)))
        return w
    return run


@_checked
def fold_backward_role(role: FoldRole, weights: dict[str, np.ndarray], s: np.ndarray, t: np.ndarray, *,
                       config: dict[str, Any], what: str = "") -> dict[str, np.ndarray]:
    """:func:`fold_backward` given the fold role itself (a wrapper's inner layer, a cell)."""
    if not role.producer or role.out is None:
        raise FoldError(f"cannot fold a BN backward into a {what or role.kind}")
    w = dict(weights)
    bias = w.get("bias") if config.get("use_bias", True) else None
    key, axis = role.out
    if role.spread:  # depthwise: output channel c*dm + m over the last two axes
        w[key], w["bias"] = scale_depthwise_output(w[key], bias, s, t)
    elif isinstance(axis, tuple):
        raise FoldError(f"cannot fold a BN backward into a {what or role.kind} (output over two kernel axes)")
    else:  # grouped convolutions too: output channels are the last kernel axis whatever the groups
        w[key], w["bias"] = scale_output(w[key], bias, s, t, axis=axis)
    return w


@_checked
def fold_forward_role(role: FoldRole, weights: dict[str, np.ndarray], s: np.ndarray, t: np.ndarray, *,
                      config: dict[str, Any], what: str = "") -> dict[str, np.ndarray]:
    """:func:`fold_forward` given the fold role itself (a wrapper's inner layer, a cell)."""
    if not role.consumer or role.into is None or role.into[1] != -2:
        raise FoldError(f"cannot fold a BN forward into a {what or role.kind}")
    w = dict(weights)
    bias = w.get("bias") if config.get("use_bias", True) else None
    key = role.into[0]
    if role.through:  # separable: scale the depthwise kernel, the shift travels through both
        w[key], w[role.through], w["bias"] = scale_separable_input(w[key], w[role.through], bias, s, t)
    elif role.spread:  # depthwise: input channel c feeds outputs c*dm .. c*dm + dm-1
        w[key], w["bias"] = scale_depthwise_input(w[key], bias, s, t)
    elif role.windowed:  # convolutions, and ConvLSTM's input kernel
        w[key], w["bias"] = scale_conv_input(w[key], bias, s, t, groups=_groups(config) if role.grouped else 1)
    elif role.state:  # SimpleRNN/LSTM/GRU input kernel: a Dense at every step, GRU's split bias
        split = role.split is not None and config.get(role.split, True) is not False
        w[key], w["bias"] = scale_recurrent_input(w[key], bias, s, t, split=split)
    else:  # Dense: the same kernel at every position
        w[key], w["bias"] = scale_dense_input(w[key], bias, s, t)
    return w


def fold_backward(class_name: str, weights: dict[str, np.ndarray], s: np.ndarray, t: np.ndarray, *, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """New weights of a producer whose output goes through ``s*x + t`` (a bias is always returned).

    The catalog record's fold role says which weight holds the output channels and on which axis."""
    return fold_backward_role(fold_role(class_name), weights, s, t, config=config, what=class_name)


def fold_forward(class_name: str, weights: dict[str, np.ndarray], s: np.ndarray, t: np.ndarray, *, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """New weights of a consumer whose input is ``s*x + t`` per input channel/unit.

    The catalog record's fold role says which weight holds the input channels (always axis -2 of
    the Keras layouts above) and what the shift passes through."""
    return fold_forward_role(fold_role(class_name), weights, s, t, config=config, what=class_name)


# -- where each feature of a reshaped tensor came from ------------------------------------------------
def features_of(vec: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """A per-channel vector broadcast over a whole (batchless) tensor of ``shape``, channel on ``axis``."""
    vec = _f64(vec).reshape(-1)
    bshape = [1] * len(shape)
    bshape[axis] = vec.size
    return np.broadcast_to(vec.reshape(bshape), shape).copy()


def flatten_features(full: np.ndarray, data_format: str = "channels_last") -> np.ndarray:
    """What Keras ``Flatten`` does to a batchless tensor: ``channels_first`` moves the channel axis
    last before flattening (to keep weight order across data formats)."""
    if data_format == "channels_first" and full.ndim > 1:
        full = np.moveaxis(full, 0, -1)
    return full.reshape(-1)


def dense_input_affine(s_full: np.ndarray, t_full: np.ndarray) -> Affine | None:
    """The per-unit affine a Dense reading these per-element arrays sees, or None when it varies
    along a non-last axis (Dense applies one kernel at every position)."""
    units = s_full.shape[-1]
    s2, t2 = s_full.reshape(-1, units), t_full.reshape(-1, units)
    if not (np.all(s2 == s2[:1]) and np.all(t2 == t2[:1])):
        return None
    return s2[0].copy(), t2[0].copy()


def stays_bn_weights(
    weights: dict[str, np.ndarray], s: np.ndarray, t: np.ndarray, *, epsilon: float
) -> dict[str, np.ndarray]:
    """Weights of a BN that stays but now carries the affine ``s*x + t`` (its own plus merged ones).

    Keeps its variance (so ``sqrt(var + eps)`` stays valid) and sets ``mean = 0``,
    ``gamma = s*sqrt(var + eps)``, ``beta = t``; gamma and beta are always returned (the layer
    needs ``scale=True, center=True`` afterwards).
    """
    var = _f64(weights["moving_variance"])
    shape = var.shape
    s = _f64(s).reshape(shape)
    t = _f64(t).reshape(shape)
    dt = _dtype(weights["moving_variance"])
    out = dict(weights)
    with np.errstate(over="ignore", invalid="ignore"):
        out["gamma"] = (s * np.sqrt(var + epsilon)).astype(dt)
        out["beta"] = t.astype(dt)
    out["moving_mean"] = np.zeros(shape, dtype=dt)
    _finite(s, out["gamma"], out["beta"])
    return out


def fold_bn(
    class_name: str,
    weights: dict[str, np.ndarray],
    bn: Any,
    *,
    forward: bool = False,
    config: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Fold a BN (a :class:`bnconvert.BNParams`) into a Keras layer's weights given by meaning.

    ``weights`` uses Keras 2/3 names and layouts (``kernel``/``bias``, ``depthwise_kernel``,
    ``pointwise_kernel``); backward (the layer feeds the BN) unless ``forward`` (the BN feeds the
    layer). Returns new arrays in the kernel's dtype, computed in float64; a bias is always
    returned (created when the layer had none).
    """
    move = fold_forward if forward else fold_backward
    cfg = dict(config or {})
    cfg.setdefault("use_bias", "bias" in weights)
    return move(class_name, weights, bn.fold_scale, bn.fold_shift, config=cfg)
