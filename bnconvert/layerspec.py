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
from dataclasses import dataclass
from typing import Any

from .catalog import catalog
from .catalog.facts import ConfigProblem
from .catalog.normalization import READ_AS
from .catalog.recurrent import CELL_CLASSES, cell_configs
from .catalog.wrappers import backward_config, inner_layer

__all__ = [
    "WeightPart",
    "data_format",
    "meaning_of",
    "snake_case",
    "weight_parts",
    "weight_spec",
    "zip_group",
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


def zip_group(class_name: str, source_class: str = "") -> str:
    """The group a ``.keras`` archive gives a layer of ``class_name`` (before its ``_N``): Keras
    snake-cases the Python class, which a few configs name otherwise (the record's
    ``extra["zip_name"]``: a GroupQueryAttention is saved as ``grouped_query_attention``). A layer
    the readers read as another class (``READ_AS``: tf.keras' SyncBatchNormalization) keeps the
    group of the class the file names, its ``source_class``."""
    if source_class in READ_AS:
        return snake_case(source_class)
    record = catalog().get(class_name)
    return (record.extra.get("zip_name") if record is not None else None) or snake_case(class_name)


def data_format(config: dict[str, Any]) -> str:
    """``channels_last`` or ``channels_first`` for a layer config (missing means channels_last)."""
    return "channels_first" if config.get("data_format") == "channels_first" else "channels_last"


#: classes that keep their weights in a ``cell`` sublayer (``.keras``: ``layers/lstm/cell/vars``)
_CELL_LAYERS = frozenset({*CELL_CLASSES, "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"})
#: the cell class of each layer class, the layer class of each cell class
_LAYER_OF_CELL = {cell: layer for layer, cell in CELL_CLASSES.items()}


@dataclass(frozen=True)
class WeightPart:
    """The share of a layer's weights one (sub)layer holds: a wrapper's inner layer, a Bidirectional's
    forward or backward layer, one cell of a stack.

    ``meanings`` are the layer's own weight names (``forward/kernel``); ``kind`` is the recurrent
    class whose layout the part has (``LSTM`` for an ``LSTMCell`` too), or the class itself;
    ``config`` is that sublayer's config; ``zip_path`` is where a ``.keras`` zip keeps its ``vars``
    group, relative to the layer's group (``""``: the layer's own ``vars``)."""

    meanings: tuple[str, ...]
    kind: str
    config: dict[str, Any]
    zip_path: str
    #: meanings another part holds that this ``vars`` group stores again, before its own
    #: (a SpectralNormalization's ``vars/0`` repeats its layer's kernel): read past, written again
    repeats: tuple[str, ...] = ()


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a and b else a or b


def _parts(class_name: str, config: dict[str, Any], prefix: str, zip_path: str) -> list[WeightPart] | None:
    if class_name == "Bidirectional":
        forward, backward = inner_layer(config), backward_config(config)
        out: list[WeightPart] = []
        for (name, cfg), meaning, group in ((forward, "forward/", "forward_layer"), (backward, "backward/", "backward_layer")):
            inner = _parts(name, cfg, prefix + meaning, _join(zip_path, group))
            if inner is None:
                return None
            out += inner
        return out
    if class_name == "TimeDistributed":
        name, cfg = inner_layer(config)
        return _parts(name, cfg, prefix, _join(zip_path, "layer"))
    if class_name == "SpectralNormalization":  # its layer's in layer/vars; its own vars: that kernel again, vector_u
        name, cfg = inner_layer(config)
        inner = _parts(name, cfg, prefix, _join(zip_path, "layer"))
        if inner is None:
            return None
        kernel = [m for part in inner for m in part.meanings if m in (f"{prefix}kernel", f"{prefix}embeddings")][:1]
        return [*inner, WeightPart((f"{prefix}vector_u",), class_name, config, zip_path, repeats=tuple(kernel))]
    spec = weight_spec(class_name, config)
    if spec is None:
        return None
    meanings = [prefix + m for m, _ in spec]
    if class_name == "RNN":
        cells = cell_configs(class_name, config)
        cell = config.get("cell")
        stacked = isinstance(cell, list) or (isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells")
        if not stacked:
            return [WeightPart(tuple(meanings), _LAYER_OF_CELL[cells[0][0]], cells[0][1], _join(zip_path, "cell"))]
        stack: list[WeightPart] = []
        counts: dict[str, int] = {}
        for i, (cell_class, cfg) in enumerate(cells):
            snake = snake_case(cell_class)
            n = counts.get(snake, 0)
            counts[snake] = n + 1
            mine = [m for m in meanings if len(cells) == 1 or m.startswith(f"{prefix}cells/{i}/")]
            stack.append(WeightPart(tuple(mine), _LAYER_OF_CELL[cell_class], cfg,
                                    _join(zip_path, f"cell/cells/{snake}" + (f"_{n}" if n else ""))))
        return stack
    sublayers = catalog()[class_name].extra.get("sublayers")
    if sublayers:  # MultiHeadAttention: query/kernel ... in query_dense/vars (the record says where)
        return [WeightPart(own, class_name, config, _join(zip_path, group)) for part, group in sublayers(config).items()
                if (own := tuple(m for m in meanings if m.startswith(f"{prefix}{part}/")))]
    group = _join(zip_path, "cell") if class_name in _CELL_LAYERS else zip_path
    return [WeightPart(tuple(meanings), class_name, config, group)]


def weight_parts(class_name: str, config: dict[str, Any]) -> list[WeightPart] | None:
    """A layer's weights split by the (sub)layers that hold them, in Keras order (their meanings
    concatenated are :func:`weight_spec`'s); None when the class or its inner layer is unknown.

    How a ``.keras`` zip nests them (checked with Keras 3.15 and tf-keras 2.21 ``model.save``):
    ``lstm/cell/vars``, ``bidirectional/forward_layer/cell/vars`` then ``backward_layer/...``,
    ``time_distributed/layer/vars``, ``rnn/cell/cells/<snake cell class>[_N]/vars`` for a
    StackedRNNCells (cells numbered by class, like layers), ``spectral_normalization/layer/vars``
    then its own ``vars`` (the layer's kernel again, then ``vector_u``: Keras 3.15). Legacy ``.h5`` files list the same
    weights flat, in this order; the Keras 1 and CuDNN layouts convert part by part."""
    try:
        return _parts(class_name, config, "", "")
    except ConfigProblem:
        return None
