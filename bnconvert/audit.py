"""The audit behind ``bnconvert inspect``: every BN layer, its statistics, its fold and its findings.

:func:`audit_file` is a pure function of one file returning plain data (JSON-ready dicts and
lists), so it can be mapped over many files by any scheduler (a process pool, a Dask bag,
Spark ``mapPartitions``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from .bn import BNParams, Finding, bn_config, bn_params, findings, is_bn
from .catalog import catalog, fold_role
from .errors import BnconvertError, FormatError
from .fold.plan import FoldDecision, plan_folds
from .layerspec import data_format
from .model import Layer, Model, TensorRef
from .readers import load
from .replace import ReplacementsLike, apply_replacements, opaque_layers
from .shapes import infer_shapes

__all__ = ["AuditReport", "BNReport", "audit", "audit_file"]


def _median(a: np.ndarray) -> float:
    """``np.median`` (NaN when any element is NaN) without its per-call overhead and its first-call
    import of ``numpy.ma`` (together about 0.04 s of ``inspect`` on ResNet50)."""
    v = np.sort(a, axis=None)
    n = v.size
    if v.dtype.kind in "fc" and np.isnan(v[-1]):
        return float("nan")
    return float(v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2)


def _summary(a: np.ndarray) -> dict[str, float | None]:
    if a.size == 0:
        return {"min": None, "median": None, "max": None}
    return {"min": float(np.min(a)), "median": _median(a), "max": float(np.max(a))}


@dataclass
class BNReport:
    """One BN layer as ``inspect`` reports it."""

    name: str
    channels: int
    axis: list[int]
    epsilon: float | None
    input_from: dict[str, Any] | None
    fold: FoldDecision
    params: BNParams | None
    findings: list[Finding] = field(default_factory=list)
    mode: int = 0

    def to_dict(self) -> dict[str, Any]:
        p = self.params
        stats: dict[str, Any] = {}
        if p is not None:
            stats = {
                "gamma": _summary(p.gamma),
                "beta": _summary(p.beta),
                "moving_mean": _summary(p.mean),
                "moving_variance": _summary(p.variance),
            }
            with np.errstate(all="ignore"):
                s = np.abs(p.fold_scale)
            finite = s[np.isfinite(s)]
            stats["fold_scale_abs"] = _summary(finite)
        return {
            "name": self.name,
            "channels": self.channels,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "mode": self.mode,
            "input_from": self.input_from,
            "fold": self.fold.to_dict(),
            "statistics": stats,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class AuditReport:
    """A whole file's audit."""

    model: Model
    batch_norms: list[BNReport]

    @property
    def findings(self) -> list[tuple[str, Finding]]:
        return [(bn.name, f) for bn in self.batch_norms for f in bn.findings]

    def to_dict(self) -> dict[str, Any]:
        src = self.model.source
        assert src is not None
        kinds: dict[str, int] = {}
        for _, f in self.findings:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        folding = sum(1 for bn in self.batch_norms if bn.fold.folds)
        return {
            "file": src.path,
            "format": src.format,
            "keras_version": src.keras_version,
            "backend": src.backend,
            "backend_origin": src.backend_origin,
            "kernels_flipped": src.kernels_flipped,
            "running_std": src.running_std,
            "model_kind": self.model.kind,
            "layers": sum(1 for _ in self.model.walk()),
            "parameters": self.model.count_params(),
            "notes": list(src.notes) + stateful_notes(self.model),
            "batch_norms": [bn.to_dict() for bn in self.batch_norms],
            # Lambda and custom layers: what the file tells of them without running code, and a
            # ready-to-edit --replace line each (bnconvert.replace)
            "opaque_layers": opaque_layers(self.model),
            "replaced": list(src.replaced),
            # the stamp of a file bnconvert made (bnconvert.provenance): None for any other file
            "provenance": src.provenance,
            "summary": {
                "batch_norms": len(self.batch_norms),
                "foldable": folding,
                "findings": kinds,
            },
            "bnconvert_version": __version__,
        }


def _previous_with_weights(model: Model) -> dict[int, Layer]:
    """For each layer (by id), the last layer with weights before it in file order: one pass, where
    looking back from every BN of a weights-only file would be BNs x layers."""
    out: dict[int, Layer] = {}
    previous = None
    for layer in model.layers:
        if previous is not None:
            out[id(layer)] = previous
        if layer.weights:
            previous = layer
    return out


def _input_from(model: Model, bn: Layer, shapes: dict[TensorRef, Any],
                before: dict[int, Layer] | None = None) -> dict[str, Any] | None:
    if not model.has_graph:
        previous = (before if before is not None else _previous_with_weights(model)).get(id(bn))
        if previous is None:
            return None
        return {"layer": previous.name, "class": previous.source_class, "inferred": "previous layer with weights in file order"}
    if not bn.calls:
        return None
    ref = bn.calls[0][0]
    layer = model[ref.layer]
    return {"layer": layer.name, "class": layer.source_class}


def _channel_axis_of(model: Model, ref: TensorRef, rank: int) -> int | None:
    """The channel axis of a tensor, from the nearest layer upstream that knows its data format."""
    if rank <= 2:
        return rank - 1
    seen = 0
    while seen < 64:
        layer = model[ref.layer]
        wraps = fold_role(layer.class_name).wraps
        inner = layer.config.get(wraps) if wraps else None
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict) and "data_format" in inner["config"]:
            # TimeDistributed(Conv2D): the inner layer's format, one more axis after the batch
            return 1 + fold_role(layer.class_name).steps if data_format(inner["config"]) == "channels_first" else rank - 1
        if "data_format" in layer.config:
            return 1 if data_format(layer.config) == "channels_first" else rank - 1
        family = getattr(catalog().get(layer.class_name), "family", None)
        if layer.class_name == "InputLayer" or not layer.calls or family in ("dense", "reshape"):
            return rank - 1  # Dense/Embedding and reshapes put features last, whatever came before
        if len(layer.calls[0]) != 1 and family != "merge":  # merges keep their inputs' layout
            return None
        ref = layer.calls[0][0]
        seen += 1
    return None


def _axis_finding(model: Model, bn: Layer, p: BNParams, shapes: dict[TensorRef, Any]) -> Finding | None:
    if not model.has_graph or not bn.calls or len(p.axis) != 1:
        return None
    ref = bn.calls[0][0]
    shape = shapes.get(ref)
    if shape is None:
        return None
    rank = len(shape)
    axis = p.axis[0] % rank
    chan = _channel_axis_of(model, ref, rank)
    if chan is None or axis == chan:
        return None
    return Finding(
        "non-channel-axis",
        "warning",
        f"normalises axis {p.axis[0]} of a {tuple(shape)} tensor whose channel axis is {chan}: "
        "a per-position scale, not a per-channel one: it cannot fold into the producer's output channels",
    )


def _audit_model(model: Model, decisions: dict[str, FoldDecision], tf_keras: bool, prefix: str = "") -> list[BNReport]:
    reports = []
    try:
        shapes = infer_shapes(model) if model.has_graph else {}
    except BnconvertError:
        shapes = {}
    before = None if model.has_graph else _previous_with_weights(model)
    for layer in model.layers:
        if layer.model is not None:
            reports += _audit_model(layer.model, decisions, tf_keras, f"{prefix}{layer.name}/")
            continue
        if not is_bn(layer):
            continue
        path = f"{prefix}{layer.name}"
        decision = decisions.get(path) or FoldDecision(layer.name, "stays", "not planned", scope=prefix)
        try:
            p = bn_params(layer)
        except BnconvertError as exc:
            reports.append(BNReport(path, 0, [], bn_config(layer).get("epsilon"), _input_from(model, layer, shapes, before), decision, None,
                                    [Finding("unreadable", "error", str(exc))]))
            continue
        found = findings(p, layer=layer, tf_keras=tf_keras)
        axis_finding = _axis_finding(model, layer, p, shapes)
        if axis_finding is not None:
            found.append(axis_finding)
        config = bn_config(layer)  # a TimeDistributed(BatchNormalization)'s: its inner layer's
        reports.append(BNReport(
            name=path,
            channels=p.channels,
            axis=[] if config.get("axis") is None else list(p.axis),
            epsilon=None if config.get("epsilon_assumed") else p.epsilon,
            input_from=_input_from(model, layer, shapes, before),
            fold=decision,
            params=p,
            findings=found,
            mode=p.mode,
        ))
    return reports


def _stateful(config: dict[str, Any]) -> bool:
    """A recurrent config, or a wrapper's inner one, that keeps its states between batches."""
    inner = config.get("layer")
    return bool(config.get("stateful")) or (isinstance(inner, dict) and isinstance(inner.get("config"), dict)
                                            and bool(inner["config"].get("stateful")))


def stateful_notes(model: Model) -> list[str]:
    """One note per stateful layer: bnconvert runs, checks and exports it from zero states."""
    return [f"'{path}' ({layer.source_class}) is stateful: bnconvert runs, checks and exports it from zero "
            "initial states (a freshly reset layer); states Keras carries from batch to batch are not kept"
            for path, layer, _ in model.walk() if layer.model is None and _stateful(layer.config)]


def audit(model: Model) -> AuditReport:
    """Audit every BN layer of a loaded model."""
    decisions = {d.path: d for d in plan_folds(model)}
    src = model.source
    tf_keras = src is not None and src.generation == 2
    return AuditReport(model=model, batch_norms=_audit_model(model, decisions, tf_keras))


def audit_file(path: str | os.PathLike[str], *, replacements: ReplacementsLike = None, **load_options: Any) -> dict[str, Any]:
    """Audit one file and return plain data (the ``inspect --json`` object).

    An ONNX file bnconvert wrote is no Keras model: its record says what the file's stamp tells
    (``"format": "onnx"``, ``provenance``: how it was made, the fold log, the check), and holds no
    BN statistics; an ONNX file without a stamp is refused in one line.

    A pure function of the file: no printing, no global state. Errors are raised as
    :class:`~bnconvert.errors.BnconvertError`. ``replacements`` replace Lambda and custom layers
    of the model as read (:func:`bnconvert.replace.apply_replacements`) before the audit.
    """
    try:
        model = load(path, lazy=True, **load_options)  # an audit reads BN vectors, not kernels
    except FormatError:
        onnx_record = _onnx_record(path)  # an ONNX file bnconvert wrote: its provenance
        if onnx_record is None:
            raise
        return onnx_record
    try:
        model = apply_replacements(model, replacements)
    except BnconvertError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    return audit(model).to_dict()


def _onnx_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record of an ONNX file (None when ``path`` is not one): its bnconvert stamp, read from
    the metadata without parsing the graph and with a bound on what is read (the file is data
    from anywhere, like every model file)."""
    from .onnx.save import scan_onnx
    from .provenance import MAX_PROVENANCE_CHARS, ONNX_KEY, parse_provenance

    try:
        scan = scan_onnx(path, entry_limit=MAX_PROVENANCE_CHARS + 4096)
    except (OSError, ValueError):
        return None
    if not scan.is_onnx:
        return None
    raw = [value for key, value in scan.props if key == ONNX_KEY]
    stamp, notes = parse_provenance(raw[-1] if raw else None, f"metadata entry '{ONNX_KEY}'")
    if scan.skipped:
        notes.append(f"{scan.skipped} metadata entr{'y' if scan.skipped == 1 else 'ies'} longer than "
                     f"{MAX_PROVENANCE_CHARS:,} bytes skipped unread")
    if stamp is None and not notes:
        raise FormatError(f"{path}: an ONNX model bnconvert did not write (no '{ONNX_KEY}' in its metadata): inspect "
                          "audits Keras model files, and reads how bnconvert made the ONNX files it wrote")
    log = (stamp or {}).get("fold") or {}
    return {
        "file": str(path),
        "format": "onnx",
        "keras_version": None,
        "notes": notes,
        "provenance": stamp,
        "fold_log": log.get("batch_norms", []) if isinstance(log, dict) else [],
        "batch_norms": [],  # the BN statistics are not in an export: inspect its Keras source for them
        "summary": {"batch_norms": 0, "foldable": 0, "findings": {}},
        "bnconvert_version": __version__,
    }
