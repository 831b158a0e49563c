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

Semantics (Keras 3 ``keras/src/layers/rnn/{bidirectional,time_distributed}.py``, tf.keras where
it differs):

- **Bidirectional** runs each inner layer with its own record on the same input (``initial_state``
  extra inputs: the first half the forward layer's, the second half the backward one's) and the
  same mask; Keras 3 and tf.keras force ``zero_output_for_mask = return_sequences`` on both, so
  masked steps of a returned sequence are zeros (Keras 1 and standalone Keras 2 did not: there
  they repeat each direction's previous output). The backward layer's sequence comes in processing order and is
  flipped back in time before the merge. Output masks: the input's on each returned sequence.
- **TimeDistributed** runs the inner record on the ``(N*T, *rest)`` input and reshapes back.
  Keras 3 passes each step's mask only to an inner layer whose call takes one, and its output
  mask is the input's; tf.keras computes the inner layer's mask per step (an inner Embedding or
  Masking makes one) and otherwise passes the input's mask on, reduced to ``(N, T)``. A mask
  with axes beyond time (``(N, T, T2)`` from an inner Embedding) reaches an inner layer that
  reads masks step by step, as ``(N*T, T2)``; a ``(N, T)`` mask reaching such a layer (Keras
  would hand it one ``(N,)`` slice per step) is refused rather than run without it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from .facts import ConfigProblem, Shape, ShapeRule, WeightSpec
from .record import CATALOG, CallContext, LayerRecord, Semantics, defines
from .roles import BIDIRECTIONAL, TIME_DISTRIBUTED
from .util import f64

__all__ = ["inner_layer", "inner_record", "backward_config", "sublayer", "with_masks"]


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


def sublayer(layer: Layer, name: str, class_name: str, config: dict[str, Any], prefix: str) -> Layer:
    """A wrapper's inner layer as a :class:`Layer` of its own: ``config`` and the wrapper's weights
    under ``prefix`` (without it), so the inner class's record runs it."""
    weights = {k[len(prefix):]: v for k, v in layer.weights.items() if k.startswith(prefix)}
    return Layer(f"{layer.name}/{name}" if name else layer.name, class_name, config, weights,
                 source_class=class_name)


def with_masks(ctx: CallContext, masks: list[np.ndarray | None] | None) -> CallContext:
    """``ctx`` carrying ``masks`` instead of its own."""
    return replace(ctx, masks=masks if masks and any(m is not None for m in masks) else None)


def _bidirectional_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """``Bidirectional.compute_mask``: the input's mask on each returned sequence (two with
    ``merge_mode=None``), none on states."""
    _, config = inner_layer(layer.config)
    if not config.get("return_sequences"):
        return []
    return [ctx.mask(0)] * (2 if layer.config.get("merge_mode", "concat") is None else 1)


def _merge(mode: Any, y: np.ndarray, y_rev: np.ndarray) -> list[np.ndarray]:
    if mode == "concat":
        return [np.concatenate([y, y_rev], axis=-1)]
    if mode == "sum":
        return [y + y_rev]
    if mode == "ave":
        return [(y + y_rev) / 2.0]
    if mode == "mul":
        return [y * y_rev]
    if mode is None:
        return [y, y_rev]
    raise ConfigProblem(f"merge_mode {mode!r}")


def _forces_zero_output(ctx: CallContext) -> bool:
    """Whether the Keras that wrote the file had Bidirectional force ``zero_output_for_mask``
    (to ``return_sequences``): Keras 3 and tf.keras (``2.2.4-tf`` and later, and Keras 2.4+ which
    is tf.keras) do; Keras 1 and standalone Keras 2 up to 2.3 never had the option, so their
    masked steps repeat each direction's previous output."""
    if ctx.generation != 2:
        return ctx.generation >= 3
    text = (ctx.source.keras_version if ctx.source is not None else None) or ""
    version = ctx.keras_version
    if version is None:
        return True  # no version recorded: today's tf.keras
    return version >= (2, 4) or (text.endswith("-tf") and version >= (2, 2))


def _bidirectional_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Both directions through their own records; the backward sequence flipped back in time."""
    c = layer.config
    runs: list[tuple[Semantics, Layer]] = []
    for (name, config), prefix in ((inner_layer(c), "forward/"), (backward_config(c), "backward/")):
        record = CATALOG.get(name)
        if record is None or record.call is None:
            raise UnsupportedLayerError(f"layer {layer.label}: inner class {name!r} has no float64 semantics")
        config = {**config, "zero_output_for_mask": bool(config.get("return_sequences")) and _forces_zero_output(ctx)}
        runs.append((record.call, sublayer(layer, prefix[:-1], name, config, prefix)))
    states = xs[1:]
    half = len(states) // 2
    inner_ctx = with_masks(ctx, [ctx.mask(0)])
    (forward, fwd), (backward, bwd) = runs
    fouts = forward(fwd, [xs[0], *states[:half]], inner_ctx)
    bouts = backward(bwd, [xs[0], *states[half:]], inner_ctx)
    y, y_rev = fouts[0], bouts[0]
    if fwd.config.get("return_sequences"):
        y_rev = y_rev[:, ::-1]
    return _merge(c.get("merge_mode", "concat"), y, y_rev) + fouts[1:] + bouts[1:]


def _time_distributed_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """Keras 3: the input's mask (the default ``compute_mask``). tf.keras: the inner layer's mask
    of the ``(N*T, ...)`` input, reshaped to ``(N, T, ...)``, when it makes one; else the input's
    mask reduced to ``(N, T)``."""
    mask = ctx.mask(0)
    if ctx.generation < 3:
        record, config = inner_record(layer.config)
        if record.masking == "own" and record.mask is not None:
            x = np.asarray(xs[0])
            inner = sublayer(layer, "", record.class_name, config, "")
            flat = [x.reshape(-1, *x.shape[2:])]
            flat_mask = None if mask is None else np.asarray(mask).reshape(-1, *np.shape(mask)[2:])
            (made, *_) = record.mask(inner, flat, with_masks(ctx, [flat_mask])) or [None]
            if made is not None:
                return [np.asarray(made).reshape(x.shape[0], x.shape[1], *np.shape(made)[1:])]
        if mask is not None and np.ndim(mask) > 2:
            mask = np.any(mask, axis=tuple(range(2, np.ndim(mask))))
    return [mask]


def _time_distributed_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """The inner record on every step at once: ``(N, T, *rest) -> (N*T, *rest) -> (N, T, *out)``."""
    record, config = inner_record(layer.config)
    if record.call is None:
        raise UnsupportedLayerError(f"layer {layer.label}: inner class {record.class_name!r} has no float64 semantics")
    mask = ctx.mask(0)
    if mask is not None and record.masking == "own" and np.ndim(mask) <= 2:
        raise UnsupportedLayerError(f"layer {layer.label}: a (batch, time) mask reaches the wrapped "
                                    f"{record.class_name}, which would read one step of it; bnconvert does not run that")
    x = f64(xs[0]) if xs[0].dtype.kind == "f" else np.asarray(xs[0])
    n, t = x.shape[:2]
    inner = sublayer(layer, "", record.class_name, config, "")
    # a mask with axes beyond time (an inner Embedding's, tf.keras) reaches the inner layer per step
    step_mask = np.reshape(mask, (n * t, *np.shape(mask)[2:])) if mask is not None and record.masking == "own" else None
    outs = record.call(inner, [x.reshape(n * t, *x.shape[2:])], with_masks(ctx, [step_mask]))
    return [y.reshape(n, t, *y.shape[1:]) for y in outs]


_SHAPES: dict[str, ShapeRule] = {"TimeDistributed": _time_distributed_shape, "Bidirectional": _bidirectional_shape}
defines("Bidirectional", shape=_SHAPES["Bidirectional"], weights=_bidirectional_weights, masking="own",
        mask=_bidirectional_masks, fold=BIDIRECTIONAL,
        notes="zero_output_for_mask forced to return_sequences by Keras 3 and tf.keras, not by Keras 1 or standalone "
              "Keras 2")(_bidirectional_layer)
defines("TimeDistributed", shape=_SHAPES["TimeDistributed"], weights=_time_distributed_weights, masking="own",
        mask=_time_distributed_masks, fold=TIME_DISTRIBUTED,
        notes="output mask: Keras 3 the input's; tf.keras the inner layer's own mask per step when it makes one")(
    _time_distributed_layer)
