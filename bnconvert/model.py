"""The format-neutral model every reader produces and every later stage consumes.

A :class:`Model` is a graph of :class:`Layer` objects. Each layer is *called* one or more
times (a shared layer is called several times); call ``k`` of layer ``L`` consumes the
tensors ``L.calls[k]`` and produces the tensors ``TensorRef(L.name, k, i)``. Sequential
models are stored in the same form (each layer calls the previous one), and nested models
are layers whose ``model`` attribute is itself a :class:`Model`.

Everything format-specific (Keras 1 argument names, ``vars/0..N`` indices, ``:0`` suffixes,
Theano kernel orientation, ``running_std``) is resolved by the readers: a layer's
``class_name`` and ``config`` use the Keras 2/3 vocabulary, and its ``weights`` are numpy
arrays keyed by meaning (``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean``,
``moving_variance``, ``depthwise_kernel``, ``pointwise_kernel`` ...), in the layout the
modern Keras class uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["GIVEN_MASK", "MODEL_CLASSES", "OPERATION_PREFIXES", "OP_ARGS", "Layer", "Model", "Source", "TensorArg",
           "TensorRef", "given_mask_problem", "is_operation", "resolve_args"]

#: the key of :attr:`Layer.call_kwargs` holding the tensors a call is given as ``mask=``
GIVEN_MASK = "given_mask"

#: the key of :attr:`Layer.call_kwargs` holding an operation layer's full call arguments: a pair
#: ``(args: list, kwargs: dict)`` in the order the operation takes them, every tensor replaced by
#: a :class:`TensorArg` (an index into the call's inputs ``layer.calls[k]``), every constant kept
#: as the reader normalised it (numbers, nested lists, None, strings, python ``slice`` objects
#: whose bounds may be TensorArgs, ``Ellipsis``, numpy arrays for Keras 3 ``__numpy__``/``__tensor__``).
#: An operation's shape rule finds the same pair in its config under this key (see
#: :mod:`bnconvert.catalog.facts`).
OP_ARGS = "op_args"

#: the ``class_name`` prefixes of operation layers: the reader names a Keras 3 operation layer
#: ``keras.ops.<function>`` (``keras.ops.mean``, ``keras.ops.image.resize``) and a tf.keras
#: ``TFOpLambda``/``SlicingOpLambda`` ``tf.<function>`` (``tf.math.reduce_mean``,
#: ``tf.__operators__.getitem``); ``source_class`` keeps what the file says (``Mean``, ``TFOpLambda``)
OPERATION_PREFIXES = ("keras.ops.", "tf.")


@dataclass(frozen=True)
class TensorArg:
    """A tensor in an operation layer's call arguments (:data:`OP_ARGS`): input ``index`` of the call."""

    index: int


def resolve_args(value: Any, inputs: Sequence[Any]) -> Any:
    """``value`` (an operation's args, kwargs or one argument) with every :class:`TensorArg`
    replaced by ``inputs[index]``, through lists, tuples, dicts and slice bounds; constants stay."""
    if isinstance(value, TensorArg):
        return inputs[value.index]
    if isinstance(value, list):
        return [resolve_args(v, inputs) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve_args(v, inputs) for v in value)
    if isinstance(value, dict):
        return {k: resolve_args(v, inputs) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(*(resolve_args(v, inputs) for v in (value.start, value.stop, value.step)))
    return value


def is_operation(layer: Layer) -> bool:
    """Whether ``layer`` is an operation layer (Keras 3 ``keras.ops``, tf.keras ``TFOpLambda``):
    its call's arguments are in ``call_kwargs[k][OP_ARGS]``; it takes no part in masking."""
    return layer.class_name.startswith(OPERATION_PREFIXES)

#: the class names of a model inside a config (a nested model is a layer of one of these)
MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})


@dataclass(frozen=True)
class TensorRef:
    """Output ``index`` of call ``node`` of the layer named ``layer``."""

    layer: str
    node: int = 0
    index: int = 0

    def __str__(self) -> str:
        return self.layer if (self.node, self.index) == (0, 0) else f"{self.layer}[{self.node}][{self.index}]"


@dataclass
class Layer:
    """One layer: its class, its config (modern vocabulary), its weights by meaning, its calls."""

    name: str
    class_name: str
    config: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    calls: list[list[TensorRef]] = field(default_factory=list)
    #: the class name as written in the file (``Convolution2D`` for a Keras 1 ``Conv2D``)
    source_class: str = ""
    #: for a nested Sequential/Functional model, the model itself
    model: Model | None = None
    #: per call, keyword arguments recorded in the file (``training`` ...); the tensors passed as
    #: ``mask=`` are under :data:`GIVEN_MASK` (not inputs: bnconvert propagates masks itself)
    call_kwargs: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.source_class:
            self.source_class = self.class_name

    def op_args(self, k: int) -> tuple[list[Any], dict[str, Any]] | None:
        """The full arguments of call ``k`` of an operation layer (:data:`OP_ARGS`), None for a layer."""
        kwargs = self.call_kwargs[k] if k < len(self.call_kwargs) else {}
        return kwargs.get(OP_ARGS)

    def given_mask(self, k: int) -> list[TensorRef]:
        """The tensors the file passes as ``mask=`` to call ``k`` (Keras 3 records the mask it
        computed for the call that way; a user may pass one too)."""
        kwargs = self.call_kwargs[k] if k < len(self.call_kwargs) else {}
        return list(kwargs.get(GIVEN_MASK) or [])

    @property
    def label(self) -> str:
        """``'name' (Class)``, the way messages name a layer."""
        return f"'{self.name}' ({self.source_class})"

    def copy(self, **changes: Any) -> Layer:
        """A shallow copy with fresh containers, so a pass can edit it without touching the original."""
        new = replace(
            self,
            config=dict(self.config),
            weights=dict(self.weights),
            calls=[list(c) for c in self.calls],
            call_kwargs=[dict(k) for k in self.call_kwargs],
        )
        for key, value in changes.items():
            setattr(new, key, value)
        return new


def given_mask_problem(name: str, layer: Layer, k: int) -> str:
    """Why a call given ``mask=`` in the file cannot be run: bnconvert computes masks by
    propagating them as Keras does, and found none for this call, so the file's mask comes from
    elsewhere (a boolean input, an expression of the user's)."""
    source = ", ".join(f"'{ref}'" for ref in layer.given_mask(k))
    return (f"'{name}' ({layer.source_class}: the file passes it a mask computed by {source}, which is not "
            "the mask Keras propagates; explicit masks are not supported)")


@dataclass
class Source:
    """Where a model came from and what the file says about itself."""

    path: str
    #: one of: keras1-h5, keras1-weights, keras2-h5, keras2-weights, keras3-h5, keras3-weights,
    #: tfkeras-zip (tf.keras 2.13+ ``.keras``), keras3-zip
    format: str
    keras_version: str | None = None
    backend: str | None = None
    #: how ``backend`` was decided: "file attribute", "inferred from ...", "option", ...
    backend_origin: str = ""
    #: whether spatial conv kernels were flipped on reading (Theano true convolution)
    kernels_flipped: bool = False
    #: Keras 1 only: how ``running_std`` was interpreted ("variance" or "std", ...)
    running_std: str | None = None
    #: the parsed model config from the file (``None`` for weights-only files)
    config: dict[str, Any] | None = None
    #: free-form notes the reader wants the user to see
    notes: list[str] = field(default_factory=list)
    #: the layers the user replaced on reading (``--replace``, :mod:`bnconvert.replace`), described:
    #: the model is then no longer the file's alone, and no check may run the file as its reference
    replaced: list[str] = field(default_factory=list)
    #: the provenance stamp of a file bnconvert made (:mod:`bnconvert.provenance`), its fields
    #: type-checked; None when the file has none or its stamp was ignored (a note says why)
    provenance: dict[str, Any] | None = None

    @property
    def generation(self) -> int:
        """1, 2 or 3: the Keras generation that wrote the file."""
        if self.format.startswith("keras1"):
            return 1
        if self.format.startswith("keras3"):
            return 3
        return 2


@dataclass
class Model:
    """A graph of layers. ``kind`` is Functional, Sequential or weights-only (no connections known)."""

    name: str
    layers: list[Layer]
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    kind: str = "Functional"
    source: Source | None = None

    def __post_init__(self) -> None:
        self._index = {layer.name: layer for layer in self.layers}

    # -- lookup -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Layer:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def has_graph(self) -> bool:
        """False for weights-only files read without an architecture."""
        return self.kind != "weights-only"

    def consumers(self, ref: TensorRef) -> list[tuple[Layer, int]]:
        """Every (layer, call index) that consumes ``ref``; model outputs are not included."""
        found = []
        for layer in self.layers:
            for k, inputs in enumerate(layer.calls):
                if ref in inputs:
                    found.append((layer, k))
        return found

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Layer, Model]]:
        """Every layer, nested models included, as (path, layer, owning model)."""
        for layer in self.layers:
            path = f"{prefix}{layer.name}"
            yield path, layer, self
            if layer.model is not None:
                yield from layer.model.walk(path + "/")

    def count_params(self) -> int:
        """Number of scalars in all weights, nested models included."""
        return sum(int(w.size) for _, layer, _ in self.walk() for w in layer.weights.values())

    def weight_bytes(self) -> int:
        """Bytes held by all weights, nested models included."""
        return sum(int(w.nbytes) for _, layer, _ in self.walk() for w in layer.weights.values())

    def with_layers(self, layers: list[Layer], **changes: Any) -> Model:
        """A new model with ``layers`` in place of the current ones (and other fields changed)."""
        fields: dict[str, Any] = {
            "name": self.name,
            "layers": layers,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "kind": self.kind,
            "source": self.source,
        }
        fields.update(changes)
        return Model(**fields)
