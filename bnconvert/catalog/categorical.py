"""Discretization and CategoryEncoding at inference, in float64: numeric categorical layers.

**Discretization** buckets each value: its index is the number of ``bin_boundaries`` at or below
it (``boundaries[i-1] <= x < boundaries[i]``, TensorFlow's ``Bucketize``, which Keras'
``digitize`` calls). **CategoryEncoding** takes those indices (or any integer ids) as they are.
Both then encode with ``output_mode`` (Keras' ``encode_categorical_inputs``): ``int`` keeps the
index; for inputs ``(N, k)``, ``one_hot`` gives ``(N, k, depth)``, or ``(N, depth)`` when
``k == 1``; ``multi_hot`` ``(N, depth)`` with 1 where an id occurs; ``count`` how many times it
occurs. ``depth`` is ``len(bin_boundaries) + 1`` or ``num_tokens``. Integer outputs are carried
as floats, like every tensor bnconvert computes (the export casts integer inputs to float too).

**IntegerLookup** with its vocabulary in the config (Keras 3 keeps it there): an id at position
``i`` of the vocabulary becomes ``i + 1``, any other id the one out-of-vocabulary index 0, then
the same encodings with ``depth = len(vocabulary) + 1`` (``max_tokens`` with
``pad_to_max_tokens``).

Refused: sparse outputs, CategoryEncoding's ``count_weights`` input, inputs of another rank, a
Discretization that holds no boundaries (never adapted), and IntegerLookup with ``invert``, a
``mask_token``, other than one OOV index, ``tf_idf``, or a vocabulary kept outside the config.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from . import checks
from .facts import ConfigProblem, Shape, WeightSpec, no_weights
from .record import CallContext, defines
from .util import f64

__all__ = ["MODES", "boundaries", "depth", "vocabulary"]

MODES = ("int", "one_hot", "multi_hot", "count")


def boundaries(c: dict[str, Any]) -> list[float]:
    """Discretization's ``bin_boundaries`` (set by the user, or by ``adapt``)."""
    values = c.get("bin_boundaries")
    if not isinstance(values, (list, tuple)) or not all(checks.number(v) for v in values):
        raise ConfigProblem(f"config 'bin_boundaries' is {values!r}: the layer was never adapted, or they are not numbers")
    return [float(v) for v in values]


def vocabulary(c: dict[str, Any]) -> list[int]:
    """IntegerLookup's vocabulary, for the one configuration bnconvert runs (see the module)."""
    values = c.get("vocabulary")
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigProblem(f"config 'vocabulary' is {values!r}, not a list of integers (an adapted or file "
                            "vocabulary is not in the config)")
    if c.get("invert") or c.get("mask_token") is not None or c.get("num_oov_indices", 1) != 1:
        raise ConfigProblem("only invert=False, mask_token=None and num_oov_indices=1 are supported")
    return list(values)


def depth(class_name: str, c: dict[str, Any]) -> int:
    """How many categories the encoding has."""
    if class_name == "Discretization":
        return len(boundaries(c)) + 1
    if class_name == "IntegerLookup":
        tokens = c.get("max_tokens")
        return int(tokens) if c.get("pad_to_max_tokens") and checks.pos_int(tokens) else len(vocabulary(c)) + 1
    tokens = c.get("num_tokens")
    if not checks.pos_int(tokens):
        raise ConfigProblem(f"config 'num_tokens' is {tokens!r}, not a positive integer")
    return int(tokens)


def _mode(c: dict[str, Any], default: str) -> str:
    mode = c.get("output_mode", default)
    if mode not in MODES or c.get("sparse"):
        raise ConfigProblem(f"config 'output_mode' {mode!r} (sparse {bool(c.get('sparse'))}) is not one of {MODES}, dense")
    return mode


_DEFAULT = {"Discretization": "int", "CategoryEncoding": "multi_hot", "IntegerLookup": "int"}


def _shape(c: dict[str, Any], shapes: list[Shape], class_name: str) -> list[Shape]:
    """Keras' output shapes (``tf_idf`` shaped like ``count``, so that the refusal can say why)."""
    mode, x = c.get("output_mode", _DEFAULT[class_name]), shapes[0]
    if mode == "int":
        return [x]
    n = depth(class_name, c)
    if len(x) != 2:
        raise ConfigProblem(f"rank-{len(x)} input: only (batch, k) inputs are encoded")
    if mode == "one_hot" and x[1] != 1:
        return [(x[0], x[1], n)]
    return [(x[0], n)]


def encode(layer: Layer, ids: np.ndarray) -> np.ndarray:
    """``ids`` (float64 holding integers) encoded by the layer's ``output_mode``."""
    c = layer.config
    mode, n = _mode(c, _DEFAULT[layer.class_name]), depth(layer.class_name, c)
    if mode == "int":
        return ids
    if ids.ndim != 2:
        raise UnsupportedLayerError(f"layer {layer.label}: only (batch, k) inputs are encoded, got rank {ids.ndim}")
    hot = (ids[..., None] == np.arange(n)).astype(np.float64)  # (N, k, depth)
    if mode == "one_hot":
        return hot[:, 0] if ids.shape[1] == 1 else hot
    return hot.max(axis=1) if mode == "multi_hot" else hot.sum(axis=1)


#: ``output_mode`` is checked when the layer runs (a ``tf_idf`` file still reads, and says why it is refused)
_FIELDS = {"sparse": checks.boolean}


def lookup_ids(vocab: list[int], x: np.ndarray) -> np.ndarray:
    """IntegerLookup's indices: position + 1 in the vocabulary, 0 out of it."""
    hits = x[..., None] == np.asarray(vocab, np.float64)
    return np.where(hits.any(axis=-1), hits.argmax(axis=-1) + 1, 0).astype(np.float64)


def _lookup_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``tf_idf`` keeps its ``idf_weights`` as a (non-trainable) variable; other modes have none."""
    return [WeightSpec("idf_weights", trainable=False)] if c.get("output_mode") == "tf_idf" else []


@defines("Discretization", "CategoryEncoding", "IntegerLookup",
         weights={"Discretization": no_weights, "CategoryEncoding": no_weights, "IntegerLookup": _lookup_weights},
         shape={name: partial(_shape, class_name=name) for name in _DEFAULT},
         fields={"Discretization": _FIELDS, "CategoryEncoding": {**_FIELDS, "num_tokens": checks.opt(checks.pos_int)},
                 "IntegerLookup": {**_FIELDS, "invert": checks.boolean}})
def categorical_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    if len(xs) != 1:
        raise UnsupportedLayerError(f"layer {layer.label}: count_weights (a second input) is not supported")
    try:
        x = f64(xs[0])
        if layer.class_name == "Discretization":
            ids = np.searchsorted(np.asarray(boundaries(layer.config)), x, side="right").astype(np.float64)
        elif layer.class_name == "IntegerLookup":
            ids = lookup_ids(vocabulary(layer.config), x)
        else:
            ids = x
        return [encode(layer, ids)]
    except ConfigProblem as exc:
        raise UnsupportedLayerError(f"layer {layer.label}: {exc}") from None
