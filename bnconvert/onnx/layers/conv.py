"""Convolutions: Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D, Conv1D/2D/3DTranspose.

Kernel layouts (Keras -> ONNX ``W``):

* Conv: ``(*k, in/groups, out)`` -> ``(out, in/groups, *k)``
* Depthwise: ``(*k, C, dm)`` -> ``(C*dm, 1, *k)`` with output channel ``c*dm + m``, ``group = C``
* Separable: the depthwise part as above (no bias), then a 1x1 Conv with the pointwise kernel
* Transpose: ``(*k, out, in)`` -> ``(in, out, *k)``

Padding. Keras/TensorFlow ``same`` pads ``total = max((ceil(n/s)-1)*s + k_eff - n, 0)`` with the
smaller half first (ONNX SAME_UPPER); explicit pads are written when the size is known, else
``auto_pad=SAME_UPPER``. ``causal`` pads ``d*(k-1)`` on the left. Keras 1 on Theano pads ``same``
as ``k_eff//2`` first (Theano ``border_mode='half'``, cropped to ``ceil(n/s)`` outputs). A
ZeroPadding right before a convolution is absorbed into its pads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...catalog.facts import deconv_output_length
from ...layerspec import data_format
from ..builder import Builder, Call, Tensor
from ..layout import channels_first, identity
from ..registry import converts, refuse
from .activations import fused, pre_activation_name

__all__ = ["same_pads", "spatial_axes", "absorb_padding"]


def _tuple(value: Any, n: int) -> list[int]:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)] * n


def spatial_axes(rank: int, fmt: str) -> list[int]:
    """Keras axes of the spatial dimensions of a rank-``rank`` tensor in ``fmt``."""
    return list(range(2, rank)) if fmt == "channels_first" else list(range(1, rank - 1))


def same_pads(size: int | None, k_eff: int, stride: int, *, theano: bool = False) -> tuple[int, int] | None:
    """``(before, after)`` of Keras ``same`` padding, or None when it depends on an unknown size."""
    if theano:
        before = k_eff // 2
        if size is None:
            return (before, max(k_eff - 1 - before, 0)) if stride == 1 else None
        out = -(-size // stride)
        return before, max((out - 1) * stride + k_eff - before - size, 0)
    if size is None:
        if stride != 1:
            return None
        total = k_eff - 1
    else:
        total = max((-(-size // stride) - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def window_pads(call: Call, sizes: list[int | None], kernel: list[int], strides: list[int], dilations: list[int],
                padding: str) -> dict[str, Any]:
    """The ``pads`` (or ``auto_pad``) attributes of a Conv/Pool window for Keras ``padding``."""
    n = len(kernel)
    if padding == "valid":
        return {"pads": [0] * (2 * n)}
    if padding == "causal":
        return {"pads": [d * (k - 1) for k, d in zip(kernel, dilations)] + [0] * n}
    if padding != "same":
        raise refuse(call, f"padding {padding!r} is not supported")
    pairs = [same_pads(s, (k - 1) * d + 1, t, theano=call.theano) for s, k, t, d in zip(sizes, kernel, strides, dilations)]
    if any(p is None for p in pairs):
        if call.theano:
            raise refuse(call, "Theano 'same' padding with strides needs a known input size")
        return {"auto_pad": "SAME_UPPER"}
    return {"pads": [p[0] for p in pairs] + [p[1] for p in pairs]}  # type: ignore[index]


def absorb_padding(call: Call, fmt: str) -> tuple[Tensor, list[int]]:
    """The tensor a convolution should read and extra pads (ONNX order) taken from a ZeroPadding
    that feeds it directly; ``(call.x, zeros)`` when there is none to absorb."""
    x = call.x
    axes = spatial_axes(x.rank, fmt)
    if x.pad is None or set(x.pad[1]) - set(axes):
        return x, [0] * (2 * len(axes))
    src, pads = x.pad
    return src, [pads.get(a, (0, 0))[0] for a in axes] + [pads.get(a, (0, 0))[1] for a in axes]


def _common(call: Call, n: int) -> tuple[list[int], list[int], str]:
    c = call.config
    return _tuple(c.get("strides", 1), n), _tuple(c.get("dilation_rate", 1), n), str(c.get("padding", "valid")).lower()


def _out_perm(rank: int, fmt: str) -> tuple:
    return identity(rank) if fmt == "channels_first" else channels_first(rank)


def _bias(b: Builder, call: Call) -> list[str]:
    bias = call.layer.weights.get("bias")
    return [] if bias is None else [b.const(f"{call.name}/bias", np.asarray(bias).reshape(-1))]


def _window(call: Call, fmt: str, kernel: list[int]) -> tuple[dict[str, Any], Tensor]:
    """The window attributes and the tensor to read (a feeding ZeroPadding absorbed)."""
    n = len(kernel)
    strides, dilations, padding = _common(call, n)
    src, extra = absorb_padding(call, fmt)
    sizes = [call.x.shape[a] for a in spatial_axes(call.x.rank, fmt)]
    attrs = window_pads(call, sizes, kernel, strides, dilations, padding)
    if "pads" in attrs:
        attrs["pads"] = [p + e for p, e in zip(attrs["pads"], extra)]
    elif any(extra):  # auto_pad cannot be combined with extra pads: materialise the ZeroPadding
        src = call.x
    attrs.update(strides=strides, dilations=dilations, kernel_shape=kernel)
    return attrs, src


@converts("Conv1D", "Conv2D", "Conv3D")
def conv(b: Builder, call: Call) -> list[Tensor]:
    kernel = call.layer.weights.get("kernel")
    if kernel is None:
        raise refuse(call, "no kernel weight")
    n = kernel.ndim - 2
    fmt = data_format(call.config)
    attrs, src = _window(call, fmt, list(kernel.shape[:n]))
    groups = int(call.config.get("groups", 1) or 1)
    w = b.const(f"{call.name}/kernel", np.transpose(kernel, (n + 1, n, *range(n))))
    x = b.spatial_view(src, fmt)
    y = b.node("Conv", [x, w, *_bias(b, call)], name=call.name, out=pre_activation_name(call), group=groups, **attrs)
    return fused(b, call, y, _out_perm(call.x.rank, fmt))


def _depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    n = kernel.ndim - 2
    flat = kernel.reshape((*kernel.shape[:n], -1))  # (*k, C*dm), channel c*dm + m
    return np.transpose(flat, (n, *range(n)))[:, None]


@converts("DepthwiseConv1D", "DepthwiseConv2D")
def depthwise(b: Builder, call: Call) -> list[Tensor]:
    weights = call.layer.weights
    kernel = weights.get("depthwise_kernel", weights.get("kernel"))
    if kernel is None:
        raise refuse(call, "no depthwise kernel weight")
    n = kernel.ndim - 2
    fmt = data_format(call.config)
    attrs, src = _window(call, fmt, list(kernel.shape[:n]))
    w = b.const(f"{call.name}/kernel", _depthwise_weight(kernel))
    x = b.spatial_view(src, fmt)
    y = b.node("Conv", [x, w, *_bias(b, call)], name=call.name, out=pre_activation_name(call),
               group=int(kernel.shape[n]), **attrs)
    return fused(b, call, y, _out_perm(call.x.rank, fmt))


@converts("SeparableConv1D", "SeparableConv2D")
def separable(b: Builder, call: Call) -> list[Tensor]:
    weights = call.layer.weights
    dw, pw = weights.get("depthwise_kernel"), weights.get("pointwise_kernel")
    if dw is None or pw is None:
        raise refuse(call, "depthwise or pointwise kernel missing")
    n = dw.ndim - 2
    fmt = data_format(call.config)
    attrs, src = _window(call, fmt, list(dw.shape[:n]))
    x = b.spatial_view(src, fmt)
    mid = b.node("Conv", [x, b.const(f"{call.name}/depthwise_kernel", _depthwise_weight(dw))],
                 name=f"{call.name}/depthwise", group=int(dw.shape[n]), **attrs)
    pw_w = np.transpose(pw.reshape(pw.shape[-2], pw.shape[-1]), (1, 0)).reshape(pw.shape[-1], pw.shape[-2], *([1] * n))
    y = b.node("Conv", [mid, b.const(f"{call.name}/pointwise_kernel", pw_w), *_bias(b, call)],
               name=call.name, out=pre_activation_name(call), kernel_shape=[1] * n)
    return fused(b, call, y, _out_perm(call.x.rank, fmt))


def _transpose_pads(call: Call, size: int | None, out: int | None, k_eff: int, stride: int,
                    output_padding: int | None, padding: str) -> tuple[int, int, int]:
    """ONNX ``(pad_begin, pad_end, output_padding)`` giving Keras' output size ``out``.

    The forward convolution (output size -> input size) defines the pads; TensorFlow puts the
    smaller half first. With the size unknown the Keras rules make the result size-independent,
    so a stand-in size of 1 is used.
    """
    n = size if size is not None else 1
    if size is None or out is None:
        out = deconv_output_length(n, k_eff, padding, stride, output_padding)
    assert out is not None
    if padding == "same" and call.theano:
        if k_eff % 2 == 0:
            raise refuse(call, "Theano 'same' transposed convolution with an even kernel is not supported")
        begin = end = k_eff // 2
    else:
        total = max((n - 1) * stride + k_eff - out, 0)
        begin, end = total // 2, total - total // 2
    extra = out - ((n - 1) * stride + k_eff - begin - end)
    if extra < 0:
        end -= extra
        extra = 0
    return begin, end, extra


@converts("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def conv_transpose(b: Builder, call: Call) -> list[Tensor]:
    kernel = call.layer.weights.get("kernel")
    if kernel is None:
        raise refuse(call, "no kernel weight")
    n = kernel.ndim - 2
    c = call.config
    fmt = data_format(c)
    strides, dilations, padding = _common(call, n)
    if padding not in ("same", "valid"):
        raise refuse(call, f"padding {padding!r} is not supported")
    ks = list(kernel.shape[:n])
    ops = c.get("output_padding")
    ops = [None] * n if ops is None else _tuple(ops, n)
    sizes = [call.x.shape[a] for a in spatial_axes(call.x.rank, fmt)]
    outs = [call.out_shape[a] for a in spatial_axes(call.x.rank, fmt)]
    begins, ends, extras = [], [], []
    for size, out, k, s, d, op in zip(sizes, outs, ks, strides, dilations, ops):
        begin, end, extra = _transpose_pads(call, size, out, (k - 1) * d + 1, s, op, padding)
        begins.append(begin)
        ends.append(end)
        extras.append(extra)
    w = b.const(f"{call.name}/kernel", np.transpose(kernel, (n + 1, n, *range(n))))
    x = b.spatial_view(call.x, fmt)
    y = b.node("ConvTranspose", [x, w, *_bias(b, call)], name=call.name, out=pre_activation_name(call),
               kernel_shape=ks, strides=strides, dilations=dilations, pads=begins + ends,
               output_padding=extras if any(extras) else None)
    return fused(b, call, y, _out_perm(call.x.rank, fmt))
