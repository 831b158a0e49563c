"""A layer's weights in the order Keras stores them, and the names to store them under.

Keras loads legacy ``.h5`` weights *by position* (``weight_names`` order against
``layer.trainable_weights + layer.non_trainable_weights``) and ``.keras`` weights by
``vars/<i>`` index, so the order here must be Keras' own (``layerspec.weight_spec``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import OutputError
from ..layerspec import meaning_of, weight_spec
from ..model import Layer, Model

__all__ = ["layer_arrays", "nested_arrays", "derive_name", "is_known"]


def is_known(layer: Layer) -> bool:
    """True when bnconvert knows the layer's weight list (else its stored weights are copied as is)."""
    if layer.model is not None:
        return all(is_known(sub) for sub in layer.model.layers)
    return weight_spec(layer.class_name, layer.config) is not None


def layer_arrays(layer: Layer) -> list[tuple[str, np.ndarray, bool]]:
    """``(meaning, array, trainable)`` in Keras order for a layer of a known class."""
    spec = weight_spec(layer.class_name, layer.config)
    if spec is None:
        raise OutputError(f"layer {layer.label}: bnconvert does not know the weights of class {layer.class_name}")
    missing = [m for m, _ in spec if m not in layer.weights]
    if missing:
        raise OutputError(f"layer {layer.label}: weight(s) {', '.join(missing)} missing, cannot write the layer")
    return [(m, np.asarray(layer.weights[m]), t) for m, t in spec]


def nested_arrays(model: Model) -> list[tuple[Layer, str, np.ndarray]]:
    """A nested model's weights the way legacy ``.h5`` stores them in one group: every trainable
    weight of every leaf layer (depth first, in layer order), then every non-trainable one. A
    layer or model with ``trainable: false`` makes all weights under it non-trainable."""
    leaves = list(_leaves(model, True))
    return [(lay, m, a) for lay, m, a, t in leaves if t] + [(lay, m, a) for lay, m, a, t in leaves if not t]


def _leaves(model: Model, trainable: bool) -> Iterator[tuple[Layer, str, np.ndarray, bool]]:
    for layer in model.layers:
        on = trainable and layer.config.get("trainable", True) is not False
        if layer.model is not None:
            yield from _leaves(layer.model, on)
        elif weight_spec(layer.class_name, layer.config) != []:
            for meaning, array, t in layer_arrays(layer):
                yield layer, meaning, array, on and t


def derive_name(existing: list[str], meaning: str, fallback: str) -> str:
    """The stored name for ``meaning`` following the pattern of ``existing`` names of the same layer
    (``conv/kernel:0`` -> ``conv/bias:0``, ``seq/conv/kernel`` -> ``seq/conv/bias``), else ``fallback``."""
    for name in existing:
        if meaning_of(name) == meaning:
            return name
    for name in existing:
        base, colon, suffix = name.partition(":")
        head, _, last = base.rpartition("/")
        if meaning_of(last) is not None and last in _TOKENS:
            return f"{head}/{meaning}{colon}{suffix}" if head else f"{meaning}{colon}{suffix}"
    return fallback


_TOKENS = frozenset({
    "kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "depthwise_kernel",
    "pointwise_kernel", "moving_stddev", "renorm_mean", "renorm_stddev",
})
