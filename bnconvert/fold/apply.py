"""The graph pass: apply the plan's decisions and return a new model without the folded BN.

For every decision of :func:`~bnconvert.fold.plan.plan_folds` (in model order, so several
affines reaching one layer compose correctly):

* ``backward``/``forward``: the target's weights are rewritten by the pure kernels of
  :mod:`bnconvert.fold.kernels` at each of its sites (:mod:`.sites`: the layer itself, a
  wrapper's inner layer, both directions of a Bidirectional, an RNN's first cell); a missing bias
  is created and ``use_bias`` becomes true in the config that site reads; the BN disappears;
* ``merge``: the BN disappears, its affine already travels with the BN it merged into;
* ``stays`` with absorbed BNs: the BN keeps its place and carries the combined affine
  (``mean = 0``, ``gamma = s*sqrt(var + eps)``, ``beta = t``, ``center = scale = True``).

Inference identities (the classes whose catalog fold role is ``identity``: the Dropout family,
GaussianNoise, ActivityRegularization, Identity ...) are dropped as well. Every consumer of a removed layer (and every model output) is rewired to the
removed layer's input. The input model is never modified.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bn import bn_config, bn_params
from ..catalog import fold_role
from ..errors import FoldError, InvalidWeightsError
from ..model import Layer, Model, TensorRef
from .kernels import FoldOverflow, stays_bn_weights
from .plan import FoldDecision, plan_folds
from .sites import fold_site, set_use_bias, sites

if TYPE_CHECKING:
    from ..check.results import CheckResult

__all__ = ["fold_model", "fold_log", "FoldReport", "BNOutcome", "FOLD_LOG_VERSION"]

#: the version of the :func:`fold_log` layout (bumped when a key changes meaning)
FOLD_LOG_VERSION = 1

log = logging.getLogger(__name__)


@dataclass
class BNOutcome:
    """What happened to one BN layer (``path`` includes nested-model prefixes)."""

    path: str
    action: str
    reason: str
    target: str | None = None
    via: list[str] = field(default_factory=list)
    absorbed: list[str] = field(default_factory=list)
    #: largest |s| of the affine folded (None when the BN stays)
    max_scale: float | None = None
    #: the ``--keep`` pattern that kept this BN (its action is ``stays``), else None
    kept: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.path, "action": self.action, "target": self.target, "via": list(self.via),
            "absorbed": list(self.absorbed), "reason": self.reason, "max_scale": self.max_scale, "kept": self.kept,
        }


@dataclass
class FoldReport:
    """Everything the user is told about a fold: one outcome per BN, totals, notes."""

    source: str
    input_format: str
    batch_norms: list[BNOutcome] = field(default_factory=list)
    #: inference identities removed (paths)
    dropped: list[str] = field(default_factory=list)
    #: layers whose weights changed, and those that got a new bias (paths)
    changed: list[str] = field(default_factory=list)
    created_bias: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the ``--keep`` patterns given (each kept at least one BN, whose action is ``stays``)
    keep: list[str] = field(default_factory=list)
    #: filled in by whoever writes the model
    output: str | None = None
    output_format: str | None = None
    #: the check of the written file (:class:`~bnconvert.check.CheckResult`), filled in by the pipeline
    check: CheckResult | None = None

    @property
    def totals(self) -> dict[str, int]:
        count: defaultdict[str, int] = defaultdict(int)
        for bn in self.batch_norms:
            count[bn.action] += 1
        folded = count["backward"] + count["forward"] + count["merge"]
        return {
            "batch_norms": len(self.batch_norms), "folded": folded, "backward": count["backward"],
            "forward": count["forward"], "merged": count["merge"], "stays": count["stays"],
            "identities_dropped": len(self.dropped), "biases_created": len(self.created_bias),
        }

    @property
    def largest_scale(self) -> tuple[float, str] | None:
        """The largest |gamma/sqrt(var+eps)| folded into a weight, and the BN it came from."""
        scored = [(bn.max_scale, bn.path) for bn in self.batch_norms if bn.max_scale is not None]
        return max(scored) if scored else None

    def to_dict(self) -> dict[str, Any]:
        largest = self.largest_scale
        return {
            "file": self.source,
            "input_format": self.input_format,
            "output": self.output,
            "output_format": self.output_format,
            "totals": self.totals,
            "largest_fold_scale": None if largest is None else {"value": largest[0], "batch_norm": largest[1]},
            "batch_norms": [bn.to_dict() for bn in self.batch_norms],
            "keep": list(self.keep),
            "kept": [bn.path for bn in self.batch_norms if bn.kept is not None],
            "dropped": list(self.dropped),
            "changed": list(self.changed),
            "created_bias": list(self.created_bias),
            "notes": list(self.notes),
            "check": self.check.to_dict() if self.check is not None else None,
        }


def _max_abs(a: np.ndarray | None) -> float | None:
    if a is None or np.size(a) == 0:
        return None
    return float(np.max(np.abs(a)))


def fold_log(report: FoldReport) -> dict[str, Any]:
    """What a fold did, compact and JSON-ready, with stable keys: the log written into the files
    bnconvert makes (provenance). One entry per BN in model order: ``name`` (its path),
    ``action`` (backward, forward, merge or stays), ``target`` (the layer its affine went into, the
    BN it merged into; None when it stays), ``via`` (the layers walked through), ``absorbed`` (BN
    merged into it), ``reason`` (why it stays, or where it went) and ``kept`` (the ``--keep``
    pattern that kept it, else None)."""
    return {
        "version": FOLD_LOG_VERSION,
        "totals": report.totals,
        "keep": list(report.keep),
        "batch_norms": [
            {"name": bn.path, "action": bn.action, "target": bn.target, "via": list(bn.via),
             "absorbed": list(bn.absorbed), "reason": bn.reason, "kept": bn.kept}
            for bn in report.batch_norms
        ],
        "dropped": list(report.dropped),
        "created_bias": list(report.created_bias),
    }


def fold_model(model: Model, *, keep: Sequence[str] = ()) -> tuple[Model, FoldReport]:
    """A new model with every foldable BN folded, and the report of what happened.

    ``keep``: globs on BN layer names (and nested paths ``outer/inner``, see
    :mod:`bnconvert.fold.plan`): those BN stay untouched, their outcome says ``stays`` with the
    reason "kept by --keep 'PATTERN'"; a pattern matching no BN raises FoldError.

    Raises :class:`~bnconvert.errors.InvalidWeightsError`, naming the file and the layers, when a
    BN that would fold has NaN/Inf parameters or a non-positive ``var + eps``, and
    :class:`~bnconvert.errors.FoldError` when folding gives
    weights beyond their dtype (a huge gamma over a tiny variance); nothing is folded then.
    """
    where = _where(model)
    decisions = plan_folds(model, keep=keep)
    blocked = [d for d in decisions if d.blocked]
    if blocked:
        names = ", ".join(f"'{d.path}'" for d in blocked[:5]) + (" ..." if len(blocked) > 5 else "")
        raise InvalidWeightsError(  # the plan asked bnconvert.bn.bn_problem, the one test of the BN invariant
            f"{where}: {len(blocked)} BatchNormalization layer(s) that would fold have NaN/Inf parameters or "
            f"variance + epsilon <= 0: {names}; refusing to fold"
        )
    source = model.source
    report = FoldReport(source=source.path if source else model.name, input_format=source.format if source else "model",
                        keep=list(dict.fromkeys(keep)))
    for d in decisions:
        folded = d.folds
        report.batch_norms.append(BNOutcome(
            path=d.path, action=d.action, reason=d.reason, target=d.target, via=list(d.via),
            absorbed=list(d.absorbed), max_scale=_max_abs(d.scale) if folded else None, kept=d.kept,
        ))
    by_scope: dict[str, list[FoldDecision]] = defaultdict(list)
    for d in decisions:
        by_scope[d.scope].append(d)
    return _fold_scope(model, "", by_scope, report, where), report


def _where(model: Model) -> str:
    """What a message names: the file the model was read from, else the model."""
    return model.source.path if model.source is not None and model.source.path else f"model '{model.name}'"


def _fold_scope(model: Model, scope: str, by_scope: dict[str, list[FoldDecision]], report: FoldReport,
                where: str) -> Model:
    layers = {layer.name: layer.copy() for layer in model.layers}
    for layer in layers.values():
        if layer.model is not None:
            layer.model = _fold_scope(layer.model, f"{scope}{layer.name}/", by_scope, report, where)
    removed: set[str] = set()
    for d in by_scope.get(scope, []):
        try:
            if d.action in ("backward", "forward"):
                _rewrite(layers[d.target_name()], d, scope, report)
            elif d.action == "stays" and d.absorbed:
                _carry(layers[d.bn], d, scope, report)
        except FoldError as exc:
            what = f"'{d.path}'" + (f" (with {', '.join(repr(scope + a) for a in d.absorbed)} merged into it)"
                                    if d.absorbed else "")
            if d.action in ("backward", "forward"):
                what += f" into '{scope}{d.target}'"
            if isinstance(exc, FoldOverflow):
                raise FoldError(f"{where}: folding {what} {exc}; refused") from None
            raise FoldError(f"{where}: folding {what}: {exc}") from None
        if d.folds:
            removed.add(d.bn)
    for layer in layers.values():
        if fold_role(layer.class_name).kind == "identity" and all(len(call) == 1 for call in layer.calls):
            removed.add(layer.name)
            report.dropped.append(f"{scope}{layer.name}")
    alias = {
        TensorRef(name, k, 0): call[0]
        for name in removed
        for k, call in enumerate(layers[name].calls)
    }

    def resolve(ref: TensorRef) -> TensorRef:
        path = []
        while ref in alias:
            path.append(ref)
            ref = alias[ref]
            if len(path) > len(alias):
                raise FoldError(f"{where}: a cycle among removed layers at '{scope}{ref.layer}'")
        for step in path:  # each ref into a chain of removed layers then takes one step, not the chain
            alias[step] = ref
        return ref

    kept = []
    for layer in model.layers:
        if layer.name in removed:
            continue
        new = layers[layer.name]
        new.calls = [[resolve(r) for r in call] for call in new.calls]
        kept.append(new)
    return model.with_layers(kept, outputs=[resolve(r) for r in model.outputs])


def _rewrite(target: Layer, d: FoldDecision, scope: str, report: FoldReport) -> None:
    """Fold into every site of ``target`` (one; a Bidirectional's two directions), creating a
    missing bias where the site's config says ``use_bias`` false."""
    path = f"{scope}{target.name}"
    found = sites(target.class_name, target.config)
    if not found:
        raise FoldError(f"layer {target.label}: its inner layer config cannot be read")
    for site in found:
        had_bias = site.has_bias(target.weights)
        target.weights = fold_site(site, target.weights, *d.affine(as_target=True), backward=d.action == "backward")
        if not had_bias:
            target.config = set_use_bias(target.config, site.path)
            if path not in report.created_bias:
                report.created_bias.append(path)
    if path not in report.changed:
        report.changed.append(path)
    log.debug("folded %s BN %s into %s", d.action, d.path, path)


def _carry(bn: Layer, d: FoldDecision, scope: str, report: FoldReport) -> None:
    p = bn_params(bn)
    bn.weights = stays_bn_weights(bn.weights, *d.affine(), epsilon=p.epsilon)
    order = ["gamma", "beta", "moving_mean", "moving_variance"]
    bn.weights = {k: bn.weights[k] for k in order} | {k: v for k, v in bn.weights.items() if k not in order}
    bn.config = copy.deepcopy(bn.config)
    config = bn_config(bn)  # a TimeDistributed(BatchNormalization)'s is its inner config
    config["center"] = config["scale"] = True
    report.changed.append(f"{scope}{bn.name}")
