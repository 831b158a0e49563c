"""Flatten, Reshape, Permute, RepeatVector: layers that move elements, in Keras' element order.

Flatten and Reshape must see the elements in Keras order (channels_last for a channels_last
model), so a tensor held channels-first is transposed back first, unless the two layouts differ
only by unit axes (a ``(N, 1, 1, C)`` tensor), where the memory order is the same and no
Transpose is needed. Permute emits nothing: it only changes which layout the tensor is said to be
held in. A Reshape is produced lazily, directly in the layout its consumer asks for when that
costs nothing (the ``Reshape((1, 1, C))`` in front of a squeeze-excite Conv).
"""

from __future__ import annotations

from ..builder import Builder, Call, Tensor
from ..layout import Perm, held_shape, identity, same_memory_order
from ..registry import converts, refuse

__all__ = ["flatten", "reshape", "permute", "repeat_vector"]


@converts("Flatten")
def flatten(b: Builder, call: Call) -> list[Tensor]:
    x, rank = call.x, call.x.rank
    order = identity(rank)
    if call.config.get("data_format") == "channels_first" and rank > 2:
        order = (0, *range(2, rank), 1)  # Keras flattens channels_first input in channels_last order
    y = b.node("Flatten", [b.flat_view(x, order)], name=call.name, axis=1)
    return [b.tensor(call.out_shape, identity(2), y)]


@converts("Reshape")
def reshape(b: Builder, call: Call) -> list[Tensor]:
    x, out = call.x, call.out_shape
    target = [int(t) if t is not None else -1 for t in call.config.get("target_shape") or []]
    if len(target) != len(out) - 1:
        raise refuse(call, f"target_shape {target} does not match the output rank {len(out)}")
    static = all(d is not None for d in out[1:])
    keras = identity(len(out))
    made: dict[Perm, str] = {}

    def materialise(builder: Builder, perm: Perm | None) -> tuple[Perm, str]:
        if perm is None or not static or not same_memory_order(out, perm, keras):
            perm = keras
        if perm in made:
            return perm, made[perm]
        dims = [0, *held_shape(out, perm)[1:]] if static else [0, *target]
        shape = builder.ints(f"{call.name}/shape", [int(d) for d in dims])
        name = call.name if perm == keras else f"{call.name}/held"
        made[perm] = builder.node("Reshape", [builder.flat_view(x), shape], name=name)
        return perm, made[perm]

    return [Tensor(shape=tuple(out), lazy=materialise)]


@converts("Permute")
def permute(b: Builder, call: Call) -> list[Tensor]:
    dims = [int(d) for d in call.config.get("dims") or []]
    rank = call.x.rank
    if sorted(dims) != list(range(1, rank)):
        raise refuse(call, f"dims {dims} is not a permutation of 1..{rank - 1}")
    b.native(call.x)
    q = [0, *dims]  # Keras output axis a is input axis q[a]
    qinv = [q.index(i) for i in range(rank)]
    views = {tuple(qinv[p] for p in perm): name for perm, name in call.x.views.items()}
    return [Tensor(shape=tuple(call.out_shape), views=views)]


@converts("RepeatVector")
def repeat_vector(b: Builder, call: Call) -> list[Tensor]:
    n = int(call.config["n"])
    x = b.view(call.x, identity(2))
    expanded = b.node("Unsqueeze", [x, b.ints(f"{call.name}/axes", [1])], name=f"{call.name}/unsqueeze")
    y = b.node("Expand", [expanded, b.ints(f"{call.name}/shape", [1, n, 1])], name=call.name)
    return [b.tensor(call.out_shape, identity(3), y)]
