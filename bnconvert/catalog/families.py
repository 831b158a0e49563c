"""The catalog's family modules: importing this module registers every record in
:data:`bnconvert.catalog.record.CATALOG`; this list is the only place a family is enabled."""

from __future__ import annotations

from . import (
    activations,
    array_ops,
    attention,
    audio,
    categorical,
    conv,
    conv_lstm,
    dense,
    legacy_layers,
    merge,
    misc,
    normalization,
    operations,
    pooling,
    preprocessing,
    recurrent,
    reshape,
    scoring,
    spatial,
    tf_ops,
    wrappers,
)

__all__ = ["activations", "array_ops", "attention", "audio", "categorical", "conv", "conv_lstm", "dense", "legacy_layers",
           "merge", "misc", "normalization", "operations", "pooling", "preprocessing", "recurrent", "reshape", "scoring", "spatial",
           "tf_ops", "wrappers"]
