"""Open any Keras model file: the format is sniffed from the bytes, never from the extension.

Files are untrusted data (see the README, "Security and robustness"): nothing in them is ever
executed (Lambda bytecode stays an opaque string, custom classes are only names), HDF5 links and
external storage are refused (:mod:`.h5guard`), ``.keras`` zips are checked entry by entry before
anything is inflated (:mod:`.keras_zip`), config values must be of the kind their field
claims (:mod:`.fields`) and the weights must agree with the config (:mod:`.consistency`).
An HDF5 file is parsed by libhdf5 only in an isolated child process under memory and CPU limits
(:mod:`.isolated`): a file that crashes or hangs libhdf5 is refused, not fatal.
Every problem with the file becomes one :class:`~bnconvert.errors.FormatError` that names the file;
an error in bnconvert's own code is not blamed on the file: it propagates (the CLI reports it as
an internal error, exit 3).
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import h5py

from ..errors import BnconvertError, FormatError
from ..model import Model
from . import isolated
from .consistency import check_weights
from .h5 import MAX_CONFIG_CHARS, read_h5, visit_links
from .isolated import ModelFile, is_damage, short
from .keras_zip import read_zip
from .options import LoadOptions, LoadOptionsLike

__all__ = ["HDF5_MAGIC", "ZIP_MAGIC", "LoadOptions", "LoadOptionsLike", "load", "root_attributes", "sniff"]

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
        # O_NONBLOCK: a pipe put in the file's place after the check above cannot block the open
        with open(p, "rb", opener=lambda f, flags: os.open(f, flags | getattr(os, "O_NONBLOCK", 0))) as fh:
            regular = stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
            head = fh.read(8) if regular else b""
    except OSError as exc:
        raise FormatError(f"{p}: cannot be read ({exc.strerror})") from None
    if not regular:
        raise FormatError(f"{p}: not a regular file")
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
    ``lazy``: large uncompressed HDF5 weights (kernels) are read from the file only when used
    (:class:`~bnconvert.readers.isolated.DeferredArray`; ``inspect`` never uses them); a file
    truncated in the meantime is then a FormatError at that use.
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
    except RecursionError:
        raise FormatError(f"{path}: the model config is nested too deeply to read") from None
    except Exception as exc:
        if is_damage(exc):  # h5py, zipfile, a decompressor refusing the bytes
            what = "HDF5" if kind == "hdf5" else ".keras (zip)"
            raise FormatError(f"{path}: damaged {what} file ({short(exc)})") from None
        raise  # a bug of ours, not the file's fault: the CLI says "internal error, please report"
    return model


def root_attributes(path: str | os.PathLike[str], names: tuple[str, ...]) -> dict[str, str | None]:
    """String attributes of an HDF5 file's root (None when absent), read with the same guards and
    the same isolation as :func:`load`: for callers that only need to peek (``backend``, whether
    ``model_config`` exists)."""
    if sniff(path) != "hdf5":
        raise FormatError(f"{path}: not an HDF5 file")
    try:
        source = ModelFile(path)
        try:
            answer = isolated.run(source, "attrs", {"names": list(names)})
        finally:
            source.close()
        out = {}
        for name in names:
            value = answer.get(name)
            if value is not None and not isinstance(value, str):
                raise FormatError(f"attribute '{name}' is not text")
            out[name] = value
        return out
    except BnconvertError as exc:
        raise type(exc)(f"{path}: {exc}") from None


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


@isolated.job("zip")
def _try_zip(fd: int, size: int, params: dict[str, Any], facts: dict[str, Any], send_blob: Any) -> None:
    """Run in the isolated child: read the ``.keras`` archive as :func:`load` will (libhdf5 parses
    its ``model.weights.h5``), then walk every link of that HDF5 file (see
    :func:`~bnconvert.readers.h5.visit_links`: the writer and Keras may open more of it later);
    ``facts["ok"]`` when that worked."""
    with os.fdopen(os.dup(fd), "rb") as fh, zipfile.ZipFile(fh) as zf:
        read_zip(params["path"], zf)  # checked every member's name, size and method first
        info = zf.getinfo("model.weights.h5")
        with zf.open(info) as member:
            blob = member.read(info.file_size + 1)  # never past its declared size
        with h5py.File(io.BytesIO(blob), "r") as f:
            visit_links(f)
    facts["ok"] = True


def _read_zip(name: str) -> Model:
    """A ``.keras`` archive: first read in the isolated child, where a ``model.weights.h5`` that
    crashes or exhausts libhdf5 is only the child's end; then, libhdf5 being deterministic,
    read here from the same open file (the one the child read, even if the name was replaced)."""
    source = ModelFile(name)
    try:
        isolated.run(source, "zip", {"path": name}, what=".keras (zip) file").get("ok")
        with os.fdopen(os.dup(source.fd), "rb") as fh, zipfile.ZipFile(fh) as zf:
            return read_zip(name, zf)
    finally:
        source.close()


def _read(path: Path, kind: str, *, config_text: str | None, running_std: str, flip_kernels: bool | None,
          lazy: bool = False) -> Model:
    name = str(path)
    if kind == "zip":
        return _read_zip(name)
    source = ModelFile(path)
    try:
        answer = isolated.run(source, "h5")
        model = read_h5(name, answer, source, config_text=config_text, running_std=running_std,
                        flip_kernels=flip_kernels, lazy=lazy)
    except BaseException:
        source.close()
        raise
    if not lazy:
        source.close()  # lazy: the descriptor closes with the last DeferredArray that needs it
    return model
