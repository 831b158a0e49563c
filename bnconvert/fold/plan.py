"""Decide, for every BatchNormalization layer, whether and where it folds, and why not.

This is the predicate half of folding (the transform is in ``fold.apply``, the arithmetic in
``fold.kernels``). A BN is the affine ``y = s*x + t`` per channel. In model order, each BN tries:

1. **backward** into the layer that produces its input (Dense, Conv*, DepthwiseConv*,
   SeparableConv*, Conv*Transpose): exact when that layer's activation is linear, its output
   feeds only this BN, and BN's axis is its channel axis. Inference identities (Dropout family,
   GaussianNoise, ...), BNs already folded away and pooling on the same channel axis are walked
   through (max pooling only where ``s > 0``).
2. **merge** forward into the next BN (through identities and pooling): two affines make one.
3. **forward** into the layer that consumes its output: Dense (also through Flatten/Reshape, when
   every position the Dense reads sees the same per-unit affine), or Conv*/DepthwiseConv*/
   SeparableConv* with ``valid`` padding (other padding only when ``t == 0``, since border
   windows would see zeros instead of the shifted value).

Sequence layers (the roles of :mod:`bnconvert.catalog.roles`, the sites of :mod:`.sites`):

4. **forward into a recurrent layer** (SimpleRNN, LSTM, GRU, RNN: its first cell; ConvLSTM):
   the BN's axis must be the feature (channel) axis of the ``(N, T, ...)`` input; the affine goes
   into the input kernel and input bias only (the state never passes through the BN), exact at
   every step; ConvLSTM follows the convolution padding rule. Only the sequence input folds: a BN
   feeding an ``initial_state`` stays. Nothing folds backward into a recurrent layer: its output
   is a state, nonlinear in its kernels.
5. **wrappers**: a TimeDistributed takes its inner layer's role on a tensor with one more axis
   (BN -> TimeDistributed(Dense/Conv) forward, TimeDistributed(Conv) -> BN or
   TimeDistributed(BN) backward); a Bidirectional folds into both directions' input kernels.
6. **masks**: a BN is never moved past a layer that computes a mask from the values it receives
   (Masking: a barrier whose role says so). A mask computed before the BN (Embedding
   ``mask_zero``, a Masking before it) is unchanged by a fold, and a recurrent layer's masked
   steps ignore their input, so folding into it stays exact.

Each edge on the way must have a single consumer, else folding would change the other reader.
A BN whose parameters hold NaN/Inf or ``var + eps <= 0`` never folds; when it otherwise would,
its decision is ``blocked`` and ``fold_model`` refuses the whole model.

**keep** (``--keep PATTERN``): a BN whose name or path matches a glob of ``keep`` (``fnmatchcase``,
case-sensitive) stays exactly as it is: it neither folds nor receives another BN merged into it (a
kept BN's parameters are never rewritten). Inside a nested model the pattern is tried on the layer's
own name (``bn_3``) and on its path (``inner/bn_3``), so ``inner/*`` keeps every BN of the nested
model ``inner``; ``*`` also matches ``/``. A pattern that matches no BN layer is a FoldError (a typo
must not silently fold everything).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import numpy as np

from ..bn import BNParams, bn_params, bn_problem, is_bn
from ..catalog import fold_role
from ..errors import BnconvertError, FoldError, InternalError
from ..layerspec import data_format
from ..model import Layer, Model, TensorRef
from ..shapes import infer_shapes
from .kernels import compose, dense_input_affine, features_of, flatten_features
from .sites import Site, sites

__all__ = ["FoldDecision", "plan_folds", "kept_by"]

# What each class is to a fold (producer with its kernel axes, identity, pooling, reshape, input,
# barrier) is its catalog record's fold role (bnconvert.catalog.roles); nothing here names a class
# except Activation, whose role depends on its config (a linear Activation is the identity).


@dataclass
class FoldDecision:
    """What happens to one BN. ``action`` is backward, forward, merge or stays."""

    bn: str
    action: str
    reason: str
    target: str | None = None
    via: list[str] = field(default_factory=list)
    #: the affine this BN carries when it is folded (its own, plus any BN merged into it)
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    #: BN layers merged into this one (their decision says ``merge``)
    absorbed: list[str] = field(default_factory=list)
    #: nested-model path prefix ("" at top level)
    scope: str = ""
    #: the affine as the target sees it: per output channel (backward) or per input
    #: channel/unit (forward, after Flatten/Reshape/global pooling)
    target_scale: np.ndarray | None = None
    target_shift: np.ndarray | None = None
    #: True when the BN would fold but its parameters are NaN/Inf or var + eps <= 0
    blocked: bool = False
    #: the ``keep`` pattern that kept this BN (its action is then ``stays``), else None
    kept: str | None = None

    @property
    def folds(self) -> bool:
        return self.action != "stays"

    @property
    def path(self) -> str:
        return f"{self.scope}{self.bn}"

    def target_name(self) -> str:
        """The layer this BN folds or merges into (an InternalError when it has none: a bug)."""
        if self.target is None:
            raise InternalError(f"BN '{self.path}' ({self.action}) has no target layer")
        return self.target

    def affine(self, *, as_target: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The BN's (scale, shift), or as its target sees them (``as_target``); an InternalError
        when the plan did not set them (a bug)."""
        s, t = (self.target_scale, self.target_shift) if as_target else (self.scale, self.shift)
        if s is None or t is None:
            raise InternalError(f"BN '{self.path}' ({self.action}) has no affine")
        return s, t

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "target": self.target, "via": list(self.via), "reason": self.reason}
        if self.absorbed:
            out["absorbed"] = list(self.absorbed)
        if self.blocked:
            out["blocked"] = True
        if self.kept is not None:
            out["kept"] = self.kept
        return out


def _linear(config: dict[str, Any]) -> bool:
    act = config.get("activation", "linear")
    if isinstance(act, dict):
        act = act.get("config", {}).get("name", act.get("class_name"))
    return act in (None, "linear", "Linear")


def _channel_axis(layer: Layer, rank: int) -> int:
    """Channel axis (non-negative) of a layer's output/input tensor of rank ``rank``."""
    return _site_axis(Site(fold_role(layer.class_name), layer.config, layer.class_name), rank)


def _site_axis(site: Site, rank: int) -> int:
    """Channel axis (non-negative) of a site's tensor of rank ``rank``: the last axis unless the
    site is windowed and channels_first, when it follows the batch axis and the site's ``steps``
    (a TimeDistributed's or a ConvLSTM's time axis)."""
    if not site.role.windowed or rank <= 2 + site.steps:  # Dense: the last axis
        return rank - 1
    return 1 + site.steps if data_format(site.config) == "channels_first" else rank - 1


@dataclass
class _Features:
    """How the BN's affine is laid out on the tensor reached so far in a forward walk:
    per channel on ``axis`` (``full is None``) or per element after a Flatten/Reshape."""

    axis: int | None
    rank: int | None
    full: tuple[np.ndarray, np.ndarray] | None = None


def kept_by(name: str, path: str, keep: Sequence[str]) -> str | None:
    """The first pattern of ``keep`` matching a BN's ``name`` or its nested ``path``, else None."""
    for pattern in keep:
        if fnmatchcase(name, pattern) or fnmatchcase(path, pattern):
            return pattern
    return None


class _Planner:
    def __init__(self, model: Model, scope: str, keep: Sequence[str] = ()) -> None:
        self.model = model
        self.scope = scope
        self.keep = tuple(keep)
        #: BN name -> the pattern that keeps it
        self.kept: dict[str, str] = {}
        # a shape the config does not determine is None there (never held against the file); the
        # readers checked every value shapes are computed from, so whatever this raises is a bug
        self.shapes = infer_shapes(model)
        self.affine: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.params: dict[str, BNParams] = {}
        self.gone: set[str] = set()  # BN folded away (any action): walks pass through them
        self.merged: dict[str, str] = {}  # BN -> the BN it was merged into (transitively)
        # who reads each tensor, built once (Model.uses/consumers scan every layer: quadratic
        # over a whole plan); planning never changes the model's connections
        self._uses: Counter[TensorRef] = Counter(self.model.outputs)
        self._outputs = set(self.model.outputs)  # asked once per BN: a list scan would be BNs x outputs
        self._consumers: dict[TensorRef, list[tuple[Layer, int]]] = defaultdict(list)
        for layer in model.layers:
            for k, inputs in enumerate(layer.calls):
                self._uses.update(inputs)
                for ref in dict.fromkeys(inputs):
                    self._consumers[ref].append((layer, k))

    # -- graph helpers ----------------------------------------------------------------------
    def rank(self, ref: TensorRef) -> int | None:
        shape = self.shapes.get(ref)
        return len(shape) if shape is not None else None

    def single_use(self, ref: TensorRef) -> bool:
        return self._uses[ref] == 1

    def producer(self, layer: Layer) -> TensorRef | None:
        if len(layer.calls) != 1 or len(layer.calls[0]) != 1:
            return None
        return layer.calls[0][0]

    def consumer(self, ref: TensorRef) -> tuple[Layer | None, str]:
        users = list(self._consumers.get(ref, ()))  # Model.consumers(ref)
        if ref in self._outputs:
            return None, "its output is a model output"
        if len(users) != 1:
            why = next((f", among them {user.label}, which {fold_role(user.class_name).why}" for user, _ in users
                        if fold_role(user.class_name).why), "")
            return None, f"its output feeds {len(users)} layers{why}"
        layer, _ = users[0]
        if len(layer.calls) != 1:
            return None, f"the next layer {layer.label} is shared ({len(layer.calls)} calls)"
        if len(layer.calls[0]) != 1:
            if _recurrent(layer):
                if ref in layer.calls[0][1:]:
                    return None, (f"its output is an initial state of {layer.label}, which enters through the "
                                  "recurrent kernel (only the input sequence folds)")
                return layer, ""
            return None, f"the next layer {layer.label} takes {len(layer.calls[0])} inputs"
        return layer, ""

    def norm_axis(self, p: BNParams, rank: int | None, virtual: bool = False) -> int | None:
        """BN's axis as a non-negative index into a tensor of ``rank`` (None when unknown).

        tf.keras writes the axis of its internal rank+1 view when ``virtual_batch_size`` is set
        (``axis: [4]`` on a 4-D input); :func:`~bnconvert.bn.bn_params` already undoes that shift,
        so ``p.axis`` is the real axis here (``virtual`` is kept for callers, unused).
        """
        if len(p.axis) != 1 or rank is None:
            return None
        axis = p.axis[0]
        return axis % rank if -rank <= axis < rank else None

    # -- the three moves ----------------------------------------------------------------------
    def passes(self, layer: Layer, s: np.ndarray, axis: int | None, rank: int | None) -> str:
        """'' if the per-channel affine on ``axis`` commutes with ``layer``, else why not."""
        role = fold_role(layer.class_name)
        if role.kind == "identity" or layer.name in self.gone:
            return ""
        if layer.class_name == "Activation" and layer.config.get("activation") == "linear":
            return ""
        if role.kind == "pool":
            if axis is None or rank is None or axis != _channel_axis(layer, rank):
                return f"{layer.label} pools over the axis it normalises"
            if role.max:
                neg = int(np.sum(~(s > 0)))
                if neg:
                    return f"its scale is negative or zero on {neg} channels, so it does not commute with {layer.label}"
            return ""
        return f"{layer.label} is not linear"

    def backward(self, bn: Layer, p: BNParams, s: np.ndarray) -> FoldDecision | str:
        ref = self.producer(bn)
        if ref is None:
            return "it is called on several tensors or several times"
        rank = self.rank(ref)
        axis = self.norm_axis(p, rank, _virtual(bn))
        via: list[str] = []
        while True:
            layer = self.model[ref.layer]
            role = fold_role(layer.class_name)
            if layer.model is not None:
                return f"its input comes from nested model '{layer.name}'"
            if role.kind == "input":
                return "its input is a model input (nothing before it to fold into)"
            found = _single_site(layer)
            if found is not None and found.role.producer:
                if not self.single_use(ref):
                    return f"the output of {layer.label} also feeds other layers"
                break
            if found is not None and found.role.state:
                return f"its input is the output of {layer.label}, {found.role.state}"
            if len(layer.calls) != 1 or len(layer.calls[0]) != 1:
                n = len(layer.calls[0]) if len(layer.calls) == 1 else len(layer.calls)
                return f"its input comes from {layer.label} ({n} {'inputs' if len(layer.calls) == 1 else 'calls'})"
            if role.global_ and not layer.config.get("keepdims"):
                in_rank = self.rank(layer.calls[0][0])
                if axis is not None and in_rank is not None and rank is not None and axis == rank - 1:
                    axis, rank = _channel_axis(layer, in_rank), in_rank
                else:
                    return f"its input comes from {layer.label}, and the axes cannot be matched"
            why = self.passes(layer, s, axis, rank)
            if why:
                return why if role.kind == "pool" else f"its input comes from {_describe(layer)}"
            if not self.single_use(ref):
                return f"the output of {layer.label} also feeds other layers"
            via.append(layer.name)
            ref = layer.calls[0][0]
        if len(layer.calls) != 1:
            return f"{layer.label} is shared ({len(layer.calls)} calls)"
        if not _linear(found.config):
            act = found.config.get("activation")
            return f"{layer.label} has activation {act if isinstance(act, str) else 'custom'}"
        if axis is None and p.axis == (-1,) and (not found.role.windowed or data_format(found.config) == "channels_last"):
            rank, axis = 2, 1  # the last axis, whatever the rank: the channel axis of a channels_last layer
        if axis is None or rank is None:
            return "its axis cannot be matched to a channel axis (unknown shape or several axes)"
        if axis != _site_axis(found, rank):
            return f"its axis {p.axis[0]} is not the channel axis of {layer.label}"
        return FoldDecision(bn.name, "backward", f"folds into {layer.label}", target=layer.name, via=via[::-1])

    def forward(self, bn: Layer, p: BNParams, s: np.ndarray, t: np.ndarray) -> FoldDecision | str:
        ref = TensorRef(bn.name)
        rank = self.rank(ref)
        feat = _Features(self.norm_axis(p, rank, _virtual(bn)), rank)
        via: list[str] = []
        while True:
            layer, why = self.consumer(ref)
            if layer is None:
                return why
            if is_bn(layer) and layer.name not in self.gone:
                return self._merge_into(bn, layer, feat, via)
            role = fold_role(layer.class_name)
            targets = sites(layer.class_name, layer.config)
            if targets and all(site.role.consumer for site in targets):
                break
            if role.why:
                return f"its output goes to {layer.label}, which {role.why}"
            if layer.model is not None:
                return f"its output goes into nested model '{layer.name}'"
            if role.kind == "reshape":
                why = self._reshape(layer, ref, feat, s, t)
                if why:
                    return why
            elif feat.full is not None and (role.kind == "identity" or layer.name in self.gone):
                pass
            elif feat.full is not None:
                return f"its output goes to {layer.label} after a Flatten/Reshape"
            elif role.global_ and not layer.config.get("keepdims"):
                why = self.passes(layer, s, feat.axis, feat.rank)
                if why:
                    return why
                feat = _Features(1, 2)
            else:
                why = self.passes(layer, s, feat.axis, feat.rank)
                if why:
                    return why if role.kind == "pool" else f"its output goes to {_describe(layer)}"
            via.append(layer.name)
            ref = TensorRef(layer.name)
        return self._forward_into(bn, p, layer, feat, s, t, via)

    def _reshape(self, layer: Layer, ref: TensorRef, feat: _Features, s: np.ndarray, t: np.ndarray) -> str:
        """Follow the affine through Flatten/Reshape as per-element arrays (needs the full shape)."""
        shape = self.shapes.get(ref)
        if shape is None or any(d is None for d in shape[1:]):
            return f"the shape before {layer.label} is not fully known"
        if feat.full is None:
            if feat.axis is None or feat.axis == 0:
                return "its axis cannot be matched to a channel axis (unknown shape or several axes)"
            dims = tuple(int(d) for d in shape[1:])
            feat.full = (features_of(s, dims, feat.axis - 1), features_of(t, dims, feat.axis - 1))
        fs, ft = feat.full
        if fold_role(layer.class_name).flatten:
            fmt = layer.config.get("data_format") or "channels_last"
            feat.full = (flatten_features(fs, fmt), flatten_features(ft, fmt))
        else:
            out = self.shapes.get(TensorRef(layer.name))
            if out is None or any(d is None for d in out[1:]) or int(np.prod(out[1:])) != fs.size:
                return f"the shape after {layer.label} is not known"
            feat.full = (fs.reshape(out[1:]), ft.reshape(out[1:]))
        feat.axis, feat.rank = None, None
        return ""

    def _merge_into(self, bn: Layer, other: Layer, feat: _Features, via: list[str]) -> FoldDecision | str:
        q = self.params.get(other.name)
        if feat.full is not None:
            return f"the next BN {other.label} comes after a Flatten/Reshape"
        if q is None or q.mode != 0 or len(q.axis) != 1 or feat.rank is None or self.norm_axis(q, feat.rank, _virtual(other)) != feat.axis:
            return f"the next BN {other.label} normalises another axis or cannot fold"
        if not _finite(q):
            return f"the next BN {other.label} has NaN/Inf or non-positive variance + epsilon"
        if other.name in self.kept:
            return f"the next BN {other.label} is kept by --keep '{self.kept[other.name]}'"
        return FoldDecision(bn.name, "merge", f"merges into the next BN {other.label}", target=other.name, via=via)

    def _forward_into(
        self, bn: Layer, p: BNParams, layer: Layer, feat: _Features, s: np.ndarray, t: np.ndarray, via: list[str]
    ) -> FoldDecision | str:
        if len(layer.calls) != 1:
            return f"{layer.label} is shared ({len(layer.calls)} calls)"
        targets = sites(layer.class_name, layer.config)
        site = targets[0]
        if any(other.role.windowed != site.role.windowed or other.steps != site.steps for other in targets):
            return f"the parts of {layer.label} read their input differently"
        if not site.role.windowed:  # Dense, recurrent: read the last axis at every position
            if feat.full is not None:
                per_unit = dense_input_affine(*feat.full)
                if per_unit is None:
                    return f"after Flatten/Reshape the scale varies along an axis {layer.label} does not read"
                ts, tt = per_unit
                into = site.role.into
                rows = layer.weights.get(f"{site.prefix}{into[0]}") if into is not None else None
                if rows is not None and rows.shape[0] != ts.size:
                    return f"the shape before Flatten/Reshape does not match {layer.label}'s kernel ({ts.size} vs {rows.shape[0]} inputs)"
            elif feat.axis is None or feat.rank is None:
                return "its axis cannot be matched to a channel axis (unknown shape or several axes)"
            elif feat.axis != feat.rank - 1:
                return f"its axis {p.axis[0]} is not the last axis, which {layer.label} reads"
            else:
                ts, tt = s, t
            return self._decision(bn, "forward", f"folds forward into {layer.label}", layer, via, ts, tt)
        if feat.full is not None:
            return f"a Flatten/Reshape lies between it and {layer.label}"
        in_rank = self.rank(layer.calls[0][0])
        if feat.axis is None or in_rank is None or feat.axis != _site_axis(site, in_rank):
            return f"its axis is not the input channel axis of {layer.label}"
        padding = site.config.get("padding", "valid")
        if padding != "valid" and np.any(t != 0):
            return f"{layer.label} pads with zeros ({padding} padding) and the shift is not zero"
        return self._decision(bn, "forward", f"folds forward into {layer.label}", layer, via, s, t)

    @staticmethod
    def _decision(bn: Layer, action: str, reason: str, layer: Layer, via: list[str], ts: np.ndarray, tt: np.ndarray) -> FoldDecision:
        return FoldDecision(bn.name, action, reason, target=layer.name, via=via, target_scale=ts, target_shift=tt)

    # -- driver -------------------------------------------------------------------------------
    def plan(self) -> list[FoldDecision]:
        bns = [layer for layer in self.model.layers if is_bn(layer)]
        for layer in bns:
            pattern = kept_by(layer.name, f"{self.scope}{layer.name}", self.keep)
            if pattern is not None:
                self.kept[layer.name] = pattern
            try:
                self.params[layer.name] = bn_params(layer)
            except BnconvertError:
                pass
        return [self.decide(layer) for layer in bns]

    def stays(self, bn: Layer, reason: str) -> FoldDecision:
        return FoldDecision(bn.name, "stays", reason, scope=self.scope)

    def decide(self, bn: Layer) -> FoldDecision:
        if bn.name in self.kept:
            decision = self.stays(bn, f"kept by --keep '{self.kept[bn.name]}'")
            decision.kept = self.kept[bn.name]
            return decision
        p = self.params.get(bn.name)
        if p is None:
            return self.stays(bn, "its weights could not be read as BN parameters")
        if p.mode in (1, 2):
            return self.stays(bn, f"Keras 1 mode {p.mode} uses batch statistics at inference, not the saved ones")
        if not self.model.has_graph:
            return self.stays(bn, "no architecture in the file: connections unknown (pass --config)")
        if len(p.axis) > 1:
            return self.stays(bn, f"it normalises over several axes {list(p.axis)}")
        if len(bn.calls) != 1:
            return self.stays(bn, f"the BN layer is shared ({len(bn.calls)} calls)")
        finite = _finite(p)
        with np.errstate(invalid="ignore", divide="ignore"):
            s, t = self.affine.get(bn.name, (p.fold_scale, p.fold_shift))
        absorbed = sorted(name for name, into in self.merged.items() if into == bn.name)
        reasons = []
        for move in ("backward", "forward"):
            result = self.backward(bn, p, s) if move == "backward" else self.forward(bn, p, s, t)
            if isinstance(result, FoldDecision):
                if not finite:
                    decision = self.stays(bn, f"NaN/Inf or non-positive variance + epsilon: refusing to fold ({result.reason})")
                    decision.blocked, decision.target = True, result.target
                    return decision
                result.scale, result.shift, result.absorbed, result.scope = s, t, absorbed, self.scope
                if result.target_scale is None:
                    result.target_scale, result.target_shift = s, t
                if result.action == "merge":
                    self._merge(bn.name, result.target_name(), s, t)
                self.gone.add(bn.name)
                return result
            reasons.append(result)
        reason = "NaN/Inf or non-positive variance + epsilon" if not finite else f"cannot fold back ({reasons[0]}) or forward ({reasons[1]})"
        decision = self.stays(bn, reason)
        decision.absorbed = absorbed
        if absorbed:
            decision.scale, decision.shift = s, t
        return decision

    def _merge(self, name: str, into: str, s: np.ndarray, t: np.ndarray) -> None:
        other = self.params[into]
        self.affine[into] = compose((s, t), self.affine.get(into, (other.fold_scale, other.fold_shift)))
        self.merged[name] = into
        for prior, target in list(self.merged.items()):
            if target == name:
                self.merged[prior] = into


def _describe(layer: Layer) -> str:
    """``'act_1' (Activation relu)``: the label, with the function an activation layer applies."""
    act = layer.config.get("activation")
    if layer.class_name == "Activation" and isinstance(act, str):
        return f"'{layer.name}' ({layer.source_class} {act})"
    return layer.label


def _single_site(layer: Layer) -> Site | None:
    """The one site of ``layer`` (None for a Bidirectional's two, or an unreadable wrapper)."""
    found = sites(layer.class_name, layer.config)
    return found[0] if len(found) == 1 else None


def _recurrent(layer: Layer) -> bool:
    """A layer whose every site is a recurrent consumer (its inputs after the first are states)."""
    found = sites(layer.class_name, layer.config)
    return bool(found) and all(site.role.state and site.role.consumer for site in found)


def _virtual(bn: Layer) -> bool:
    return bool(bn.config.get("virtual_batch_size"))


def _finite(p: BNParams) -> bool:
    """Whether ``p`` keeps the BN invariant (:func:`bnconvert.bn.bn_problem`): a BN that breaks it never folds."""
    return bn_problem(p) is None


def plan_folds(model: Model, scope: str = "", *, keep: Sequence[str] = ()) -> list[FoldDecision]:
    """A decision for every BN layer of ``model``, nested models included, in model order.

    ``keep``: globs on BN names or nested paths (see the module docstring); those BN stay. Raises
    FoldError when a pattern matches no BN layer of the model.
    """
    decisions = _plan(model, scope, tuple(keep))
    unmatched = [p for p in dict.fromkeys(keep) if not any(d.kept == p for d in decisions)]
    if unmatched:
        names = [d.path for d in decisions]
        listed = ", ".join(f"'{n}'" for n in names[:6]) + (f" ... ({len(names)} in all)" if len(names) > 6 else "")
        where = model.source.path if model.source is not None and model.source.path else f"model '{model.name}'"
        raise FoldError(f"{where}: --keep {', '.join(repr(p) for p in unmatched)} matches no BatchNormalization "
                        f"layer (its BN layers: {listed or 'none'})")
    return decisions


def _plan(model: Model, scope: str, keep: tuple[str, ...]) -> list[FoldDecision]:
    decisions = _Planner(model, scope, keep).plan()
    for layer in model.layers:
        if layer.model is not None:
            decisions += _plan(layer.model, f"{scope}{layer.name}/", keep)
    return decisions
