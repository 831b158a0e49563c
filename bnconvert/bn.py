"""BatchNormalization parameters by meaning, and what an audit finds in them.

Inference in every Keras from 1.0.8 on and in ONNX: ``y = gamma * (x - mean) / sqrt(var + eps) + beta``,
i.e. the per-channel affine ``y = s * x + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - mean * s``. Everything here computes in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import FormatError, InvalidWeightsError
from .model import Layer, Model

__all__ = ["BNParams", "Finding", "bn_config", "bn_params", "findings", "is_bn", "bn_problem", "check_bn", "require_usable", "THRESHOLDS"]

#: Audit thresholds (documented in the README); a finding names the value that crossed one.
THRESHOLDS = {
    "near_zero_variance": 1e-5,  # var below this: the fold scale is set by eps alone
    "dead_gamma": 1e-6,  # |gamma| below this: the channel outputs beta whatever comes in
    "huge_scale": 1e3,  # |s| above this: float16 overflows at |x| > 65, int8 loses the channel
    "tf_fused_min_eps": 1.001e-5,  # older tf.keras' fused kernel raised a smaller eps to this at run time
}


def is_bn(layer: Layer) -> bool:
    """True for a BatchNormalization layer (any generation), also one a wrapper applies at every
    step (TimeDistributed(BatchNormalization): the same per-channel affine on a longer tensor)."""
    return _wrapped_bn(layer) is not None


def _wrapped_bn(layer: Layer) -> tuple[dict[str, Any], int] | None:
    """``(BN config, axes the wrapper adds after the batch axis)`` of a BN layer, None otherwise.
    Which classes wrap another layer is their catalog fold role's (``wraps``, ``steps``)."""
    if layer.class_name == "BatchNormalization":
        return layer.config, 0
    from .catalog import fold_role

    role = fold_role(layer.class_name)
    inner = layer.config.get(role.wraps) if role.wraps is not None and not role.sides else None
    if isinstance(inner, dict) and inner.get("class_name") == "BatchNormalization" and isinstance(inner.get("config"), dict):
        return inner["config"], role.steps
    return None


def bn_config(layer: Layer) -> dict[str, Any]:
    """The BatchNormalization config of a BN layer (a wrapper's: its inner layer's config, the
    same dict, so that a fold can edit it in place in its own copy)."""
    found = _wrapped_bn(layer)
    if found is None:
        raise FormatError(f"layer {layer.label} is not a BatchNormalization")
    return found[0]


@dataclass(frozen=True)
class BNParams:
    """A BN layer's inference parameters, float64, flattened to one value per normalised feature.

    ``param_shape`` is the shape the parameters broadcast with over the normalised axes
    (``(C,)`` for the usual single axis; e.g. ``(H, C)`` for BN over two axes).
    """

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    epsilon: float
    axis: tuple[int, ...] = (-1,)
    center: bool = True
    scale: bool = True
    mode: int = 0
    param_shape: tuple[int, ...] = ()
    dtype: str = "float32"

    @property
    def channels(self) -> int:
        return int(self.mean.size)

    @property
    def fold_scale(self) -> np.ndarray:
        """``s = gamma / sqrt(var + eps)``."""
        return self.gamma / np.sqrt(self.variance + self.epsilon)

    @property
    def fold_shift(self) -> np.ndarray:
        """``t = beta - mean * s``."""
        return self.beta - self.mean * self.fold_scale

    def apply(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        """The layer's inference output for ``x`` (float64), normalising along ``axis``."""
        shape = [1] * x.ndim
        shape[axis] = self.channels
        return x * self.fold_scale.reshape(shape) + self.fold_shift.reshape(shape)

    # -- conversions from and to raw Keras weight lists ---------------------------------------
    @classmethod
    def from_keras(
        cls, weights: Sequence[np.ndarray], *, center: bool = True, scale: bool = True, epsilon: float = 1e-3,
        axis: int | Sequence[int] = -1,
    ) -> BNParams:
        """From a Keras 2/3 ``get_weights()`` list ``[gamma?, beta?, moving_mean, moving_variance, ...]``."""
        expected = int(scale) + int(center) + 2
        if len(weights) < expected:
            raise FormatError(f"BatchNormalization: expected {expected} weights for center={center}, scale={scale}, found {len(weights)}")
        it = iter(weights)
        gamma = next(it) if scale else None
        beta = next(it) if center else None
        mean, var = next(it), next(it)
        return _make(gamma, beta, mean, var, epsilon=epsilon, axis=axis, center=center, scale=scale)

    @classmethod
    def from_keras1(
        cls, weights: Sequence[np.ndarray], *, epsilon: float = 1e-3, running_std: str = "variance",
        axis: int | Sequence[int] = -1, mode: int = 0,
    ) -> BNParams:
        """From a Keras 1 legacy list ``[gamma, beta, running_mean, running_std]``.

        ``running_std`` says what the fourth array holds: ``variance`` (Keras 1.0.8-1.2.2 and 1.0.7
        TensorFlow), ``std`` (Keras 1.0.0-1.0.5, 1.0.6 Theano) or ``theano-1.0.7``.
        """
        from .readers.keras1 import running_std_to_variance

        if len(weights) != 4:
            raise FormatError(f"Keras 1 BatchNormalization: expected 4 weights [gamma, beta, mean, std], found {len(weights)}")
        gamma, beta, mean, rs = (np.asarray(w) for w in weights)
        var = running_std_to_variance(rs.astype(np.float64), float(epsilon), running_std)
        return _make(gamma, beta, mean, var, epsilon=epsilon, axis=axis, mode=mode, dtype=str(rs.dtype))

    def to_keras(self) -> list[np.ndarray]:
        """Keras 2/3 order ``[gamma?, beta?, moving_mean, moving_variance]`` in the file's dtype."""
        out = ([self.gamma] if self.scale else []) + ([self.beta] if self.center else []) + [self.mean, self.variance]
        return [a.reshape(self.param_shape or (-1,)).astype(self.dtype) for a in out]


def _flat(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def _make(gamma, beta, mean, var, *, epsilon, axis, center=True, scale=True, mode=0, dtype=None) -> BNParams:
    mean_arr = np.asarray(mean)
    param_shape = tuple(d for d in mean_arr.shape if d != 1) or (mean_arr.size,)
    n = mean_arr.size
    g = np.ones(n) if gamma is None else _flat(gamma)
    b = np.zeros(n) if beta is None else _flat(beta)
    m, v = _flat(mean), _flat(var)
    if not (g.size == b.size == m.size == v.size == n):
        raise FormatError(f"BatchNormalization: parameter sizes differ (gamma {g.size}, beta {b.size}, mean {m.size}, variance {v.size})")
    axes = tuple(int(a) for a in axis) if isinstance(axis, (list, tuple)) else (int(axis),)
    return BNParams(
        gamma=g, beta=b, mean=m, variance=v, epsilon=float(epsilon), axis=axes, center=center, scale=scale,
        mode=mode, param_shape=param_shape, dtype=str(dtype or mean_arr.dtype),
    )


def bn_params(layer: Layer) -> BNParams:
    """The BNParams of a BatchNormalization layer of any generation (weights already by meaning);
    a wrapped BN's axis is given on the wrapper's tensor (TimeDistributed: positive axes + 1)."""
    found = _wrapped_bn(layer)
    if found is None:
        raise FormatError(f"layer {layer.label} is not a BatchNormalization")
    c, steps = found
    w = layer.weights
    missing = [k for k in ("moving_mean", "moving_variance") if k not in w]
    if missing:
        raise FormatError(f"layer {layer.label}: no {' or '.join(missing)} weight")
    axis = c.get("axis")
    if c.get("virtual_batch_size") and axis is not None:
        # tf.keras shifts the axes of a virtual-batch BN by one in build() (it splits the batch
        # dimension in two) and then saves the shifted value: undo that.
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        axis = [a - 1 if a > 0 else a for a in axes]
    if steps and axis is not None:
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        axis = [a + steps if isinstance(a, int) and a > 0 else a for a in axes]
    eps = c.get("epsilon")
    return _make(
        w.get("gamma"), w.get("beta"), w["moving_mean"], w["moving_variance"],
        epsilon=1e-3 if eps is None else eps,
        axis=-1 if axis is None else axis,
        center="beta" in w, scale="gamma" in w, mode=int(c.get("keras1_mode", 0) or 0),
    )


@dataclass(frozen=True)
class Finding:
    """One thing an audit noticed about a BN layer."""

    kind: str
    severity: str  # "error" (fold/export refuse), "warning", "info"
    message: str
    channels: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "severity": self.severity, "message": self.message}
        if self.channels:
            out["channels"] = self.channels
        return out


def _chan(mask: np.ndarray, limit: int = 8) -> tuple[list[int], str]:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in idx[:limit]) + (" ..." if idx.size > limit else "")
    return [int(i) for i in idx], f"{idx.size} of {mask.size} channels ({shown})"


def findings(p: BNParams, *, layer: Layer | None = None, tf_keras: bool = False) -> list[Finding]:
    """Everything worth a user's attention in one BN's parameters."""
    out: list[Finding] = []
    problem = bn_problem(p)
    if problem is not None and problem[0] == "nan-inf":
        out.append(Finding("nan-inf", "error", f"{problem[1]}: the layer outputs NaN; fold and export refuse it"))
        return out
    denom = p.variance + p.epsilon
    if problem is not None:
        ch, _ = _chan(denom <= 0)
        out.append(Finding("non-positive-variance", "error", f"{problem[1]}: sqrt is undefined; fold and export refuse it", ch))
    elif np.any(p.variance < 0):
        ch, text = _chan(p.variance < 0)
        out.append(Finding("negative-variance", "warning",
                           f"negative moving variance on {text} (a variance cannot be negative: corrupted statistics?)", ch))
    if p.mean.size and np.all(p.mean == 0) and np.all(p.variance == 1):
        out.append(Finding("never-updated", "warning", "moving mean is all 0 and variance all 1: the statistics were never updated "
                                                       "(model not trained, or Keras 1 mode 2)"))
    near = (p.variance >= 0) & (p.variance < THRESHOLDS["near_zero_variance"])
    if np.any(near):
        ch, text = _chan(near)
        out.append(Finding("near-zero-variance", "warning",
                           f"moving variance below {THRESHOLDS['near_zero_variance']:g} on {text}: the scale is set by epsilon alone", ch))
    dead = np.abs(p.gamma) < THRESHOLDS["dead_gamma"]
    if p.scale and np.any(dead):
        ch, text = _chan(dead)
        out.append(Finding("dead-channels", "warning", f"|gamma| below {THRESHOLDS['dead_gamma']:g} on {text}: these channels output a constant", ch))
    if np.all(denom > 0):
        s = np.abs(p.fold_scale)
        huge = s > THRESHOLDS["huge_scale"]
        stored = np.dtype(getattr((layer.weights if layer is not None else {}).get("moving_variance"), "dtype", "float32"))
        beyond = s > np.finfo(stored if stored.kind == "f" else np.float32).max
        if np.any(beyond):  # folding gives Inf weights: refused (fold.kernels.FoldOverflow)
            ch, text = _chan(beyond)
            out.append(Finding("huge-fold-scale", "error",
                               f"fold scale |gamma|/sqrt(var+eps) up to {s.max():.3g} on {text}: beyond "
                               f"{stored if stored.kind == 'f' else 'float32'}, folding it would give Inf; fold and export refuse it", ch))
        elif np.any(huge):
            ch, text = _chan(huge)
            out.append(Finding("huge-fold-scale", "warning", f"fold scale |gamma|/sqrt(var+eps) up to {s.max():.3g} on {text}: "
                                                             "a folded float16 or int8 model loses precision there", ch))
    if p.mode in (1, 2):
        what = "per-sample normalisation over the last axis" if p.mode == 1 else "batch statistics at inference too"
        out.append(Finding(f"keras1-mode-{p.mode}", "warning",
                           f"Keras 1 mode {p.mode}: {what}; the saved running statistics do not describe inference, so it cannot fold"))
    if len(p.axis) > 1:
        out.append(Finding("multi-axis", "info", f"normalises over axes {list(p.axis)}: parameters of shape {p.param_shape}"))
    if tf_keras and p.epsilon < THRESHOLDS["tf_fused_min_eps"]:
        out.append(Finding("fused-epsilon", "info",
                           f"epsilon {p.epsilon:g} < 1.001e-5: TensorFlow's fused kernel in older tf.keras raised it to 1.001e-5 at "
                           f"run time; tf-keras 2.21, Keras 3, bnconvert and ONNX use {p.epsilon:g}"))
    if layer is not None and layer.config.get("epsilon_assumed"):
        out.append(Finding("epsilon-assumed", "info", "no architecture: epsilon is unknown, 1e-3 (the Keras 1.1+ default) is assumed"))
    return out


def bn_problem(p: BNParams) -> tuple[str, str] | None:
    """Why ``p`` breaks the invariant every use of a BN relies on (finite parameters and
    ``variance + epsilon > 0``, without which ``gamma / sqrt(var + eps)`` is undefined), as
    ``(kind, text)``; None when it holds. The one test of it: inspect's findings, fold planning,
    the ONNX handler and the refusal of fold and export all ask here."""
    arrays = {"gamma": p.gamma, "beta": p.beta, "moving_mean": p.mean, "moving_variance": p.variance}
    bad = [name for name, a in arrays.items() if not np.all(np.isfinite(a))]
    if bad:
        return "nan-inf", f"NaN or Inf in {', '.join(bad)}"
    denom = p.variance + p.epsilon
    if np.any(denom <= 0):  # also var = 0 with epsilon 0: sqrt(0), a division by zero
        _, text = _chan(denom <= 0)
        return "non-positive-variance", f"moving variance + epsilon <= 0 on {text}"
    return None


def check_bn(p: BNParams, where: str) -> None:
    """:class:`~bnconvert.errors.InvalidWeightsError` naming ``where`` when ``p`` breaks the BN
    invariant (:func:`bn_problem`)."""
    problem = bn_problem(p)
    if problem is not None:
        raise InvalidWeightsError(f"{where}: {problem[1]}")


def require_usable(model: Model, prefix: str) -> None:
    """Refuse a model whose numbers cannot be computed with: NaN/Inf in any weight, or a BN that
    breaks the invariant (:func:`bn_problem`). One :class:`~bnconvert.errors.InvalidWeightsError`
    starting with ``prefix`` names up to five layers; ``inspect`` reports the same as findings."""
    out = []
    for path, layer, _ in model.walk():
        label = f"layer '{path}' ({layer.source_class})"
        bad = [k for k, w in layer.weights.items() if w.dtype.kind in "fc" and not np.all(np.isfinite(w))]
        if bad:
            out.append(f"{label}: NaN or Inf in {', '.join(bad)}")
        elif is_bn(layer):
            try:
                problem = bn_problem(bn_params(layer))
            except FormatError:
                continue  # a BN bnconvert cannot read is refused where it is used, in its own words
            if problem is not None:
                out.append(f"{label}: {problem[1]}")
    if out:
        more = f" (and {len(out) - 5} more)" if len(out) > 5 else ""
        raise InvalidWeightsError(f"{prefix}: " + "; ".join(out[:5]) + more)
