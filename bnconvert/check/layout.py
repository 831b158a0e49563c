"""Reading a tensor of one model in the layout of the other (channels_last Keras vs NCHW ONNX).

bnconvert's ONNX export computes in NCHW, and ``--nchw`` exports take and return NCHW tensors;
the Keras model is channels_last. When two shapes differ only by where the channel axis sits,
the comparison transposes the other side into the reference's layout. A shape that fits both
ways (all spatial sizes equal to the channel count) is tried both ways by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LAST_TO_FIRST", "FIRST_TO_LAST", "permutation", "layout_options", "compatible", "inverse", "transpose"]

LAST_TO_FIRST = "channels_last->channels_first"
FIRST_TO_LAST = "channels_first->channels_last"

Dims = Sequence[int | None]


def permutation(kind: str, rank: int) -> tuple[int, ...]:
    """The transpose axes for ``kind`` on a tensor of ``rank`` (batch first)."""
    if kind == LAST_TO_FIRST:
        return (0, rank - 1, *range(1, rank - 1))
    if kind == FIRST_TO_LAST:
        return (0, *range(2, rank), 1)
    raise ValueError(kind)


def compatible(a: Dims, b: Dims) -> bool:
    """Same rank and every dimension equal or unknown on one side."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def layout_options(ref: Dims, other: Dims) -> list[str | None]:
    """How ``other`` can be read as ``ref``: ``None`` (as it is) and/or a transpose kind.

    ``LAST_TO_FIRST`` means: transposing a ``ref``-layout tensor that way gives ``other``'s
    layout (so feeds go through it, and ``other``'s tensors come back through ``FIRST_TO_LAST``).
    """
    options: list[str | None] = []
    if compatible(ref, other):
        options.append(None)
    if len(ref) >= 3 and len(other) == len(ref):
        for kind in (LAST_TO_FIRST, FIRST_TO_LAST):
            moved = [ref[i] for i in permutation(kind, len(ref))]
            # a shape that reads the same both ways (C == H == W) keeps the transpose as an option:
            # the caller tries each (an NCHW tensor of an 8x8x8 image is not its NHWC self)
            if compatible(moved, other):
                options.append(kind)
    return options


def inverse(kind: str | None) -> str | None:
    """The transpose kind that undoes ``kind``."""
    return {LAST_TO_FIRST: FIRST_TO_LAST, FIRST_TO_LAST: LAST_TO_FIRST}.get(kind) if kind else None


def transpose(array: np.ndarray, kind: str | None) -> np.ndarray:
    """``array`` transposed by ``kind`` (unchanged for None)."""
    return array if kind is None else array.transpose(permutation(kind, array.ndim))
