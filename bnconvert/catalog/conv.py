"""Convolutions in float64: Conv1D/2D/3D (groups, dilation, same/valid/causal), depthwise,
separable and transposed, channels_last or channels_first.

Keras (TensorFlow backend) cross-correlates: ``y[o] = sum_t x[o*stride + t*dilation - pad] * K[t]``
with ``K`` laid out ``(*k, C_in/groups, filters)``; ``same`` pads ``total = max((ceil(n/s)-1)*s
+ (k-1)*d + 1 - n, 0)`` with the odd pixel after, ``causal`` pads ``(k-1)*d`` before.
Everything is computed channels_last; a channels_first layer moves its channel axis there and back.

Regular convolutions gather their windows once (``sliding_window_view``, then one matrix product
per group through ``tensordot``); depthwise and transposed ones loop over the kernel taps (at
most a few dozen), never over pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..model import Layer
from . import checks
from .activations import apply_activation
from .facts import (
    Dim,
    KernelLayout,
    Shape,
    ShapeRule,
    WeightRule,
    WeightSpec,
    assemble,
    conv_output_length,
    deconv_output_length,
    input_channels,
    positive,
    positives,
    settings,
    split_spatial,
    times,
)
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .roles import producer
from .util import channels_first, f64, from_last, ntuple, same_pads, to_last

__all__ = ["conv_nd", "depthwise_nd", "conv_transpose_nd", "pad_input"]


def pad_input(x: np.ndarray, ks: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...],
              padding: str) -> np.ndarray:
    """``x`` (N, *S, C) padded with zeros the way Keras pads for this convolution."""
    n = len(ks)
    if padding == "valid":
        return x
    if padding == "causal":
        pads = [((ks[0] - 1) * dilations[0], 0)]
    elif padding == "same":
        pads = [same_pads(x.shape[1 + i], ks[i], strides[i], dilations[i]) for i in range(n)]
    else:
        raise ValueError(f"padding {padding!r}")
    if not any(a or b for a, b in pads):
        return x
    return np.pad(x, [(0, 0), *pads, (0, 0)])


def _windows(x: np.ndarray, ks: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...]) -> np.ndarray:
    """The view ``(N, *out, C, *k)`` of every window of the padded ``x`` (N, *S, C)."""
    n = len(ks)
    span = [(k - 1) * d + 1 for k, d in zip(ks, dilations)]
    view = sliding_window_view(x, span, axis=tuple(range(1, n + 1)))
    index = (slice(None), *(slice(None, None, s) for s in strides), slice(None), *(slice(None, None, d) for d in dilations))
    return view[index]


def conv_nd(x: np.ndarray, kernel: np.ndarray, *, strides: tuple[int, ...], dilations: tuple[int, ...],
            padding: str, groups: int = 1) -> np.ndarray:
    """Keras' convolution of ``x`` (N, *S, C) with ``kernel`` (*k, C/groups, F): (N, *out, F)."""
    n = kernel.ndim - 2
    ks = tuple(kernel.shape[:n])
    x = pad_input(x, ks, strides, dilations, padding)
    if all(k == 1 for k in ks):  # pointwise: no windows to gather
        x = x[(slice(None),) + tuple(slice(None, None, s) for s in strides)]
        cols = x[(Ellipsis,) + (None,) * n]  # (N, *out, C, 1, ...): the windows of a 1x1 kernel
    else:
        cols = _windows(x, ks, strides, dilations)  # (N, *out, C, *k)
    c_in, filters = kernel.shape[-2], kernel.shape[-1]
    # contracted as (*k, C): the gathered rows then copy in runs of C contiguous values, and the
    # kernel (*k, C, F) reshapes to (k*C, F) without a copy
    contract_cols = [n + 2 + i for i in range(n)] + [n + 1]
    contract_kernel = list(range(n + 1))
    if groups == 1:
        return np.tensordot(cols, kernel, axes=(contract_cols, contract_kernel))
    per = filters // groups
    channel = (slice(None),) * (n + 1)
    outs = [
        np.tensordot(cols[channel + (slice(g * c_in, (g + 1) * c_in),)], kernel[..., g * per:(g + 1) * per],
                     axes=(contract_cols, contract_kernel))
        for g in range(groups)
    ]
    return np.concatenate(outs, axis=-1)


def depthwise_nd(x: np.ndarray, kernel: np.ndarray, *, strides: tuple[int, ...], dilations: tuple[int, ...],
                 padding: str) -> np.ndarray:
    """Keras' depthwise convolution of ``x`` (N, *S, C) with ``kernel`` (*k, C, dm): output
    channel ``c*dm + m`` is input channel ``c`` convolved with ``kernel[..., c, m]``."""
    n = kernel.ndim - 2
    ks = tuple(kernel.shape[:n])
    x = pad_input(x, ks, strides, dilations, padding)
    c, dm = kernel.shape[-2], kernel.shape[-1]
    out_sizes = [(x.shape[1 + i] - (ks[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(n)]
    y = np.zeros((x.shape[0], *out_sizes, c, dm))
    xe = x[..., None]
    for tap in np.ndindex(*ks):
        start = [t * d for t, d in zip(tap, dilations)]
        index = (slice(None), *(slice(s0, s0 + (o - 1) * st + 1, st) for s0, o, st in zip(start, out_sizes, strides)))
        y += xe[index] * kernel[tap]
    return y.reshape(*y.shape[:-2], c * dm)


def _transpose_length(n: int, k: int, stride: int, dilation: int, padding: str, output_padding: int | None) -> int:
    """Keras' ``compute_conv_transpose_output_shape`` along one axis."""
    k_eff = (k - 1) * dilation + 1
    if output_padding is None:
        if padding == "valid":
            return n * stride + max(k_eff - stride, 0)
        return n * stride
    pad = k_eff // 2 if padding == "same" else 0
    return (n - 1) * stride + k_eff - 2 * pad + output_padding


def conv_transpose_nd(x: np.ndarray, kernel: np.ndarray, *, strides: tuple[int, ...], dilations: tuple[int, ...],
                      padding: str, output_padding: tuple[int, ...] | None) -> np.ndarray:
    """Keras' transposed convolution of ``x`` (N, *S, C) with ``kernel`` (*k, F, C): the gradient
    of the convolution (TensorFlow ``conv_transpose``) whose input has Keras' output length.
    Each input pixel scatters ``x @ K[t].T`` to ``i*stride + t*dilation - pad_before``."""
    n = kernel.ndim - 2
    ks = tuple(kernel.shape[:n])
    filters = kernel.shape[-2]
    lengths = [_transpose_length(x.shape[1 + i], ks[i], strides[i], dilations[i], padding,
                                 None if output_padding is None else output_padding[i]) for i in range(n)]
    befores = [same_pads(lengths[i], ks[i], strides[i], dilations[i])[0] if padding == "same" else 0 for i in range(n)]
    full = [max((x.shape[1 + i] - 1) * strides[i] + (ks[i] - 1) * dilations[i] + 1, befores[i] + lengths[i])
            for i in range(n)]
    y = np.zeros((x.shape[0], *full, filters))
    for tap in np.ndindex(*ks):
        index = (slice(None), *(slice(t * d, t * d + (x.shape[1 + i] - 1) * s + 1, s)
                                for i, (t, d, s) in enumerate(zip(tap, dilations, strides))))
        y[index] += x @ kernel[tap].T
    crop = (slice(None), *(slice(b, b + length) for b, length in zip(befores, lengths)))
    return y[crop]


def _settings(layer: Layer, n: int) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    c = layer.config
    return ntuple(c.get("strides", 1), n), ntuple(c.get("dilation_rate", 1), n), str(c.get("padding", "valid")).lower()


def _finish(layer: Layer, y: np.ndarray, ctx: CallContext, first: bool) -> list[np.ndarray]:
    """Bias and activation on ``y``, a fresh array this function may overwrite."""
    bias = layer.weights.get("bias")
    if bias is not None and layer.config.get("use_bias", True) is not False:
        y += bias
    return [from_last(apply_activation(layer, y, ctx, in_place=True), first)]


# -- output shapes and weights ----------------------------------------------------------------------
def _conv_shape(n: int, kind: str) -> ShapeRule:
    """Keras' ``compute_output_shape`` of an n-D convolution (``kind``: conv, depthwise,
    separable, transpose); an input of another rank than ``n + 2`` has no shape."""

    def rule(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != n + 2:
            raise ValueError(f"rank-{len(x)} input")
        spatial, channels = split_spatial(x, c)
        ks, strides = settings(c.get("kernel_size"), n), settings(c.get("strides", 1), n)
        dilations, padding = settings(c.get("dilation_rate", 1), n), c.get("padding", "valid")
        if kind == "transpose":
            op = settings(c.get("output_padding"), n)
            out = [deconv_output_length(s, k, padding, t, p, d) for s, k, t, p, d in zip(spatial, ks, strides, op, dilations)]
            if c.get("keras1_output_shape"):  # Keras 1 Deconvolution2D states its output shape
                given = list(c["keras1_output_shape"])
                out = given[2:] if c.get("data_format") == "channels_first" else given[1:-1]
            return [assemble(x[0], out, c["filters"], c)]
        out = [conv_output_length(s, k, padding, t, d) for s, k, t, d in zip(spatial, ks, strides, dilations)]
        filters = times(channels, int(c.get("depth_multiplier", 1))) if kind == "depthwise" else c["filters"]
        return [assemble(x[0], out, filters, c)]

    return rule


def _bias(c: dict[str, Any], size: Dim) -> list[WeightSpec]:
    return [WeightSpec("bias", (size,))] if c.get("use_bias", True) else []


def _conv_weights(n: int, kind: str) -> WeightRule:
    """Kernel layouts of the module docstring: ``(*k, C_in/groups, filters)``, transposed
    ``(*k, filters, C_in)``, depthwise ``(*k, C, dm)``, separable depthwise then ``(*1, C*dm, filters)``."""

    def rule(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
        ks = positives(c, "kernel_size", n)
        cin = input_channels(c, shapes, n)
        if kind == "depthwise":
            dm = positive(c, "depth_multiplier", 1)
            return [WeightSpec("depthwise_kernel", (*ks, cin, dm)), *_bias(c, times(cin, dm))]
        filters = positive(c, "filters")
        if kind == "separable":
            dm = positive(c, "depth_multiplier", 1)
            return [WeightSpec("depthwise_kernel", (*ks, cin, dm)),
                    WeightSpec("pointwise_kernel", (*([1] * n), times(cin, dm), filters)), *_bias(c, filters)]
        if kind == "transpose":
            return [WeightSpec("kernel", (*ks, filters, cin)), *_bias(c, filters)]
        groups = positive(c, "groups", 1)
        per_group = None if cin is None or cin % groups else cin // groups
        return [WeightSpec("kernel", (*ks, per_group, filters)), *_bias(c, filters)]

    return rule


def _rules(kind: str, names: dict[str, int]) -> dict[str, Any]:
    """``shape=``, ``weights=``, ``fields=`` and ``kernel=`` arguments of :func:`defines` for classes of one kind, by rank."""
    return {"shape": {name: _conv_shape(n, kind) for name, n in names.items()},
            "weights": {name: _conv_weights(n, kind) for name, n in names.items()}, "fields": checks.CONV,
            "kernel": {name: KernelLayout(n, kind) for name, n in names.items()}}


_K1_CONV = (K1("filters", "nb_filter"), K1("padding", "border_mode", "valid"), K1("activation", "activation", "linear"),
            K1("use_bias", "bias", True))
_K1_CONV2D = _K1_CONV + (K1("strides", "subsample", 1), K1("dilation_rate", "atrous_rate", 1))
#: Keras 1 argument spellings (the reader builds ``kernel_size`` from ``nb_row``/``nb_col`` or
#: ``kernel_dim1..3`` and ``data_format`` from ``dim_ordering``)
_KERAS1 = {
    "Conv1D": _K1_CONV + (K1("kernel_size", "filter_length"), K1("strides", "subsample_length", 1),
                          K1("dilation_rate", "atrous_rate", 1)),
    "Conv2D": _K1_CONV2D,
    "Conv3D": _K1_CONV + (K1("strides", "subsample", 1),),
    "Conv2DTranspose": _K1_CONV2D,
    "SeparableConv2D": _K1_CONV2D + (K1("depth_multiplier", "depth_multiplier", 1),),
}


@defines("Conv1D", "Conv2D", "Conv3D", aliases={"Conv1D": ("Convolution1D", "AtrousConvolution1D"),
                                                 "Conv2D": ("Convolution2D", "AtrousConvolution2D"),
                                                 "Conv3D": ("Convolution3D",)},
         fold=producer(("kernel", -1), ("kernel", -2), grouped=True),
         keras1=_KERAS1,
         **_rules("conv", {"Conv1D": 1, "Conv2D": 2, "Conv3D": 3}))
def conv_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    kernel = f64(layer.weights["kernel"])
    n = kernel.ndim - 2
    first = channels_first(layer.config)
    strides, dilations, padding = _settings(layer, n)
    x = to_last(f64(xs[0]), first)
    groups = int(layer.config.get("groups", 1) or 1)
    return _finish(layer, conv_nd(x, kernel, strides=strides, dilations=dilations, padding=padding, groups=groups),
                   ctx, first)


@defines("DepthwiseConv1D", "DepthwiseConv2D", fold=producer(("depthwise_kernel", (-2, -1)), ("depthwise_kernel", -2)),
         **_rules("depthwise", {"DepthwiseConv1D": 1, "DepthwiseConv2D": 2}))
def depthwise_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    kernel = f64(layer.weights.get("depthwise_kernel", layer.weights.get("kernel")))
    n = kernel.ndim - 2
    first = channels_first(layer.config)
    strides, dilations, padding = _settings(layer, n)
    x = to_last(f64(xs[0]), first)
    return _finish(layer, depthwise_nd(x, kernel, strides=strides, dilations=dilations, padding=padding), ctx, first)


@defines("SeparableConv1D", "SeparableConv2D", aliases={"SeparableConv2D": ("SeparableConvolution2D",)},
         fold=producer(("pointwise_kernel", -1), ("depthwise_kernel", -2), through="pointwise_kernel"),
         keras1=_KERAS1,
         **_rules("separable", {"SeparableConv1D": 1, "SeparableConv2D": 2}))
def separable_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Depthwise (strides, dilation, padding) then pointwise (1x1), then bias and activation."""
    dw = f64(layer.weights["depthwise_kernel"])
    pw = f64(layer.weights["pointwise_kernel"])
    n = dw.ndim - 2
    first = channels_first(layer.config)
    strides, dilations, padding = _settings(layer, n)
    x = to_last(f64(xs[0]), first)
    y = depthwise_nd(x, dw, strides=strides, dilations=dilations, padding=padding)
    y = np.tensordot(y, pw.reshape(pw.shape[-2:]), axes=([-1], [0]))
    return _finish(layer, y, ctx, first)


@defines("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", aliases={"Conv2DTranspose": ("Deconvolution2D",)},
         fold=producer(("kernel", -2)),  # no forward fold: a strided transpose overlaps its windows
         keras1=_KERAS1,
         **_rules("transpose", {"Conv1DTranspose": 1, "Conv2DTranspose": 2, "Conv3DTranspose": 3}))
def conv_transpose_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    kernel = f64(layer.weights["kernel"])
    n = kernel.ndim - 2
    first = channels_first(layer.config)
    strides, dilations, padding = _settings(layer, n)
    op = layer.config.get("output_padding")
    x = to_last(f64(xs[0]), first)
    y = conv_transpose_nd(x, kernel, strides=strides, dilations=dilations, padding=padding,
                          output_padding=None if op is None else ntuple(op, n))
    return _finish(layer, y, ctx, first)
