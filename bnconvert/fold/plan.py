"""Decide, for every BatchNormalization layer, whether and where it folds, and why not.

This is the predicate half of folding (the transform is in ``fold.apply``). A BN is the affine
``y = s*x + t`` per channel. In model order, each BN tries, in turn:

1. **backward** into the layer that produces its input (Dense, Conv*, DepthwiseConv*,
   SeparableConv*, Conv*Transpose): exact when that layer's activation is linear, its output
   feeds only this BN, and BN's axis is its channel axis. Inference identities (Dropout family,
   GaussianNoise, ...) and pooling are walked through (max pooling only where ``s > 0``).
2. **merge** forward into the next BN (through identities and pooling): two affines make one.
3. **forward** into the layer that consumes its output: Dense (also through Flatten/Reshape),
   or Conv*/DepthwiseConv* with ``valid`` padding (``same`` only when ``t == 0``, since the
   border windows would see zeros instead of the shifted value).

Each edge on the way must have a single consumer, else folding would change the other reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bn import BNParams, bn_params, is_bn
from ..errors import BnconvertError
from ..layerspec import CONV_CLASSES, DEPTHWISE_CLASSES, SEPARABLE_CLASSES, TRANSPOSE_CLASSES, data_format
from ..model import Layer, Model, TensorRef
from ..shapes import infer_shapes

__all__ = ["FoldDecision", "plan_folds", "PRODUCERS", "IDENTITIES", "POOLS"]

PRODUCERS = frozenset({"Dense"}) | CONV_CLASSES | TRANSPOSE_CLASSES | DEPTHWISE_CLASSES | SEPARABLE_CLASSES
FORWARD_CONSUMERS = frozenset({"Dense"}) | CONV_CLASSES | DEPTHWISE_CLASSES
IDENTITIES = frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
})
MAX_POOLS = frozenset({"MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D"})
AVG_POOLS = frozenset({
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
})
#: global pooling without keepdims moves the channel axis to the last position
GLOBAL_POOLS = frozenset(c for c in MAX_POOLS | AVG_POOLS if c.startswith("Global"))
POOLS = MAX_POOLS | AVG_POOLS
RESHAPES = frozenset({"Flatten", "Reshape"})


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

    @property
    def folds(self) -> bool:
        return self.action != "stays"

    @property
    def path(self) -> str:
        return f"{self.scope}{self.bn}"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "via": list(self.via), "reason": self.reason}


def _linear(layer: Layer) -> bool:
    act = layer.config.get("activation", "linear")
    if isinstance(act, dict):
        act = act.get("config", {}).get("name", act.get("class_name"))
    return act in (None, "linear", "Linear")


def _channel_axis(layer: Layer, rank: int) -> int:
    """Channel axis (non-negative) of a layer's output/input tensor of rank ``rank``."""
    if layer.class_name == "Dense" or rank <= 2:
        return rank - 1
    return 1 if data_format(layer.config) == "channels_first" else rank - 1


class _Planner:
    def __init__(self, model: Model, scope: str) -> None:
        self.model = model
        self.scope = scope
        try:
            self.shapes = infer_shapes(model)
        except Exception:  # noqa: BLE001 - shapes are a help, not a requirement, for planning
            self.shapes = {}
        self.affine: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.params: dict[str, BNParams] = {}
        self.gone: set[str] = set()  # BN merged away: walks pass through them

    # -- graph helpers ----------------------------------------------------------------------
    def rank(self, ref: TensorRef) -> int | None:
        shape = self.shapes.get(ref)
        return len(shape) if shape is not None else None

    def single_use(self, ref: TensorRef) -> bool:
        return self.model.uses(ref) == 1

    def producer(self, layer: Layer) -> TensorRef | None:
        if len(layer.calls) != 1 or len(layer.calls[0]) != 1:
            return None
        return layer.calls[0][0]

    def consumer(self, ref: TensorRef) -> tuple[Layer | None, str]:
        users = self.model.consumers(ref)
        if ref in self.model.outputs:
            return None, "its output is a model output"
        if len(users) != 1:
            return None, f"its output feeds {len(users)} layers"
        layer, _ = users[0]
        if len(layer.calls) != 1:
            return None, f"the next layer {layer.label} is shared ({len(layer.calls)} calls)"
        if len(layer.calls[0]) != 1:
            return None, f"the next layer {layer.label} takes {len(layer.calls[0])} inputs"
        return layer, ""

    def norm_axis(self, p: BNParams, rank: int | None) -> int | None:
        if len(p.axis) != 1 or rank is None:
            return None
        return p.axis[0] % rank

    # -- the three moves ----------------------------------------------------------------------
    def passes(self, layer: Layer, s: np.ndarray) -> str:
        """'' if the affine commutes with ``layer``, else why not."""
        if layer.class_name in IDENTITIES or layer.name in self.gone:
            return ""
        if layer.class_name == "Activation" and layer.config.get("activation") == "linear":
            return ""
        if layer.class_name in AVG_POOLS:
            return ""
        if layer.class_name in MAX_POOLS:
            neg = int(np.sum(s <= 0))
            return "" if neg == 0 else f"scale is negative or zero on {neg} channels, so it does not commute with {layer.label}"
        return f"{layer.label} is not linear"

    def backward(self, bn: Layer, p: BNParams, s: np.ndarray) -> FoldDecision | str:
        ref = self.producer(bn)
        if ref is None:
            return "it is called on several tensors or several times"
        rank = self.rank(ref)
        axis = self.norm_axis(p, rank)
        via = []
        while True:
            if not self.single_use(ref):
                return f"the output of '{ref.layer}' also feeds other layers"
            layer = self.model[ref.layer]
            if layer.model is not None:
                return f"its input comes from nested model '{layer.name}'"
            if layer.class_name == "InputLayer":
                return "its input is a model input (nothing before it to fold into)"
            if layer.class_name in PRODUCERS:
                break
            why = self.passes(layer, s)
            if why or len(layer.calls) != 1:
                return f"its input comes from {layer.label}" + (f" ({len(layer.calls[0])} inputs)" if len(layer.calls[0]) > 1 else "")
            via.append(layer.name)
            ref = self.producer(layer)
            if ref is None:
                return f"its input comes from {layer.label}"
        if len(layer.calls) != 1:
            return f"{layer.label} is shared ({len(layer.calls)} calls)"
        if not _linear(layer):
            act = layer.config.get("activation")
            return f"{layer.label} has activation {act if isinstance(act, str) else 'custom'}"
        if axis is None and p.axis == (-1,) and (layer.class_name == "Dense" or data_format(layer.config) == "channels_last"):
            rank, axis = 2, 1  # the last axis, whatever the rank: the channel axis of a channels_last layer
        if axis is None:
            return "its axis cannot be matched to a channel axis (unknown shape or several axes)"
        if any(self.model[v].class_name in GLOBAL_POOLS for v in via):
            rank, axis = 2, 1
        if axis != _channel_axis(layer, rank):
            return f"its axis {p.axis[0]} is not the channel axis of {layer.label}"
        return FoldDecision(bn.name, "backward", f"folds into {layer.label}", target=layer.name, via=via[::-1])

    def forward(self, bn: Layer, p: BNParams, s: np.ndarray, t: np.ndarray) -> FoldDecision | str:
        ref = TensorRef(bn.name)
        rank = self.rank(ref)
        axis = self.norm_axis(p, rank)
        via, reshaped = [], False
        while True:
            layer, why = self.consumer(ref)
            if layer is None:
                return why
            if is_bn(layer) and layer.name not in self.gone and not reshaped:
                other = self.params.get(layer.name)
                if other is None or other.mode != 0 or len(other.axis) != 1 or self.norm_axis(other, rank) != axis:
                    return f"the next BN {layer.label} normalises another axis or cannot fold"
                return FoldDecision(bn.name, "merge", f"merges into the next BN {layer.label}", target=layer.name, via=via)
            if layer.class_name in FORWARD_CONSUMERS:
                break
            if layer.class_name in RESHAPES:
                reshaped = True
            elif layer.class_name in GLOBAL_POOLS and not layer.config.get("keepdims") and not self.passes(layer, s):
                axis, rank = 1, 2  # (N, C) after global pooling
            elif self.passes(layer, s):
                why = self.passes(layer, s)
                return why if layer.class_name in MAX_POOLS else f"its output goes to {layer.label}"
            via.append(layer.name)
            ref = TensorRef(layer.name)
        if axis is None:
            return "its axis cannot be matched to a channel axis (unknown shape or several axes)"
        if layer.class_name == "Dense":
            if not reshaped and axis != rank - 1:
                return f"its axis {p.axis[0]} is not the last axis, which {layer.label} reads"
            if reshaped and any(d is None for d in (self.shapes.get(TensorRef(bn.name)) or (None,))[1:]):
                return "the shape before Flatten/Reshape is not fully known"
            return FoldDecision(bn.name, "forward", f"folds forward into {layer.label}", target=layer.name, via=via)
        if reshaped:
            return f"a Flatten/Reshape lies between it and {layer.label}"
        in_rank = self.rank(self.model[layer.name].calls[0][0])
        if in_rank is None or axis != _channel_axis(layer, in_rank):
            return f"its axis is not the input channel axis of {layer.label}"
        if layer.config.get("padding", "valid") != "valid" and np.any(t != 0):
            return f"{layer.label} pads with zeros ({layer.config.get('padding')} padding) and the shift is not zero"
        return FoldDecision(bn.name, "forward", f"folds forward into {layer.label}", target=layer.name, via=via)

    # -- driver -------------------------------------------------------------------------------
    def plan(self) -> list[FoldDecision]:
        bns = [layer for layer in self.model.layers if is_bn(layer)]
        for layer in bns:
            try:
                self.params[layer.name] = bn_params(layer)
            except BnconvertError:
                pass
        decisions = []
        for layer in bns:
            decisions.append(self.decide(layer))
        return decisions

    def stays(self, bn: Layer, reason: str) -> FoldDecision:
        return FoldDecision(bn.name, "stays", reason, scope=self.scope)

    def decide(self, bn: Layer) -> FoldDecision:
        p = self.params.get(bn.name)
        if p is None:
            return self.stays(bn, "its weights could not be read as BN parameters")
        if p.mode in (1, 2):
            return self.stays(bn, f"Keras 1 mode {p.mode} uses batch statistics at inference, not the saved ones")
        if not self.model.has_graph:
            return self.stays(bn, "no architecture in the file: connections unknown (pass --config)")
        arrays = (p.gamma, p.beta, p.mean, p.variance)
        if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(p.variance + p.epsilon <= 0):
            return self.stays(bn, "NaN/Inf or non-positive variance + epsilon: refusing to fold")
        if len(p.axis) > 1:
            return self.stays(bn, f"it normalises over several axes {list(p.axis)}")
        if len(bn.calls) != 1:
            return self.stays(bn, f"the BN layer is shared ({len(bn.calls)} calls)")
        s, t = self.affine.get(bn.name, (p.fold_scale, p.fold_shift))
        absorbed = [d for d, into in getattr(self, "_merged", {}).items() if into == bn.name]
        reasons = []
        for result in (self.backward(bn, p, s), None):
            if result is None:
                result = self.forward(bn, p, s, t)
            if isinstance(result, FoldDecision):
                result.scale, result.shift, result.absorbed, result.scope = s, t, absorbed, self.scope
                if result.action == "merge":
                    self._merge(bn.name, result.target, s, t)
                return result
            reasons.append(result)
        decision = self.stays(bn, _combine(reasons))
        decision.absorbed = absorbed
        if absorbed:
            decision.scale, decision.shift = s, t
        return decision

    def _merge(self, name: str, into: str, s: np.ndarray, t: np.ndarray) -> None:
        other = self.params[into]
        s2, t2 = self.affine.get(into, (other.fold_scale, other.fold_shift))
        self.affine[into] = (s2 * s, s2 * t + t2)
        self.gone.add(name)
        self._merged = getattr(self, "_merged", {})
        self._merged[name] = into
        for prior, target in list(self._merged.items()):
            if target == name:
                self._merged[prior] = into


def _combine(reasons: list[str]) -> str:
    back, fwd = reasons
    return f"cannot fold back ({back}) or forward ({fwd})"


def plan_folds(model: Model, scope: str = "") -> list[FoldDecision]:
    """A decision for every BN layer of ``model``, nested models included, in model order."""
    decisions = _Planner(model, scope).plan()
    for layer in model.layers:
        if layer.model is not None:
            decisions += plan_folds(layer.model, f"{scope}{layer.name}/")
    return decisions
