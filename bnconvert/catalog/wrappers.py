"""Wrappers: Bidirectional and TimeDistributed, each around one inner layer given by its config.

``config["layer"]`` is the inner layer's ``{"class_name", "config"}`` (its class in the Keras
2/3 vocabulary once the readers have upgraded it); Bidirectional may also have
``config["backward_layer"]`` (Keras 2.3+/3; without it the backward layer is the forward one's
config with ``go_backwards`` flipped).

- **TimeDistributed** applies the inner layer to every step of a ``(N, T, *rest)`` input: the
  output is ``(N, T, *inner_output[1:])``. Its weights are the inner layer's, under the inner
  meanings (``kernel``, ``bias`` ...): files store them under the wrapper's name.
- **Bidirectional** runs a recurrent layer forward and a copy backward over time. Outputs: with
  ``merge_mode`` ``concat`` (the default) the two outputs side by side on the last axis; ``sum``,
  ``mul``, ``ave`` element-wise; ``None`` both, as two outputs. ``return_state`` appends the
  forward layer's states, then the backward one's. Weights: the forward layer's under
  ``forward/`` (``forward/kernel`` ...), then the backward layer's under ``backward/``.
"""

from __future__ import annotations

from typing import Any

from .facts import ConfigProblem, Shape, ShapeRule, WeightSpec
from .record import CATALOG, LayerRecord, declares

__all__ = ["inner_layer", "inner_record", "backward_config"]


def inner_layer(c: dict[str, Any], key: str = "layer") -> tuple[str, dict[str, Any]]:
    """``(class name, config)`` of a wrapper's inner layer."""
    entry = c.get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or not isinstance(entry.get("config"), dict):
        raise ConfigProblem(f"config '{key}' is not a layer config")
    return entry["class_name"], entry["config"]


def inner_record(c: dict[str, Any], key: str = "layer") -> tuple[LayerRecord, dict[str, Any]]:
    """The catalog record and config of a wrapper's inner layer."""
    name, config = inner_layer(c, key)
    record = CATALOG.get(name)
    if record is None:
        raise ConfigProblem(f"inner layer of class {name!r} is not one bnconvert knows")
    return record, config


def backward_config(c: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(class name, config)`` of a Bidirectional's backward layer."""
    if isinstance(c.get("backward_layer"), dict):
        return inner_layer(c, "backward_layer")
    name, config = inner_layer(c)
    return name, {**config, "go_backwards": not config.get("go_backwards", False)}


def _time_distributed_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    x = shapes[0]
    if len(x) < 3:
        raise ValueError(f"rank-{len(x)} input")
    record, config = inner_record(c)
    if record.shape is None:
        raise ConfigProblem(f"output shape of {record.class_name} unknown")
    return [(x[0], x[1], *out[1:]) for out in record.shape(config, [(x[0], *x[2:])])]


def _time_distributed_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    record, config = inner_record(c)
    if record.weights is None:
        raise ConfigProblem(f"weights of {record.class_name} unknown")
    step = [(shapes[0][0], *shapes[0][2:])] if shapes and isinstance(shapes[0], tuple) and len(shapes[0]) >= 3 else None
    return record.weights(config, step)


def _bidirectional_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    record, config = inner_record(c)
    if record.shape is None:
        raise ConfigProblem(f"output shape of {record.class_name} unknown")
    outs = record.shape(config, shapes)
    first, states = outs[0], outs[1:]
    mode = c.get("merge_mode", "concat")
    if mode == "concat":
        merged = [(*first[:-1], None if first[-1] is None else 2 * first[-1])]
    elif mode in ("sum", "mul", "ave"):
        merged = [first]
    elif mode is None:
        merged = [first, first]
    else:
        raise ConfigProblem(f"merge_mode {mode!r}")
    return merged + states + states if c.get("return_state") or config.get("return_state") else merged


def _bidirectional_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    record, config = inner_record(c)
    bname, bconfig = backward_config(c)
    brecord = CATALOG.get(bname)
    if record.weights is None or brecord is None or brecord.weights is None:
        raise ConfigProblem("weights of the wrapped layer unknown")
    forward = [WeightSpec(f"forward/{w.name}", w.shape, w.trainable) for w in record.weights(config, shapes)]
    backward = [WeightSpec(f"backward/{w.name}", w.shape, w.trainable) for w in brecord.weights(bconfig, shapes)]
    return forward + backward


_SHAPES: dict[str, ShapeRule] = {"TimeDistributed": _time_distributed_shape, "Bidirectional": _bidirectional_shape}
declares("TimeDistributed", "Bidirectional", module=__name__, shape=_SHAPES,
         weights={"TimeDistributed": _time_distributed_weights, "Bidirectional": _bidirectional_weights})
