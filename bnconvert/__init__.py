"""bnconvert: read Keras model files of every generation, audit and fold BatchNormalization,
export ONNX that is checked against the original. The core needs no TensorFlow.

The public API (the ``bnconvert`` command only wraps it)::

    import bnconvert

    model = bnconvert.load("model.h5")                  # any Keras generation -> Model
    report = bnconvert.audit(model)                     # every BN: parameters, fold, findings
    folded, fold_report = bnconvert.fold_model(model)   # a new Model, BN folded where exact
    bnconvert.fold_file("model.h5", "model.folded.h5")  # read, fold, write, check
    bnconvert.export_file("model.h5", "model.onnx")     # read, fold, export, check
    result = bnconvert.verify("model.h5", "model.onnx") # truthy when equivalent

    # a Lambda (never run) replaced by what it computes; a custom class registered by its user
    bnconvert.export_file("carnd.h5", "carnd.onnx",
                          replacements={"lambda": {"class_name": "Rescaling", "config": {"scale": 1 / 255, "offset": -0.5}}})
    bnconvert.register_layer("ScaleShift", call=..., shape=..., weights=..., onnx=...)

Heavy modules (onnx, onnxruntime, the checks) load on first use of the names that need them,
so ``import bnconvert`` and ``bnconvert inspect`` stay fast; TensorFlow loads only when Keras
is run as a reference.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .audit import AuditReport, BNReport, audit, audit_file
from .bn import BNParams, Finding, bn_params
from .errors import (
    BnconvertError,
    EquivalenceError,
    FoldError,
    FormatError,
    InvalidWeightsError,
    OutputError,
    UnsupportedLayerError,
)
from .fold import BNOutcome, FoldDecision, FoldReport, fold_model, plan_folds
from .fold.kernels import fold_backward, fold_bn, fold_forward
from .model import Layer, Model, Source, TensorRef
from .readers import LoadOptions, load

#: name -> module that defines it, imported on first access (PEP 562)
_LAZY = {
    "fold_file": "bnconvert.pipeline",
    "write_model": "bnconvert.writers",
    "to_onnx": "bnconvert.onnx",
    "export_file": "bnconvert.pipeline",
    "ExportReport": "bnconvert.pipeline",
    "verify": "bnconvert.pipeline",
    "CheckOptions": "bnconvert.pipeline",
    "check_written": "bnconvert.check",
    "check_export": "bnconvert.check",
    "VerifyResult": "bnconvert.check",
    "CheckResult": "bnconvert.check",
    "CompareResult": "bnconvert.check",
    "Replacement": "bnconvert.replace",
    "apply_replacements": "bnconvert.replace",
    "register_layer": "bnconvert.custom",
    "unregister_layer": "bnconvert.custom",
    "registered_layers": "bnconvert.custom",
    "load_plugin": "bnconvert.custom",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .check import CheckResult, CompareResult, VerifyResult, check_export, check_written
    from .custom import load_plugin, register_layer, registered_layers, unregister_layer
    from .onnx import to_onnx
    from .pipeline import CheckOptions, ExportReport, export_file, fold_file, verify
    from .replace import Replacement, apply_replacements
    from .writers import write_model


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bnconvert' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "__version__",
    # read
    "load",
    "LoadOptions",
    "Model",
    "Layer",
    "Source",
    "TensorRef",
    # BN parameters and audit
    "BNParams",
    "bn_params",
    "Finding",
    "audit",
    "audit_file",
    "AuditReport",
    "BNReport",
    # fold
    "plan_folds",
    "FoldDecision",
    "fold_model",
    "fold_file",
    "FoldReport",
    "BNOutcome",
    "fold_bn",
    "fold_backward",
    "fold_forward",
    "write_model",
    # export
    "to_onnx",
    "export_file",
    "ExportReport",
    # verify
    "verify",
    "check_written",
    "check_export",
    "VerifyResult",
    "CheckResult",
    "CheckOptions",
    "CompareResult",
    # Lambda and custom layers: replace, never run; the user's own classes
    "Replacement",
    "apply_replacements",
    "register_layer",
    "unregister_layer",
    "registered_layers",
    "load_plugin",
    # errors
    "BnconvertError",
    "FormatError",
    "UnsupportedLayerError",
    "FoldError",
    "InvalidWeightsError",
    "EquivalenceError",
    "OutputError",
]
