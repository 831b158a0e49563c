"""Static shape inference over a Model (batch dimension first, ``None`` where unknown).

The graph walk only: each class's output-shape rule is its catalog record's ``shape``
(:mod:`bnconvert.catalog.facts`). A class without a rule yields unknown shapes (``None``) for
its outputs, and every consumer of an unknown shape gets an unknown shape too. Nothing here
needs TensorFlow.
"""

from __future__ import annotations

import heapq
from typing import Any

from .catalog import catalog
from .catalog.facts import (
    CALL_KWARGS,
    ConfigProblem,
    Shape,
    conv_output_length,
    deconv_output_length,
)
from .model import Layer, Model, TensorRef

__all__ = ["infer_shapes", "layer_output_shapes", "Shape", "conv_output_length", "deconv_output_length"]


def layer_output_shapes(layer: Layer, shapes: list[Shape], k: int = 0) -> list[Shape | None] | None:
    """The output shapes of call ``k`` of a (non-nested) layer, from its catalog rule; None when
    the class has no rule or the rule cannot read the config (then the shapes are unknown). The
    call's keyword arguments reach the rule as ``config[CALL_KWARGS]`` (see :mod:`.catalog.facts`)."""
    record = catalog().get(layer.class_name)
    if record is None or record.shape is None:
        return None
    kwargs = layer.call_kwargs[k] if k < len(layer.call_kwargs) else None
    config = {**layer.config, CALL_KWARGS: kwargs} if kwargs else layer.config
    try:
        return [_sane(s) for s in record.shape(config, shapes)]
    except (ConfigProblem, KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError):
        return None


def _sane(shape: Any) -> Shape | None:
    """A computed shape, or None when a dimension is not an integer (a damaged config). A negative
    dimension stays (a kernel, pool or crop larger than its input): the readers refuse it, naming
    the layer, where an unknown shape would let the file through to fail later as "unsupported"."""
    if shape is None or all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in shape):
        return shape
    return None


def infer_shapes(model: Model, input_shapes: list[Shape] | None = None) -> dict[TensorRef, Shape | None]:
    """Shape of every tensor of ``model`` (top level), nested models followed through.

    ``input_shapes`` overrides the shapes the InputLayers declare (for nested models and for
    users who fix dynamic dimensions).
    """
    shapes: dict[TensorRef, Shape | None] = {}
    for i, ref in enumerate(model.inputs):
        declared = model[ref.layer].config.get("batch_shape") or model[ref.layer].config.get("batch_input_shape")
        given = input_shapes[i] if input_shapes is not None and i < len(input_shapes) else None
        shapes[ref] = tuple(given) if given is not None else (tuple(declared) if declared else None)
    # Each call runs once all its tensors are known, earliest in the config first (a heap of
    # (position, call)): linear in the graph's size, whatever the order of the config. A shared
    # layer's later call may read what its earlier call made (ReversibleEmbedding's reverse call
    # on the output of layers after its forward call). A call waiting for a tensor nobody
    # produces (or for itself) is never run.
    missing: dict[tuple[int, int], int] = {}
    waiting: dict[TensorRef, list[tuple[int, int]]] = {}
    ready: list[tuple[int, int]] = []
    for i, layer in enumerate(model.layers):
        for k, call in enumerate(layer.calls):
            need = {ref for ref in call if ref not in shapes}
            missing[i, k] = len(need)
            for ref in need:
                waiting.setdefault(ref, []).append((i, k))
            if not need:
                ready.append((i, k))
    heapq.heapify(ready)
    while ready:
        i, k = heapq.heappop(ready)
        layer = model.layers[i]
        ins = [shapes[r] for r in layer.calls[k]]
        known = [s for s in ins if s is not None]
        made: list[tuple[TensorRef, Shape | None]] = []
        if len(known) < len(ins):
            made.append((TensorRef(layer.name, k, 0), None))
        elif layer.model is not None:
            inner = infer_shapes(layer.model, known)
            made += [(TensorRef(layer.name, k, j), inner.get(out)) for j, out in enumerate(layer.model.outputs)]
        else:
            outs = layer_output_shapes(layer, known, k) or [None]
            made += [(TensorRef(layer.name, k, j), s) for j, s in enumerate(outs)]
        for ref, shape in made:
            shapes[ref] = shape
            for j in waiting.pop(ref, ()):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(ready, j)
    return shapes
