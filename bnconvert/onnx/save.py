"""Validate an ONNX model and write it, with external data when it would not fit in one protobuf.

A protobuf message cannot exceed 2 GiB, so a model whose initializers come near that is written
with ONNX external data: ``OUT.onnx`` plus ``OUT.onnx.data`` beside it (``onnx.save_model(...,
save_as_external_data=True)``), and validated from the file, since the in-memory checker would
hit the same limit.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from ..errors import BnconvertError

__all__ = ["PROTOBUF_LIMIT", "EXTERNAL_DATA_ABOVE", "initializer_bytes", "validate", "validate_file", "write_model"]

PROTOBUF_LIMIT = 2**31
#: initializer bytes above which the model is written with external data (room left for the graph)
EXTERNAL_DATA_ABOVE = PROTOBUF_LIMIT - 2**28


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes held by the graph's initializers (the bulk of a model file)."""
    total = 0
    for t in model.graph.initializer:
        if t.raw_data:
            total += len(t.raw_data)
        else:
            total += onnx.numpy_helper.to_array(t).nbytes
    return total


def _invalid(exc: Exception) -> BnconvertError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BnconvertError(f"bnconvert built an ONNX graph that fails validation (a bnconvert bug, please report it): {first}")


def validate(model: onnx.ModelProto) -> None:
    """``onnx.checker`` (full check) and strict shape inference, in memory."""
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise _invalid(exc) from None


def validate_file(path: str | os.PathLike[str]) -> None:
    """The same checks on a file (works with external data and above 2 GiB)."""
    path = Path(path)
    inferred = path.with_name(path.name + ".inferred")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise _invalid(exc) from None
    finally:
        inferred.unlink(missing_ok=True)


def write_model(model: onnx.ModelProto, path: str | os.PathLike[str], *, external_data: str | None = None) -> None:
    """Write ``model`` to ``path``; with ``external_data`` (a file name beside ``path``) the
    initializers go to that file. The model object is modified by the external-data conversion."""
    if external_data is None:
        onnx.save_model(model, str(path))
        return
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=external_data, size_threshold=1024, convert_attribute=False)
