"""Discretization, CategoryEncoding and IntegerLookup (see :mod:`bnconvert.catalog.categorical`).

The bucket index is the number of boundaries at or below the value: a GreaterOrEqual against
the boundaries, cast and summed. Encodings compare the ids (floats, as bnconvert holds every
tensor) with ``0 .. depth - 1``: one-hot is that Equal cast to float, multi-hot its ReduceMax
over the ``k`` ids of a row, count its ReduceSum. IntegerLookup's index is the sum of
``Equal(id, vocabulary) * (position + 1)``: 0 when the id is out of the vocabulary.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...catalog.categorical import boundaries, depth, vocabulary
from ...catalog.facts import ConfigProblem
from ..builder import Builder, Call, Tensor
from ..layout import identity
from ..registry import converts, refuse

__all__ = ["categorical"]

_DEFAULT = {"Discretization": "int", "CategoryEncoding": "multi_hot", "IntegerLookup": "int"}
#: integers float32 holds exactly (bnconvert carries ids as float32)
_EXACT = 2**24


@converts("Discretization", "CategoryEncoding", "IntegerLookup")
def categorical(b: Builder, call: Call) -> list[Tensor]:
    c, n = call.config, call.name
    if len(call.inputs) != 1:
        raise refuse(call, "count_weights (a second input) is not supported")
    mode = c.get("output_mode", _DEFAULT[call.layer.class_name])
    if c.get("sparse") or mode not in ("int", "one_hot", "multi_hot", "count"):
        raise refuse(call, f"output_mode {mode!r} (sparse {bool(c.get('sparse'))}) is not a dense encoding")
    try:
        size = depth(call.layer.class_name, c)
        edges = boundaries(c) if call.layer.class_name == "Discretization" else None
        vocab = vocabulary(c) if call.layer.class_name == "IntegerLookup" else None
    except ConfigProblem as exc:
        raise refuse(call, str(exc)) from None
    if vocab is not None and any(abs(v) >= _EXACT for v in vocab):
        raise refuse(call, "vocabulary ids of 2**24 or more are not exact in float32, which the export carries ids in")
    x = b.view(call.x, identity(call.x.rank))
    last = b.ints(f"{n}/last_axis", [-1])
    if edges is not None:
        above = b.node("GreaterOrEqual", [b.node("Unsqueeze", [x, last], name=f"{n}/values"),
                                          b.const(f"{n}/boundaries", np.asarray(edges, np.float32))], name=f"{n}/above")
        x = b.reduce("ReduceSum", b.node("Cast", [above], name=f"{n}/above_float", to=TensorProto.FLOAT), [-1],
                     keepdims=False, name=f"{n}/index")
    if vocab is not None:  # position + 1 where an id is in the vocabulary, else 0 (the OOV index)
        hits = b.node("Cast", [b.node("Equal", [b.node("Unsqueeze", [x, last], name=f"{n}/lookup_ids"),
                                                b.const(f"{n}/vocabulary", np.asarray(vocab, np.float32))], name=f"{n}/hits")],
                      name=f"{n}/hits_float", to=TensorProto.FLOAT)
        weighted = b.node("Mul", [hits, b.const(f"{n}/positions", np.arange(1, len(vocab) + 1, dtype=np.float32))],
                          name=f"{n}/positions_hit")
        x = b.reduce("ReduceSum", weighted, [-1], keepdims=False, name=f"{n}/lookup")
    if mode == "int":
        return [b.tensor(call.out_shape, identity(len(call.out_shape)), b.node("Identity", [x], name=n))]
    if call.x.rank != 2:
        raise refuse(call, f"only (batch, k) inputs are encoded, got rank {call.x.rank}")
    hot = b.node("Cast", [b.node("Equal", [b.node("Unsqueeze", [x, last], name=f"{n}/ids"),
                                           b.const(f"{n}/categories", np.arange(size, dtype=np.float32))], name=f"{n}/equal")],
                 name=f"{n}/hot", to=TensorProto.FLOAT)
    if mode == "one_hot":
        y = b.node("Squeeze", [hot, b.ints(f"{n}/id_axis", [1])], name=n) if call.x.shape[1] == 1 else \
            b.node("Identity", [hot], name=n)
    else:
        y = b.reduce("ReduceMax" if mode == "multi_hot" else "ReduceSum", hot, [1], keepdims=False, name=n)
    return [b.tensor(call.out_shape, identity(len(call.out_shape)), y)]
