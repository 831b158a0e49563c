"""Stamp a written Keras file with its provenance (:mod:`bnconvert.provenance`), in place and cheaply.

Called after the check, on the temporary file, before it is renamed into place:

* HDF5 (``keras2-h5``, ``keras3-h5``): the root attribute ``bnconvert``, variable-length UTF-8 text
  (kept in the file's global heap, so a long fold log does not meet the 64 KB object-header limit),
  set through h5py in ``r+`` mode: no dataset is rewritten. Keras reads only the root attributes it
  knows (``model_config``, ``keras_version``, ``backend``, ``training_config``).
* ``.keras`` (``keras3-zip``, ``tfkeras-zip``): one more archive entry, ``bnconvert.json``,
  appended (zipfile rewrites only the central directory). Keras 3 and tf-keras open the entries
  they know by name and ignore the others (checked with both, Keras 3 in ``safe_mode``).

The writers never copy an input's stamp into the output (it describes another file).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py

from ..errors import OutputError
from ..provenance import H5_ATTRIBUTE, MAX_PROVENANCE_CHARS, ZIP_ENTRY

__all__ = ["stamp_keras", "provenance_text"]


def provenance_text(provenance: Mapping[str, Any]) -> str:
    """The stamp as compact JSON, at most :data:`~bnconvert.provenance.MAX_PROVENANCE_CHARS` long:
    a fold log too long for that (tens of thousands of BN) keeps its totals and drops the
    per-layer entries (``batch_norms_omitted`` says how many)."""
    text = json.dumps(provenance, separators=(",", ":"), default=str, ensure_ascii=False)
    fold = provenance.get("fold")
    if len(text.encode("utf-8")) > MAX_PROVENANCE_CHARS and isinstance(fold, Mapping):
        entries = fold.get("batch_norms") or []
        short = {**provenance, "fold": {**fold, "batch_norms": [], "batch_norms_omitted": len(entries),
                                        "dropped": [], "created_bias": []}}
        text = json.dumps(short, separators=(",", ":"), default=str, ensure_ascii=False)
    if len(text.encode("utf-8")) > MAX_PROVENANCE_CHARS:
        raise OutputError(f"the provenance stamp is {len(text):,} characters long (limit {MAX_PROVENANCE_CHARS:,})")
    return text


def stamp_keras(path: str | os.PathLike[str], fmt: str, provenance: Mapping[str, Any]) -> None:
    """Write ``provenance`` into the Keras file at ``path`` (written by
    :func:`~bnconvert.writers.write_model` in format ``fmt``), in place; a stamp already there is
    replaced."""
    text = provenance_text(provenance)
    path = Path(path)
    try:
        if fmt.endswith("zip"):
            _stamp_zip(path, text.encode("utf-8"))
        else:
            with h5py.File(path, "r+") as f:
                if H5_ATTRIBUTE in f.attrs:
                    del f.attrs[H5_ATTRIBUTE]
                f.attrs[H5_ATTRIBUTE] = text  # a str: variable-length UTF-8
    except OSError as exc:
        raise OutputError(f"{path}: the provenance stamp cannot be written ({exc})") from None


def _stamp_zip(path: Path, data: bytes) -> None:
    with zipfile.ZipFile(path) as zf:
        present = ZIP_ENTRY in zf.namelist()
    if present:  # rare (a file stamped twice): copy the archive without the old entry
        tmp = path.with_name(path.name + ".stamp")
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w") as zout:
            for info in zin.infolist():
                if info.filename != ZIP_ENTRY:
                    zout.writestr(info, zin.read(info))
        shutil.move(tmp, path)
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo(ZIP_ENTRY, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        zf.writestr(info, data)
