"""``.keras`` zips: Keras 3 and tf.keras 2.13+ (``config.json``, ``metadata.json``, ``model.weights.h5``).

Weight groups are named by layer *class and creation order*, not by layer name
(``layers/batch_normalization_2/vars/0``). Keras 3 numbers each class 0, 1, 2...; tf.keras 2.13-2.15
(and tf-keras after it) walks ``_layer_checkpoint_dependencies``, which lists every layer that has
weights twice, so those advance the class counter by two (``conv2d``, ``conv2d_2``, ``conv2d_4``...).

A layer whose weights belong to sublayers keeps them in their groups: a recurrent layer's in its
``cell``, a Bidirectional's under ``forward_layer``/``backward_layer``, a TimeDistributed's under
``layer``, a stack of cells' under ``cell/cells/<cell class>[_N]``
(:func:`~bnconvert.layerspec.weight_parts` says where); a layer of a class bnconvert does not
know keeps every sublayer's weights under their paths (a MultiHeadAttention's ``query_dense/0``).
"""

from __future__ import annotations

import bz2
import io
import lzma
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h5py
import numpy as np

from ..errors import FormatError
from ..layerspec import weight_parts, zip_group
from ..model import Model, Source
from ..provenance import MAX_PROVENANCE_CHARS, ZIP_ENTRY, ignored_note, parse_provenance
from .fields import check_fields
from .graph import build_model
from .h5 import MAX_CONFIG_CHARS, parse_config
from .h5guard import Budget, child, precheck, read_array
from .weights import assign

__all__ = ["MAX_MEMBER_BYTES", "MAX_RATIO", "check_members", "open_weights", "read_zip"]

#: Refuse a weights member that would inflate past this, and JSON members past MAX_CONFIG_CHARS.
MAX_MEMBER_BYTES = 4 * 1024**3
#: Keras stores members uncompressed; a compressed member may inflate at most this many times
#: (above ``_SMALL`` bytes, which inflate in milliseconds whatever the ratio).
MAX_RATIO = 100
_SMALL = 16 * 1024**2
_MEMBERS = {"config.json", "metadata.json", "model.weights.h5"}
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_READ_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError,
                zlib.error, lzma.LZMAError, OverflowError)
_VAR = re.compile(r"[0-9]{1,6}")
#: a variable a layer saved by name (``save_own_variables``), never a number
_NAMED_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_WALK = 100_000
#: a sublayer group name Keras writes (snake case class names, numbered)
_VAR_NAME = re.compile(r"[A-Za-z0-9_]{1,200}")


def check_members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Every entry's name, size and method checked from the central directory, before any
    byte is decompressed: absolute or parent paths, duplicates, encryption, zip bombs."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in name or "\x00" in name:
            raise FormatError(f"zip entry '{name}' has an absolute or parent path; refused")
        if name in members:
            raise FormatError(f"zip entry '{name}' appears twice (which one is real?); refused")
        members[name] = info
        if name not in _MEMBERS:
            continue  # never read: assets/, variables/ ... only their names are checked
        if info.flag_bits & 0x1:
            raise FormatError(f"zip entry '{name}' is encrypted; refused")
        if info.compress_type not in _METHODS:
            raise FormatError(f"zip entry '{name}' uses unsupported compression method {info.compress_type}")
        limit = MAX_MEMBER_BYTES if name == "model.weights.h5" else MAX_CONFIG_CHARS
        if info.file_size > limit:
            raise FormatError(f"zip entry '{name}' would inflate to {info.file_size:,} bytes (limit {limit:,}); refused")
        if info.file_size > _SMALL and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise FormatError(f"zip entry '{name}' would inflate {info.file_size / max(info.compress_size, 1):,.0f} times "
                              f"(from {info.compress_size:,} to {info.file_size:,} bytes: a zip bomb?); refused")
    return members


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, inflated in chunks and never past its declared size, whatever the method.

    zipfile hands a whole chunk of compressed input to bzip2 and LZMA without an output bound, and
    a few hundred bytes of either can hold a gigabyte: here every decompressor is asked for at most
    one byte more than the header declares, and the member is refused as soon as it gives more.
    """
    name = info.filename
    try:
        fp = zf.fp
        if fp is None:
            raise FormatError(f"zip entry '{name}' cannot be read (the archive is closed)")
        fp.seek(info.header_offset)
        head = fp.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise FormatError(f"zip entry '{name}' has no local header where the directory says; damaged archive")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        if fp.read(name_len) != _header_name(info):
            raise FormatError(f"zip entry '{name}': its local header names a different file; refused")
        fp.seek(extra_len, 1)
        data = _inflate(fp, info)
    except _READ_ERRORS + (lzma.LZMAError, zlib.error, OSError, struct.error, MemoryError) as exc:
        raise FormatError(f"zip entry '{name}' cannot be read ({exc})") from None
    if zlib.crc32(data) != info.CRC:
        raise FormatError(f"zip entry '{name}' is damaged (its CRC-32 does not match)")
    return data


def _header_name(info: zipfile.ZipInfo) -> bytes | None:
    try:
        return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
    except UnicodeEncodeError:
        return None


_CHUNK = 1 << 20


def _decompressor(method: int, fp: Any, left: int, limit: int) -> tuple[Any, int]:
    """A decompressor for ``method`` taking ``decompress(data, max_length)``, and the compressed
    bytes left after its own header (LZMA's properties). ``limit`` is the declared size."""
    if method == zipfile.ZIP_DEFLATED:
        return zlib.decompressobj(-15), left
    if method == zipfile.ZIP_BZIP2:
        return bz2.BZ2Decompressor(), left
    # LZMA in a zip: 2 bytes of version, 2 of properties size, then the LZMA1 properties
    # (lc/lp/pb in one byte, the dictionary size in four)
    head = fp.read(4)
    if len(head) != 4 or left < 4:
        raise EOFError("the LZMA header is cut short")
    size = struct.unpack("<H", head[2:4])[0]
    props = fp.read(size)
    if size != 5 or len(props) != 5 or left < 4 + size:
        raise lzma.LZMAError("unexpected LZMA properties")
    bits, dict_size = props[0], int.from_bytes(props[1:5], "little")
    if bits >= 9 * 5 * 5:
        raise lzma.LZMAError("invalid LZMA properties")
    # no match reaches further back than the member's declared size: a larger dictionary would
    # only make liblzma allocate it (4 GiB for a 4-byte field)
    dict_size = max(min(dict_size, limit), 4096)
    lzma1 = {"id": lzma.FILTER_LZMA1, "lc": bits % 9, "lp": bits // 9 % 5, "pb": bits // 45, "dict_size": dict_size}
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1]), left - 4 - size


def _inflate(fp: Any, info: zipfile.ZipInfo) -> bytes:
    """The member's data (the file positioned at it), at most its declared size."""
    name, limit, left = info.filename, info.file_size, info.compress_size
    if info.compress_type == zipfile.ZIP_STORED:
        if left != limit:
            raise FormatError(f"zip entry '{name}' does not have the size its header declares")
        data = fp.read(limit)
        if len(data) != limit:
            raise FormatError(f"zip entry '{name}' is cut short (the archive is truncated)")
        return data
    dec, left = _decompressor(info.compress_type, fp, left, limit)
    chunks: list[bytes] = []
    produced = 0
    while not dec.eof:
        if left <= 0:
            raise FormatError(f"zip entry '{name}' is cut short (its compressed data ends early)")
        data = fp.read(min(_CHUNK, left))
        if not data:
            raise FormatError(f"zip entry '{name}' is cut short (the archive is truncated)")
        left -= len(data)
        # at most one byte past the declared size: an output shorter than that means the
        # decompressor has used all its input, so the next round feeds it more
        piece = dec.decompress(data, limit - produced + 1)
        produced += len(piece)
        if produced > limit:
            raise FormatError(f"zip entry '{name}' inflates to more than the size its header declares "
                              f"({limit:,} bytes): a zip bomb?; refused")
        chunks.append(piece)
    if produced != limit:
        raise FormatError(f"zip entry '{name}' does not have the size its header declares")
    return b"".join(chunks)


def read_zip(path: str, zf: zipfile.ZipFile) -> Model:
    """Read a ``.keras`` zip (already open) into a Model."""
    members = check_members(zf)
    missing = [m for m in ("config.json", "model.weights.h5") if m not in members]
    if missing:
        extra = " (sharded or .npz weights are not supported)" if any(m.endswith((".npz", ".json")) for m in members if m not in _MEMBERS) else ""
        raise FormatError(f"not a Keras .keras archive: missing {', '.join(missing)}{extra}")
    config = parse_config(_read(zf, members["config.json"]).decode("utf-8", errors="replace"), "config.json")
    metadata: dict[str, Any] = {}
    if "metadata.json" in members:
        metadata = parse_config(_read(zf, members["metadata.json"]).decode("utf-8", errors="replace"), "metadata.json")
    version = metadata.get("keras_version") if isinstance(metadata.get("keras_version"), str) else None
    gen = 3 if (version or "3").startswith("3") else 2
    source = Source(
        path=path,
        format="keras3-zip" if gen == 3 else "tfkeras-zip",
        keras_version=version,
        backend=None,
        backend_origin="not recorded (.keras archives are backend-independent)",
        config=config,
    )
    if ZIP_ENTRY in members:
        source.provenance, notes = _stamp(zf, members[ZIP_ENTRY])
        source.notes += notes
    model = build_model(config, where="config.json")
    check_fields(model)
    model.source = source
    blob = _read(zf, members["model.weights.h5"])
    if not blob.startswith(b"\x89HDF\r\n\x1a\n"):
        raise FormatError("model.weights.h5 inside the archive is not an HDF5 file")
    precheck(blob, "model.weights.h5")
    try:
        with open_weights(blob) as f:
            where = "model.weights.h5"
            container = "layers" if gen == 3 else "_layer_checkpoint_dependencies"
            if child(f, container, where) is None and gen == 2 and child(f, "layers", where) is not None:
                container = "layers"  # tf-keras versions that adopted the Keras 3 layout
            root = child(f, container, where)
            if root is not None and not isinstance(root, h5py.Group):
                raise FormatError(f"model.weights.h5: '{container}' is not a group")
            _attach(model, root, container, Budget(len(blob), mapping=blob), double=container == "_layer_checkpoint_dependencies")
    except (OSError, RuntimeError) as exc:
        raise FormatError(f"model.weights.h5 inside the archive is damaged ({exc})") from None
    return model


def _stamp(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[dict[str, Any] | None, list[str]]:
    """The provenance stamp (``bnconvert.json``), checked, and its notes: a stamp that is too
    large, encrypted, compressed oddly or damaged is ignored with a note, never an error."""
    where = f"archive entry '{ZIP_ENTRY}'"
    if info.flag_bits & 0x1:
        return None, [ignored_note(where, "it is encrypted")]
    if info.compress_type not in _METHODS:
        return None, [ignored_note(where, f"it uses compression method {info.compress_type}")]
    if info.file_size > MAX_PROVENANCE_CHARS:
        return None, [ignored_note(where, f"it is {info.file_size:,} bytes long (limit {MAX_PROVENANCE_CHARS:,})")]
    try:
        data = _read(zf, info)
    except FormatError as exc:
        return None, [ignored_note(where, str(exc).removeprefix(f"zip entry '{ZIP_ENTRY}' "))]
    return parse_provenance(data, where)


@contextmanager
def open_weights(blob: bytes) -> Iterator[h5py.File]:
    """An archive's ``model.weights.h5``, opened read-only, as Keras lays it out on Linux.

    Keras 3 before the fix of keras-team/keras#18528 (and keras_core) built the group paths with
    ``os.path.join``, so an archive saved on Windows holds root groups literally named
    ``layers\\conv1d`` and ``layers\\sequential\\layers\\dense`` (each with its ``vars``), and
    neither Keras finds its weights on loading. For such a file, a private in-memory copy gets a
    hard link at each group's ``/`` path (``layers/conv1d``), so the readers and the writer see the
    usual layout; the file given is never changed, and a fold of it writes the usual layout."""
    with h5py.File(io.BytesIO(blob), "r") as f:
        windows = [name for name in f if "\\" in name]
        if not windows:
            yield f
            return
    with h5py.File(io.BytesIO(blob), "r+") as f:  # a copy of the bytes: the input stays as it is
        where = "model.weights.h5 (saved on Windows)"
        for name in windows:
            target = "/".join(part for part in name.split("\\") if part)
            found = child(f, name, where)  # a hard link, or refused
            if found is None or not target or f.get(target, getlink=True) is not None:
                continue  # a link at the '/' path already: the file has both layouts, keep its own
            parent = target.rpartition("/")[0]
            try:
                if parent:
                    f.require_group(parent)
                f[target] = found
            except (TypeError, ValueError, KeyError, OSError):  # a dataset (or a link) where a group must go
                raise FormatError(f"{where}: '{name}' cannot be placed at '{target}'") from None
        yield f


def _has_data(group: h5py.Group | None, where: str) -> bool:
    """True when any dataset lies under ``group`` (hard links only, bounded walk)."""
    if group is None:
        return False
    stack, seen = [(group, 0)], 0
    while stack:
        g, depth = stack.pop()
        for key in g:
            seen += 1
            if seen > _MAX_WALK or depth > 32:
                raise FormatError(f"{where}: the weight group is implausibly large or deep; refused")
            obj = child(g, key, where)
            if isinstance(obj, h5py.Dataset):
                return True
            if isinstance(obj, h5py.Group):
                stack.append((obj, depth + 1))
    return False


def _vars(group: h5py.Group | None, where: str, budget: Budget) -> list[tuple[str, np.ndarray]]:
    if group is None:
        return []
    vars_group = child(group, "vars", where)
    if vars_group is None:
        return []
    if not isinstance(vars_group, h5py.Group):
        raise FormatError(f"{where}: 'vars' is not a group")
    keys = list(vars_group.keys())
    if keys and all(_NAMED_VAR.fullmatch(k) for k in keys):
        # a layer's own save_own_variables stores some by name (IntegerLookup in tf_idf mode:
        # vars/idf_weights): read in name order; the catalog's weight list says what they are
        named = []
        for k in sorted(keys):
            dset = child(vars_group, k, where)
            if not isinstance(dset, h5py.Dataset):
                raise FormatError(f"{where}: vars/{k} is not a dataset")
            named.append((f"vars/{k}", read_array(dset, f"{where}: vars/{k}", budget)))
        return named
    if not all(_VAR.fullmatch(k) for k in keys):
        raise FormatError(f"{where}: unexpected entries in vars: {', '.join(repr(k) for k in keys[:5])}")
    if sorted(int(k) for k in keys) != list(range(len(keys))):
        raise FormatError(f"{where}: vars are not numbered 0..{len(keys) - 1}: {', '.join(sorted(keys, key=int)[:8])}")
    out = []
    for k in sorted(keys, key=int):
        dset = child(vars_group, k, where)
        if not isinstance(dset, h5py.Dataset):
            raise FormatError(f"{where}: vars/{k} is not a dataset")
        out.append((f"vars/{k}", read_array(dset, f"{where}: vars/{k}", budget)))
    return out


def _attach(model: Model, container: h5py.Group | None, name: str, budget: Budget, *, double: bool) -> None:
    counts: dict[str, int] = {}
    for layer in model.layers:
        snake = zip_group(layer.class_name, layer.source_class)
        index = counts.get(snake, 0)
        path = snake if index == 0 else f"{snake}_{index}"
        where = f"layer {layer.label} (weights at {name}/{path})"
        group = child(container, path, where) if container is not None and snake else None
        if group is not None and not isinstance(group, h5py.Group):
            raise FormatError(f"model.weights.h5: '{name}/{path}' is not a group")
        counts[snake] = index + (2 if double and _has_data(group, where) else 1)
        if layer.model is not None:
            inner = child(group, name, where) if group is not None else None
            if inner is not None and not isinstance(inner, h5py.Group):
                raise FormatError(f"{where}: '{name}' is not a group")
            _attach(layer.model, inner, name, budget, double=double)
            continue
        parts = weight_parts(layer.class_name, layer.config)
        if parts is not None:  # sublayers hold them: lstm/cell, bidirectional/forward_layer/cell ...
            named = []
            for part in parts:
                sub = _subgroup(group, part.zip_path, where) if group is not None else None
                own = _vars(sub, where, budget)[len(part.repeats):]  # past what another part holds (repeats)
                named += [(f"{part.zip_path}/{n}" if part.zip_path else n, a) for n, a in own]
        else:  # a class bnconvert does not know: its own vars and its sublayers' (MultiHeadAttention's query_dense ...)
            named = _nested_vars(group, where, budget)
        assign(layer, named)


def _nested_vars(group: h5py.Group | None, where: str, budget: Budget) -> list[tuple[str, np.ndarray]]:
    """The ``vars`` of ``group`` and of every sublayer group under it (bounded walk, sorted by
    path), named ``vars/<i>`` and ``<sublayer path>/vars/<i>``."""
    out = _vars(group, where, budget)
    if group is None:
        return out
    found: list[tuple[str, h5py.Group]] = []
    stack, seen = [("", group, 0)], 0
    while stack:
        path, g, depth = stack.pop()
        for key in g:
            seen += 1
            if seen > _MAX_WALK or depth > 32:
                raise FormatError(f"{where}: the weight group is implausibly large or deep; refused")
            if key == "vars" or not _VAR_NAME.fullmatch(key):
                continue
            sub = child(g, key, where)
            if isinstance(sub, h5py.Group):
                found.append((f"{path}{key}", sub))
                stack.append((f"{path}{key}/", sub, depth + 1))
    for name, sub in sorted(found, key=lambda item: item[0]):
        out += [(f"{name}/{n}", a) for n, a in _vars(sub, where, budget)]
    return out


def _subgroup(group: h5py.Group, path: str, where: str) -> h5py.Group | None:
    """The group at ``path`` (``forward_layer/cell``) under ``group``, None when absent."""
    for part in [p for p in path.split("/") if p]:
        found = child(group, part, where)
        if found is None:
            return None
        if not isinstance(found, h5py.Group):
            raise FormatError(f"{where}: '{part}' is not a group")
        group = found
    return group
