"""How files spell weights and layer names, and small config readers the stages share.

What a class's weights are (names, order, shapes from the config) is its catalog record's
``weights`` (:mod:`bnconvert.catalog`); :func:`weight_spec` is the lookup the readers and
writers use.

Keras lists a layer's weights as trainable ones first, then non-trainable ones; the records
keep that order, which is also the order of ``vars/0..N`` in a ``.keras`` zip and of
``weight_names`` in an ``.h5``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .catalog import catalog
from .catalog.facts import ConfigProblem

__all__ = [
    "weight_spec",
    "meaning_of",
    "snake_case",
    "data_format",
]

def weight_spec(class_name: str, config: dict[str, Any]) -> list[tuple[str, bool]] | None:
    """The weights of a layer as ``(meaning, trainable)`` in Keras order, or None if unknown:
    the names of its catalog record's ``weights`` (:mod:`bnconvert.catalog.facts`).

    A config that lacks a size the weight shapes need (no ``filters``) also gives None: the
    stored names then say what each weight is, and the weight check names the missing value.
    """
    record = catalog().get(class_name)
    if record is None or record.weights is None:
        return None
    try:
        return [(w.name, w.trainable) for w in record.weights(config, None)]
    except ConfigProblem:
        return None


# Names of weights as files spell them (Keras 1 suffixes included), longest first.
_ALIASES = {
    "depthwise_kernel": "depthwise_kernel",
    "pointwise_kernel": "pointwise_kernel",
    "moving_variance": "moving_variance",
    "moving_mean": "moving_mean",
    "moving_stddev": "moving_stddev",
    "renorm_mean": "renorm_mean",
    "renorm_stddev": "renorm_stddev",
    "running_mean": "moving_mean",
    "running_std": "running_std",
    "recurrent_kernel": "recurrent_kernel",
    "embeddings": "embeddings",
    "kernel": "kernel",
    "bias": "bias",
    "gamma": "gamma",
    "beta": "beta",
    "alpha": "alpha",
    "W": "kernel",
    "b": "bias",
}
_ALIAS_RE = re.compile(r"(?:^|[_/])(" + "|".join(sorted(_ALIASES, key=len, reverse=True)) + r")$")


def meaning_of(weight_name: str) -> str | None:
    """Map a stored weight name (``bn_1/gamma:0``, ``conv1_W``, ``vars/0``) to its meaning, if clear."""
    name = weight_name.split(":")[0]
    match = _ALIAS_RE.search(name)
    return _ALIASES[match.group(1)] if match else None


@functools.lru_cache(maxsize=1024)  # once per class, not once per layer (three regex passes)
def snake_case(name: str) -> str:
    """Keras' ``to_snake_case``: the name a ``.keras`` zip gives a layer's weight group."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def data_format(config: dict[str, Any]) -> str:
    """``channels_last`` or ``channels_first`` for a layer config (missing means channels_last)."""
    return "channels_first" if config.get("data_format") == "channels_first" else "channels_last"
