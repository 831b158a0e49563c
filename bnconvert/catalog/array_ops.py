"""Keras 3 operation layers that move, select and convert entries, in float64: ``reshape``,
``transpose``/``swapaxes``/``moveaxis``, ``flip``, ``expand_dims``, ``squeeze``, ``get_item``
(``x[..., 0]``, ``x[:, ::-1]``, ``x[:, None]``), ``concatenate``, ``stack``, ``split``, ``tile``,
``repeat``, ``cumsum``, ``take``, ``one_hot``, ``pad``, ``cast``, ``zeros_like``/``ones_like`` and
``where``. The conventions (arguments, dtypes, no masking) are those of :mod:`.operations`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..model import Layer, TensorArg
from .facts import Dim, Shape, no_weights, op_args, same_shape
from .operations import (
    _K,
    _broadcast_operands,
    _f,
    _operand_shapes,
    _operands,
    _problem,
    reduction_axes,
)
from .record import CallContext, defines

__all__ = ["expand_axes", "index_shape", "normalise_index", "numpy_dtype", "pad_widths", "permutation", "reshape_target",
           "split_sizes", "squeeze_axes"]


# -- shapes and layouts -----------------------------------------------------------------------
def reshape_target(newshape: Sequence[int], shape: Shape) -> Shape:
    """``newshape`` (batch axis included, one ``-1`` allowed) with the ``-1`` resolved where the
    input's size is known (None where it is not)."""
    dims = [int(d) for d in newshape]
    if dims.count(-1) > 1 or any(d < -1 or d == 0 for d in dims):
        raise ValueError(f"newshape {list(newshape)}")
    if -1 not in dims:
        return tuple(dims)
    known = [d for d in dims if d != -1]
    total = None if any(d is None for d in shape) else math.prod(shape)
    rest = math.prod(known)
    return tuple((total // rest if total is not None and rest else None) if d == -1 else d for d in dims)


def _reshape_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    return [reshape_target(c["newshape"], shapes[0])]


@defines(_K + "reshape", shape=_reshape_shape, weights=no_weights)
def reshape(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    newshape = [int(d) for d in layer.config["newshape"]]
    if 0 in newshape:
        raise _problem(layer, f"newshape {newshape} has a zero-sized axis")
    return [np.reshape(_f(x), newshape)]


def _perm(c: dict[str, Any], rank: int) -> list[int]:
    axes = c.get("axes")
    return list(range(rank))[::-1] if axes is None else [int(a) % rank for a in axes]


@defines(_K + "transpose", shape=lambda c, s: [tuple(s[0][i] for i in _perm(c, len(s[0])))], weights=no_weights)
def transpose(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    x = _f(x)
    return [np.transpose(x, _perm(layer.config, x.ndim))]


def permutation(layer_config: dict[str, Any], name: str, rank: int) -> list[int]:
    """The axis order ``transpose``, ``swapaxes`` and ``moveaxis`` put the input in."""
    c = layer_config
    if name == "transpose":
        return _perm(c, rank)
    order = list(range(rank))
    if name == "swapaxes":
        i, j = int(c["axis1"]) % rank, int(c["axis2"]) % rank
        order[i], order[j] = j, i
        return order
    src = [int(a) % rank for a in (c["source"] if isinstance(c["source"], (list, tuple)) else [c["source"]])]
    dst = [int(a) % rank for a in (c["destination"] if isinstance(c["destination"], (list, tuple)) else [c["destination"]])]
    rest = [a for a in order if a not in src]
    out: list[int | None] = [None] * rank
    for s_, d in zip(src, dst):
        out[d] = s_
    it = iter(rest)
    return [a if a is not None else next(it) for a in out]


@defines(_K + "swapaxes", _K + "moveaxis", weights=no_weights,
         shape=lambda c, s: [tuple(s[0][i] for i in permutation(c, "moveaxis" if "source" in c else "swapaxes", len(s[0])))])
def permute_axes(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    x = _f(x)
    return [np.transpose(x, permutation(layer.config, layer.class_name.removeprefix(_K), x.ndim))]


@defines(_K + "flip", shape=same_shape, weights=no_weights)
def flip(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    x = _f(x)
    return [np.flip(x, reduction_axes(layer.config.get("axis"), x.ndim))]


def expand_axes(axis: Any, rank: int) -> list[int]:
    """``expand_dims``' axes (int or list) as positions in the output of rank ``rank + len``."""
    items = [axis] if isinstance(axis, int) else list(axis)
    out = rank + len(items)
    return sorted(int(a) % out for a in items)


def _expand_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    x = list(shapes[0])
    for a in expand_axes(c["axis"], len(x)):
        x.insert(a, 1)
    return [tuple(x)]


@defines(_K + "expand_dims", shape=_expand_shape, weights=no_weights)
def expand_dims(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    x = _f(x)
    return [np.expand_dims(x, tuple(expand_axes(layer.config["axis"], x.ndim)))]


def squeeze_axes(axis: Any, shape: Shape) -> list[int]:
    """The axes ``squeeze`` removes: ``axis`` (int or list), or every axis of size 1."""
    if axis is None:
        return [i for i, d in enumerate(shape) if d == 1]
    return reduction_axes(axis, len(shape))  # type: ignore[return-value]


@defines(_K + "squeeze", weights=no_weights,
         shape=lambda c, s: [tuple(d for i, d in enumerate(s[0]) if i not in squeeze_axes(c.get("axis"), s[0]))])
def squeeze(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    x = _f(x)
    return [np.squeeze(x, tuple(squeeze_axes(layer.config.get("axis"), x.shape)))]


def normalise_index(key: Any, rank: int) -> list[Any]:
    """An index (Keras ``x[key]``: an int, slice, None, Ellipsis or a list/tuple of them) as a
    list of one entry per input axis plus Nones, the Ellipsis spelt out as full slices.
    ``ValueError`` for what bnconvert does not index by (a tensor, a list of ints) and for what
    numpy refuses (a slice step of 0)."""
    items = list(key) if isinstance(key, (list, tuple)) else [key]
    for item in items:
        if isinstance(item, TensorArg) or (isinstance(item, slice) and any(
                isinstance(v, TensorArg) for v in (item.start, item.stop, item.step))):
            raise ValueError("indexing by a tensor")
        if not (item is None or item is Ellipsis or isinstance(item, slice)
                or (isinstance(item, int) and not isinstance(item, bool))):
            raise ValueError(f"index {item!r}")
        if isinstance(item, slice) and item.step == 0:
            raise ValueError("a slice step of 0")
    used = sum(1 for item in items if item is not None and item is not Ellipsis)
    if used > rank or items.count(Ellipsis) > 1:
        raise ValueError(f"too many indices for a tensor of rank {rank}")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (rank - used)
    else:
        items += [slice(None)] * (rank - used)
    return items


def index_shape(shape: Shape, key: Any) -> Shape:
    """The shape of ``x[key]`` (:func:`normalise_index`), None where the axis' size is unknown."""
    out: list[Dim] = []
    axis = 0
    for item in normalise_index(key, len(shape)):
        if item is None:
            out.append(1)
            continue
        d = shape[axis]
        axis += 1
        if isinstance(item, slice):
            out.append(None if d is None else len(range(*item.indices(d))))
    return tuple(out)


@defines(_K + "get_item", shape=lambda c, s: [index_shape(s[0], op_args(c)[0][1])], weights=no_weights)
def get_item(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    args, _ = ctx.op_args or ([TensorArg(0)], {})
    x = xs[args[0].index] if isinstance(args[0], TensorArg) else None
    if x is None or len(args) != 2:
        raise _problem(layer, "expects a tensor and an index")
    try:
        key = normalise_index(args[1], np.ndim(x))
    except ValueError as exc:
        raise _problem(layer, str(exc)) from None
    return [np.asarray(np.asarray(x)[tuple(key)])]


def _tensor_list(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    args, kwargs = ctx.arguments(xs)
    items = args[0] if args else kwargs.get("xs", kwargs.get("x"))
    if not isinstance(items, list) or not all(isinstance(v, np.ndarray) for v in items):
        raise _problem(layer, "expects a list of tensors (a constant among them is not supported)")
    return items


def _joined_shape(c: dict[str, Any], shapes: list[Shape], *, stack: bool) -> list[Shape]:
    rank = len(shapes[0]) + (1 if stack else 0)
    axis = int(c.get("axis", 0)) % rank
    if stack:
        return [(*shapes[0][:axis], len(shapes), *shapes[0][axis:])]
    dims = [s[axis] for s in shapes]
    return [(*shapes[0][:axis], None if None in dims else sum(dims), *shapes[0][axis + 1:])]


@defines(_K + "concatenate", shape=lambda c, s: _joined_shape(c, s, stack=False), weights=no_weights)
def concatenate(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [np.concatenate(_tensor_list(layer, xs, ctx), axis=int(layer.config.get("axis", 0)))]


@defines(_K + "stack", shape=lambda c, s: _joined_shape(c, s, stack=True), weights=no_weights)
def stack(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    return [np.stack(_tensor_list(layer, xs, ctx), axis=int(layer.config.get("axis", 0)))]


def split_sizes(sections: Any, size: Dim) -> list[int]:
    """The sizes ``split`` cuts an axis of ``size`` into (``sections``: a count or the cut indices)."""
    if size is None:
        raise ValueError("split of an axis of unknown size")
    if isinstance(sections, int):
        if sections <= 0 or size % sections:
            raise ValueError(f"{size} does not split into {sections} equal parts")
        return [size // sections] * sections
    cuts = [0, *(min(max(int(i), 0), size) for i in sections), size]
    return [max(b - a, 0) for a, b in itertools.pairwise(cuts)]


def _split_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    x = shapes[0]
    axis = int(c.get("axis", 0)) % len(x)
    return [(*x[:axis], n, *x[axis + 1:]) for n in split_sizes(c["indices_or_sections"], x[axis])]


@defines(_K + "split", shape=_split_shape, weights=no_weights)
def split(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    x = _f(x)
    axis = int(layer.config.get("axis", 0)) % x.ndim
    sizes = split_sizes(layer.config["indices_or_sections"], x.shape[axis])
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _tile_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    reps = [int(r) for r in (c["repeats"] if isinstance(c["repeats"], (list, tuple)) else [c["repeats"]])]
    x = list(shapes[0])
    n = max(len(reps), len(x))
    reps, x = [1] * (n - len(reps)) + reps, [1] * (n - len(x)) + x
    return [tuple(None if d is None else d * r for d, r in zip(x, reps))]


@defines(_K + "tile", shape=_tile_shape, weights=no_weights)
def tile(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    return [np.tile(_f(x), layer.config["repeats"])]


def _repeat_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    x, r = shapes[0], c["repeats"]
    if not isinstance(r, int) or c.get("axis") is None:
        raise ValueError("repeat with per-element counts or without an axis")
    axis = int(c["axis"]) % len(x)
    return [tuple(None if d is None else d * r if i == axis else d for i, d in enumerate(x))]


@defines(_K + "repeat", shape=_repeat_shape, weights=no_weights)
def repeat(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    r, axis = layer.config["repeats"], layer.config.get("axis")
    if not isinstance(r, int) or axis is None:
        raise _problem(layer, "repeats per element, or over the flattened tensor, are not supported")
    return [np.repeat(_f(x), r, axis=int(axis))]


@defines(_K + "cumsum", shape=same_shape, weights=no_weights)
def cumsum(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    axis = layer.config.get("axis")
    if axis is None or layer.config.get("dtype") is not None:
        raise _problem(layer, "cumsum over the flattened tensor, or with a dtype, is not supported")
    x = np.asarray(x)
    return [np.cumsum(x.astype(np.int64) if x.dtype == np.bool_ else x, axis=int(axis))]


def _take_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    x, indices = _operand_shapes(c, shapes)[:2]
    axis = int(c["axis"]) % len(x)
    return [(*x[:axis], *indices, *x[axis + 1:])]


@defines(_K + "take", shape=_take_shape, weights=no_weights)
def take(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``take(x, indices, axis)``: a negative index counts from the end (Keras fixes them so on every backend)."""
    x, indices = _operands(layer, xs, ctx, 2)
    if layer.config.get("axis") is None:
        raise _problem(layer, "take from the flattened tensor (axis None) is not supported")
    x, indices = np.asarray(x), np.asarray(indices).astype(np.int64)
    return [np.take(x, indices, axis=int(layer.config["axis"]))]


def _one_hot_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    x = list(shapes[0])
    x.insert(int(c.get("axis", -1)) % (len(x) + 1), int(c["num_classes"]))
    return [tuple(x)]


@defines(_K + "one_hot", shape=_one_hot_shape, weights=no_weights)
def one_hot(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``tf.one_hot`` of the indices as integers: an index outside ``[0, num_classes)`` is all zeros."""
    (x,) = _operands(layer, xs, ctx, 1)
    c = layer.config
    if c.get("sparse"):
        raise _problem(layer, "a sparse one-hot is not supported")
    n = int(c["num_classes"])
    index = np.asarray(x).astype(np.int64)
    hot = (index[..., None] == np.arange(n)).astype(numpy_dtype(c.get("dtype") or "float32"))
    return [np.moveaxis(hot, -1, int(c.get("axis", -1)) % (index.ndim + 1))]


def pad_widths(value: Any, rank: int) -> list[tuple[int, int]]:
    """numpy's ``pad_width`` (one pair, one per axis, or one number) as a pair per axis."""
    arr = np.asarray(value, dtype=np.int64)
    return [(int(row[0]), int(row[1])) for row in np.broadcast_to(arr.reshape(-1, 2) if arr.size == 2 or arr.ndim == 2
                                                                    else arr.reshape(-1, 1), (rank, 2))]


def _pad_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    x = shapes[0]
    return [tuple(None if d is None else d + a + b for d, (a, b) in zip(x, pad_widths(c["pad_width"], len(x))))]


@defines(_K + "pad", shape=_pad_shape, weights=no_weights)
def pad(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``tf.pad`` (the only modes Keras' TensorFlow backend has: constant, reflect, symmetric)."""
    args, kwargs = ctx.arguments(xs)
    x = np.asarray(args[0])
    value = args[1] if len(args) > 1 else kwargs.get("constant_values")
    mode = str(layer.config.get("mode", "constant"))
    widths = pad_widths(layer.config["pad_width"], x.ndim)
    if mode == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=0 if value is None else value)]
    if mode in ("reflect", "symmetric"):
        return [np.pad(x, widths, mode=mode)]  # type: ignore[call-overload]  # mode is reflect or symmetric; the stubs want a Literal
    raise _problem(layer, f"mode {mode!r} is not supported")


# -- dtypes and selection ---------------------------------------------------------------------
def numpy_dtype(name: Any) -> type:
    """The float64 reference's dtype of a Keras dtype name: float64 for every float, int64 for
    every integer, bool."""
    text = str(name)
    if text == "bool":
        return np.bool_
    if re.fullmatch(r"u?int(8|16|32|64)", text):
        return np.int64
    if re.fullmatch(r"(b?float(16|32|64))", text):
        return np.float64
    raise ValueError(f"dtype {name!r}")


@defines(_K + "cast", shape=same_shape, weights=no_weights)
def cast(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``tf.cast``: to an integer truncates toward zero, to bool is ``x != 0``."""
    (x,) = _operands(layer, xs, ctx, 1)
    try:
        dtype = numpy_dtype(layer.config.get("dtype"))
    except ValueError as exc:
        raise _problem(layer, f"cast to {exc}") from None
    x = np.asarray(x)
    return [x != 0 if dtype is np.bool_ else np.trunc(x).astype(dtype) if dtype is np.int64 else x.astype(dtype)]


@defines(_K + "zeros_like", _K + "ones_like", shape=same_shape, weights=no_weights)
def filled_like(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    (x,) = _operands(layer, xs, ctx, 1)
    x = np.asarray(x)
    dtype = x.dtype if layer.config.get("dtype") is None else numpy_dtype(layer.config["dtype"])
    return [(np.zeros_like if layer.class_name.endswith("zeros_like") else np.ones_like)(x, dtype=dtype)]


def _where_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    args, kwargs = op_args(c)
    if len([*args, *kwargs.values()]) != 3:
        raise ValueError("where with one argument")
    return [_broadcast_operands(c, shapes)]


@defines(_K + "where", shape=_where_shape, weights=no_weights)
def where(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    args, kwargs = ctx.arguments(xs)
    values = [*args, *(kwargs[k] for k in ("x1", "x2") if k in kwargs)]
    if len(values) != 3 or any(v is None for v in values):
        raise _problem(layer, "where with only a condition (the indices of true entries) is not supported")
    cond, a, b = values
    return [np.where(np.asarray(cond, dtype=bool), _f(a), _f(b))]
