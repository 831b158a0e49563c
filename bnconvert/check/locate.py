"""``--locate``: find the first layer whose output differs between two models.

Both sides expose their intermediate tensors (Keras: a sub-model with each layer's output;
ONNX: the tensors named after Keras layers added as graph outputs) and are compared layer by
layer in A's topological order, with the same element rule as the outputs. A tensor NCHW on one
side and channels_last on the other is transposed (both readings are tried when the shape fits
both, and the closer one is kept).

Folding changes which tensors should agree. When one side is a Keras model whose BN layers are
missing from the other, bnconvert's fold plan of that model says how: the output of a BN folded
backward lives in its target (or the last layer on the way, e.g. a pooling the affine passed
through), and the target and the layers passed through hold different values by design, so they
are not compared.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BnconvertError
from ..model import Model
from .compare import DEFAULT_ATOL, DEFAULT_RTOL, OutputComparison, compare_arrays
from .layout import inverse, layout_options, transpose

__all__ = ["LayerDiff", "LocateResult", "locate_divergence", "fold_correspondence"]

log = logging.getLogger(__name__)


@dataclass
class LayerDiff:
    """One compared intermediate tensor: A's layer, B's tensor, and how far apart they are."""

    name: str
    name_b: str
    passed: bool
    max_abs: float
    normalized_error: float
    mismatches: int
    total: int
    layout: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        err = self.normalized_error
        return {
            "name": self.name, "name_b": self.name_b, "passed": self.passed, "max_abs": self.max_abs,
            "normalized_error": err if math.isfinite(err) else str(err), "mismatches": self.mismatches,
            "total": self.total, "layout": self.layout, "note": self.note,
        }


@dataclass
class LocateResult:
    """The first diverging layer (None when none was found) and the layer-by-layer trail."""

    first: str | None
    first_b: str | None = None
    message: str = ""
    layers: list[LayerDiff] = field(default_factory=list)
    #: (layer, why it was not compared), in A's order
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def first_diff(self) -> LayerDiff | None:
        return next((d for d in self.layers if not d.passed), None)

    def summary(self) -> str:
        """The located divergence, layer by layer up to the first that differs (:func:`bnconvert.render.locate_text`)."""
        from ..render import locate_text

        return locate_text(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "first_b": self.first_b,
            "message": self.message,
            "layers": [d.to_dict() for d in self.layers],
            "skipped": [{"name": n, "reason": why} for n, why in self.skipped],
        }


#: what :func:`locate_divergence` asks how a model's BN fold (:func:`bnconvert.fold.plan_folds`,
#: handed in by the caller: the check package does not fold)
FoldPlan = Callable[[Model], Sequence[Any]]


def _plan(model: Model, fold_plan: FoldPlan | None) -> Sequence[Any]:
    if fold_plan is None:
        return []
    try:
        return fold_plan(model)
    except BnconvertError as exc:
        log.info("no fold plan for locate: %s", exc)
        return []


def fold_correspondence(model: Model, present: set[str], fold_plan: FoldPlan | None = None
                        ) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """For a model whose BN layers are absent from the other side's ``present`` names:
    ``{bn: (name on the other side holding its output, note)}`` and ``{layer: why not comparable}``
    (top-level layers; nested paths read ``outer/inner``), from the decisions of ``fold_plan``."""
    mapped: dict[str, tuple[str, str]] = {}
    altered: dict[str, str] = {}
    for d in _plan(model, fold_plan):
        if not d.folds or d.path in present:
            continue
        for name in d.via:
            altered.setdefault(d.scope + name, f"holds the affine of BN '{d.path}' moved through it")
        if d.action == "backward" and d.target:
            altered[d.scope + d.target] = f"BN '{d.path}' folded into it"
            chain = [d.scope + n for n in (d.target, *d.via) if d.scope + n in present]
            if chain:
                mapped[d.path] = (chain[-1], f"BN '{d.path}' folded into '{d.scope}{d.target}'")
    return mapped, altered


def _pairs(ra: Any, rb: Any, fold_plan: FoldPlan | None) -> tuple[list[tuple[str, str, str, str]], list[tuple[str, str]]]:
    """(layer, tensor in A, tensor in B, note) to compare in A's order, and what is skipped."""
    names_a, names_b = ra.layer_names(), rb.layer_names()
    set_a, set_b = set(names_a), set(names_b)
    model_a: Model | None = getattr(ra, "model", None)
    model_b: Model | None = getattr(rb, "model", None)
    if model_a is not None:
        order = [layer.name for layer in model_a.layers if layer.class_name != "InputLayer"]
        mapped_a, altered_a = fold_correspondence(model_a, set_b, fold_plan)
    else:
        order, mapped_a, altered_a = list(names_a), {}, {}
    mapped_b, altered_b = fold_correspondence(model_b, set_a, fold_plan) if model_b is not None else ({}, {})
    holds_b = {name_a: (bn_b, note) for bn_b, (name_a, note) in mapped_b.items()}  # A folded, B not
    pairs, skipped = [], []
    for name in order:
        tensor = name if name in set_a else _nested_output(model_a, name, set_a, {})
        if tensor is None:
            skipped.append((name, "no tensor of that name in A"))
        elif name in holds_b:
            pairs.append((name, tensor, *holds_b[name]))
        elif name in mapped_a:
            pairs.append((name, tensor, *mapped_a[name]))
        elif name in altered_a or name in altered_b:
            skipped.append((name, altered_a.get(name) or altered_b[name]))
        elif name in set_b:
            pairs.append((name, tensor, name, ""))
        elif (alias := _nested_output(model_a, name, set_b, mapped_a)) is not None:
            pairs.append((name, tensor, alias, f"output of nested model '{name}'"))
        else:
            skipped.append((name, "absent from B"))
    return pairs, skipped


def _nested_output(
    model: Model | None, name: str, present: set[str], mapped: dict[str, tuple[str, str]], prefix: str = ""
) -> str | None:
    """For a nested model layer, the tensor of the other side holding its (single) output:
    bnconvert's export names it ``outer/inner_layer`` (nested models followed down), or it is
    the layer a BN there was folded into."""
    if model is None or name not in model:
        return None
    inner = model[name].model
    if inner is None or len(inner.outputs) != 1 or inner.outputs[0].node or inner.outputs[0].index:
        return None
    leaf = inner.outputs[0].layer
    path = f"{prefix}{name}/{leaf}"
    deeper = _nested_output(inner, leaf, present, mapped, f"{prefix}{name}/")
    if deeper is not None:
        return deeper
    if path in present:
        return path
    return mapped[path][0] if path in mapped else None


def _closest(
    a: np.ndarray, b: np.ndarray, *, atol: float, rtol: float, name: str, name_b: str
) -> tuple[OutputComparison, str | None] | None:
    """The comparison of ``a`` with ``b`` read in the layout that fits best (None: no layout fits)."""
    best = None
    for kind in layout_options(a.shape, b.shape):
        cmp = compare_arrays(a, transpose(b, inverse(kind)), atol=atol, rtol=rtol, name=name, name_b=name_b)
        key = (not cmp.passed, cmp.abs.max if cmp.abs else math.inf)
        if best is None or key < best[0]:
            best = (key, cmp, kind)
    return None if best is None else (best[1], best[2])


def locate_divergence(
    ra: Any,
    rb: Any,
    feeds_a: Mapping[str, np.ndarray],
    feeds_b: Mapping[str, np.ndarray],
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    fold_plan: FoldPlan | None = None,
) -> LocateResult:
    """Compare the intermediate tensors of runners ``ra`` and ``rb`` and name the first that differs.
    ``fold_plan`` (:func:`bnconvert.fold.plan_folds`) tells which layer a BN folded on one side
    went into, so that it is compared with the right tensor of the other."""
    pairs, skipped = _pairs(ra, rb, fold_plan)
    if not pairs:
        return LocateResult(first=None, message="no intermediate tensor is named alike on both sides", skipped=skipped)
    outs_a = ra.layer_outputs(feeds_a, [p[1] for p in pairs])
    outs_b = rb.layer_outputs(feeds_b, [p[2] for p in pairs])
    result = LocateResult(first=None, skipped=skipped)
    for name, tensor_a, tensor_b, note in pairs:
        if tensor_a not in outs_a or tensor_b not in outs_b:
            result.skipped.append((name, "its output cannot be exposed"))
            continue
        a, b = outs_a[tensor_a], outs_b[tensor_b]
        found = _closest(a, b, atol=atol, rtol=rtol, name=name, name_b=tensor_b)
        if found is None:
            result.skipped.append((name, f"shapes do not match: A {a.shape}, B {b.shape}"))
            continue
        cmp, kind = found
        result.layers.append(LayerDiff(
            name=name, name_b=tensor_b, passed=cmp.passed, max_abs=cmp.abs.max if cmp.abs else math.inf,
            normalized_error=cmp.normalized_error, mismatches=cmp.mismatches, total=cmp.total, layout=kind, note=note,
        ))
    first = result.first_diff
    agreed = sum(1 for d in result.layers if d.passed)
    if first is None:
        result.message = f"all {len(result.layers)} compared layers agree; the difference arises in a layer not compared"
    else:
        result.first, result.first_b = first.name, first.name_b
        where = f"'{first.name}'" if first.name == first.name_b else f"'{first.name}' (B: '{first.name_b}')"
        before = result.layers.index(first)
        result.message = (
            f"first diverging layer {where}: max |diff| {first.max_abs:.3g}, normalized {first.normalized_error:.3g}"
            f" ({before} layers agreed before it, {agreed} of {len(result.layers)} in all)"
            + (f"; {first.note}" if first.note else "")
        )
    return result
