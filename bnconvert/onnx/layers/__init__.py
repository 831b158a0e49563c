"""The layer handlers, one module per family. Importing this package registers every handler in
:data:`bnconvert.onnx.registry.HANDLERS`; this list is the only place a family is enabled."""

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
    legacy,
    merge,
    misc,
    norm,
    operations,
    pooling,
    preprocessing,
    recurrent,
    reshape,
    scoring,
    sequence,
    spatial,
    tf_ops,
)

__all__ = ["activations", "array_ops", "attention", "audio", "categorical", "conv", "conv_lstm", "dense", "legacy", "merge", "misc",
           "norm", "operations", "pooling", "preprocessing", "recurrent", "reshape", "scoring", "sequence", "spatial", "tf_ops"]
