"""Native ONNX export: the graph is built from bnconvert's Model with ``onnx.helper``, one handler
per Keras layer class (:mod:`.registry`, :mod:`.layers`), no TensorFlow involved."""

from __future__ import annotations

from .export import DEFAULT_OPSET, OPSETS, to_onnx, to_onnx_parts
from .registry import supported_classes

__all__ = ["to_onnx", "to_onnx_parts", "supported_classes", "DEFAULT_OPSET", "OPSETS"]
