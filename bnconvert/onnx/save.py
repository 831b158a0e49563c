"""Turn the exporter's graph and weights into ONNX: a ``ModelProto`` in memory, or a file written
straight from the numpy arrays, with external data when it would not fit in one protobuf.

The exporter keeps weights as numpy arrays (``{name: array}``) beside a ``ModelProto`` whose graph
has no initializers yet. :func:`add_initializers` puts them into the proto (for :func:`to_onnx`
callers). :func:`write_onnx` never does: it writes the proto, then each initializer as one more
``graph.initializer`` entry encoded by hand from the array's buffer. Protobuf merges repeated
occurrences of an embedded message field (``ModelProto.graph``, field 7) and concatenates the
repeated fields inside (``GraphProto.initializer``, field 5), so the file is the same model
``onnx.save`` would write, without the three copies of every weight that building, copying and
serialising a full ``ModelProto`` costs.

The same merge rule makes :func:`stamp_onnx` cheap: ``ModelProto.metadata_props`` (field 14) is a
repeated field, so appending one serialised ``ModelProto`` holding only metadata entries to a
written file adds them without reading or re-serialising the weights; :func:`read_metadata_props`
reads them back by walking the file's top-level fields and skipping the rest (``graph`` entries)
with a seek.

A protobuf message cannot exceed 2 GiB, so a model whose initializers come near that is written
with ONNX external data: ``OUT.onnx`` (graph, small tensors) plus ``OUT.onnx.data`` beside it, each
floating-point tensor of 1 KiB or more at a 4 KiB-aligned offset (``location``/``offset``/``length``, the ONNX external-data
convention), written from the arrays one at a time. The graph is validated before anything is
written (:func:`validate_parts`: the checker and strict shape inference need the weights' types
and shapes, not their bytes), which works for any size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import BnconvertError, InternalError

__all__ = [
    "PROTOBUF_LIMIT",
    "EXTERNAL_DATA_ABOVE",
    "constants_bytes",
    "initializer_bytes",
    "tensor_header",
    "add_initializers",
    "validate",
    "validate_parts",
    "validate_file",
    "write_onnx",
    "stamp_onnx",
    "read_metadata_props",
    "scan_onnx",
    "OnnxScan",
]

PROTOBUF_LIMIT = 2**31
#: initializer bytes above which the model is written with external data (room left for the graph)
EXTERNAL_DATA_ABOVE = PROTOBUF_LIMIT - 2**28
#: tensors smaller than this stay in the ``.onnx`` file when the rest goes to external data
_INLINE_BELOW = 1024
_ALIGN = 4096

# protobuf wire tags (field number << 3 | wire type 2, length-delimited)
_MODEL_GRAPH = b"\x3a"  # ModelProto.graph = 7
_GRAPH_INITIALIZER = b"\x2a"  # GraphProto.initializer = 5
_TENSOR_RAW_DATA = b"\x4a"  # TensorProto.raw_data = 9
_MODEL_METADATA_PROPS = 14  # ModelProto.metadata_props (repeated StringStringEntryProto)
_MODEL_IR_VERSION = 1  # ModelProto.ir_version (varint)
_MODEL_GRAPH_FIELD = 7  # ModelProto.graph


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _little_endian(arr: np.ndarray) -> np.ndarray:
    """``arr`` C-contiguous and little-endian (ONNX raw data), copied only when it is not."""
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    # not np.ascontiguousarray, which turns a 0-d array (a Gather's scalar index) into a 1-d one
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def constants_bytes(constants: Mapping[str, np.ndarray]) -> int:
    """Bytes the exporter's initializer arrays will take in the file."""
    return sum(int(a.nbytes) for a in constants.values())


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes held by a ``ModelProto``'s initializers (the bulk of a model file)."""
    total = 0
    for t in model.graph.initializer:
        if t.raw_data:
            total += len(t.raw_data)
        else:
            total += onnx.numpy_helper.to_array(t).nbytes
    return total


def tensor_header(name: str, arr: np.ndarray) -> TensorProto:
    """A TensorProto with the name, type and dims of ``arr`` and no data yet."""
    dtype = np.asarray(arr).dtype
    t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(dtype.newbyteorder("=")))
    t.dims.extend(int(d) for d in np.shape(arr))
    return t


def add_initializers(model: onnx.ModelProto, constants: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """Put the arrays into ``model.graph.initializer`` as raw data (in place; returns ``model``)."""
    for name, arr in constants.items():
        t = model.graph.initializer.add()
        t.CopyFrom(tensor_header(name, arr))
        t.raw_data = _little_endian(arr).tobytes()
    return model


def _external(arr: np.ndarray) -> bool:
    """Whether a tensor goes to external data: floating point weights of 1 KiB or more."""
    arr = np.asarray(arr)
    return arr.dtype.kind == "f" and arr.nbytes >= _INLINE_BELOW


def _write_tensor(fh: BinaryIO, header: TensorProto, data: np.ndarray | None) -> None:
    """One ``graph.initializer`` entry appended to a serialised ModelProto (``data`` as raw data)."""
    head = header.SerializeToString()
    raw = b"" if data is None else _TENSOR_RAW_DATA + _varint(data.nbytes)
    tensor_len = len(head) + len(raw) + (0 if data is None else data.nbytes)
    entry = _GRAPH_INITIALIZER + _varint(tensor_len)
    fh.write(_MODEL_GRAPH + _varint(len(entry) + tensor_len))
    fh.write(entry)
    fh.write(head)
    if data is not None:
        fh.write(raw)
        fh.write(data.reshape(-1).data.cast("B"))


def write_onnx(
    model: onnx.ModelProto,
    constants: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    external_data: str | None = None,
) -> None:
    """Write ``model`` (a graph without initializers) and ``constants`` as its initializers.

    With ``external_data`` (a file name beside ``path``) every floating-point tensor of 1 KiB or
    more goes to that file instead, 4 KiB-aligned. Each array is read once, straight into the file
    (an array that is a transposed view is made contiguous one tensor at a time).
    """
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
        if external_data is None:
            for name, arr in constants.items():
                data = _little_endian(arr)
                _write_tensor(fh, tensor_header(name, data), data)
            return
        with open(path.parent / external_data, "wb") as side:
            offset = 0
            for name, arr in constants.items():
                data = _little_endian(arr)
                header = tensor_header(name, data)
                if not _external(data):
                    _write_tensor(fh, header, data)
                    continue
                offset = -(-offset // _ALIGN) * _ALIGN
                side.seek(offset)
                side.write(data.reshape(-1).data.cast("B"))
                header.data_location = TensorProto.EXTERNAL
                for key, value in (("location", external_data), ("offset", str(offset)), ("length", str(data.nbytes))):
                    entry = header.external_data.add()
                    entry.key, entry.value = key, value
                _write_tensor(fh, header, None)
                offset += data.nbytes


def _invalid(exc: Exception) -> BnconvertError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BnconvertError(f"bnconvert built an ONNX graph that fails validation (a bnconvert bug, please report it): {first}")


def validate(model: onnx.ModelProto | bytes) -> None:
    """``onnx.checker`` with ``full_check`` (which includes strict shape inference with type
    checks), in memory."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise _invalid(exc) from None


def validate_parts(model: onnx.ModelProto, constants: Mapping[str, np.ndarray]) -> None:
    """:func:`validate` on ``model`` with ``constants`` as its initializers, without the weights'
    bytes: a floating-point weight of 1 KiB or more is declared as a graph input of the same type
    and shape instead (the checker and shape inference need its type and shape, never its
    values); smaller tensors (shapes, pads, axes, scalars) go in as real initializers, since shape
    inference reads them. Any size, in milliseconds."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    for name, arr in constants.items():
        if _external(arr):
            t = tensor_header(name, arr)
            light.graph.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
        else:
            t = light.graph.initializer.add()
            t.CopyFrom(tensor_header(name, arr))
            t.raw_data = _little_endian(arr).tobytes()
    validate(light)


def validate_file(path: str | os.PathLike[str]) -> None:
    """The same check on a file (works with external data and above 2 GiB)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise _invalid(exc) from None


# -- metadata appended in place ---------------------------------------------------------------------

def _read_varint(fh: BinaryIO) -> int | None:
    """A varint from the file (None at a clean end of file)."""
    shift = result = 0
    while True:
        byte = fh.read(1)
        if not byte:
            if shift:
                raise ValueError("the file ends inside a varint")
            return None
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


@dataclass
class OnnxScan:
    """What the top level of a file holds, read without parsing the graph (:func:`scan_onnx`)."""

    #: ``ModelProto.ir_version`` (field 1), None when absent
    ir_version: int | None = None
    #: whether a ``graph`` (field 7) is present
    graph: bool = False
    #: the ``metadata_props`` entries in file order (duplicates kept)
    props: list[tuple[str, str]] = field(default_factory=list)
    #: metadata entries longer than the limit, skipped unread
    skipped: int = 0

    @property
    def is_onnx(self) -> bool:
        return self.ir_version is not None and self.ir_version > 0 and self.graph


def scan_onnx(path: str | os.PathLike[str], *, entry_limit: int | None = None) -> OnnxScan:
    """The top-level fields of an ONNX file, each skipped by its length except ``ir_version``
    (field 1) and ``metadata_props`` (field 14): the metadata of a model of any size, read in a
    few reads. ``entry_limit``: metadata entries longer than this many bytes are skipped unread
    (counted in ``skipped``): a file from elsewhere cannot make this allocate its size. Raises
    ValueError when the file is not a well-formed protobuf at its top level."""
    out = OnnxScan()
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        while True:
            tag = _read_varint(fh)
            if tag is None:
                return out
            field_number, wire = tag >> 3, tag & 7
            if wire == 0:
                value = _read_varint(fh)
                if value is None:
                    raise ValueError("the file ends inside a field")
                if field_number == _MODEL_IR_VERSION:
                    out.ir_version = value
                continue
            if wire in (1, 5):
                fh.seek(8 if wire == 1 else 4, 1)
                continue
            if wire != 2:
                raise ValueError(f"unexpected wire type {wire} at the top level")
            length = _read_varint(fh)
            if length is None or fh.tell() + length > size:
                raise ValueError("a field runs past the end of the file")
            out.graph = out.graph or field_number == _MODEL_GRAPH_FIELD
            if field_number != _MODEL_METADATA_PROPS or (entry_limit is not None and length > entry_limit):
                out.skipped += field_number == _MODEL_METADATA_PROPS
                fh.seek(length, 1)
                continue
            entry = onnx.StringStringEntryProto()
            entry.ParseFromString(fh.read(length))
            out.props.append((entry.key, entry.value))


def read_metadata_props(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The ``metadata_props`` entries of an ONNX file, in file order (duplicates kept), read
    without parsing the graph (:func:`scan_onnx`). Raises ValueError when the file is not a
    well-formed protobuf at its top level."""
    return scan_onnx(path).props


def stamp_onnx(path: str | os.PathLike[str], props: Mapping[str, str]) -> None:
    """Append ``props`` to the ``metadata_props`` of the ONNX file at ``path``, in place, without
    rewriting it (a few bytes appended, whatever the size of the model; external data untouched).

    A key the file already holds is a bnconvert bug (InternalError): protobuf would keep both
    entries and ``onnx.checker`` refuses duplicate metadata keys. Values must be text.
    """
    try:
        present = {key for key, _ in read_metadata_props(path)}
    except ValueError as exc:
        raise InternalError(f"{path}: the ONNX file bnconvert wrote cannot be stamped ({exc})") from None
    twice = sorted(set(props) & present)
    if twice:
        raise InternalError(f"{path}: metadata key(s) {', '.join(map(repr, twice))} already in the file; "
                            "each key is written once")
    for key, value in props.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InternalError(f"metadata entry {key!r}: keys and values must be text")
    stamp = onnx.ModelProto()
    for key, value in props.items():
        entry = stamp.metadata_props.add()
        entry.key, entry.value = key, value
    with open(path, "ab") as fh:
        fh.write(stamp.SerializeToString())
