"""Resizing, CenterCrop, tf.keras RandomCrop and AutoContrast; the refused preprocessing classes.

Output sizes are static, so a resize is exact as the catalog's plan
(:func:`bnconvert.catalog.preprocessing.resize_plan`): an optional centred crop (Slice) or
symmetric padding (Pad), then per spatial axis either a Gather of the nearest indices or a
MatMul with the axis's interpolation matrix (``X @ M`` on the last axis, ``M^T @ X`` on the one
before). ONNX Resize would need a different coordinate mode per TF method and has no area,
Lanczos, Gaussian or Mitchell filters; matrices cover them all, antialiasing included. The
image is held channels-first (N, C, H, W) for that.

The identity augmentations need no handler here: they are catalog identities, which
:mod:`.misc` passes through. The classes bnconvert refuses (string layers, lookups, audio,
feature columns) raise the catalog's reason, naming the layer.
"""

from __future__ import annotations

import numpy as np

from ...catalog import catalog
from ...catalog.preprocessing import (
    REFUSED,
    ResizePlan,
    center_crop_plan,
    pipeline_layers,
    random_crop_refusal,
    resize_plan,
)
from ...errors import UnsupportedLayerError
from ...layerspec import data_format
from ..builder import Builder, Call, Tensor
from ..layout import channels_first, identity, position
from ..registry import converts, handlers, refuse

__all__ = ["auto_contrast", "axis_matmul", "center_crop", "pipeline", "random_crop", "refused", "resizing"]


def axis_matmul(b: Builder, x: str, matrix: np.ndarray, axis: int, shape: tuple[int, ...], name: str) -> str:
    """``x`` (held with static ``shape``, batch first) contracted on ``axis`` with ``matrix``
    ``(n_in, n_out)``: a MatMul on the last axis, ``M^T @ X`` on the one before, and for an earlier
    axis the same after a Reshape to ``(-1, n_in, prod(after))`` and back."""
    rank = len(shape)
    if axis == rank - 1:
        return b.node("MatMul", [x, b.const(f"{name}/matrix", matrix)], name=name)
    left = b.const(f"{name}/matrix", np.ascontiguousarray(matrix.T))
    if axis == rank - 2:
        return b.node("MatMul", [left, x], name=name)
    after = int(np.prod(shape[axis + 1:]))
    flat = b.node("Reshape", [x, b.ints(f"{name}/flat_shape", [-1, shape[axis], after])], name=f"{name}/flat")
    product = b.node("MatMul", [left, flat], name=f"{name}/matmul")
    out = [-1, *shape[1:axis], matrix.shape[1], *shape[axis + 1:]]
    return b.node("Reshape", [product, b.ints(f"{name}/out_shape", out)], name=name)


def _image(b: Builder, call: Call) -> tuple[str, tuple[int, ...]]:
    """The input held (N, C, H, W), and that held shape (static but for the batch)."""
    x = call.x
    fmt = data_format(call.config)
    if x.rank != 4:
        raise refuse(call, f"expected a batch of images (rank 4), got rank {x.rank}")
    held = (x.shape[0], *(x.shape[a] for a in ((1, 2, 3) if fmt == "channels_first" else (3, 1, 2))))
    if not all(isinstance(d, int) for d in held[1:]):
        raise refuse(call, f"the image size must be static, got {x.shape}")
    return b.spatial_view(x, fmt), held


def _apply_plan(b: Builder, call: Call, plan: ResizePlan | tuple[int, int, int, int]) -> Tensor:
    y, (n, c, h, w) = _image(b, call)
    window = plan if isinstance(plan, tuple) else plan.window
    steps: list[str] = []
    if window is not None:
        top, left, height, width = window
        y = b.node("Slice", [y, b.ints(f"{call.name}/starts", [top, left]), b.ints(f"{call.name}/ends", [top + height, left + width]),
                             b.ints(f"{call.name}/axes", [2, 3])], name=f"{call.name}/crop")
        h, w = height, width
        steps.append("crop")
    if isinstance(plan, ResizePlan):
        rows, cols = plan.pads
        if rows or cols:
            y = b.node("Pad", [y, b.ints(f"{call.name}/pads", [0, 0, rows, cols, 0, 0, rows, cols]),
                               b.const(f"{call.name}/fill", np.float32(plan.fill))], name=f"{call.name}/pad", mode="constant")
            h, w = h + 2 * rows, w + 2 * cols
        if plan.indices is not None:
            for axis, idx in ((2, plan.indices[0]), (3, plan.indices[1])):
                if not np.array_equal(idx, np.arange((h, w)[axis - 2])):
                    y = b.node("Gather", [y, b.ints(f"{call.name}/rows" if axis == 2 else f"{call.name}/cols", idx)],
                               name=f"{call.name}/nearest_{axis}", axis=axis)
        else:
            shape = (n, c, h, w)
            for axis, matrix in ((3, plan.matrices[1]), (2, plan.matrices[0])):
                if matrix.shape[0] == matrix.shape[1] and np.array_equal(matrix, np.eye(matrix.shape[0])):
                    continue
                y = axis_matmul(b, y, matrix, axis, shape, f"{call.name}/axis_{axis}")
                shape = (*shape[:axis], matrix.shape[1], *shape[axis + 1:])
    y = b.node("Identity", [y], name=call.name)
    perm = identity(4) if data_format(call.config) == "channels_first" else channels_first(4)
    return b.tensor(call.out_shape, perm, y)


def _plan(call: Call, make: object) -> ResizePlan | tuple[int, int, int, int]:
    try:
        return make(call.layer, call.x.shape)  # type: ignore[operator]
    except UnsupportedLayerError as exc:
        raise refuse(call, str(exc).split(": ", 1)[-1]) from None


@converts("Resizing")
def resizing(b: Builder, call: Call) -> list[Tensor]:
    return [_apply_plan(b, call, _plan(call, resize_plan))]


@converts("CenterCrop")
def center_crop(b: Builder, call: Call) -> list[Tensor]:
    return [_apply_plan(b, call, _plan(call, center_crop_plan))]


@converts("RandomCrop")
def random_crop(b: Builder, call: Call) -> list[Tensor]:
    """tf.keras at inference: ``smart_resize`` (bilinear); Keras 3 is refused (see the catalog)."""
    if call.generation >= 3:
        raise refuse(call, random_crop_refusal(call.layer).split(": ", 1)[-1])
    c = call.config

    def plan(layer: object, shape: tuple) -> ResizePlan:
        size = (shape[2], shape[3]) if data_format(c) == "channels_first" else (shape[1], shape[2])
        return ResizePlan(size=size, target=(int(c["height"]), int(c["width"])), method="bilinear", crop=True)

    return [_apply_plan(b, call, _plan(call, plan))]


@converts("AutoContrast")
def auto_contrast(b: Builder, call: Call) -> list[Tensor]:
    """Per image and channel (Keras axes 1 and 2): stretch ``[min, max]`` to the value range."""
    lo, hi = sorted(float(v) for v in call.config.get("value_range", (0, 255)))
    perm, x = b.native(call.x)
    if call.x.rank != 4:
        raise refuse(call, f"expected a batch of images (rank 4), got rank {call.x.rank}")
    n = call.name

    def const(what: str, value: float) -> str:
        return b.const(f"{n}/{what}", np.float32(value))

    images = b.node("Mul", [b.node("Sub", [x, const("lo", lo)], name=f"{n}/shift"), const("to_255", 255.0 / (hi - lo))],
                    name=f"{n}/images")
    axes = sorted(position(perm, a) for a in (1, 2))
    low = b.reduce("ReduceMin", images, axes, keepdims=True, name=f"{n}/low")
    high = b.reduce("ReduceMax", images, axes, keepdims=True, name=f"{n}/high")
    scale = b.node("Div", [const("255", 255.0), b.node("Sub", [high, low], name=f"{n}/span")], name=f"{n}/scale")
    offset = b.node("Neg", [b.node("Mul", [low, scale], name=f"{n}/low_scaled")], name=f"{n}/offset")
    y = b.node("Add", [b.node("Mul", [images, scale], name=f"{n}/scaled"), offset], name=f"{n}/stretched")
    y = b.node("Clip", [y, const("zero", 0.0), const("top", 255.0)], name=f"{n}/clipped")
    y = b.node("Add", [b.node("Mul", [y, const("from_255", (hi - lo) / 255.0)], name=f"{n}/back"), const("low_end", lo)],
               name=f"{n}/ranged")
    out = b.node("Where", [b.node("IsNaN", [y], name=f"{n}/nan"), x, y], name=n)
    return [b.tensor(call.out_shape, perm, out)]


@converts(*REFUSED)
def refused(b: Builder, call: Call) -> list[Tensor]:
    """The catalog's reason (one line, what to do instead)."""
    reason = REFUSED.get(call.layer.class_name) or catalog()[call.layer.class_name].notes
    raise refuse(call, reason)


@converts("Pipeline")
def pipeline(b: Builder, call: Call) -> list[Tensor]:
    """Keras 3 ``Pipeline``: each inner layer's own handler, in order, on shapes from their records."""
    try:
        inner = pipeline_layers(call.layer)
    except UnsupportedLayerError as exc:
        raise refuse(call, str(exc).split(": ", 1)[-1]) from None
    table, records = handlers(), catalog()
    xs, shapes = call.inputs, [call.x.shape]
    for layer in inner:
        if layer.class_name not in table:
            raise refuse(call, f"its layer {layer.name!r} ({layer.class_name}) has no ONNX handler")
        shapes = records[layer.class_name].shape(layer.config, shapes)  # type: ignore[misc]
        xs = table[layer.class_name](b, Call(layer=layer, name=f"{call.name}/{layer.name}", inputs=xs, out_shapes=shapes,
                                              source=call.source))
    return xs

