"""Embedding, Masking and TimeDistributed, and the Keras masks they make.

A Keras mask is held like any tensor (:class:`~bnconvert.onnx.builder.Tensor`), as a bool ONNX
value in Keras' layout: ``(N, T)`` for a sequence. Embedding (``mask_zero``) and Masking make one,
TimeDistributed carries it; :mod:`.merge` and :mod:`.pooling` read it.

- **Embedding** is a Gather of the table's rows. Keras casts ids that are not int32/int64 to
  int32 first (a truncation: ``tf.cast``), so a float32 model input (tf.keras ``batch_input_shape``
  on the Embedding) works; an integer graph input is read before the export's cast to float, so
  int64 ids above 2**24 stay exact. Ids out of ``[-input_dim, input_dim)`` make Keras (TensorFlow
  ``gather`` on CPU) and onnxruntime (Gather) both fail at run time; a negative id in range picks
  row ``input_dim + id`` in ONNX and in Keras 3 (``ops.take``), where tf.keras fails. The mask is
  ``ids != 0`` compared in the ids' own type, as Keras compares the input it was given (a float
  0.5 is not masked although it reads row 0).
- **Masking**: a step is kept when any feature differs from ``mask_value`` (compared in float32,
  NaN differs from everything); masked steps become 0 (``where``, Keras 3; tf.keras multiplies by
  the mask, which differs only for infinite or NaN inputs).
- **TimeDistributed** folds time into the batch, ``(N, T, *rest) -> (N*T, *rest)``, runs the inner
  class's handler on that, and unfolds the result. The fold happens in whatever layout the input
  is held in when batch and time lead it, so a chain of TimeDistributed convolutions stays
  channels-first without a Transpose. Masks: Keras 3 passes the input mask on; tf.keras asks the
  inner layer (a wrapped Masking or mask_zero Embedding then masks the output, see
  :func:`_output_mask`). A mask arriving at an inner layer that would read it is refused.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, TensorProto

from ...catalog import catalog
from ...catalog.facts import ConfigProblem
from ...model import Layer
from ..builder import Builder, Call, Tensor
from ..layout import held_shape, identity
from ..registry import converts, handlers, refuse

__all__ = ["embedding", "masking", "time_distributed", "mask_value", "bool_tensor"]


def mask_value(b: Builder, mask: Tensor) -> str:
    """The ONNX name of a Keras mask, in Keras' layout."""
    return b.view(mask, identity(mask.rank))


def bool_tensor(b: Builder, shape: tuple, name: str) -> Tensor:
    """A Keras mask of ``shape`` held (Keras layout) as the bool ONNX value ``name``."""
    return b.tensor(tuple(shape), identity(len(shape)), name)


def _producer(b: Builder, name: str) -> NodeProto | None:
    return next((node for node in reversed(b.nodes) if name in node.output), None)


def _ids(b: Builder, call: Call) -> tuple[str, str]:
    """``(ids as they came, ids as int64)``: the first is the model's own value when the Embedding
    reads a graph input the export cast to float (an int32/int64 input keeps its exactness)."""
    value = b.view(call.x, identity(call.x.rank))
    node = _producer(b, value)
    if node is not None and node.op_type == "Cast" and _producer(b, node.input[0]) is None and node.input[0] not in b.constants:
        value = node.input[0]  # a graph input of another dtype, before the export's Cast to float
    ids = b.node("Cast", [value], name=f"{call.name}/ids", to=TensorProto.INT64)
    return value, ids


@converts("Embedding")
def embedding(b: Builder, call: Call) -> list[Tensor]:
    table = call.layer.weights.get("embeddings")
    if table is None or table.ndim != 2:
        raise refuse(call, "no 2-D embeddings weight")
    raw, ids = _ids(b, call)
    y = b.node("Gather", [b.const(f"{call.name}/embeddings", table), ids], name=call.name, axis=0)
    if call.config.get("mask_zero"):
        # compared in the type the ids came in (Keras: ``not_equal(inputs, 0)`` before its cast)
        zero = b.node("Sub", [raw, raw], name=f"{call.name}/zero")  # a 0 of the input's own dtype
        same = b.node("Equal", [raw, zero], name=f"{call.name}/is_zero")
        call.out_masks = [bool_tensor(b, call.x.shape, b.node("Not", [same], name=f"{call.name}/mask"))]
    return [b.tensor(call.out_shape, identity(len(call.out_shape)), y)]


@converts("Masking")
def masking(b: Builder, call: Call) -> list[Tensor]:
    try:
        value = float(call.config.get("mask_value", 0.0))
    except (TypeError, ValueError):
        raise refuse(call, f"mask_value {call.config.get('mask_value')!r} is not a number") from None
    x = call.x
    keras = identity(x.rank)
    xv = b.view(x, keras)
    same = b.node("Equal", [xv, b.const(f"{call.name}/mask_value", np.float32(value))], name=f"{call.name}/equal")
    differs = b.node("Cast", [b.node("Not", [same], name=f"{call.name}/differs")], name=f"{call.name}/differs_float",
                     to=TensorProto.FLOAT)
    # ``any`` over the features: ReduceMax of 0/1 (ReduceMax takes bool only from opset 20)
    anyf = b.reduce("ReduceMax", differs, [x.rank - 1], keepdims=True, name=f"{call.name}/any")
    keep = b.node("Cast", [anyf], name=f"{call.name}/keep", to=TensorProto.BOOL)
    y = b.node("Where", [keep, xv, b.const(f"{call.name}/zero", np.float32(0.0))], name=call.name)
    mask = b.node("Squeeze", [keep, b.ints(f"{call.name}/feature_axis", [x.rank - 1])], name=f"{call.name}/mask")
    call.out_masks = [bool_tensor(b, x.shape[:-1], mask)]
    return [b.tensor(call.out_shape, keras, y)]


# -- TimeDistributed ---------------------------------------------------------------------------
def _shape_of(b: Builder, value: str, start: int, end: int | None, name: str) -> str:
    """``Shape(value)[start:end]`` as a 1-D int64 value (Slice: ``Shape``'s start/end need opset 15)."""
    shape = b.node("Shape", [value], name=f"{name}/shape")
    stop = end if end is not None else np.iinfo(np.int64).max
    return b.node("Slice", [shape, b.ints(f"{name}/start", [start]), b.ints(f"{name}/end", [stop])], name=f"{name}/dims")


def _fold_time(b: Builder, call: Call) -> tuple[Tensor, str]:
    """The input with time folded into the batch, and the ONNX value it came from."""
    x = call.x
    perm, xv = b.native(x)
    if perm[:2] != (0, 1):
        perm = identity(x.rank)
        xv = b.view(x, perm)
    rest = held_shape(x.shape, perm)[2:]
    if all(d is not None for d in rest):
        target = b.ints(f"{call.name}/fold_shape", [-1, *rest])
    else:
        target = b.node("Concat", [b.ints(f"{call.name}/minus_one", [-1]), _shape_of(b, xv, 2, None, f"{call.name}/rest")],
                        name=f"{call.name}/fold_shape", axis=0)
    folded = b.node("Reshape", [xv, target], name=f"{call.name}/fold")
    n, t = x.shape[0], x.shape[1]
    inner_shape = (None if n is None or t is None else n * t, *x.shape[2:])
    return b.tensor(inner_shape, (0, *(p - 1 for p in perm[2:])), folded), xv


def _unfold_time(b: Builder, call: Call, y: Tensor, source: str, out_shape: tuple, k: int) -> Tensor:
    """An inner output ``(N*T, *rest)`` back to ``(N, T, *rest)``, in the layout it is held in."""
    name = call.name if k == 0 else f"{call.name}/output{k}"
    perm, yv = b.native(y)
    if perm[0] != 0:
        perm = identity(y.rank)
        yv = b.view(y, perm)
    rest = held_shape(y.shape, perm)[1:]
    steps = call.x.shape[1]
    if steps is not None and all(d is not None for d in rest):
        target = b.ints(f"{name}/unfold_shape", [-1, steps, *rest])
    else:
        target = b.node("Concat", [_shape_of(b, source, 0, 2, f"{name}/batch_time"), _shape_of(b, yv, 1, None, f"{name}/rest")],
                        name=f"{name}/unfold_shape", axis=0)
    unfolded = b.node("Reshape", [yv, target], name=name)
    return b.tensor(out_shape, (0, 1, *(p + 1 for p in perm[1:])), unfolded)


#: inner classes whose Keras ``call`` takes no mask although they make one: an input mask is ignored
_MASK_MAKERS = ("Embedding", "Masking")


@converts("TimeDistributed")
def time_distributed(b: Builder, call: Call) -> list[Tensor]:
    entry = call.config.get("layer")
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or not isinstance(entry.get("config"), dict):
        raise refuse(call, "config 'layer' is not a layer config")
    cls, config = entry["class_name"], entry["config"]
    handler = handlers().get(cls)
    if handler is None:
        raise refuse(call, f"the wrapped layer's class {cls!r} has no ONNX handler")
    if call.x.rank < 3:
        raise refuse(call, f"rank-{call.x.rank} input (TimeDistributed needs batch, time and features)")
    mask = call.mask(0)
    record = catalog().get(cls)
    if mask is not None and record is not None and record.masking == "own" and cls not in _MASK_MAKERS:
        raise refuse(call, f"a mask into a wrapped {cls} (which reads it per step) is not exported")
    folded, source = _fold_time(b, call)
    inner = Layer(name=str(config.get("name") or call.layer.name), class_name=cls, config=config,
                  weights=call.layer.weights, source_class=cls)
    inner_call = Call(layer=inner, name=f"{call.name}/{inner.name}", inputs=[folded],
                      out_shapes=[(folded.shape[0], *shape[2:]) for shape in call.out_shapes], source=call.source)
    try:
        outs = handler(b, inner_call)
    except ConfigProblem as exc:
        raise refuse(call, f"wrapped {cls}: {exc}") from None
    results = [_unfold_time(b, call, y, source, shape, k) for k, (y, shape) in enumerate(zip(outs, call.out_shapes))]
    call.out_masks = [_output_mask(b, call, inner_call, source, len(results))] + [None] * (len(results) - 1)
    return results


def _output_mask(b: Builder, call: Call, inner_call: Call, source: str, k: int) -> Tensor | None:
    """TimeDistributed's output mask. Keras 3: the input's (the default ``compute_mask``).
    tf.keras (``compute_mask`` with ``_always_use_reshape``, true for every built-in layer): the
    inner layer's mask of the folded input, unfolded (an Embedding or Masking makes its own,
    ignoring the input's; a layer that keeps masks keeps the input's); when the inner layer
    gives none, the input's mask reduced to ``(N, T)`` with ``any``."""
    mask = call.mask(0)
    if call.generation >= 3:
        return mask
    made = (inner_call.out_masks or [None])[0]
    if made is not None:
        unfolded = _unfold_time(b, call, made, source, (call.x.shape[0], call.x.shape[1], *made.shape[1:]), k)
        return bool_tensor(b, unfolded.shape, mask_value(b, unfolded))
    record = catalog().get(inner_call.layer.class_name)
    if mask is None or mask.rank <= 2 or (record is not None and record.masking == "keep"):
        return mask
    as_float = b.node("Cast", [mask_value(b, mask)], name=f"{call.name}/mask_float", to=TensorProto.FLOAT)
    steps = b.reduce("ReduceMax", as_float, list(range(2, mask.rank)), keepdims=False, name=f"{call.name}/mask_any")
    return bool_tensor(b, mask.shape[:2], b.node("Cast", [steps], name=f"{call.name}/mask", to=TensorProto.BOOL))

