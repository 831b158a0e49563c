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
- ``barrier``: anything else; a BN's affine does not pass it (``why``: what the report says,
  e.g. Masking computes the mask of the layers after it from the values it receives, so a BN
  moved past it would change the mask).

Sequence layers add three notions:

- ``state``: a consumer whose output is a recurrent state (LSTM, GRU, SimpleRNN, RNN,
  ConvLSTM): a forward fold rewrites its *input* kernel (``into``) and the bias the input
  projection adds (``split``: the config key that, when true - the default -, makes the bias
  ``(2, G)`` with the input bias in row 0: GRU's ``reset_after``), but nothing folds backward
  into it; ``state`` is the reason the report gives. Only its first input (the sequence) folds:
  an initial state enters through the recurrent kernel. ``cell``: for the generic RNN, the first
  cell's place: ``config -> (weight prefix, config path, cell config, cell role)``.
- ``steps``: axes after the batch axis a layer runs over before its kernel sees a step (the time
  axis of ConvLSTM; TimeDistributed's): a windowed channels_first channel axis is ``1 + steps``.
- ``wraps``: a wrapper takes the role of the inner layer in ``config[wraps]`` on a tensor with
  ``steps`` more axes (TimeDistributed); ``sides``: a wrapper holding several copies, each
  ``(weight prefix, config key)`` (Bidirectional: ``forward/`` then ``backward/``; a missing
  config key means the copy shares ``config[wraps]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["FoldRole", "Axis", "CellSite", "producer", "pool", "recurrent", "wrapper", "barrier", "first_cell",
           "RECURRENT_ROLES", "CONV_LSTM", "TIME_DISTRIBUTED", "BIDIRECTIONAL", "MASK_BARRIER", "IDENTITY", "RESHAPE",
           "FLATTEN", "INPUT", "BARRIER"]

#: an axis of a kernel, or the pair ``(-2, -1)`` of a channel ``c*dm + m`` spread over two axes
Axis = int | tuple[int, int]

#: where a generic RNN's first cell sits: ``config -> (weight prefix, config path, cell config, cell role)``
CellSite = Callable[[dict[str, Any]], "tuple[str, tuple[str | int, ...], dict[str, Any], FoldRole]"]


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
    why: str = ""
    state: str = ""
    split: str | None = None
    cell: CellSite | None = None
    steps: int = 0
    wraps: str | None = None
    sides: tuple[tuple[str, str], ...] = ()

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


def recurrent(state: str, *, windowed: bool = False, steps: int = 0, split: str | None = None,
              cell: CellSite | None = None) -> FoldRole:
    """The role of a recurrent layer: a forward fold goes into its input ``kernel`` (rows: the
    input features; a windowed ConvLSTM's ``(*k, C, 4f)``), never backward (``state`` says why)."""
    return FoldRole("producer", into=("kernel", -2), windowed=windowed, state=state, split=split, cell=cell, steps=steps)


def wrapper(key: str = "layer", *, steps: int = 0, sides: tuple[tuple[str, str], ...] = ()) -> FoldRole:
    """The role of a wrapper: its inner layer's (``config[key]``) on a tensor with ``steps`` more axes."""
    return FoldRole("wrapper", wraps=key, steps=steps, sides=sides)


def barrier(why: str) -> FoldRole:
    """A barrier with the reason the report gives."""
    return FoldRole("barrier", why=why)


def pool(*, max: bool, global_: bool = False) -> FoldRole:  # noqa: A002 - the kind of pooling
    """The role of a pooling layer."""
    return FoldRole("pool", max=max, global_=global_)


IDENTITY = FoldRole("identity")
RESHAPE = FoldRole("reshape")
FLATTEN = FoldRole("reshape", flatten=True)
INPUT = FoldRole("input")
BARRIER = FoldRole("barrier")


# -- sequence layers ------------------------------------------------------------------------------
_STATE = "a recurrent state, nonlinear in its kernels (nothing folds backward into it)"

#: the roles of the cells a recurrent layer runs (by cell class): GRU's bias splits with reset_after
_CELLS = {"SimpleRNNCell": recurrent(_STATE), "LSTMCell": recurrent(_STATE),
          "GRUCell": recurrent(_STATE, split="reset_after")}


def _entry(value: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("class_name"), str) or not isinstance(value.get("config"), dict):
        raise ValueError("not a layer config")
    return value["class_name"], value["config"]


def first_cell(config: dict[str, Any]) -> tuple[str, tuple[str | int, ...], dict[str, Any], FoldRole]:
    """Where a generic RNN's input kernel lives: its first cell (``config["cell"]`` a cell, a list
    of cells or a StackedRNNCells), as ``(weight prefix, config path, cell config, cell role)``;
    the weights are prefixed ``cells/0/`` when there are several cells (the catalog's weight rule).
    Raises ValueError for a cell config the catalog cannot read."""
    from .recurrent import cell_configs

    count = len(cell_configs("RNN", config))
    cell = config.get("cell")
    path: tuple[str | int, ...] = ("cell", 0) if isinstance(cell, list) else ("cell",)
    name, cfg = _entry(cell[0] if isinstance(cell, list) else cell)
    if name == "StackedRNNCells":
        path += ("config", "cells", 0)
        name, cfg = _entry((cfg.get("cells") or [None])[0])
    if name not in _CELLS:
        raise ValueError(f"cell class {name!r}")
    return ("cells/0/" if count > 1 else ""), (*path, "config"), cfg, _CELLS[name]


#: SimpleRNN, LSTM, GRU, RNN: forward into the input kernel (a generic RNN's first cell's)
RECURRENT_ROLES = {"SimpleRNN": _CELLS["SimpleRNNCell"], "LSTM": _CELLS["LSTMCell"], "GRU": _CELLS["GRUCell"],
                   "RNN": recurrent(_STATE, cell=first_cell)}
#: ConvLSTM1D/2D/3D: forward into the input kernel, a convolution of each step's image
CONV_LSTM = recurrent("o*act(c), the output gate times the activated cell state: nonlinear in its kernels, so nothing folds "
                      "backward into it", windowed=True, steps=1)
TIME_DISTRIBUTED = wrapper("layer", steps=1)
BIDIRECTIONAL = wrapper("layer", sides=(("forward/", "layer"), ("backward/", "backward_layer")))
#: Masking computes the mask of the layers after it from the values it receives
MASK_BARRIER = barrier("computes the Keras mask from the values it receives: moving the BN past it would change the mask")
