"""Open any Keras model file: the format is sniffed from the bytes, never from the extension."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import h5py

from ..errors import FormatError
from ..model import Model
from .h5 import read_h5
from .keras_zip import read_zip

__all__ = ["load", "sniff", "HDF5_MAGIC", "ZIP_MAGIC"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def sniff(path: str | os.PathLike[str]) -> str:
    """``'hdf5'``, ``'zip'`` or ``'json'`` from the file's first bytes; FormatError otherwise."""
    p = Path(path)
    if not p.exists():
        raise FormatError(f"{p}: no such file")
    if p.is_dir():
        raise FormatError(f"{p}: is a folder, not a model file")
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
) -> Model:
    """Read a Keras model file of any generation into a :class:`~bnconvert.model.Model`.

    ``config`` is an architecture JSON for a weights-only ``.h5`` (``model.to_json()``, also
    when encoded twice). ``running_std`` says how to read Keras 1 BatchNormalization
    ``running_std``: ``auto`` (the version table), ``variance``, ``std`` or ``theano-1.0.7``.
    ``flip_kernels`` overrides the Theano kernel-flip decision (None: decide from the file).
    """
    kind = sniff(path)
    config_text = None
    if config is not None:
        if sniff(config) != "json":
            raise FormatError(f"{config}: the architecture file is not JSON")
        config_text = Path(config).read_text(encoding="utf-8", errors="replace")
    name = str(path)
    if kind == "json":
        raise FormatError(f"{path}: this is a JSON architecture; pass the weights file and --config {path}")
    try:
        if kind == "hdf5":
            with h5py.File(path, "r") as f:
                return read_h5(name, f, config_text=config_text, running_std=running_std, flip_kernels=flip_kernels)
        if config_text is not None:
            raise FormatError(f"{path}: --config applies to weights-only .h5 files, not .keras archives")
        with zipfile.ZipFile(path) as zf:
            return read_zip(name, zf)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise FormatError(f"{path}: damaged or not a Keras file ({type(exc).__name__}: {exc})") from None
