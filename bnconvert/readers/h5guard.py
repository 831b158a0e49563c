"""Treat an HDF5 file as untrusted data: only hard links, only plain numeric datasets, bounded sizes.

Keras 3 refuses soft and external links and "shape bombs" when it loads weights; bnconvert goes a
little further, because it also reads files no Keras wrote:

* Every path is walked one component at a time and each component must be a *hard* link: a soft
  link can point anywhere in the file, an external link opens another file.
* A dataset must be a plain numeric array stored in this file: no external raw-data files, no
  virtual datasets (both read other files), only the filters libhdf5 and h5py carry built in
  (an unknown filter id makes libhdf5 look for a plugin, i.e. load a shared library).
* Sizes are checked before anything is read: an unfiltered dataset cannot hold more bytes than the
  file; a compressed one may inflate at most ``MAX_RATIO`` times its stored size and never past
  ``MAX_DATASET_BYTES``; a :class:`Budget` bounds the total over the file, so a dataset listed a
  thousand times cannot exhaust memory either. Attributes are checked the same way.
* A model file's datasets are *described*, not read, by :func:`describe_array` (in the isolated
  child, :mod:`.isolated`): a contiguous uncompressed one by its offset, which the main process
  reads itself (with lazy loading, what ``inspect`` uses, only when a large one is used); any other
  is read by libhdf5 in the child and sent as bytes.
* :func:`precheck` checks the global heap collections (where variable-length
  strings such as ``model_config`` live) before libhdf5 parses them: libhdf5 1.14 loops forever on
  a collection whose object sizes do not add up (found by the fuzz test, ``tests/hostile``).
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import h5py
import numpy as np

from ..errors import FormatError
from .isolated import allow_memory

__all__ = [
    "MAP_FROM",
    "MAX_ATTR_BYTES",
    "MAX_DATASET_BYTES",
    "MAX_RATIO",
    "Budget",
    "child",
    "child_id",
    "describe_array",
    "precheck",
    "precheck_file",
    "read_array",
    "read_attr",
]

#: No single weight of a real model comes near this; a larger dataset is refused before reading.
MAX_DATASET_BYTES = 8 * 1024**3
#: A filtered (compressed) dataset may inflate at most this many times its stored size.
MAX_RATIO = 1000
#: An attribute larger than this (a model config of 64 MB) is refused before reading.
MAX_ATTR_BYTES = 64 * 1024**2
#: A weight name deeper than this many groups is refused; Keras writes 2-4 (a few more per
#: level of nested models).
MAX_PATH_PARTS = 32
#: With lazy loading, datasets this large (kernels) are read only when used; smaller ones (BN
#: vectors, biases) are always read at once, so the values an audit uses are plain arrays.
MAP_FROM = 64 * 1024
#: Filters that libhdf5 and h5py implement themselves: deflate, shuffle, fletcher32, szip,
#: nbit, scaleoffset, lzf. Any other id would make libhdf5 search for a plugin library.
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})


class Budget:
    """How many bytes may still be read from one HDF5 file (its size, plus bounded inflation)."""

    def __init__(self, file_bytes: int, *, mapping: Any = None) -> None:
        self.file_bytes = max(int(file_bytes), 0)
        self.plain_left = self.file_bytes
        self.inflated_left = min(MAX_DATASET_BYTES, MAX_RATIO * self.file_bytes)
        #: the bytes of an in-memory HDF5 image, if at hand (never a memory map of a file: a file
        #: truncated under a mapping kills the process with SIGBUS): contiguous unfiltered datasets
        #: are copied from it, a memcpy instead of a libhdf5 read each
        self.mapping = mapping

    def take(self, nbytes: int, *, filtered: bool, what: str) -> None:
        """Account for ``nbytes`` about to be read; FormatError when the file cannot hold them."""
        if filtered:
            if nbytes > self.inflated_left:
                raise FormatError(f"{what}: compressed data would inflate to {nbytes:,} bytes in total, "
                                  f"more than {MAX_RATIO}x the file's {self.file_bytes:,} bytes (a shape bomb?); refused")
            self.inflated_left -= nbytes
        else:
            if nbytes > self.plain_left:
                read = self.file_bytes - self.plain_left
                raise FormatError(f"{what}: its {nbytes:,} bytes would bring the weights read to {read + nbytes:,} bytes, "
                                  f"more than the whole file holds ({self.file_bytes:,}): a shape bomb or a weight "
                                  "listed many times; refused")
            self.plain_left -= nbytes


def _check_name(name: Any, where: str) -> list[str]:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise FormatError(f"{where}: invalid HDF5 name {name!r}")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise FormatError(f"{where}: '{name}' points outside its group (absolute or relative path); refused")
    if len(parts) > MAX_PATH_PARTS:  # every group on the way is looked up and opened: bound the work per name
        raise FormatError(f"{where}: the name '{name[:60]}...' is {len(parts):,} groups deep "
                          f"(limit {MAX_PATH_PARTS}); refused")
    return parts


def child(group: h5py.Group, name: str, where: str) -> h5py.Group | h5py.Dataset | None:
    """``group[name]`` following hard links only; None when the name does not exist.

    ``name`` may have several components (``conv2d_1/kernel:0``); each must be a hard link.
    Absolute names, ``.`` and ``..`` components are refused.
    """
    oid = child_id(group.id, name, where)
    if oid is None:
        return None
    return h5py.Group(oid) if isinstance(oid, h5py.h5g.GroupID) else h5py.Dataset(oid, readonly=True)


def child_id(group: h5py.h5g.GroupID, name: str, where: str) -> h5py.h5g.GroupID | h5py.h5d.DatasetID | None:
    """:func:`child` in libhdf5 identifiers, without h5py's high-level objects: what reading
    hundreds of weights uses (h5py builds a File object on every lookup to learn the mode)."""
    parts = _check_name(name, where)
    if 1 < len(parts) <= 8:  # checked from the top at each depth: quadratic, so short names only
        found = _hard_path(group, parts)
        if found is not None:
            return found
    oid: Any = group
    for part in parts:
        if not isinstance(oid, h5py.h5g.GroupID):
            raise FormatError(f"{where}: '{name}' goes through a dataset, not a group")
        key = part.encode("utf-8")
        if not oid.links.exists(key):
            return None
        link_type = oid.links.get_info(key).type
        if link_type != h5py.h5l.TYPE_HARD:
            kind = "an external link (to another file)" if link_type == h5py.h5l.TYPE_EXTERNAL else "a soft link"
            what = f"'{name}'" if part == name else f"'{part}' in '{name}'"
            raise FormatError(f"{where}: {what} is {kind}; links are refused")
        oid = h5py.h5o.open(oid, key)
        if not isinstance(oid, (h5py.h5g.GroupID, h5py.h5d.DatasetID)):
            what = "Datatype" if isinstance(oid, h5py.h5t.TypeID) else f"HDF5 object ({type(oid).__name__})"
            raise FormatError(f"{where}: '{name}' is a {what}, not a group or dataset")
    return oid


def _hard_path(group: h5py.h5g.GroupID, parts: list[str]) -> h5py.h5g.GroupID | h5py.h5d.DatasetID | None:
    """The object at ``parts`` opened in one call, when every link on the way is a hard link to an
    existing group (then dataset or group): checked prefix by prefix with ``H5Lget_info``, which
    costs a lookup, not an open. None when anything is otherwise (missing, a soft or external
    link, a dataset midway, a damaged group): the component-by-component walk then decides and
    words the error."""
    path = b""
    try:
        for part in parts:
            path = part.encode("utf-8") if not path else path + b"/" + part.encode("utf-8")
            if not group.links.exists(path) or group.links.get_info(path).type != h5py.h5l.TYPE_HARD:
                return None
        oid = h5py.h5o.open(group, path)
    except (KeyError, RuntimeError, ValueError, OSError):
        return None
    return oid if isinstance(oid, (h5py.h5g.GroupID, h5py.h5d.DatasetID)) else None


def _storage(did: h5py.h5d.DatasetID, where: str) -> tuple[bool, bool]:
    """(filtered, contiguous) for a dataset; FormatError for storage that reads other files or
    plugins."""
    plist = did.get_create_plist()
    if plist.get_external_count() > 0:
        raise FormatError(f"{where}: its data lives in external raw files; refused")
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise FormatError(f"{where}: is a virtual dataset mapping other files; refused")
    count = plist.get_nfilters()
    for i in range(count):
        code = plist.get_filter(i)[0]
        if code not in BUILTIN_FILTERS:
            raise FormatError(f"{where}: uses HDF5 filter {code}, which would need a plugin library; refused")
    return count > 0, layout == h5py.h5d.CONTIGUOUS


def _checked(did: h5py.h5d.DatasetID, where: str, budget: Budget) -> tuple[np.dtype, tuple[int, ...], int, bool, bool]:
    """(dtype, shape, nbytes, filtered, contiguous) of a dataset after checking its type, storage
    and declared size, accounted in ``budget``."""
    dtype = did.dtype
    if dtype.kind not in "fiub" or dtype.itemsize > 8 or dtype.fields is not None or dtype.subdtype is not None:
        raise FormatError(f"{where}: has non-numeric dtype {dtype}")
    shape = did.shape
    if shape is None:
        raise FormatError(f"{where}: is an empty (null dataspace) dataset")
    nbytes = math.prod(shape) * dtype.itemsize
    filtered, contiguous = _storage(did, where)
    if nbytes > MAX_DATASET_BYTES:
        raise FormatError(f"{where}: has an implausible shape {shape} ({nbytes:,} bytes)")
    if filtered and nbytes > MAX_RATIO * max(did.get_storage_size(), 1):
        raise FormatError(f"{where}: compressed shape {shape} would inflate more than {MAX_RATIO}x (a shape bomb?); refused")
    budget.take(nbytes, filtered=filtered, what=where)
    return dtype, shape, nbytes, filtered, contiguous


def _libhdf5_read(did: h5py.h5d.DatasetID, where: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(shape, dtype)
    try:
        did.read(h5py.h5s.ALL, h5py.h5s.ALL, out)  # straight into numpy, in the file's own dtype
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise FormatError(f"{where}: cannot be read ({exc})") from None
    return out


def read_array(dset: h5py.Dataset | h5py.h5d.DatasetID, where: str, budget: Budget) -> np.ndarray:
    """Read a numeric dataset (an h5py Dataset or its identifier) after checking its type, storage
    and declared size."""
    did = dset.id if isinstance(dset, h5py.Dataset) else dset
    dtype, shape, nbytes, filtered, contiguous = _checked(did, where, budget)
    if nbytes == 0:
        return np.zeros(shape, dtype)
    if budget.mapping is not None and contiguous and not filtered:
        view = _mapped(did, budget.mapping, shape, dtype, nbytes)
        if view is not None:
            return view.copy()
    return _libhdf5_read(did, where, dtype, shape)


def describe_array(did: h5py.h5d.DatasetID, where: str, budget: Budget, send_blob: Callable[[np.ndarray], int]) -> dict[str, Any]:
    """In the isolated child: a dataset checked like :func:`read_array`, described as plain data:
    ``{"t": dtype, "s": shape}`` plus ``"o"``, its offset in the file, when it is one contiguous
    uncompressed run inside the file (the main process reads it), or ``"b"``, the index of the
    blob its bytes were sent as (read by libhdf5 here: compressed, chunked, compact)."""
    dtype, shape, nbytes, filtered, contiguous = _checked(did, where, budget)
    out: dict[str, Any] = {"t": dtype.str, "s": list(shape)}
    if nbytes == 0:
        return out
    if contiguous and not filtered:
        try:
            offset = did.get_offset()  # absolute (a user block included); None if never allocated
        except (OSError, ValueError, RuntimeError):
            offset = None
        if offset is not None and offset >= 0 and offset + nbytes <= budget.file_bytes:
            out["o"] = int(offset)
            return out
    allow_memory(2 * nbytes)  # the array, and room for libhdf5's chunk cache and filter buffers
    out["b"] = send_blob(_libhdf5_read(did, where, dtype, shape))
    return out


def _mapped(did: h5py.h5d.DatasetID, mapping: Any, shape: tuple[int, ...], dtype: np.dtype, nbytes: int) -> np.ndarray | None:
    """A read-only view of a contiguous dataset's bytes in the mapped file (read by the OS only
    when used), or None when they are not inside the file."""
    try:
        offset = did.get_offset()  # absolute (a user block included); None if never allocated
    except (OSError, ValueError, RuntimeError):
        return None
    if offset is None or offset < 0 or offset + nbytes > len(mapping):
        return None
    return np.frombuffer(mapping, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)


def read_attr(obj: h5py.HLObject, name: str, where: str) -> Any:
    """An attribute's value after checking its size and type; None when absent. Values come as
    h5py gives them (arrays, scalars for scalar attributes, ``str`` for variable-length text)."""
    oid = obj.id
    key = name.encode("utf-8")
    if not h5py.h5a.exists(oid, key):
        return None
    aid = h5py.h5a.open(oid, key)
    shape = aid.shape
    dtype = aid.dtype
    count = 1 if shape is None else math.prod(shape)
    itemsize = dtype.itemsize if dtype.kind != "O" else 16
    if dtype.fields is not None or dtype.kind not in "SUOfiub":
        raise FormatError(f"{where}: attribute '{name}' has an unexpected type {dtype}")
    try:
        stored = aid.get_storage_size()
    except RuntimeError:  # h5py raises for a legitimate 0 (an empty attribute)
        stored = 0
    if count * itemsize > MAX_ATTR_BYTES or stored > MAX_ATTR_BYTES:
        raise FormatError(f"{where}: attribute '{name}' declares {count:,} items; refused")
    if dtype.kind == "O" and h5py.check_string_dtype(dtype) is None:
        raise FormatError(f"{where}: attribute '{name}' holds variable-length data that is not text")
    try:
        if dtype.kind == "O" or shape is None or dtype.subdtype is not None:
            return obj.attrs[name]  # variable-length text, empty: h5py's rules
        out = np.empty(shape, dtype)
        aid.read(out)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise FormatError(f"{where}: attribute '{name}' cannot be read ({exc})") from None
    return out[()] if out.ndim == 0 else out


# -- global heap pre-check ---------------------------------------------------------------------

_GCOL = b"GCOL\x01"
_MIN_COLLECTION = 4096  # H5HG_MINSIZE: libhdf5 never writes a smaller collection


def _superblock(head: bytes) -> tuple[int, int, int] | None:
    """(size of lengths, base address, end-of-file address) from the superblock at offset 0
    (``head``: the file's first bytes)."""
    if len(head) < 48:
        return None
    version = head[8]
    if version in (0, 1):
        offsets, lengths = head[13], head[14]
        base_at = 24 if version == 0 else 28
    elif version in (2, 3):
        offsets, lengths = head[9], head[10]
        base_at = 12
    else:
        return None
    if offsets not in (2, 4, 8) or lengths not in (2, 4, 8):
        return None
    eoa_at = base_at + 2 * offsets
    if eoa_at + offsets > len(head):
        return None
    base = int.from_bytes(head[base_at : base_at + offsets], "little")
    eoa = int.from_bytes(head[eoa_at : eoa_at + offsets], "little")
    return lengths, base, eoa


def _collection_ok(read: Callable[[int, int], bytes], at: int, lengths: int, end_of_file: int) -> bool | None:
    """Walk one collection the way libhdf5's ``H5HG__cache_heap_deserialize`` does.

    ``read(offset, n)`` gives up to ``n`` bytes of the file at ``offset``. None: libhdf5 would
    reject it itself (too big for the file's address space); True: the objects tile the collection
    exactly; False: they do not (libhdf5 loops or over-reads). Bytes past the physical end of the
    file read as zeros, as libhdf5's sec2 driver does.
    """
    size = int.from_bytes(read(at + 8, lengths).ljust(lengths, b"\0"), "little")
    if at + size > end_of_file:
        return None
    if size < _MIN_COLLECTION:
        return False
    data = read(at, size)  # at most the file's size (checked above): one read, then walked in memory
    header = 8 + lengths
    obj_header = 8 + lengths
    end = size
    p = header
    while p < end:
        if p + obj_header > end:
            return True  # trailing space too small for an object header: free space
        raw = data[p : p + obj_header].ljust(obj_header, b"\0")
        index = int.from_bytes(raw[0:2], "little")
        obj_size = int.from_bytes(raw[8 : 8 + lengths], "little")
        need = obj_header + (obj_size + 7) // 8 * 8 if index > 0 else obj_size
        if need == 0 or p + need > end:
            return False
        p += need
    return True


def precheck(data: Any, where: str) -> None:
    """Checks on the raw bytes of an HDF5 image (``data``: bytes) before libhdf5 parses it.

    A file shorter than its superblock says is reported as truncated; a global heap collection
    whose objects do not tile it exactly is refused (libhdf5 would loop forever or read past it).
    Every ``GCOL`` signature is checked, wherever it is: libhdf5 reaches collections by address,
    so any position could be one.
    """
    _precheck(len(data), lambda at, n: bytes(data[at : at + n]), lambda: find_all(data, _GCOL), where)


def precheck_file(fd: int, size: int, where: str) -> None:
    """:func:`precheck` on an open file of ``size`` bytes, read by offset in blocks (never mapped)."""

    def read(at: int, n: int) -> bytes:
        return os.pread(fd, max(n, 0), at) if at < size else b""

    _precheck(size, read, lambda: find_in_file(fd, size, _GCOL), where)


def _precheck(size: int, read: Callable[[int, int], bytes], hits: Callable[[], Iterator[int]], where: str) -> None:
    sb = _superblock(read(0, 64))
    if sb is None:
        return  # libhdf5 will refuse the superblock itself
    lengths, base, eoa = sb
    end_of_file = base + eoa
    lead = f"{where}: " if where else ""
    if end_of_file > size and eoa < 2**63:
        raise FormatError(f"{lead}the file is truncated: it has {size:,} bytes, its HDF5 superblock "
                          f"says {end_of_file:,}")
    for at in hits():
        if _collection_ok(read, at, lengths, end_of_file) is False:
            raise FormatError(f"{lead}the HDF5 global heap at byte {at} is corrupted (its objects do not fit "
                              "the collection); refused before libhdf5 parses it")


#: :func:`find_in_file` reads this many bytes at a time
_BLOCK = 4 * 1024**2


def find_in_file(fd: int, size: int, needle: bytes) -> Iterator[int]:
    """Every offset of ``needle`` in the first ``size`` bytes of an open file, read in blocks into
    one reused buffer (consecutive blocks overlap by ``len(needle) - 1`` bytes)."""
    buf = bytearray(min(_BLOCK, max(size, len(needle))))
    view = memoryview(buf)
    start, keep = 0, len(needle) - 1
    while start < size:
        got = os.preadv(fd, [view[: min(len(buf), size - start)]], start)
        last = start + got >= size
        if got <= keep and not last:
            return  # the file shrank: libhdf5 will say so
        limit = got if last else got - keep  # a match starting later is found in the next block
        for at in find_all(view[:got], needle):
            if at >= limit:
                break
            yield start + at
        if last:
            return
        start += got - keep


def _libc_memmem() -> Any:
    """The C library's ``memmem`` (glibc, musl, BSD/macOS libc), or None (Windows)."""
    try:
        func = ctypes.CDLL(None).memmem
    except (OSError, AttributeError, TypeError):
        return None
    func.restype = ctypes.c_void_p
    func.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return func


_memmem = _libc_memmem()


def find_all(data: Any, needle: bytes) -> Iterator[int]:
    """Every offset of ``needle`` in ``data`` (bytes, a bytearray or a memoryview of one), in order,
    overlaps included.

    With the C library's ``memmem`` (two-way search, vectorised): on float weights it is 2-3x
    faster than ``bytes.find``, whose skip loop stops at every byte that shares low bits with the
    needle. Elsewhere ``data.find``.
    """
    size = len(data)
    if _memmem is None or size < len(needle):
        data = bytes(data) if isinstance(data, memoryview) else data
        at = data.find(needle)
        while at != -1:
            yield at
            at = data.find(needle, at + 1)
        return
    view = np.frombuffer(data, dtype=np.uint8)  # keeps ``data`` alive and gives its address
    base = view.ctypes.data
    at = 0
    while at <= size - len(needle):
        hit = _memmem(base + at, size - at, needle, len(needle))
        if not hit:
            return
        at = hit - base
        yield at
        at += 1
