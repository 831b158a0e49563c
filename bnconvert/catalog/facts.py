"""A class's static facts: its output-shape rule and its weights by meaning.

Every record carries two functions of the layer's config and its input shapes (batch first,
``None`` where a dimension is unknown):

- ``shape(config, input_shapes) -> output_shapes``: one shape per output, Keras'
  ``compute_output_shape``. It may raise ``KeyError``/``TypeError``/``ValueError`` or
  :class:`ConfigProblem` on a config it cannot read; :func:`bnconvert.shapes.infer_shapes` then
  calls the outputs unknown (the readers' config checks name the bad value). Where the shapes
  depend on how the layer is called (Attention's ``return_attention_scores``, ReversibleEmbedding's
  ``reverse``), the call's keyword arguments are in ``config[CALL_KWARGS]`` (absent: none recorded).
  An operation layer's (``keras.ops.mean``, ``tf.reshape``) full call arguments are there too,
  under :data:`bnconvert.model.OP_ARGS`: ``(args, kwargs)`` with each tensor a
  :class:`~bnconvert.model.TensorArg` whose ``index`` is its position in ``input_shapes``
  (:func:`op_args` fetches them); its constructor arguments (Keras 3 Mean's ``axis``) are the config.
- ``weights(config, input_shapes) -> [WeightSpec]``: the weights in Keras' order (trainable ones
  first, as ``vars/0..N`` and ``weight_names`` store them), each with the shape the config
  implies (``None`` for a dimension the input shapes do not tell, or for a whole shape that is
  not checked). ``input_shapes`` may be None (the names are wanted, not the shapes). A size the
  shapes need that the config lacks or spells wrongly (``filters: -3``) is a
  :class:`ConfigProblem`, worded for the user.

A class with a spatial kernel also carries a :class:`KernelLayout` (its spatial rank and which
of the layouts of :mod:`bnconvert.catalog` its kernels have): the readers upgrade Keras 1
kernels and flip Theano ones by it, the writers and the Keras runner read it instead of lists
of class names.

The helpers below are the arithmetic the family modules share (Keras' ``conv_output_length`` and
``deconv_output_length``, channels_last/first splitting, numpy broadcasting of merges).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast, overload

from ..model import OP_ARGS

__all__ = [
    "CALL_KWARGS", "Shape", "Dim", "ShapeRule", "WeightRule", "WeightSpec", "KernelLayout", "ConfigProblem", "same_shape", "no_weights",
    "conv_output_length", "deconv_output_length", "split_spatial", "assemble", "settings", "positive",
    "positives", "input_channels", "broadcast", "times", "op_args",
]

#: the config key under which a shape rule finds the call's keyword arguments (see the module docstring)
CALL_KWARGS = "__call_kwargs__"

Dim = int | None
#: a tensor's shape, batch first; ``None`` for an unknown dimension
Shape = tuple  # tuple[Dim, ...]
ShapeRule = Callable[[dict[str, Any], list[Shape]], list[Shape]]


@dataclass(frozen=True)
class WeightSpec:
    """One weight of a layer: its meaning (``kernel``, ``gamma``, ``moving_mean`` ...), the shape
    its config implies (None: not checked) and whether Keras trains it."""

    name: str
    shape: tuple[Dim, ...] | None = None
    trainable: bool = True


WeightRule = Callable[[dict[str, Any], "list[Shape] | None"], list[WeightSpec]]


@dataclass(frozen=True)
class KernelLayout:
    """The spatial kernel of a convolution: ``rank`` spatial axes, laid out as ``kind`` says
    (the kernel layouts of :mod:`bnconvert.catalog`): ``conv`` ``(*k, C_in/groups, filters)``,
    ``transpose`` ``(*k, filters, C_in)``, ``depthwise`` ``(*k, C, dm)`` in ``depthwise_kernel``,
    ``separable`` a depthwise kernel then a pointwise ``(*1, C*dm, filters)``."""

    rank: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "transpose", "depthwise", "separable"):
            raise ValueError(f"kernel kind {self.kind!r}")

    @property
    def transposed(self) -> bool:
        return self.kind == "transpose"

    @property
    def depthwise(self) -> bool:
        """True for a depthwise kernel, alone or followed by a pointwise one (separable)."""
        return self.kind in ("depthwise", "separable")

    @property
    def separable(self) -> bool:
        return self.kind == "separable"


class ConfigProblem(Exception):
    """A config value a weight shape needs is missing or wrong (``config 'filters' is -3, not a
    positive integer``); the readers report it naming the layer."""


def op_args(config: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """An operation layer's call arguments ``(args, kwargs)`` as its shape rule sees them (see the
    module docstring); ``KeyError`` when the config holds none (the shapes are then unknown)."""
    return config[CALL_KWARGS][OP_ARGS]


def same_shape(config: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """The rule of a layer that keeps its input's shape."""
    return [shapes[0]]


def no_weights(config: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """The rule of a layer without weights."""
    return []


@overload
def conv_output_length(length: int, kernel: int, padding: str, stride: int, dilation: int = 1) -> int: ...
@overload
def conv_output_length(length: Dim, kernel: int, padding: str, stride: int, dilation: int = 1) -> Dim: ...
def conv_output_length(length: Dim, kernel: int, padding: str, stride: int, dilation: int = 1) -> Dim:
    """Keras' ``conv_output_length`` for valid/same/causal padding."""
    if length is None:
        return None
    k = (kernel - 1) * dilation + 1
    if padding == "valid":
        length = length - k + 1
    return (length + stride - 1) // stride


def deconv_output_length(length: Dim, kernel: int, padding: str, stride: int, output_padding: int | None = None,
                         dilation: int = 1) -> Dim:
    """Keras' ``deconv_output_length``."""
    if length is None:
        return None
    k = (kernel - 1) * dilation + 1
    if output_padding is None:
        return length * stride if padding == "same" else length * stride + max(k - stride, 0)
    pad = k // 2 if padding == "same" else 0
    return (length - 1) * stride + k - 2 * pad + output_padding


def _first(config: dict[str, Any]) -> bool:
    return config.get("data_format") == "channels_first"


def split_spatial(shape: Shape, config: dict[str, Any]) -> tuple[list[Dim], Dim]:
    """``(spatial dims, channels)`` of a batch-first shape in the layer's data format."""
    if _first(config):
        return list(shape[2:]), shape[1]
    return list(shape[1:-1]), shape[-1]


def assemble(batch: Dim, spatial: Sequence[Dim], channels: Dim, config: dict[str, Any]) -> Shape:
    """The inverse of :func:`split_spatial`."""
    return (batch, channels, *spatial) if _first(config) else (batch, *spatial, channels)


def settings(value: Any, n: int) -> list[Any]:
    """A Keras int-or-tuple setting as ``n`` values (None stays None ``n`` times)."""
    if value is None:
        return [None] * n
    if isinstance(value, (list, tuple)):
        return list(value) * n if len(value) == 1 else list(value)
    return [value] * n


def positive(config: dict[str, Any], key: str, default: Any = None) -> int:
    """``config[key]`` (or ``default``) as a positive int; :class:`ConfigProblem` otherwise."""
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigProblem(f"config '{key}' is {value!r}, not a positive integer")
    return value


def positives(config: dict[str, Any], key: str, n: int) -> tuple[int, ...]:
    """``config[key]`` as ``n`` positive ints (one int stands for all); :class:`ConfigProblem` otherwise."""
    value = config.get(key)
    items = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(items) != n or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise ConfigProblem(f"config '{key}' is {value!r}, not {n} positive integers")
    return cast("tuple[int, ...]", tuple(items))  # every item checked above


def _dim(value: Any) -> Dim:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def input_channels(config: dict[str, Any], shapes: list[Shape] | None, rank: int | None = None) -> Dim:
    """The channels of the first input (its last axis, or axis 1 for channels_first), None when
    unknown or when the input is not of rank ``rank + 2``."""
    if not shapes or not isinstance(shapes[0], tuple):
        return None
    shape = shapes[0]
    if rank is not None and len(shape) != rank + 2:
        return None
    return _dim(shape[1] if _first(config) and len(shape) > 2 else shape[-1])


def times(a: Dim, b: Dim) -> Dim:
    """``a * b``, None when either is unknown."""
    return None if a is None or b is None else a * b


def broadcast(shapes: list[Shape]) -> Shape:
    """numpy broadcasting of shapes aligned on their last axis, as Keras' merges compute it:
    per axis a size other than 1 wins, else an unknown size, else 1."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        sized = [d for d in dims if d is not None and d != 1]
        out.append(sized[0] if sized else (None if None in dims else 1))
    return tuple(out)
