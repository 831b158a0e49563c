"""ZeroPadding1D/2D/3D, Cropping1D/2D/3D, UpSampling1D/2D/3D.

ZeroPadding is produced lazily: a convolution that reads it directly folds the padding into its
own ``pads`` (ResNet's ``conv1_pad``, MobileNet's stride-2 pads), anything else gets a Pad node.
UpSampling with ``nearest`` repeats each element (ONNX Resize, asymmetric/floor, exact for
integer factors); ``bilinear`` is TensorFlow 2's ``tf.image.resize`` (half-pixel centres) for
Keras 3 and tf.keras, and TF1's ``resize_bilinear`` (asymmetric) for standalone Keras 2.0-2.3.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ...layerspec import data_format
from ...model import Source
from ..builder import Builder, Call, Tensor
from ..layout import Perm, position
from ..registry import converts, refuse
from .conv import spatial_axes

__all__ = ["zero_padding", "cropping", "upsampling", "pairs"]

_INT64_MAX = np.iinfo(np.int64).max


def pairs(amount: Any, n: int) -> list[tuple[int, int]]:
    """A Keras padding/cropping argument as ``[(before, after)] * n``."""
    if isinstance(amount, int):
        return [(amount, amount)] * n
    amount = list(amount)
    if n == 1 and len(amount) == 2 and all(isinstance(a, int) for a in amount):
        return [(int(amount[0]), int(amount[1]))]
    return [(int(a), int(a)) if isinstance(a, int) else (int(a[0]), int(a[1])) for a in amount]


@converts("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def zero_padding(b: Builder, call: Call) -> list[Tensor]:
    x, rank = call.x, call.x.rank
    axes = spatial_axes(rank, data_format(call.config))
    amounts = dict(zip(axes, pairs(call.config.get("padding", 1), len(axes))))
    made: dict[str, tuple[Perm, str]] = {}

    def materialise(builder: Builder, perm: Perm | None) -> tuple[Perm, str]:
        if "pad" not in made:
            src_perm, src = builder.native(x)
            pads = [amounts.get(p, (0, 0))[0] for p in src_perm] + [amounts.get(p, (0, 0))[1] for p in src_perm]
            made["pad"] = src_perm, builder.node("Pad", [src, builder.ints(f"{call.name}/pads", pads)],
                                                 name=call.name, mode="constant")
        return made["pad"]

    return [Tensor(shape=tuple(call.out_shape), lazy=materialise, pad=(x, amounts))]


@converts("Cropping1D", "Cropping2D", "Cropping3D")
def cropping(b: Builder, call: Call) -> list[Tensor]:
    x, rank = call.x, call.x.rank
    axes = spatial_axes(rank, data_format(call.config))
    amounts = pairs(call.config.get("cropping", 0), len(axes))
    perm, xn = b.native(x)
    starts, ends, held = [], [], []
    for axis, (before, after) in zip(axes, amounts):
        size = x.shape[axis]
        held.append(position(perm, axis))
        starts.append(before)
        ends.append(size - after if size is not None else (-after if after else _INT64_MAX))
    n = call.name
    y = b.node("Slice", [xn, b.ints(f"{n}/starts", starts), b.ints(f"{n}/ends", ends), b.ints(f"{n}/axes", held)], name=n)
    return [b.tensor(call.out_shape, perm, y)]


def half_pixel(source: Source | None) -> bool:
    """Whether the Keras that wrote the file resizes bilinearly with half-pixel centres (TF2)."""
    if source is None or source.generation >= 3 or source.format == "tfkeras-zip":
        return True
    version = source.keras_version or ""
    if "tf" in version:
        return True
    match = re.match(r"(\d+)\.(\d+)", version)
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (2, 4)


@converts("UpSampling1D", "UpSampling2D", "UpSampling3D")
def upsampling(b: Builder, call: Call) -> list[Tensor]:
    c = call.config
    x, rank = call.x, call.x.rank
    fmt = data_format(c) if rank > 3 else "channels_last"
    size = c.get("size", 2)
    factors = [int(s) for s in size] if isinstance(size, (list, tuple)) else [int(size)] * (rank - 2)
    interpolation = str(c.get("interpolation", "nearest")).lower()
    if interpolation == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    elif interpolation == "bilinear" and rank == 4:
        attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel" if half_pixel(call.source) else "asymmetric"}
    else:
        raise refuse(call, f"interpolation {interpolation!r} is not supported")
    xn = b.spatial_view(x, fmt)
    scales = b.const(f"{call.name}/scales", np.asarray([1.0, 1.0, *factors], np.float32))
    y = b.node("Resize", [xn, "", scales], name=call.name, **attrs)
    perm = tuple(range(rank)) if fmt == "channels_first" else (0, rank - 1, *range(1, rank - 1))
    return [b.tensor(call.out_shape, perm, y)]
