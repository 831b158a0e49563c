"""Keras preprocessing layers at inference, in float64: resizing, cropping, augmentations, and
the classes bnconvert refuses (strings, lookups, audio, feature columns) with what to do instead.

**Resizing** is TensorFlow's ``tf.image.resize`` (what Keras 3's TensorFlow backend and tf.keras
call; Keras 3's numpy backend reimplements the same ``scale_and_translate``): separable, so each
spatial axis is one matrix ``(n_in, n_out)`` (:func:`axis_matrix`):

- ``bilinear``, ``bicubic`` (Keys, a = -0.5), ``lanczos3``/``lanczos5``, ``gaussian`` (radius 1.5,
  sigma 0.5), ``mitchellcubic`` (B = C = 1/3): kernel weights at the half-pixel sample
  ``(o + 0.5) * n_in / n_out``, taps outside the image dropped and the rest renormalised;
  ``antialias`` widens the kernel by ``n_in / n_out`` when shrinking. Without antialias TF's
  ``ResizeBilinear``/``ResizeBicubic`` (half-pixel centres) give the same weights.
- ``area``: each output pixel averages the input interval ``[o, o + 1) * n_in / n_out`` by
  fractional overlap (``ResizeArea``; antialias does not apply).
- ``nearest``: index ``min(floor((o + 0.5) * n_in / n_out), n_in - 1)``, in float32 as TF
  computes it (``ResizeNearestNeighbor``, half-pixel centres; antialias does not apply).

TensorFlow resizes even when a size does not change (``gaussian`` and ``mitchellcubic`` then blur).
``crop_to_aspect_ratio`` first takes the largest centred window of the target's aspect ratio
(``smart_resize``), Keras 3's ``pad_to_aspect_ratio`` pads both sides by the same amount with
``fill_value``. **CenterCrop** crops the centre when the input is at least the target size on
both axes, else it is ``smart_resize`` (bilinear), in both Kerases. **RandomCrop** at inference
is ``smart_resize`` in tf.keras; Keras 3.15 returns its input unchanged while declaring a
``(height, width)`` output, which bnconvert refuses rather than guess.

The **random augmentations** (and MixUp, CutMix, AugMix, RandAugment, Solarization, Equalization,
MaxNumBoundingBoxes ...) are the identity at inference: Keras applies them only with
``training=True``. **AutoContrast** is active at inference: per image and channel, the values
are stretched from their ``[min, max]`` to the ``value_range`` (a constant channel stays as is).
A Keras 3 **Pipeline** runs its layers' own records in order (its config holds them; a layer
that needs weights is refused, as the file keeps no weights for a Pipeline's layers).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from . import checks
from .facts import (
    ConfigProblem,
    Shape,
    no_weights,
    same_shape,
)
from .record import CallContext, catalog, defines
from .util import f64

__all__ = [
    "INFERENCE_IDENTITIES",
    "REFUSED",
    "RESIZE_METHODS",
    "ResizePlan",
    "aspect_window",
    "axis_matrix",
    "center_crop_plan",
    "nearest_indices",
    "pipeline_layers",
    "resize_images",
    "resize_plan",
]

#: the preprocessing layers Keras applies only in training (``training=False`` returns the input)
INFERENCE_IDENTITIES = (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
    "RandomHeight", "RandomWidth", "RandomGrayscale", "RandomHue", "RandomSaturation", "RandomSharpness",
    "RandomColorJitter", "RandomColorDegeneration", "RandomPosterization", "RandomShear", "RandomInvert",
    "RandomPerspective", "RandomErasing", "RandomGaussianBlur", "RandomElasticTransform", "AugMix", "RandAugment",
    "CutMix", "MixUp", "Solarization", "Equalization", "MaxNumBoundingBoxes",
)

#: every interpolation TensorFlow's resize knows (Keras 3 allows the first six, tf.keras all)
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")

_RUN_BEFORE = ("run it before the model, outside the ONNX graph, and feed the model its output (the numeric part "
               "after it exports)")
#: class -> why bnconvert neither runs nor exports it, in words that say what to do
REFUSED = {
    "TextVectorization": f"splits and looks up strings, which ONNX models do not take: {_RUN_BEFORE}",
    "StringLookup": f"looks up strings, which ONNX models do not take: {_RUN_BEFORE}",
    "Hashing": f"FarmHash/SipHash of the input values, which ONNX has no operator for: {_RUN_BEFORE}",
    "HashedCrossing": f"hashed feature crosses, which ONNX has no operator for: {_RUN_BEFORE}",
    "DenseFeatures": "tf.keras feature columns read a dict of named features, not tensors: build the model "
                     "from the tensor the feature columns produce, and compute the features before it",
    "ContrastLimitedAdaptiveHistogramEqualization": "per-tile histograms (data-dependent bins and lookups) have no "
                                                    "exact ONNX form: equalize the images before the model",
}


# -- the resize kernels of TensorFlow's scale_and_translate (sampling_kernels.h) ------------------------
def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - x)


def _keys_cubic(x: np.ndarray) -> np.ndarray:
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x >= 2.0, 0.0, np.where(x >= 1.0, far, near))


def _mitchell_cubic(x: np.ndarray) -> np.ndarray:
    near = (((7.0 / 6.0) * x - 2.0) * x) * x + 8.0 / 9.0
    far = (((-7.0 / 18.0) * x + 2.0) * x - 10.0 / 3.0) * x + 16.0 / 9.0
    return np.where(x >= 2.0, 0.0, np.where(x >= 1.0, far, near))


def _lanczos(radius: float):
    def kernel(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            y = radius * np.sin(np.pi * x) * np.sin(np.pi * x / radius) / (np.pi ** 2 * x ** 2)
        return np.where(x > radius, 0.0, np.where(x <= 1e-3, 1.0, y))
    return kernel


def _gaussian(x: np.ndarray) -> np.ndarray:
    sigma = 1.5 / 3.0
    return np.where(x >= 1.5, 0.0, np.exp(-x * x / (2.0 * sigma * sigma)))


#: method -> (kernel, radius)
_KERNELS = {"bilinear": (_triangle, 1.0), "bicubic": (_keys_cubic, 2.0), "lanczos3": (_lanczos(3.0), 3.0),
            "lanczos5": (_lanczos(5.0), 5.0), "gaussian": (_gaussian, 1.5), "mitchellcubic": (_mitchell_cubic, 2.0)}


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """The input index of each output position of TF's half-pixel nearest resize (float32 arithmetic)."""
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.int64)
    return np.clip(idx, 0, n_in - 1)


def axis_matrix(method: str, n_in: int, n_out: int, antialias: bool = False) -> np.ndarray:
    """The ``(n_in, n_out)`` matrix of one axis of ``tf.image.resize``: output = input @ matrix."""
    if method == "nearest":
        m = np.zeros((n_in, n_out))
        m[nearest_indices(n_in, n_out), np.arange(n_out)] = 1.0
        return m
    if method == "area":
        scale = n_in / n_out
        m = np.zeros((n_in, n_out))
        for o in range(n_out):
            lo, hi = o * scale, (o + 1) * scale
            for i in range(math.floor(lo), math.ceil(hi)):
                m[min(i, n_in - 1), o] += (min(i + 1, hi) - max(i, lo)) / scale
        return m
    if method == "bicubic" and not antialias:
        return _bicubic_matrix(n_in, n_out)
    kernel, radius = _KERNELS[method]
    inv = n_in / n_out
    width = max(inv, 1.0) if antialias else 1.0
    sample = (np.arange(n_out) + 0.5) * inv
    distance = np.abs(np.arange(n_in)[:, None] + 0.5 - sample[None, :]) / width
    weights = np.where(distance <= radius, kernel(distance), 0.0)
    total = weights.sum(axis=0, keepdims=True)
    weights = np.where(np.abs(total) >= 1000.0 * np.finfo(np.float32).tiny, weights / np.where(total != 0, total, 1), 0.0)
    return np.where(((sample >= 0) & (sample <= n_in))[None, :], weights, 0.0)


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """TF's ``ResizeBicubic`` (half-pixel centres, Keys a = -0.5): four taps around
    ``(o + 0.5) * n_in / n_out - 0.5``, whose fractional part TF rounds to 1/1024 (its
    coefficient table); taps outside the image get no weight and the rest are renormalised."""
    m = np.zeros((n_in, n_out))
    scale = np.float32(n_in) / np.float32(n_out)
    for o in range(n_out):
        where = (np.float32(o) + np.float32(0.5)) * scale - np.float32(0.5)
        base = math.floor(where)
        frac = np.rint(float(where - base) * 1024.0) / 1024.0
        taps = {base - 1: 1.0 + frac, base: frac, base + 1: 1.0 - frac, base + 2: 2.0 - frac}
        weights = {i: float(_keys_cubic(np.float64(d))) for i, d in taps.items() if 0 <= i < n_in}
        total = sum(weights.values())
        for i, wt in weights.items():
            m[i, o] = wt / total
    return m


def aspect_window(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int, int, int]:
    """``smart_resize``'s centred crop of the target's aspect ratio: ``(top, left, height, width)``."""
    crop_h = max(min(height, int(float(width * target_h) / target_w)), 1)
    crop_w = max(min(width, int(float(height * target_w) / target_h)), 1)
    return int(float(height - crop_h) / 2), int(float(width - crop_w) / 2), crop_h, crop_w


def _aspect_pads(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """Keras 3's ``pad_to_aspect_ratio``: the rows and the columns added on *each* side."""
    pad_h = max(height, int(float(width * target_h) / target_w))
    pad_w = max(width, int(float(height * target_w) / target_h))
    return int(float(pad_h - height) / 2), int(float(pad_w - width) / 2)


class ResizePlan:
    """One resize of an image ``(H, W)`` to ``(h, w)``: an optional centred crop (``window``:
    top, left, height, width), optional symmetric padding (``pads``: rows, columns on each side,
    with ``fill``), then per axis either nearest indices or an interpolation matrix."""

    def __init__(self, *, size: tuple[int, int], target: tuple[int, int], method: str, antialias: bool = False,
                 crop: bool = False, pad: bool = False, fill: float = 0.0) -> None:
        h, w = size
        self.window = aspect_window(h, w, *target) if crop else None
        if self.window is not None:
            h, w = self.window[2], self.window[3]
        self.pads = _aspect_pads(h, w, *target) if pad else (0, 0)
        self.fill = float(fill)
        h, w = h + 2 * self.pads[0], w + 2 * self.pads[1]
        self.method = method
        self.inner = (h, w)
        self.matrices = [axis_matrix(method, n, t, antialias) for n, t in zip((h, w), target)]
        self.indices = [nearest_indices(n, t) for n, t in zip((h, w), target)] if method == "nearest" else None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Resize ``x`` ``(N, H, W, C)`` in float64."""
        if self.window is not None:
            top, left, h, w = self.window
            x = x[:, top:top + h, left:left + w, :]
        if any(self.pads):
            rows, cols = self.pads
            x = np.pad(x, [(0, 0), (rows, rows), (cols, cols), (0, 0)], constant_values=self.fill)
        if self.indices is not None:
            return x[:, self.indices[0]][:, :, self.indices[1]]
        return np.einsum("nhwc,hy,wx->nyxc", x, self.matrices[0], self.matrices[1])


def _int_field(layer: Layer, key: str) -> int:
    value = layer.config.get(key)
    if not checks.pos_int(value):
        raise UnsupportedLayerError(f"layer {layer.label}: config '{key}' is {value!r}, not a positive integer")
    return int(value)


def _image_size(layer: Layer, shape: tuple) -> tuple[int, int]:
    if len(shape) != 4:
        raise UnsupportedLayerError(f"layer {layer.label}: expected a batch of images (rank 4), got rank {len(shape)}")
    first = layer.config.get("data_format") == "channels_first"
    h, w = (shape[2], shape[3]) if first else (shape[1], shape[2])
    if not (isinstance(h, int) and isinstance(w, int)):
        raise UnsupportedLayerError(f"layer {layer.label}: the image height and width must be known, got {shape}")
    return h, w


def resize_plan(layer: Layer, shape: tuple) -> ResizePlan:
    """The plan of a Resizing layer for an input of ``shape`` (Keras layout, batch first)."""
    c = layer.config
    method = str(c.get("interpolation", "bilinear"))
    if method not in RESIZE_METHODS:
        raise UnsupportedLayerError(f"layer {layer.label}: interpolation {method!r} is not one of {RESIZE_METHODS}")
    crop, pad = bool(c.get("crop_to_aspect_ratio")), bool(c.get("pad_to_aspect_ratio"))
    if crop and pad:
        raise UnsupportedLayerError(f"layer {layer.label}: crop_to_aspect_ratio and pad_to_aspect_ratio are both set")
    if c.get("fill_mode", "constant") != "constant":
        raise UnsupportedLayerError(f"layer {layer.label}: fill_mode {c.get('fill_mode')!r} (Keras supports 'constant' only)")
    fill = c.get("fill_value", 0.0)
    return ResizePlan(size=_image_size(layer, shape), target=(_int_field(layer, "height"), _int_field(layer, "width")),
                      method=method, antialias=bool(c.get("antialias", False)), crop=crop, pad=pad,
                      fill=float(fill) if fill is not None else 0.0)


def center_crop_plan(layer: Layer, shape: tuple) -> tuple[int, int, int, int] | ResizePlan:
    """CenterCrop: the window ``(top, left, height, width)`` when the input is large enough on
    both axes, else the ``smart_resize`` (bilinear) plan."""
    h, w = _image_size(layer, shape)
    th, tw = _int_field(layer, "height"), _int_field(layer, "width")
    if h >= th and w >= tw:
        return (h - th) // 2, (w - tw) // 2, th, tw
    return ResizePlan(size=(h, w), target=(th, tw), method="bilinear", crop=True)


def resize_images(layer: Layer, x: np.ndarray, plan: ResizePlan | tuple[int, int, int, int]) -> np.ndarray:
    """Apply a plan (or a crop window) to ``x`` held in the layer's data format."""
    first = layer.config.get("data_format") == "channels_first"
    x = np.moveaxis(f64(x), 1, -1) if first else f64(x)
    if isinstance(plan, ResizePlan):
        y = plan.apply(x)
    else:
        top, left, h, w = plan
        y = x[:, top:top + h, left:left + w, :]
    return np.moveaxis(y, -1, 1) if first else y


def _resized_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """Keras' ``compute_output_shape``: the spatial axes become ``(height, width)``."""
    x = shapes[0]
    if len(x) != 4:
        raise ConfigProblem(f"rank-{len(x)} input, expected a batch of images")
    h, w = c.get("height"), c.get("width")
    if not (checks.pos_int(h) and checks.pos_int(w)):
        raise ConfigProblem(f"config 'height'/'width' are {h!r}/{w!r}, not positive integers")
    if c.get("data_format") == "channels_first":
        return [(x[0], x[1], h, w)]
    return [(x[0], h, w, x[3])]


_RESIZE_FIELDS = {"height": checks.pos_int, "width": checks.pos_int, "data_format": checks.FORMAT,
                  "interpolation": checks.one_of(*RESIZE_METHODS), "crop_to_aspect_ratio": checks.boolean,
                  "pad_to_aspect_ratio": checks.boolean, "fill_mode": checks.one_of("constant"),
                  "fill_value": checks.opt(checks.number), "antialias": checks.boolean}


@defines("Resizing", shape=_resized_shape, weights=no_weights, fields=_RESIZE_FIELDS)
def resizing_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [resize_images(layer, xs[0], resize_plan(layer, np.shape(xs[0])))]


@defines("CenterCrop", shape=_resized_shape, weights=no_weights,
         fields={"height": checks.pos_int, "width": checks.pos_int, "data_format": checks.FORMAT})
def center_crop_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [resize_images(layer, xs[0], center_crop_plan(layer, np.shape(xs[0])))]


@defines("RandomCrop", shape=_resized_shape, weights=no_weights,
         fields={"height": checks.pos_int, "width": checks.pos_int, "data_format": checks.FORMAT},
         notes="tf.keras: smart_resize at inference; Keras 3.15: the input unchanged with a (height, width) "
               "output declared (refused)")
def random_crop_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """tf.keras at inference: ``smart_resize`` to ``(height, width)`` (bilinear)."""
    if ctx.generation >= 3:
        raise UnsupportedLayerError(random_crop_refusal(layer))
    h, w = _image_size(layer, np.shape(xs[0]))
    plan = ResizePlan(size=(h, w), target=(_int_field(layer, "height"), _int_field(layer, "width")),
                      method="bilinear", crop=True)
    return [resize_images(layer, xs[0], plan)]


def random_crop_refusal(layer: Layer) -> str:
    """Why a Keras 3 RandomCrop is refused, naming the layer."""
    return (f"layer {layer.label}: Keras 3 returns the input of RandomCrop unchanged at inference while it "
            "declares a (height, width) output; replace it with CenterCrop or Resizing (--replace NAME=...) "
            "or remove it")


@defines(*INFERENCE_IDENTITIES, identity=True, shape=same_shape, weights=no_weights)
def augmentation_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Random augmentations, mixing and colour jitter: applied in training only."""
    return [f64(xs[0])]


@defines("AutoContrast", shape=same_shape, weights=no_weights)
def auto_contrast_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras 3 ``AutoContrast``: in ``(0, 255)``, ``(x - min) * 255 / (max - min)`` per image over
    axes 1 and 2 (Keras' axes, whatever the data format), clipped, mapped back to
    ``value_range``; where that is NaN (a constant channel) the input is kept."""
    lo, hi = sorted(float(v) for v in layer.config.get("value_range", (0, 255)))
    x = f64(xs[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        images = (x - lo) / (hi - lo) * 255.0
        low = images.min(axis=(1, 2), keepdims=True)
        high = images.max(axis=(1, 2), keepdims=True)
        scale = 255.0 / (high - low)
        y = np.clip(images * scale + (-low * scale), 0.0, 255.0)
        y = y / 255.0 * (hi - lo) + lo
    return [np.where(np.isnan(y), x, y)]


def _unknown_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """A refused class: its batch, every other size unknown (not computed: nothing runs it, and
    the export reaches its handler, which gives the reason)."""
    return [(shapes[0][0], *([None] * (len(shapes[0]) - 1)))]


@defines(*REFUSED, shape=_unknown_shape, weights=no_weights, notes="refused: see REFUSED")
def refused_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Never computed: the record says why (one line naming the layer)."""
    raise UnsupportedLayerError(f"layer {layer.label}: {REFUSED[layer.class_name]}")


def pipeline_layers(layer: Layer) -> list[Layer]:
    """The inner layers of a Keras 3 ``Pipeline``, in order, as bnconvert layers (config only).
    Their weights are not in the file's layer list, so a class that needs weights (an adapted
    Normalization) is refused, as is a class without float64 semantics."""
    items = layer.config.get("layers")
    if not isinstance(items, list) or not items:
        raise UnsupportedLayerError(f"layer {layer.label}: config 'layers' is {items!r}, not a list of layers")
    table, inner = catalog(), []
    for k, item in enumerate(items):
        cls = item.get("class_name") if isinstance(item, dict) else None
        config = item.get("config") if isinstance(item, dict) else None
        record = table.get(cls) if isinstance(cls, str) else None
        if record is None or record.call is None or not isinstance(config, dict) or not isinstance(cls, str):
            raise UnsupportedLayerError(f"layer {layer.label}: its layer {k} ({cls!r}) has no float64 semantics in bnconvert")
        if record.weights is None or record.weights(config, None):
            raise UnsupportedLayerError(f"layer {layer.label}: its layer {k} ({cls}) needs weights, which bnconvert does "
                                        "not read inside a Pipeline; rebuild the model with the pipeline's layers in sequence")
        inner.append(Layer(name=str(config.get("name", f"{layer.name}_{k}")), class_name=cls, config=config))
    return inner


def _pipeline_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """The inner layers' shape rules, one after the other."""
    table = catalog()
    for item in c.get("layers") or []:
        record = table[item["class_name"]]
        if record.shape is None:
            raise ConfigProblem(f"the output shape of {item['class_name']} is not known")
        shapes = record.shape(item["config"], shapes)
    return shapes


@defines("Pipeline", shape=_pipeline_shape, weights=no_weights)
def pipeline_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras 3 ``Pipeline``: its layers in order (at inference, so augmentations are identities)."""
    table = catalog()
    context = CallContext(source=ctx.source)
    for inner in pipeline_layers(layer):
        xs = table[inner.class_name].call(inner, xs, context)  # type: ignore[misc]
    return xs

