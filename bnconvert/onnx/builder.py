"""The context every layer handler writes into: ONNX nodes, initializers, and tensor layouts.

This is not a graph class: it is a list of ``onnx.helper`` NodeProtos and TensorProtos plus the
bookkeeping handlers need, namely unique names, opset-dependent spellings (reduce axes moved
from an attribute to an input in opset 18), and the layout of each Keras tensor.

Layouts are tracked per tensor (:class:`Tensor`): a Keras tensor may be held in ONNX in one or
several layouts at once (``views``, keyed by permutation, see :mod:`.layout`). A handler asks
for the layout it needs with :meth:`Builder.view`; a Transpose is only emitted when that layout
does not exist yet, and it is cached for every later consumer. So a channels_last image model
gets one Transpose after each input and one before each output, and none in between.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import GraphProto, NodeProto, TensorProto, ValueInfoProto, helper

from ..model import OP_ARGS, Layer, Source
from .layout import Perm, channels_first, identity, same_memory_order, transpose_between

__all__ = ["Tensor", "Call", "Builder", "reads"]

#: opset from which these reductions take ``axes`` as an input rather than an attribute
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_AXES_INPUT_DEFAULT = 18


@dataclass(eq=False)
class Tensor:
    """One Keras tensor as the ONNX graph holds it.

    ``shape`` is the Keras shape (batch first, ``None`` where unknown). ``views`` maps a layout
    (see :mod:`.layout`) to the ONNX value holding the tensor in that layout; the first entry is
    where the tensor was produced. ``lazy`` produces a view on demand (used by Reshape and
    ZeroPadding so that a consumer can absorb them); ``pad`` records a ZeroPadding not yet
    applied: ``(source tensor, {keras axis: (before, after)})``.
    """

    shape: tuple
    views: dict[Perm, str] = field(default_factory=dict)
    lazy: Callable[[Builder, Perm | None], tuple[Perm, str]] | None = None
    pad: tuple[Tensor, dict[int, tuple[int, int]]] | None = None

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass
class Call:
    """What a handler gets: one call of one layer, its input tensors and its output shapes."""

    layer: Layer
    #: base name for this call's nodes and tensors (layer name, nested path, ``_k`` for call k > 0)
    name: str
    inputs: list[Tensor]
    out_shapes: list[tuple]
    source: Source | None = None
    #: per input, the Keras mask it carries: a bool tensor (``(N, T)`` for a sequence), or None
    masks: list[Tensor | None] = field(default_factory=list)
    #: set by a handler of a class that computes its own output masks (catalog masking ``own``):
    #: one bool tensor or None per output; left None, the class's catalog policy decides
    out_masks: list[Tensor | None] | None = None
    #: the keyword arguments the file records for this call (``use_causal_mask``, ``reverse`` ...)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def mask(self, i: int = 0) -> Tensor | None:
        """The mask of input ``i``, None when it has none."""
        return self.masks[i] if i < len(self.masks) else None

    @property
    def op_args(self) -> tuple[list[Any], dict[str, Any]] | None:
        """An operation layer's full call arguments ``(args, kwargs)``, each tensor a
        :class:`~bnconvert.model.TensorArg` indexing :attr:`inputs` (None for a layer); the same
        pair the catalog's semantics read (:attr:`bnconvert.catalog.CallContext.op_args`)."""
        return self.kwargs.get(OP_ARGS)

    @property
    def config(self) -> dict[str, Any]:
        return self.layer.config

    @property
    def x(self) -> Tensor:
        return self.inputs[0]

    @property
    def out_shape(self) -> tuple:
        return self.out_shapes[0]

    @property
    def generation(self) -> int:
        """The Keras generation that wrote the file (3 when unknown)."""
        return self.source.generation if self.source is not None else 3

    @property
    def theano(self) -> bool:
        """True for a Keras 1 file written by Theano (its 'same' padding differs from TensorFlow's)."""
        return self.source is not None and self.generation == 1 and (self.source.backend or "") == "theano"


def _take(base: str, taken: set[str]) -> str:
    """``base``, else ``base_1``, ``base_2``...: the first not in ``taken``, which it joins."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


class Builder:
    """Collects nodes and initializers for one export at one opset."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[NodeProto] = []
        #: initializer values by name, in creation order; kept as numpy arrays (often views of the
        #: model's weights) and turned into TensorProtos once, by :func:`.save.add_initializers`
        self.constants: dict[str, np.ndarray] = {}
        self._tensors: set[str] = set()
        self._node_names: set[str] = set()
        self._reserved: set[str] = set()
        #: old -> new names given by :meth:`rename` (a Tensor's views may still hold the old one)
        self.renamed: dict[str, str] = {}
        self._pending: dict[str, str] = {}  # renamed, not yet written into the nodes

    # -- names -------------------------------------------------------------------------------
    def claim(self, name: str) -> str:
        """Reserve a tensor name that must stay exactly as given (graph inputs)."""
        if name in self._tensors:
            raise ValueError(f"tensor name {name!r} is already used")
        self._tensors.add(name)
        return name

    def reserve(self, names: Sequence[str]) -> None:
        """Keep ``names`` (the graph outputs) for :meth:`rename` at the end: until then a value
        asking for one of them is called ``<name>/held``."""
        self._reserved.update(names)
        self._tensors.update(names)

    def fresh(self, base: str) -> str:
        """A tensor name not used yet: ``base``, else ``base_1``, ``base_2``..."""
        if base in self._reserved:
            base = f"{base}/held"
        return _take(base, self._tensors)

    def _fresh_node(self, base: str) -> str:
        return _take(base, self._node_names)

    # -- initializers ------------------------------------------------------------------------
    def const(self, base: str, value: Any, dtype: Any = np.float32) -> str:
        """An initializer holding ``value`` (float32 unless said otherwise). No copy is made here:
        ``value`` (a weight, or a transposed view of one) must not change until the export is done."""
        name = self.fresh(base)
        self.constants[name] = np.asarray(value, dtype=dtype)
        return name

    def ints(self, base: str, values: Sequence[int] | np.ndarray) -> str:
        """A 1-D int64 initializer (shapes, pads, axes, starts...)."""
        return self.const(base, np.asarray(list(values), dtype=np.int64).reshape(-1), np.int64)

    # -- nodes -------------------------------------------------------------------------------
    def node(self, op: str, inputs: Sequence[str], *, name: str, out: str | None = None, **attrs: Any) -> str:
        """Append one node with a single output; returns the output's name.

        ``name`` is the node's name (made unique); the output is named ``out`` or, by default, like
        the node. ``attrs`` become ONNX attributes (``None`` values are left out).
        """
        output = self.fresh(out or name)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=self._fresh_node(name), **attrs))
        return output

    def nodes_out(self, op: str, inputs: Sequence[str], outs: Sequence[str | None], *, name: str,
                  **attrs: Any) -> list[str]:
        """Append one node with several outputs (LSTM's Y, Y_h, Y_c; Split; Scan), named
        ``<name>/<out>``; a ``None`` in ``outs`` leaves that optional output out (``""``)."""
        names = [self.fresh(f"{name}/{o}") if o is not None else "" for o in outs]
        while names and not names[-1]:
            names.pop()  # trailing optional outputs are simply omitted
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, list(inputs), names, name=self._fresh_node(name), **attrs))
        return names + [""] * (len(outs) - len(names))

    def body(self) -> Builder:
        """A builder for a subgraph (the body of a Scan or Loop): its own node list, but this
        builder's names and initializers. Names stay unique across the whole model (ONNX forbids
        a subgraph value shadowing an outer one), and a constant the body creates is an outer
        initializer the body reads from the enclosing scope, so the weights of a recurrent cell
        are stored once, like every other weight (and go to external data like them)."""
        child = Builder(self.opset)
        child.constants = self.constants
        child._tensors = self._tensors
        child._node_names = self._node_names
        child._reserved = self._reserved
        return child

    def graph(self, name: str, inputs: Sequence[str], outputs: Sequence[str], *,
              types: dict[str, int] | None = None) -> GraphProto:
        """This (body) builder's nodes as a subgraph with the given inputs and outputs: float32
        unless ``types`` says otherwise (``{mask: TensorProto.BOOL}``), shapes left to ONNX
        shape inference."""
        def info(n: str) -> ValueInfoProto:
            return helper.make_tensor_value_info(n, (types or {}).get(n, TensorProto.FLOAT), None)
        return helper.make_graph(self.nodes, name, [info(n) for n in inputs], [info(n) for n in outputs])

    def reduce(self, op: str, x: str, axes: Sequence[int], *, keepdims: bool, name: str, out: str | None = None) -> str:
        """``ReduceMean``/``ReduceMax``/``ReduceSum``... over ``axes``, spelled for this opset."""
        axes = [int(a) for a in axes]
        if self.opset >= _AXES_INPUT_SINCE.get(op, _AXES_INPUT_DEFAULT):
            return self.node(op, [x, self.ints(f"{name}/axes", axes)], name=name, out=out, keepdims=int(keepdims))
        return self.node(op, [x], name=name, out=out, axes=axes, keepdims=int(keepdims))

    def rename(self, old: str, new: str) -> None:
        """Give the value ``old`` (a node output) a name kept by :meth:`reserve`, everywhere: in
        the nodes there are now and will be, once :meth:`apply_renames` runs (one pass over the
        nodes for all renames, where one pass per rename made many outputs quadratic)."""
        if new not in self._reserved:
            raise ValueError(f"{new!r} was not reserved")
        self._reserved.discard(new)
        self.renamed[old] = new
        self._pending[old] = new

    def apply_renames(self) -> None:
        """Write the names given by :meth:`rename` into every node."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        for node in self.nodes:
            for seq in (node.input, node.output):
                for i, value in enumerate(seq):
                    if value in pending:
                        seq[i] = pending[value]

    def current(self, name: str) -> str:
        """``name`` after the :meth:`rename` calls made so far."""
        return self.renamed.get(name, name)

    def produced(self, name: str) -> bool:
        """True when ``name`` is the output of a node (not a graph input or initializer)."""
        return any(name in node.output for node in self.nodes)

    # -- layouts -----------------------------------------------------------------------------
    def native(self, t: Tensor) -> tuple[Perm, str]:
        """The layout the tensor was produced in, and its ONNX name."""
        if not t.views:
            if t.lazy is None:
                raise ValueError("tensor has no ONNX value")
            perm, name = t.lazy(self, None)
            t.views.setdefault(perm, name)
        perm = next(iter(t.views))
        return perm, t.views[perm]

    def view(self, t: Tensor, perm: Perm) -> str:
        """The ONNX name of ``t`` held in layout ``perm``; emits (and caches) a Transpose if needed."""
        perm = tuple(perm)
        if perm in t.views:
            return t.views[perm]
        if t.lazy is not None:
            got, name = t.lazy(self, perm)
            t.views.setdefault(got, name)
            if got == perm:
                return name
        src_perm, src = self.native(t)
        if perm == channels_first(t.rank):
            suffix = "nchw"
        elif perm == identity(t.rank):
            suffix = "keras_layout"
        else:
            suffix = "transpose"
        base = src.rsplit("/", 1)[0] if src.endswith(("/nchw", "/keras_layout")) else src
        name = self.node("Transpose", [src], name=f"{base}/{suffix}", perm=transpose_between(src_perm, perm))
        t.views[perm] = name
        return name

    def spatial_view(self, t: Tensor, data_format: str) -> str:
        """``t`` with its channel axis at position 1 (what Conv/Pool/Resize expect)."""
        if data_format == "channels_first":
            return self.view(t, identity(t.rank))
        return self.view(t, channels_first(t.rank))

    def flat_view(self, t: Tensor, order: Perm | None = None) -> str:
        """A value whose row-major element order is that of ``t`` in layout ``order`` (default:
        Keras order), so that a Flatten or Reshape sees Keras' element order. A held layout that
        differs from ``order`` only by unit axes serves as is, without a Transpose."""
        order = tuple(order) if order is not None else identity(t.rank)
        for perm, name in t.views.items():
            if same_memory_order(t.shape, perm, order):
                return name
        return self.view(t, order)

    def tensor(self, shape: tuple, perm: Perm, name: str) -> Tensor:
        """A new Keras tensor of ``shape`` held in ``perm`` as ONNX value ``name``."""
        return Tensor(shape=tuple(shape), views={tuple(perm): name})


def reads(node: NodeProto) -> set[str]:
    """The values ``node`` reads from its graph: its inputs, and the outer-scope values its
    subgraphs (Scan, Loop, If bodies) use without producing them (a cell's weights). Dead-code
    pruning must keep those alive although no input of the node names them."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        graphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            used: set[str] = set()
            for inner in g.node:
                used |= reads(inner)
                local.update(o for o in inner.output if o)
            used.update(o.name for o in g.output)
            names |= used - local
    return names
