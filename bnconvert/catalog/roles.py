"""The fold role of a Keras class: how a BatchNormalization's per-channel affine ``s*x + t`` meets it.

:mod:`bnconvert.fold.plan` walks the graph by these roles and :mod:`bnconvert.fold.kernels` picks
its arithmetic from them; neither names a class. The kinds:

- ``producer``: a layer with a kernel. ``out`` is ``(weight, axis)`` of the output channels a
  backward fold (layer -> BN) scales: axis -1 for Dense/Conv, -2 for Conv*Transpose, the pair
  ``(-2, -1)`` for DepthwiseConv (output channel ``c*dm + m`` spread over ``(C, dm)``).
  ``into`` is ``(weight, axis)`` of the input channels a forward fold (BN -> layer) scales
  (None: no forward fold). ``windowed`` layers read a window of positions (padding matters, the
  channel axis follows ``data_format``); a non-windowed one (Dense) reads the last axis at every
  position. ``grouped``: input channels split into the config's ``groups``. ``through``: the
  second weight the forward shift passes through (SeparableConv's pointwise kernel).
- ``identity``: the identity at inference (dropouts, noise); walked through and dropped by a fold.
- ``pool``: commutes with a per-channel affine on its channel axis; ``max`` pooling only when
  ``s > 0``; ``global_`` pooling without ``keepdims`` moves the channel axis last.
- ``reshape``: Flatten/Reshape: a forward fold follows the affine per element (``flatten``:
  Keras' Flatten, which moves a channels_first channel axis last first).
- ``input``: a model input (nothing before it to fold into).
- ``barrier``: anything else; a BN's affine does not pass it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FoldRole", "Axis", "producer", "pool", "IDENTITY", "RESHAPE", "FLATTEN", "INPUT", "BARRIER"]

#: an axis of a kernel, or the pair ``(-2, -1)`` of a channel ``c*dm + m`` spread over two axes
Axis = int | tuple[int, int]


@dataclass(frozen=True)
class FoldRole:
    """How a BN's affine meets a class (see the module docstring for each kind)."""

    kind: str = "barrier"
    out: tuple[str, Axis] | None = None
    into: tuple[str, Axis] | None = None
    windowed: bool = True
    grouped: bool = False
    through: str | None = None
    max: bool = False
    global_: bool = False
    flatten: bool = False

    @property
    def producer(self) -> bool:
        """A backward fold can rewrite this layer's weights."""
        return self.kind == "producer" and self.out is not None

    @property
    def consumer(self) -> bool:
        """A forward fold can rewrite this layer's weights."""
        return self.kind == "producer" and self.into is not None

    @property
    def spread(self) -> bool:
        """Output channels spread over two kernel axes (``c*dm + m``: depthwise)."""
        return self.out is not None and isinstance(self.out[1], tuple)


def producer(out: tuple[str, Axis], into: tuple[str, Axis] | None = None, *, windowed: bool = True,
             grouped: bool = False, through: str | None = None) -> FoldRole:
    """The role of a layer with a kernel (``out``/``into``: ``(weight, axis)``, see the module docstring)."""
    return FoldRole("producer", out=out, into=into, windowed=windowed, grouped=grouped, through=through)


def pool(*, max: bool, global_: bool = False) -> FoldRole:  # noqa: A002 - the kind of pooling
    """The role of a pooling layer."""
    return FoldRole("pool", max=max, global_=global_)


IDENTITY = FoldRole("identity")
RESHAPE = FoldRole("reshape")
FLATTEN = FoldRole("reshape", flatten=True)
INPUT = FoldRole("input")
BARRIER = FoldRole("barrier")
