"""ZeroPadding, Cropping and UpSampling over the spatial axes (channels_last or channels_first).

Bilinear UpSampling2D: TensorFlow's ``resize`` with half-pixel centres (source coordinate
``(i + 0.5) / s - 0.5``, clamped to the image) in TF2-era Keras (tf.keras, Keras >= 2.4, Keras 3);
Keras 2.0-2.3 called ``resize_bilinear`` with ``align_corners=False`` and no half-pixel centres
(source coordinate ``i / s``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Layer
from .checks import FORMAT, amounts, pos_ints
from .facts import Shape, ShapeRule, assemble, no_weights, settings, split_spatial
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .util import channels_first, f64, ntuple, pairs

__all__ = ["resize_bilinear", "half_pixel_centres"]


def _spatial_axes(layer: Layer, rank: int) -> list[int]:
    return list(range(2, rank)) if channels_first(layer.config) else list(range(1, rank - 1))


#: Keras 1 argument spellings (the reader turns ZeroPadding2D's ``{top_pad: ...}`` into pairs)
_KERAS1 = {**{f"ZeroPadding{n}D": (K1("padding", "padding", None),) for n in (1, 2, 3)},
           **{f"Cropping{n}D": (K1("cropping", "cropping", None),) for n in (1, 2, 3)},
           "UpSampling1D": (K1("size", "length", None),),
           **{f"UpSampling{n}D": (K1("size", "size", None),) for n in (2, 3)}}

def _resize_shape(n: int, key: str) -> ShapeRule:
    """Each of the ``n`` spatial sizes grown by ``padding``, shrunk by ``cropping`` (before +
    after, :func:`.util.pairs` spellings) or multiplied by ``size``."""

    def rule(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != n + 2:
            raise ValueError(f"rank-{len(x)} input")
        spatial, channels = split_spatial(x, c)
        if key == "size":
            factors = settings(c.get("size", 2), n)
            out = [None if s is None else s * int(f) for s, f in zip(spatial, factors)]
        else:
            sign = 1 if key == "padding" else -1
            amounts = pairs(c.get(key, 1 if key == "padding" else 0), n)
            out = [None if s is None else s + sign * (a + b) for s, (a, b) in zip(spatial, amounts)]
        return [assemble(x[0], out, channels, c)]

    return rule


def _rules(prefix: str, key: str) -> dict[str, Any]:
    return {"shape": {f"{prefix}{n}D": _resize_shape(n, key) for n in (1, 2, 3)}, "weights": no_weights,
            "fields": {key: pos_ints if key == "size" else amounts, "data_format": FORMAT}}


@defines("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", keras1=_KERAS1, **_rules("ZeroPadding", "padding"))
def zero_padding_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    x = f64(xs[0])
    axes = _spatial_axes(layer, x.ndim)
    widths = [(0, 0)] * x.ndim
    for a, p in zip(axes, pairs(layer.config.get("padding", 1), len(axes))):
        widths[a] = p
    return [np.pad(x, widths)]


@defines("Cropping1D", "Cropping2D", "Cropping3D", keras1=_KERAS1, **_rules("Cropping", "cropping"))
def cropping_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    x = f64(xs[0])
    axes = _spatial_axes(layer, x.ndim)
    index = [slice(None)] * x.ndim
    for a, (before, after) in zip(axes, pairs(layer.config.get("cropping", 0), len(axes))):
        index[a] = slice(before, x.shape[a] - after)
    return [x[tuple(index)]]


def half_pixel_centres(ctx: CallContext) -> bool:
    """Whether the Keras that wrote the file resizes with half-pixel centres (see the module)."""
    if ctx.generation >= 3 or ctx.source is None or ctx.source.format == "tfkeras-zip":
        return True
    if "tf" in (ctx.source.keras_version or ""):
        return True
    version = ctx.keras_version
    return version is not None and version >= (2, 4)


def _linear_axis(x: np.ndarray, axis: int, scale: int, half_pixel: bool) -> np.ndarray:
    n = x.shape[axis]
    out = np.arange(n * scale, dtype=np.float64)
    src = (out + 0.5) / scale - 0.5 if half_pixel else out / scale
    src = np.clip(src, 0.0, n - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1.0 - frac) + np.take(x, hi, axis=axis) * frac


def resize_bilinear(x: np.ndarray, axes: list[int], sizes: tuple[int, ...], half_pixel: bool) -> np.ndarray:
    """Bilinear upscaling by integer ``sizes`` (separable: one axis after the other)."""
    for axis, s in zip(axes, sizes):
        x = _linear_axis(x, axis, s, half_pixel)
    return x


@defines("UpSampling1D", "UpSampling2D", "UpSampling3D", keras1=_KERAS1, **_rules("UpSampling", "size"))
def upsampling_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    x = f64(xs[0])
    axes = _spatial_axes(layer, x.ndim)
    sizes = ntuple(layer.config.get("size", 2), len(axes))
    if str(layer.config.get("interpolation", "nearest")).lower() == "bilinear":
        return [resize_bilinear(x, axes, sizes, half_pixel_centres(ctx))]
    for a, s in zip(axes, sizes):
        x = np.repeat(x, s, axis=a)
    return [x]
