"""Max/AveragePooling1D/2D/3D, their Global variants, and Keras 3's AdaptiveAverage/MaxPooling1D/2D/3D.

Keras ``same`` pooling pads like ``same`` convolution (smaller half first); padded positions are
ignored by max pooling and excluded from the average (TensorFlow's ``avg_pool``, Theano's
``average_exc_pad``), which is ONNX AveragePool with ``count_include_pad=0``. Global pooling is
a ReduceMean/ReduceMax over the spatial axes of whatever layout holds the tensor, so it never
needs a Transpose.

A masked GlobalAveragePooling1D (the one pooling layer whose Keras ``call`` reads a mask) averages
the unmasked steps only: ``sum(where(mask, x, 0)) / sum(mask)`` (Keras 3; tf.keras multiplies by
the mask, which differs only for infinite or NaN inputs); its output carries no mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from ...catalog.pooling import adaptive_bins
from ...layerspec import data_format
from ..builder import Builder, Call, Tensor
from ..layout import channels_first, identity, position
from ..registry import converts, refuse
from .conv import spatial_axes, window_pads
from .preprocessing import axis_matmul
from .sequence import mask_value

__all__ = ["adaptive_pool", "global_pool", "pool"]


def _tuple(value: Any, n: int) -> list[int]:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)] * n


@converts("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D")
def pool(b: Builder, call: Call) -> list[Tensor]:
    c = call.config
    x, rank = call.x, call.x.rank
    n = rank - 2
    fmt = data_format(c)
    size = _tuple(c.get("pool_size", 2), n)
    strides = _tuple(c.get("strides") or size, n)
    padding = str(c.get("padding", "valid")).lower()
    if padding == "same" and call.theano:
        raise refuse(call, "Keras 1 Theano 'same' pooling pads differently from TensorFlow and is not exported")
    sizes = [x.shape[a] for a in spatial_axes(rank, fmt)]
    attrs = window_pads(call, sizes, size, strides, [1] * n, padding)
    is_max = call.layer.class_name.startswith("Max")
    if not is_max:
        attrs["count_include_pad"] = 0
    y = b.node("MaxPool" if is_max else "AveragePool", [b.spatial_view(x, fmt)], name=call.name,
               kernel_shape=size, strides=strides, **attrs)
    perm = identity(rank) if fmt == "channels_first" else channels_first(rank)
    return [b.tensor(call.out_shape, perm, y)]


@converts("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
          "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D")
def global_pool(b: Builder, call: Call) -> list[Tensor]:
    c = call.config
    x, rank = call.x, call.x.rank
    fmt = data_format(c)
    if call.mask(0) is not None and call.layer.class_name == "GlobalAveragePooling1D":
        return [_masked_average(b, call, fmt)]
    perm, xn = b.native(x)
    axes = sorted(position(perm, a) for a in spatial_axes(rank, fmt))
    keepdims = bool(c.get("keepdims", False))
    op = "ReduceMax" if call.layer.class_name.startswith("GlobalMax") else "ReduceMean"
    y = b.reduce(op, xn, axes, keepdims=keepdims, name=call.name)
    if keepdims:
        return [b.tensor(call.out_shape, perm, y)]
    kept = [p for p in perm if p not in spatial_axes(rank, fmt)]  # batch and channel, in held order
    return [b.tensor(call.out_shape, (0, 1) if kept == sorted(kept) else (1, 0), y)]


def _masked_average(b: Builder, call: Call, fmt: str) -> Tensor:
    """Keras' masked mean over the steps of a ``(N, T, C)`` (or ``(N, C, T)``) input, whose mask is
    ``(N, T)``: masked steps count neither in the sum nor in the number of steps."""
    mask = call.mask(0)
    assert mask is not None
    keras = identity(3)
    steps, feature = (1, 2) if fmt == "channels_last" else (2, 1)
    keepdims = bool(call.config.get("keepdims", False))
    m = b.node("Unsqueeze", [mask_value(b, mask), b.ints(f"{call.name}/feature_axis", [feature])], name=f"{call.name}/mask")
    kept = b.node("Where", [m, b.view(call.x, keras), b.const(f"{call.name}/zero", np.float32(0.0))], name=f"{call.name}/masked")
    total = b.reduce("ReduceSum", kept, [steps], keepdims=keepdims, name=f"{call.name}/sum")
    count = b.reduce("ReduceSum", b.node("Cast", [m], name=f"{call.name}/mask_float", to=TensorProto.FLOAT), [steps],
                     keepdims=keepdims, name=f"{call.name}/count")
    call.out_masks = [None]
    return b.tensor(call.out_shape, identity(len(call.out_shape)), b.node("Div", [total, count], name=call.name))


@converts(*(f"Adaptive{kind}Pooling{n}D" for kind in ("Average", "Max") for n in (1, 2, 3)))
def adaptive_pool(b: Builder, call: Call) -> list[Tensor]:
    """Keras 3 adaptive pooling over the catalog's bins (:func:`~bnconvert.catalog.pooling.adaptive_bins`),
    axis by axis on the channels-first view: an average is a MatMul with the bins' averaging
    matrix; a max gathers each bin's indices (a short bin repeats its last one, which a max
    ignores) and reduces the gathered axis."""
    c = call.config
    x, rank = call.x, call.x.rank
    fmt = data_format(c)
    n = rank - 2
    size = _tuple(c.get("output_size"), n)
    shape = [x.shape[0], *(x.shape[a] for a in ([1] if fmt == "channels_first" else [rank - 1])), *(x.shape[a] for a in spatial_axes(rank, fmt))]
    if len(size) != n or not all(isinstance(d, int) for d in shape[1:]):
        raise refuse(call, f"output_size {c.get('output_size')!r} on input {x.shape}: a static size per spatial axis is needed")
    y = b.spatial_view(x, fmt)
    is_max = "Max" in call.layer.class_name
    for i, out in enumerate(size):
        axis, n_in = 2 + i, shape[2 + i]
        bins = adaptive_bins(n_in, out)
        name = f"{call.name}/axis_{axis}"
        if is_max:
            longest = max(hi - lo for lo, hi in bins)
            idx = [[min(lo + k, hi - 1) for k in range(longest)] for lo, hi in bins]
            gathered = b.node("Gather", [y, b.const(f"{name}/bins", np.asarray(idx, np.int64), np.int64)], name=f"{name}/gather", axis=axis)
            y = b.reduce("ReduceMax", gathered, [axis + 1], keepdims=False, name=name)
        else:
            matrix = np.zeros((n_in, out))
            for o, (lo, hi) in enumerate(bins):
                matrix[lo:hi, o] = 1.0 / (hi - lo)
            y = axis_matmul(b, y, matrix, axis, tuple(shape), name)
        shape[axis] = out
    perm = identity(rank) if fmt == "channels_first" else channels_first(rank)
    return [b.tensor(call.out_shape, perm, b.node("Identity", [y], name=call.name))]
