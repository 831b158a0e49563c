"""Open any Keras model file: the format is sniffed from the bytes, never from the extension.

Files are untrusted data (see the README, "Security and robustness"): nothing in them is ever
executed (Lambda bytecode stays an opaque string, custom classes are only names), HDF5 links and
external storage are refused (:mod:`.h5guard`), ``.keras`` zips are checked entry by entry before
anything is inflated (:mod:`.keras_zip`), config values must be of the kind their field
claims (:mod:`.fields`) and the weights must agree with the config (:mod:`.consistency`).
Every problem becomes one :class:`~bnconvert.errors.FormatError` that names the file.
"""

from __future__ import annotations

import lzma
import mmap
import os
import struct
import zipfile
import zlib
from pathlib import Path

import h5py

from ..errors import BnconvertError, FormatError
from ..model import Model
from .consistency import check_weights
from .h5 import MAX_CONFIG_CHARS, attr_text, read_h5
from .h5guard import precheck
from .keras_zip import read_zip

__all__ = ["load", "sniff", "root_attributes", "HDF5_MAGIC", "ZIP_MAGIC"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def sniff(path: str | os.PathLike[str]) -> str:
    """``'hdf5'``, ``'zip'`` or ``'json'`` from the file's first bytes; FormatError otherwise."""
    p = Path(path)
    if not p.exists():
        raise FormatError(f"{p}: no such file")
    if p.is_dir():
        raise FormatError(f"{p}: is a folder, not a model file")
    if not p.is_file():  # a FIFO or a device would block or never end
        raise FormatError(f"{p}: not a regular file")
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise FormatError(f"{p}: cannot be read ({exc.strerror})") from None
    if not head:
        raise FormatError(f"{p}: the file is empty")
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.lstrip()[:1] in (b"{", b'"'):
        return "json"
    raise FormatError(f"{p}: not a Keras model file (neither HDF5 nor a .keras zip)")


def load(
    path: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | None = None,
    running_std: str = "auto",
    flip_kernels: bool | None = None,
    lazy: bool = False,
) -> Model:
    """Read a Keras model file of any generation into a :class:`~bnconvert.model.Model`.

    ``config`` is an architecture JSON for a weights-only ``.h5`` (``model.to_json()``, also
    when encoded twice). ``running_std`` says how to read Keras 1 BatchNormalization
    ``running_std``: ``auto`` (the version table), ``variance``, ``std`` or ``theano-1.0.7``.
    ``flip_kernels`` overrides the Theano kernel-flip decision (None: decide from the file).
    ``lazy``: large uncompressed HDF5 weights (kernels) become read-only views of the file,
    memory-mapped, so their bytes are read only if used (``inspect`` never uses them); the file
    must then not be truncated while the model is in use.
    """
    kind = sniff(path)
    config_text = None
    if config is not None:
        config_text = _read_config(config)
    if kind == "json":
        raise FormatError(f"{path}: this is a JSON architecture; pass the weights file and --config {path}")
    if kind == "zip" and config_text is not None:
        raise FormatError(f"{path}: --config applies to weights-only .h5 files, not .keras archives")
    try:
        model = _read(Path(path), kind, config_text=config_text, running_std=running_std, flip_kernels=flip_kernels,
                      lazy=lazy)
        check_weights(model)
    except BnconvertError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    except Exception as exc:
        if isinstance(exc, _DAMAGED) or _raised_by_library(exc):  # h5py, zipfile, a decompressor
            what = "HDF5" if kind == "hdf5" else ".keras (zip)"
            raise FormatError(f"{path}: damaged {what} file ({_short(exc)})") from None
        if isinstance(exc, (KeyError, ValueError, TypeError, IndexError, AttributeError, RecursionError)):
            # a config value of an unexpected type that slipped past the readers' own checks
            raise FormatError(f"{path}: malformed model config ({type(exc).__name__}: {_short(exc)})") from None
        raise
    return model


def root_attributes(path: str | os.PathLike[str], names: tuple[str, ...]) -> dict[str, str | None]:
    """String attributes of an HDF5 file's root (None when absent), read with the same guards as
    :func:`load`: for callers that only need to peek (``backend``, whether ``model_config`` exists)."""
    if sniff(path) != "hdf5":
        raise FormatError(f"{path}: not an HDF5 file")
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            precheck(data, "")
        with h5py.File(path, "r") as f:
            return {name: attr_text(f, name) for name in names}
    except BnconvertError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    except Exception as exc:
        if isinstance(exc, _DAMAGED) or _raised_by_library(exc):
            raise FormatError(f"{path}: damaged HDF5 file ({_short(exc)})") from None
        raise


#: Exceptions that mean "the bytes are broken", raised by the libraries under the readers.
_DAMAGED = (OSError, RuntimeError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, struct.error,
            OverflowError, MemoryError, NotImplementedError, UnicodeError)
_LIBRARIES = (os.path.dirname(h5py.__file__), os.path.dirname(zipfile.__file__))
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raised_by_library(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is in h5py or the standard library (h5py raises
    KeyError and ValueError for damaged object headers), not in bnconvert."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    if last is None or last.startswith(_PACKAGE):
        return False
    return last.startswith(_LIBRARIES) or last.startswith("h5py/")  # h5py's Cython frames: "h5py/h5o.pyx"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


def _read_config(config: str | os.PathLike[str]) -> str:
    """The text of an architecture JSON given with ``--config`` (bounded, sniffed)."""
    if sniff(config) != "json":
        raise FormatError(f"{config}: the architecture file is not JSON")
    try:
        size = os.path.getsize(config)
        if size > MAX_CONFIG_CHARS:
            raise FormatError(f"{config}: {size:,} bytes is too large for an architecture JSON; refused")
        return Path(config).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FormatError(f"{config}: cannot be read ({exc.strerror})") from None


def _read(path: Path, kind: str, *, config_text: str | None, running_std: str, flip_kernels: bool | None,
          lazy: bool = False) -> Model:
    name = str(path)
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            return read_zip(name, zf)
    with open(path, "rb") as fh:
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        precheck(data, "")
        with h5py.File(path, "r") as f:
            return read_h5(name, f, config_text=config_text, running_std=running_std, flip_kernels=flip_kernels,
                           mapping=data, lazy=lazy)
    finally:
        if not lazy:
            data.close()  # lazy: the weights that view it keep it open; it closes with the last one
