"""The catalog record of one Keras class, and the plain dict that holds them.

A family module declares its records with :func:`defines`, which puts one :class:`LayerRecord`
per class name into :data:`CATALOG`; the family modules are listed once, in
:mod:`bnconvert.catalog.families`, and :func:`catalog` imports that list before answering.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import OP_ARGS, Layer, Source, resolve_args
from .checks import Check, Fields
from .facts import KernelLayout, ShapeRule, WeightRule
from .legacy import Keras1Arg
from .roles import BARRIER, IDENTITY, FoldRole

__all__ = ["LayerRecord", "CallContext", "Semantics", "MaskRule", "MASKING", "output_masks", "CATALOG", "defines", "declares",
           "catalog", "record_for"]


@dataclass(frozen=True)
class CallContext:
    """What a layer's semantics may need beyond its config and weights: which Keras wrote the file
    (a few functions changed between generations), the masks of its inputs, the call's keyword
    arguments and, for an operation layer, the call's full arguments (:attr:`op_args`).

    Operation layers (``keras.ops.mean``, ``tf.math.reduce_mean``, ``tf.__operators__.add``; see
    :data:`bnconvert.model.OPERATION_PREFIXES`): ``op_args`` is ``(args, kwargs)`` as the
    operation takes them (Keras 3: the node's ``args``/``kwargs``; tf.keras: the first argument as
    ``args[0]``, the others by name), each tensor a :class:`~bnconvert.model.TensorArg` indexing
    the call's inputs ``xs``; :meth:`arguments` puts the tensors in. A Keras 3 operation's
    constructor arguments (Mean's ``axis``) stay in ``layer.config``. Operation layers take no
    part in masking: the reference hands them no masks (their records' ``masking`` is ``drop``)."""

    source: Source | None = None
    #: per input tensor, the Keras mask it carries (a boolean array, ``(N, T)`` for a sequence),
    #: None where it carries none (see :data:`MASKING`)
    masks: Sequence[np.ndarray | None] | None = None
    #: the keyword arguments the file records for this call (``use_causal_mask``,
    #: ``return_attention_scores``, ``reverse`` ...; :attr:`~bnconvert.model.Layer.call_kwargs`)
    kwargs: Mapping[str, Any] | None = None

    def kwarg(self, name: str, default: Any = None) -> Any:
        """The call's keyword argument ``name`` (``default`` when the file records none)."""
        return default if self.kwargs is None else self.kwargs.get(name, default)

    @property
    def op_args(self) -> tuple[list[Any], dict[str, Any]] | None:
        """The full arguments of an operation layer's call, with TensorArg placeholders (None for a layer)."""
        return None if self.kwargs is None else self.kwargs.get(OP_ARGS)

    def arguments(self, xs: Sequence[Any]) -> tuple[list[Any], dict[str, Any]]:
        """:attr:`op_args` with each TensorArg replaced by its input from ``xs``; ``([*xs], {})``
        for a call that records none (a layer, or a model built in code)."""
        given = self.op_args
        if given is None:
            return list(xs), {}
        args, kwargs = given
        return resolve_args(list(args), xs), resolve_args(dict(kwargs), xs)

    def mask(self, i: int = 0) -> np.ndarray | None:
        """The mask of input ``i``, None when it has none."""
        return self.masks[i] if self.masks is not None and i < len(self.masks) else None

    @property
    def generation(self) -> int:
        """1, 2 or 3 (3 when the source is unknown: the current Keras)."""
        return self.source.generation if self.source is not None else 3

    @property
    def keras_version(self) -> tuple[int, int] | None:
        """``(major, minor)`` recorded by the file, None when it records none."""
        text = (self.source.keras_version if self.source is not None else None) or ""
        match = re.match(r"(\d+)\.(\d+)", text)
        return (int(match.group(1)), int(match.group(2))) if match else None


#: the float64 inference function of a class: (layer, inputs, context) -> outputs
Semantics = Callable[[Layer, list[np.ndarray], CallContext], list[np.ndarray]]

#: the output masks of a class that computes its own (``masking="own"``): (layer, inputs, context
#: with the input masks) -> one mask or None per output
MaskRule = Callable[[Layer, list[np.ndarray], CallContext], list["np.ndarray | None"]]

#: How a class treats Keras masks (Keras' ``supports_masking`` and ``compute_mask``):
#:
#: - ``drop``: the class does not support masking; its outputs carry no mask (Keras 3 drops the
#:   mask with a warning; tf.keras refuses to build such a model, so no file has one);
#: - ``keep``: ``supports_masking`` with Keras' default ``compute_mask``: the first output carries
#:   the first input's mask, and the values ignore it (Dense, Dropout, BatchNormalization ...);
#: - ``own``: the class reads the masks and/or computes its outputs' masks itself (Embedding,
#:   Masking, recurrent layers, their wrappers, merges, masked pooling): its record's ``mask``
#:   rule gives the output masks, its ``call`` reads the input masks from the context.
MASKING = ("drop", "keep", "own")


@dataclass(frozen=True)
class LayerRecord:
    """Everything the catalog knows about one Keras class.

    ``call`` is the class's inference in float64 numpy, in Keras' own layout, written from
    Keras' behaviour (never from bnconvert's ONNX handler); None for a class bnconvert reads
    but cannot run (no float64 semantics yet: the reference and the export refuse it).
    ``shape`` and ``weights`` are its output-shape rule and its weights by meaning (see
    :mod:`.facts`); ``family`` is the catalog module that defines the class.
    """

    class_name: str
    call: Semantics | None
    family: str
    #: ``(config, input_shapes) -> output_shapes`` (see :mod:`.facts`); None: shapes unknown
    shape: ShapeRule | None = None
    #: ``(config, input_shapes) -> [WeightSpec]`` in Keras' order; None: weights unknown
    weights: WeightRule | None = None
    #: other spellings of the class (Keras 1/2 names the readers upgrade, e.g. ``Convolution2D``)
    aliases: tuple[str, ...] = ()
    #: True when Keras 1 wrote the class under its own name too (see :mod:`.legacy`)
    keras1: bool = False
    #: the arguments Keras 1 spelled differently or defaulted (Dropout: ``p`` -> ``rate``)
    keras1_args: tuple[Keras1Arg, ...] = ()
    #: True when the layer is the identity at inference (dropouts, noise, InputLayer ...)
    identity: bool = False
    #: how a BatchNormalization's affine meets the class when folding (see :mod:`.roles`)
    fold: FoldRole = BARRIER
    #: the layout of its spatial kernel (convolutions only; see :class:`.facts.KernelLayout`)
    kernel: KernelLayout | None = None
    #: config field -> its check (:mod:`.checks`): what the readers refuse before anything computes
    #: with the value; fields not named are not checked
    fields: Fields = field(default_factory=dict, compare=False, hash=False)
    #: how the class treats Keras masks (one of :data:`MASKING`)
    masking: str = "drop"
    #: for ``masking="own"``: the output masks (None: outputs carry no mask)
    mask: MaskRule | None = None
    #: free-form notes on where Keras generations differ for this class
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


#: Keras class name -> record. Filled by :func:`defines` when the family modules load.
CATALOG: dict[str, LayerRecord] = {}


def defines(*class_names: str, identity: bool = False, notes: str = "",
            aliases: dict[str, tuple[str, ...]] | None = None,
            fold: FoldRole | dict[str, FoldRole] | None = None,
            keras1: bool | Mapping[str, tuple[Keras1Arg, ...]] = False,
            shape: ShapeRule | dict[str, ShapeRule] | None = None,
            weights: WeightRule | dict[str, WeightRule] | None = None,
            fields: Mapping[str, Check | Mapping[str, Check]] | None = None,
            kernel: KernelLayout | dict[str, KernelLayout] | None = None,
            masking: str | dict[str, str] = "drop",
            mask: MaskRule | dict[str, MaskRule] | None = None) -> Callable[[Semantics], Semantics]:
    """Register the decorated function as the float64 semantics of ``class_names``
    (``aliases``: per class, the Keras 1 names the readers turn into it; ``fold``: the fold role
    of every class, or per class; an identity's role defaults to ``IDENTITY``, others' to ``BARRIER``;
    ``keras1``: True when Keras 1 wrote every class under its own name with today's arguments, or,
    per class Keras 1 wrote (under its own name, or only under its ``aliases`` when it has some),
    its Keras 1 argument spellings;
    ``shape``, ``weights``: the output-shape rule and the weights of every class, or per class;
    ``fields``: the config checks of every class, or per class (a dict of class names, which are
    capitalised, where field names are not); ``kernel``: the kernel layout, of every class or per class;
    ``masking``, ``mask``: how the classes treat Keras masks (:data:`MASKING`) and, for ``own``,
    the rule of their output masks, of every class or per class)."""

    def register(func: Semantics) -> Semantics:
        family = func.__module__.rsplit(".", 1)[-1]
        for name in class_names:
            if name in CATALOG:
                raise RuntimeError(f"two catalog records for Keras class {name!r}")
            CATALOG[name] = LayerRecord(name, func, family, aliases=(aliases or {}).get(name, ()), identity=identity,
                                        notes=notes)
            role = fold.get(name) if isinstance(fold, dict) else fold
            old = keras1.get(name) if isinstance(keras1, Mapping) else None
            CATALOG[name] = replace(CATALOG[name], keras1=keras1 is True or (old is not None and name not in (aliases or {})),
                                    keras1_args=tuple(old or ()))
            CATALOG[name] = replace(CATALOG[name], fold=role or (IDENTITY if identity else BARRIER),
                                    shape=_per_class(shape, name), weights=_per_class(weights, name),
                                    fields=_fields_of(fields, name, class_names), kernel=_per_class(kernel, name),
                                    masking=_masking(masking, name), mask=_per_class(mask, name))
        return func

    return register


def _masking(value: str | dict[str, str], name: str) -> str:
    policy = value.get(name, "drop") if isinstance(value, dict) else value
    if policy not in MASKING:
        raise RuntimeError(f"masking {policy!r} of Keras class {name!r} is not one of {MASKING}")
    return policy


def _per_class(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else value


def _fields_of(fields: Any, name: str, class_names: Sequence[str]) -> Any:
    """The checks of class ``name``: ``fields`` is keyed by class when its keys are among the
    classes being declared, else it is the checks of them all."""
    if not fields:
        return {}
    if any(key in class_names for key in fields):
        return dict(fields.get(name) or {})
    return dict(fields)


def declares(*class_names: str, module: str, shape: ShapeRule | dict[str, ShapeRule] | None = None,
             weights: WeightRule | dict[str, WeightRule] | None = None, notes: str = "",
             masking: str | dict[str, str] = "drop", fold: FoldRole | dict[str, FoldRole] | None = None) -> None:
    """Records without float64 semantics (``call`` None): classes bnconvert reads, whose shapes
    and weights it knows, but which neither the reference nor the export runs (``module``: the
    family module's ``__name__``; ``fold``: the fold role, as for :func:`defines`)."""
    family = module.rsplit(".", 1)[-1]
    for name in class_names:
        if name in CATALOG:
            raise RuntimeError(f"two catalog records for Keras class {name!r}")
        CATALOG[name] = LayerRecord(name, None, family, shape=_per_class(shape, name),
                                    weights=_per_class(weights, name), notes=notes, masking=_masking(masking, name),
                                    fold=_per_class(fold, name) or BARRIER)


def catalog() -> dict[str, LayerRecord]:
    """The catalog, with every family module loaded."""
    from . import families  # noqa: F401 - the explicit list of family modules

    return CATALOG


def record_for(layer: Layer) -> LayerRecord:
    """The record of ``layer``'s class; UnsupportedLayerError naming the layer otherwise."""
    record = catalog().get(layer.class_name)
    if record is None or record.call is None:
        raise UnsupportedLayerError(
            f"layer {layer.label}: bnconvert's float64 reference has no semantics for class {layer.class_name!r}")
    return record


def output_masks(record: LayerRecord, layer: Layer, xs: list[np.ndarray], context: CallContext,
                 n_outputs: int) -> list[np.ndarray | None]:
    """The masks of one call's ``n_outputs`` outputs, by the class's :data:`MASKING` policy."""
    if record.masking == "own" and record.mask is not None:
        masks = list(record.mask(layer, xs, context))
        return (masks + [None] * n_outputs)[:n_outputs]
    if record.masking == "keep":
        return [context.mask(0)] + [None] * (n_outputs - 1)
    return [None] * n_outputs
