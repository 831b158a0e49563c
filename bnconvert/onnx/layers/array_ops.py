"""Keras 3 operation layers that move, select and convert entries, as ONNX (the handlers of the
records of :mod:`bnconvert.catalog.array_ops`; types and operands as in :mod:`.operations`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from ...catalog.array_ops import (
    expand_axes,
    normalise_index,
    pad_widths,
    permutation,
    reshape_target,
    split_sizes,
    squeeze_axes,
)
from ...catalog.operations import reduction_axes
from ...model import TensorArg
from ..builder import Builder, Call, Tensor
from ..layout import identity
from ..registry import converts, refuse
from .operations import (
    _BIG,
    _K,
    _NUMPY,
    BOOL,
    FLOAT,
    INT32,
    INT64,
    _cast,
    _one,
    _out,
    _promote,
    _promoted,
    value_type,
)

__all__: list[str] = []


# -- shapes and layouts -----------------------------------------------------------------------
@converts(_K + "reshape")
def reshape(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    newshape = [int(d) for d in call.config["newshape"]]
    try:
        reshape_target(newshape, call.x.shape)
    except ValueError:
        raise refuse(call, f"newshape {newshape} is not supported") from None
    return [_out(b, call, b.node("Reshape", [x, b.ints(f"{call.name}/shape", newshape)], name=call.name), elem)]


@converts(_K + "transpose")
def transpose(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    rank = call.x.rank
    axes = call.config.get("axes")
    perm = list(range(rank))[::-1] if axes is None else [int(a) % rank for a in axes]
    return [_out(b, call, b.node("Transpose", [x], name=call.name, perm=perm), elem)]


@converts(_K + "swapaxes", _K + "moveaxis")
def permute_axes(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    perm = permutation(call.config, call.layer.class_name.removeprefix(_K), call.x.rank)
    return [_out(b, call, b.node("Transpose", [x], name=call.name, perm=perm), elem)]


@converts(_K + "flip")
def flip(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    axes = list(reduction_axes(call.config.get("axis"), call.x.rank))
    n = call.name
    y = b.node("Slice", [x, b.ints(f"{n}/starts", [-1] * len(axes)), b.ints(f"{n}/ends", [-_BIG] * len(axes)),
                         b.ints(f"{n}/axes", axes), b.ints(f"{n}/steps", [-1] * len(axes))], name=n)
    return [_out(b, call, y, elem)]


@converts(_K + "expand_dims")
def expand_dims(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    axes = expand_axes(call.config["axis"], call.x.rank)
    return [_out(b, call, b.node("Unsqueeze", [x, b.ints(f"{call.name}/axes", axes)], name=call.name), elem)]


@converts(_K + "squeeze")
def squeeze(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    axes = squeeze_axes(call.config.get("axis"), call.x.shape)
    if any(call.x.shape[a] != 1 for a in axes):
        raise refuse(call, f"squeezes axes {axes} whose size is not known to be 1")
    return [_out(b, call, b.node("Squeeze", [x, b.ints(f"{call.name}/axes", axes)], name=call.name), elem)]


@converts(_K + "get_item")
def get_item(b: Builder, call: Call) -> list[Tensor]:
    """``x[key]``: one Slice over the sliced and indexed axes, a Squeeze of the indexed ones, an
    Unsqueeze of the new ones (``None``)."""
    args, _ = call.op_args or ([], {})
    if len(args) != 2 or not isinstance(args[0], TensorArg):
        raise refuse(call, "expects a tensor and an index")
    t = call.inputs[args[0].index]
    try:
        key = normalise_index(args[1], t.rank)
    except ValueError as exc:
        raise refuse(call, str(exc)) from None
    value = index_nodes(b, b.view(t, identity(t.rank)), key, call.name)
    return [_out(b, call, b.node("Identity", [value], name=call.name), value_type(t))]


def index_nodes(b: Builder, value: str, key: list[Any], name: str) -> str:
    """numpy basic indexing of ``value`` (held as Keras lays it out) by ``key``, a
    :func:`~bnconvert.catalog.array_ops.normalise_index` list: one Slice over the sliced and
    indexed axes, a Squeeze of the indexed ones, an Unsqueeze of the new ones (``None``); the
    last node's output (``value`` itself when the key selects everything). Keras 3's ``get_item``
    and tf.keras' ``__operators__.getitem`` both emit through here."""
    starts, ends, axes, steps, dropped, new = [], [], [], [], [], []
    axis = kept = 0
    for item in key:
        if item is None:
            new.append(kept)
            kept += 1
            continue
        if isinstance(item, int):
            starts.append(item)
            ends.append(item + 1 if item != -1 else _BIG)
            axes.append(axis)
            steps.append(1)
            dropped.append(axis)
        elif item != slice(None):
            step = 1 if item.step is None else int(item.step)
            starts.append((0 if step > 0 else _BIG) if item.start is None else int(item.start))
            ends.append((_BIG if step > 0 else -_BIG) if item.stop is None else int(item.stop))
            axes.append(axis)
            steps.append(step)
            kept += 1
        else:
            kept += 1
        axis += 1
    if axes:
        value = b.node("Slice", [value, b.ints(f"{name}/starts", starts), b.ints(f"{name}/ends", ends),
                                 b.ints(f"{name}/axes", axes), b.ints(f"{name}/steps", steps)], name=f"{name}/slice")
    if dropped:
        value = b.node("Squeeze", [value, b.ints(f"{name}/dropped", dropped)], name=f"{name}/squeeze")
    if new:
        value = b.node("Unsqueeze", [value, b.ints(f"{name}/new", new)], name=f"{name}/newaxis")
    return value


def _tensor_list(call: Call) -> list[Tensor]:
    args, kwargs = call.op_args or ([], {})
    items = args[0] if args else kwargs.get("xs", kwargs.get("x"))
    if not isinstance(items, list) or not all(isinstance(v, TensorArg) for v in items):
        raise refuse(call, "expects a list of tensors (a constant among them is not supported)")
    return [call.inputs[v.index] for v in items]


def _joined(b: Builder, call: Call, *, stack: bool) -> list[Tensor]:
    tensors = _tensor_list(call)
    types = [value_type(t) for t in tensors]
    elem = _promoted(types, [])
    rank = tensors[0].rank + (1 if stack else 0)
    axis = int(call.config.get("axis", 0)) % rank
    views = [_cast(b, b.view(t, identity(t.rank)), e, elem, f"{call.name}/cast{i}") for i, (t, e) in enumerate(zip(tensors, types))]
    if stack:
        views = [b.node("Unsqueeze", [v, b.ints(f"{call.name}/axis{i}", [axis])], name=f"{call.name}/expand{i}")
                 for i, v in enumerate(views)]
    return [_out(b, call, b.node("Concat", views, name=call.name, axis=axis), elem)]


@converts(_K + "concatenate")
def concatenate(b: Builder, call: Call) -> list[Tensor]:
    return _joined(b, call, stack=False)


@converts(_K + "stack")
def stack(b: Builder, call: Call) -> list[Tensor]:
    return _joined(b, call, stack=True)


@converts(_K + "split")
def split(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    axis = int(call.config.get("axis", 0)) % call.x.rank
    try:
        sizes = split_sizes(call.config["indices_or_sections"], call.x.shape[axis])
    except ValueError as exc:
        raise refuse(call, str(exc)) from None
    outs = [f"part{i}" for i in range(len(sizes))]
    names = b.nodes_out("Split", [x, b.ints(f"{call.name}/sizes", sizes)], outs, name=call.name, axis=axis)
    return [_out(b, call, v, elem, shape) for v, shape in zip(names, call.out_shapes)]


@converts(_K + "tile")
def tile(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    reps = call.config["repeats"]
    reps = [int(r) for r in (reps if isinstance(reps, (list, tuple)) else [reps])]
    rank = call.x.rank
    if len(reps) > rank:
        x = b.node("Unsqueeze", [x, b.ints(f"{call.name}/lead", list(range(len(reps) - rank)))], name=f"{call.name}/lead")
    reps = [1] * (max(rank, len(reps)) - len(reps)) + reps
    return [_out(b, call, b.node("Tile", [x, b.ints(f"{call.name}/repeats", reps)], name=call.name), elem)]


@converts(_K + "repeat")
def repeat(b: Builder, call: Call) -> list[Tensor]:
    """``repeat(x, r, axis)``: each entry ``r`` times in a row: a new axis after ``axis``, tiled ``r``
    times, merged back into ``axis``."""
    x, elem = _one(b, call)
    r, axis = call.config["repeats"], call.config.get("axis")
    if not isinstance(r, int) or axis is None:
        raise refuse(call, "repeats per element, or over the flattened tensor, are not supported")
    rank = call.x.rank
    axis = int(axis) % rank
    after = list(call.x.shape[axis + 1:])
    if any(d is None for d in after):
        raise refuse(call, "the axes after the repeated one have unknown sizes")
    n = call.name
    y = b.node("Unsqueeze", [x, b.ints(f"{n}/axis", [axis + 1])], name=f"{n}/expand")
    y = b.node("Tile", [y, b.ints(f"{n}/repeats", [r if i == axis + 1 else 1 for i in range(rank + 1)])], name=f"{n}/tile")
    shape = [0] * axis + [-1] + after  # Reshape's 0 keeps the input's size of the leading axes
    return [_out(b, call, b.node("Reshape", [y, b.ints(f"{n}/shape", shape)], name=n), elem)]


@converts(_K + "cumsum")
def cumsum(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    axis = call.config.get("axis")
    if axis is None or call.config.get("dtype") is not None:
        raise refuse(call, "cumsum over the flattened tensor, or with a dtype, is not supported")
    if elem == BOOL:
        x, elem = b.node("Cast", [x], name=f"{call.name}/int", to=INT64), INT64
    axis_value = b.const(f"{call.name}/axis", np.int64(int(axis) % call.x.rank), np.int64)
    return [_out(b, call, b.node("CumSum", [x, axis_value], name=call.name), elem)]


@converts(_K + "take")
def take(b: Builder, call: Call) -> list[Tensor]:
    """``take``: a Gather (ONNX counts negative indices from the end, as Keras does)."""
    args, kwargs = call.op_args or ([], {})
    values = [*args, *(kwargs[k] for k in ("indices",) if k in kwargs)]
    if len(values) != 2 or not isinstance(values[0], TensorArg) or call.config.get("axis") is None:
        raise refuse(call, "take from a constant, or from the flattened tensor (axis None), is not supported")
    t = call.inputs[values[0].index]
    idx = values[1]
    if isinstance(idx, TensorArg):
        it = call.inputs[idx.index]
        indices = _cast(b, b.view(it, identity(it.rank)), value_type(it), INT64, f"{call.name}/indices")
    else:
        indices = b.const(f"{call.name}/indices", np.asarray(idx), np.int64)
    y = b.node("Gather", [b.view(t, identity(t.rank)), indices], name=call.name, axis=int(call.config["axis"]) % t.rank)
    return [_out(b, call, y, value_type(t))]


@converts(_K + "one_hot")
def one_hot(b: Builder, call: Call) -> list[Tensor]:
    """``tf.one_hot``: ``index == range(num_classes)`` on a new axis (an index out of range is all
    zeros, where ONNX OneHot would count a negative one from the end)."""
    x, elem = _one(b, call)
    c, n = call.config, call.name
    want = _onnx_type(c.get("dtype") or "float32")
    if c.get("sparse") or want is None:
        raise refuse(call, "a sparse one-hot, or its dtype, is not supported")
    index = _cast(b, x, elem, INT64, f"{n}/int")
    rank = call.x.rank
    classes = b.const(f"{n}/classes", np.arange(int(c["num_classes"]), dtype=np.int64), np.int64)
    hot = b.node("Equal", [b.node("Unsqueeze", [index, b.ints(f"{n}/last", [rank])], name=f"{n}/expand"), classes],
                 name=f"{n}/equal")
    axis = int(c.get("axis", -1)) % (rank + 1)
    if axis != rank:
        perm = [*range(axis), rank, *range(axis, rank)]
        hot = b.node("Transpose", [hot], name=f"{n}/move", perm=perm)
    return [_out(b, call, b.node("Cast", [hot], name=n, to=want), want)]


@converts(_K + "pad")
def pad(b: Builder, call: Call) -> list[Tensor]:
    args, kwargs = call.op_args or ([], {})
    value = args[1] if len(args) > 1 else kwargs.get("constant_values")
    if isinstance(value, TensorArg):
        raise refuse(call, "a tensor as the padding value is not supported")
    x, elem = _one(b, call)
    mode = str(call.config.get("mode", "constant"))
    if mode not in ("constant", "reflect", "symmetric"):
        raise refuse(call, f"mode {mode!r} is not supported")
    widths = pad_widths(call.config["pad_width"], call.x.rank)
    if mode == "symmetric":  # ONNX Pad has no such mode: the mirrored edges, edge entry included, concatenated
        return [_out(b, call, _symmetric_pad(b, x, widths, call.name), elem)]
    pads = b.ints(f"{call.name}/pads", [a for a, _ in widths] + [z for _, z in widths])
    inputs = [x, pads]
    if mode == "constant" and value is not None:
        inputs.append(b.const(f"{call.name}/value", np.asarray(value), _NUMPY[elem]))
    return [_out(b, call, b.node("Pad", inputs, name=call.name, mode=mode), elem)]


def _mirrored(b: Builder, x: str, axis: int, start: int, end: int, n: str) -> str:
    """``x[start:end:-1]`` along ``axis``."""
    return b.node("Slice", [x, b.ints(f"{n}/start", [start]), b.ints(f"{n}/end", [end]), b.ints(f"{n}/axes", [axis]),
                            b.ints(f"{n}/step", [-1])], name=n)


def _symmetric_pad(b: Builder, x: str, widths: list[tuple[int, int]], name: str) -> str:
    """``tf.pad(mode="SYMMETRIC")``: per axis, ``x[a-1::-1]`` before and ``x[:-z-1:-1]`` after."""
    for axis, (before, after) in enumerate(widths):
        if not before and not after:
            continue
        n = f"{name}/axis{axis}"
        parts = ([_mirrored(b, x, axis, before - 1, -_BIG, f"{n}/before")] if before else []) + [x] + (
            [_mirrored(b, x, axis, -1, -after - 1, f"{n}/after")] if after else [])
        x = b.node("Concat", parts, name=n, axis=axis)
    return x


# -- dtypes and selection ---------------------------------------------------------------------
def _onnx_type(name: Any) -> int | None:
    text = str(name)
    if text == "bool":
        return BOOL
    if text in ("int64", "uint32", "uint64"):
        return INT64
    if text in ("int8", "int16", "int32", "uint8", "uint16"):
        return INT32
    if text in ("float16", "bfloat16", "float32", "float64"):
        return FLOAT
    return None


@converts(_K + "cast")
def cast(b: Builder, call: Call) -> list[Tensor]:
    """``tf.cast``: a float to an integer truncates toward zero (ONNX Cast does), to bool is ``x != 0``."""
    x, _ = _one(b, call)
    want = _onnx_type(call.config.get("dtype"))
    if want is None:
        raise refuse(call, f"cast to {call.config.get('dtype')!r} is not supported")
    return [_out(b, call, b.node("Cast", [x], name=call.name, to=want), want)]


@converts(_K + "zeros_like", _K + "ones_like")
def filled_like(b: Builder, call: Call) -> list[Tensor]:
    x, elem = _one(b, call)
    dtype = call.config.get("dtype")
    want = elem if dtype is None else _onnx_type(dtype)
    if want is None:
        raise refuse(call, f"dtype {dtype!r} is not supported")
    fill = 0 if call.layer.class_name.endswith("zeros_like") else 1
    shape = b.node("Shape", [x], name=f"{call.name}/shape")
    value = helper.make_tensor("value", want, [1], [bool(fill)] if want == BOOL else [fill])
    return [_out(b, call, b.node("ConstantOfShape", [shape], name=call.name, value=value), want)]


@converts(_K + "where")
def where(b: Builder, call: Call) -> list[Tensor]:
    args, kwargs = call.op_args or ([], {})
    values = [*args, *(kwargs[k] for k in ("x1", "x2") if k in kwargs)]
    if len(values) != 3 or any(v is None for v in values):
        raise refuse(call, "where with only a condition (the indices of true entries) is not supported")
    cond = values[0]
    if not isinstance(cond, TensorArg):
        raise refuse(call, "a constant condition is not supported")
    c = call.inputs[cond.index]
    cv = _cast(b, b.view(c, identity(c.rank)), value_type(c), BOOL, f"{call.name}/condition")
    (x, y), elem, _ = _promote(b, call, values[1:])
    return [_out(b, call, b.node("Where", [cv, x, y], name=call.name), elem)]
