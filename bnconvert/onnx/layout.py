"""Tensor layouts: how a Keras tensor is laid out in the ONNX graph, as a permutation.

A Keras tensor of rank ``r`` may be held in ONNX in another axis order. We describe that order
by a permutation ``perm`` of ``range(r)``: ONNX axis ``j`` holds Keras axis ``perm[j]``. The
identity is the Keras layout itself; :func:`channels_first` moves the last Keras axis to
position 1 (NHWC -> NCHW), which is what ONNX Conv, Pool, Resize and BatchNormalization want.
The batch axis always stays at position 0. Everything here is pure and works on tuples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "Perm",
    "identity",
    "channels_first",
    "transpose_between",
    "held_shape",
    "position",
    "same_memory_order",
    "keras_param",
]

Perm = tuple  # tuple[int, ...]


def identity(rank: int) -> Perm:
    """The Keras layout itself."""
    return tuple(range(rank))


def channels_first(rank: int) -> Perm:
    """``(0, r-1, 1, ..., r-2)``: the last Keras axis at position 1 (NHWC -> NCHW)."""
    if rank < 3:
        return identity(rank)
    return (0, rank - 1, *range(1, rank - 1))


def transpose_between(src: Perm, dst: Perm) -> list[int]:
    """The ONNX ``Transpose`` ``perm`` attribute that turns a tensor held in ``src`` into ``dst``."""
    return [src.index(axis) for axis in dst]


def held_shape(shape: Sequence[int | None], perm: Perm) -> tuple:
    """The ONNX shape of a Keras tensor of ``shape`` held in ``perm``."""
    return tuple(shape[p] for p in perm)


def position(perm: Perm, keras_axis: int) -> int:
    """Where Keras axis ``keras_axis`` (negative allowed) sits in the held tensor."""
    return perm.index(keras_axis % len(perm))


def same_memory_order(shape: Sequence[int | None], a: Perm, b: Perm) -> bool:
    """True when the two layouts differ only by where unit axes sit (a Reshape converts them)."""
    def order(perm: Perm) -> list[int]:
        return [p for p in perm if shape[p] != 1]

    return order(a) == order(b)


def keras_param(values: np.ndarray, rank: int, axes: Sequence[int], perm: Perm, shape: Sequence[int | None]) -> np.ndarray:
    """A per-feature parameter over Keras ``axes`` (flattened in increasing axis order), shaped to
    broadcast against the tensor held in ``perm``."""
    axes = sorted(a % rank for a in axes)
    full = [int(shape[a]) if a in axes else 1 for a in range(rank)]  # type: ignore[arg-type]  # known: Keras sized the parameter by them
    return np.transpose(np.asarray(values).reshape(full), perm)
