"""bnconvert: read Keras model files of every generation, audit and fold BatchNormalization,
export verified ONNX. The core needs no TensorFlow.

Public API (the CLI only wraps these)::

    import bnconvert
    model = bnconvert.load("model.h5")
    report = bnconvert.audit(model)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .audit import AuditReport, BNReport, audit, audit_file
from .bn import BNParams, Finding, bn_params
from .errors import BnconvertError, EquivalenceError, FoldError, FormatError, OutputError, UnsupportedLayerError
from .fold.plan import FoldDecision, plan_folds
from .model import Layer, Model, Source, TensorRef
from .readers import load

__all__ = [
    "__version__",
    "load",
    "audit",
    "audit_file",
    "plan_folds",
    "AuditReport",
    "BNReport",
    "BNParams",
    "Finding",
    "FoldDecision",
    "bn_params",
    "Model",
    "Layer",
    "Source",
    "TensorRef",
    "BnconvertError",
    "FormatError",
    "UnsupportedLayerError",
    "FoldError",
    "EquivalenceError",
    "OutputError",
]
