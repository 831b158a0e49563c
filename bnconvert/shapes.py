"""Static shape inference over a Model (batch dimension first, ``None`` where unknown).

Keras semantics per class; a class without a rule yields an unknown shape (``None``) for its
outputs, and every consumer of an unknown shape gets an unknown shape too. Nothing here needs
TensorFlow.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from .layerspec import data_format, spatial_rank
from .model import Layer, Model, TensorRef

__all__ = ["infer_shapes", "Shape", "conv_output_length", "deconv_output_length"]

Shape = tuple  # tuple[int | None, ...]

_SAME_SHAPE = {
    "BatchNormalization", "LayerNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU",
    "Softmax", "ThresholdedReLU", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Rescaling",
    "Normalization", "Masking", "Identity", "LayerScale", "CustomScaleLayer",
}


def conv_output_length(length: int | None, kernel: int, padding: str, stride: int, dilation: int = 1) -> int | None:
    """Keras' ``conv_output_length`` for valid/same/causal padding."""
    if length is None:
        return None
    k = (kernel - 1) * dilation + 1
    if padding == "valid":
        length = length - k + 1
    return (length + stride - 1) // stride


def deconv_output_length(
    length: int | None, kernel: int, padding: str, stride: int, output_padding: int | None = None, dilation: int = 1
) -> int | None:
    """Keras' ``deconv_output_length``."""
    if length is None:
        return None
    k = (kernel - 1) * dilation + 1
    if output_padding is None:
        return length * stride if padding == "same" else length * stride + max(k - stride, 0)
    pad = k // 2 if padding == "same" else 0
    return (length - 1) * stride + k - 2 * pad + output_padding


def _tuple(value: Any, n: int) -> list[Any]:
    if value is None:
        return [None] * n
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _spatial(shape: Shape, fmt: str) -> tuple[list[Any], Any]:
    if fmt == "channels_first":
        return list(shape[2:]), shape[1]
    return list(shape[1:-1]), shape[-1]


def _assemble(batch: Any, spatial: list[Any], channels: Any, fmt: str) -> Shape:
    return (batch, channels, *spatial) if fmt == "channels_first" else (batch, *spatial, channels)


def _conv(layer: Layer, shape: Shape) -> Shape:
    c, cls = layer.config, layer.class_name
    n = spatial_rank(cls) or len(shape) - 2
    fmt = data_format(c)
    spatial, channels = _spatial(shape, fmt)
    ks, st = _tuple(c.get("kernel_size"), n), _tuple(c.get("strides", 1), n)
    dil = _tuple(c.get("dilation_rate", 1), n)
    pad = c.get("padding", "valid")
    if "Transpose" in cls:
        op = _tuple(c.get("output_padding"), n)
        out = [deconv_output_length(s, k, pad, t, p, d) for s, k, t, p, d in zip(spatial, ks, st, op, dil)]
        if c.get("keras1_output_shape"):
            given = list(c["keras1_output_shape"])
            out = given[2:] if fmt == "channels_first" else given[1:-1]
        return _assemble(shape[0], out, c["filters"], fmt)
    out = [conv_output_length(s, k, pad, t, d) for s, k, t, d in zip(spatial, ks, st, dil)]
    if cls.startswith("Depthwise"):
        filters = None if channels is None else channels * int(c.get("depth_multiplier", 1))
    else:
        filters = c["filters"]
    return _assemble(shape[0], out, filters, fmt)


def _pool(layer: Layer, shape: Shape) -> Shape:
    c = layer.config
    n = spatial_rank(layer.class_name) or len(shape) - 2
    fmt = data_format(c)
    spatial, channels = _spatial(shape, fmt)
    pool = _tuple(c.get("pool_size", 2), n)
    strides = _tuple(c.get("strides") or pool, n)
    pad = c.get("padding", "valid")
    out = [conv_output_length(s, p, pad, t) for s, p, t in zip(spatial, pool, strides)]
    return _assemble(shape[0], out, channels, fmt)


def _global_pool(layer: Layer, shape: Shape) -> Shape:
    fmt = data_format(layer.config)
    spatial, channels = _spatial(shape, fmt)
    if layer.config.get("keepdims"):
        return _assemble(shape[0], [1] * len(spatial), channels, fmt)
    return (shape[0], channels)


def _pad_crop(layer: Layer, shape: Shape, sign: int) -> Shape:
    c = layer.config
    n = spatial_rank(layer.class_name) or len(shape) - 2
    fmt = data_format(c)
    spatial, channels = _spatial(shape, fmt)
    amount = c.get("padding" if sign > 0 else "cropping", 1 if sign > 0 else 0)
    pairs = _pairs(amount, n)
    out = [None if s is None else s + sign * (a + b) for s, (a, b) in zip(spatial, pairs)]
    return _assemble(shape[0], out, channels, fmt)


def _pairs(amount: Any, n: int) -> list[tuple[int, int]]:
    """Keras padding/cropping argument -> ``[(before, after)] * n``."""
    if isinstance(amount, int):
        return [(amount, amount)] * n
    amount = list(amount)
    if n == 1 and len(amount) == 2 and all(isinstance(a, int) for a in amount):
        return [(amount[0], amount[1])]
    return [(a, a) if isinstance(a, int) else (int(a[0]), int(a[1])) for a in amount]


def _upsample(layer: Layer, shape: Shape) -> Shape:
    c = layer.config
    n = spatial_rank(layer.class_name) or len(shape) - 2
    fmt = data_format(c)
    spatial, channels = _spatial(shape, fmt)
    size = _tuple(c.get("size", 2), n)
    return _assemble(shape[0], [None if s is None else s * k for s, k in zip(spatial, size)], channels, fmt)


def _reshape(target: list[Any], shape: Shape) -> Shape:
    target = [None if t is None else int(t) for t in target]
    if -1 in target:
        known = math.prod(t for t in target if t != -1)
        total = None if any(s is None for s in shape[1:]) else math.prod(shape[1:])
        target = [(total // known if total is not None and known else None) if t == -1 else t for t in target]
    return (shape[0], *target)


def _single(layer: Layer, shapes: list[Shape]) -> Shape | None:
    """Output shape of a single-output layer given its input shapes."""
    cls, c = layer.class_name, layer.config
    x = shapes[0]
    if cls in _SAME_SHAPE:
        return x
    if cls == "Dense":
        return (*x[:-1], c["units"])
    if cls.startswith(("Conv", "DepthwiseConv", "SeparableConv")):
        return _conv(layer, x)
    if cls.startswith(("MaxPooling", "AveragePooling")):
        return _pool(layer, x)
    if cls.startswith(("GlobalMaxPooling", "GlobalAveragePooling")):
        return _global_pool(layer, x)
    if cls.startswith("ZeroPadding"):
        return _pad_crop(layer, x, 1)
    if cls.startswith("Cropping"):
        return _pad_crop(layer, x, -1)
    if cls.startswith("UpSampling"):
        return _upsample(layer, x)
    if cls == "Lambda":  # never run: trust a declared output shape, else assume shape-preserving
        declared = c.get("output_shape")
        if isinstance(declared, (list, tuple)) and all(isinstance(d, (int, type(None))) for d in declared):
            return (x[0], *declared)
        return x
    if cls == "Flatten":
        rest = x[1:]
        return (x[0], None if any(s is None for s in rest) else math.prod(rest))
    if cls == "Reshape":
        return _reshape(list(c["target_shape"]), x)
    if cls == "Permute":
        return (x[0], *(x[d] for d in c["dims"]))
    if cls == "RepeatVector":
        return (x[0], c["n"], *x[1:])
    if cls in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Divide", "TrueDivide"):
        return tuple(next((s[i] for s in shapes if s[i] is not None), None) for i in range(len(x)))
    if cls == "Concatenate":
        axis = c.get("axis", -1)
        axis = axis % len(x)
        dims = [s[axis] for s in shapes]
        total = None if any(d is None for d in dims) else sum(dims)
        return (*x[:axis], total, *x[axis + 1 :])
    return None


def _sane(shape: Shape | None) -> Shape | None:
    """A computed shape, or None when a dimension is not an integer (a damaged config). A negative
    dimension stays (a kernel, pool or crop larger than its input): the readers refuse it, naming
    the layer, where an unknown shape would let the file through to fail later as "unsupported"."""
    if shape is None or all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in shape):
        return shape
    return None


def infer_shapes(model: Model, input_shapes: list[Shape] | None = None) -> dict[TensorRef, Shape | None]:
    """Shape of every tensor of ``model`` (top level), nested models followed through.

    ``input_shapes`` overrides the shapes the InputLayers declare (for nested models and for
    users who fix dynamic dimensions).
    """
    shapes: dict[TensorRef, Shape | None] = {}
    for i, ref in enumerate(model.inputs):
        declared = model[ref.layer].config.get("batch_shape") or model[ref.layer].config.get("batch_input_shape")
        given = input_shapes[i] if input_shapes is not None and i < len(input_shapes) else None
        shapes[ref] = tuple(given) if given is not None else (tuple(declared) if declared else None)
    # Each layer runs once all the tensors of all its calls are known, earliest in the config
    # first (a heap of positions): linear in the graph's size, whatever the order of the config.
    # A layer waiting for a tensor nobody produces (or for itself) is never run.
    missing: dict[int, int] = {}
    waiting: dict[TensorRef, list[int]] = {}
    ready: list[int] = []
    for i, layer in enumerate(model.layers):
        if not layer.calls:
            continue
        need = {ref for call in layer.calls for ref in call if ref not in shapes}
        missing[i] = len(need)
        for ref in need:
            waiting.setdefault(ref, []).append(i)
        if not need:
            ready.append(i)
    while ready:
        layer = model.layers[heapq.heappop(ready)]
        made: list[tuple[TensorRef, Shape | None]] = []
        for k, call in enumerate(layer.calls):
            ins = [shapes[r] for r in call]
            if any(s is None for s in ins):
                made.append((TensorRef(layer.name, k, 0), None))
            elif layer.model is not None:
                inner = infer_shapes(layer.model, ins)
                made += [(TensorRef(layer.name, k, j), inner.get(out)) for j, out in enumerate(layer.model.outputs)]
            else:
                try:
                    made.append((TensorRef(layer.name, k, 0), _sane(_single(layer, ins))))
                except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError):
                    made.append((TensorRef(layer.name, k, 0), None))
        for ref, shape in made:
            shapes[ref] = shape
            for j in waiting.pop(ref, ()):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(ready, j)
    return shapes
