"""``.keras`` zips: Keras 3 and tf.keras 2.13+ (``config.json``, ``metadata.json``, ``model.weights.h5``).

Weight groups are named by layer *class and creation order*, not by layer name
(``layers/batch_normalization_2/vars/0``). Keras 3 numbers each class 0, 1, 2...; tf.keras 2.13-2.15
(and tf-keras after it) walks ``_layer_checkpoint_dependencies``, which lists every layer that has
weights twice, so those advance the class counter by two (``conv2d``, ``conv2d_2``, ``conv2d_4``...).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import h5py
import numpy as np

from ..errors import FormatError
from ..layerspec import snake_case
from ..model import Model, Source
from .graph import build_model
from .h5 import parse_config
from .weights import assign, read_dataset

__all__ = ["read_zip", "MAX_MEMBER_BYTES", "MAX_RATIO"]

#: Refuse members that would inflate past this (a zip bomb), and absurd compression ratios.
MAX_MEMBER_BYTES = 4 * 1024**3
MAX_RATIO = 1000
_MEMBERS = {"config.json", "metadata.json", "model.weights.h5"}


def _check_members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    members = {}
    for info in zf.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/") or ":" in name:
            raise FormatError(f"zip entry '{name}' has an absolute or parent path; refused")
        if info.file_size > MAX_MEMBER_BYTES:
            raise FormatError(f"zip entry '{name}' would inflate to {info.file_size} bytes; refused")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1 << 20:
            raise FormatError(f"zip entry '{name}' has a compression ratio over {MAX_RATIO}:1 (a zip bomb?); refused")
        members[name] = info
    return members


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise FormatError(f"zip entry '{info.filename}' cannot be read ({exc})") from None
    if len(data) != info.file_size:
        raise FormatError(f"zip entry '{info.filename}' does not have the size its header declares")
    return data


def read_zip(path: str, zf: zipfile.ZipFile) -> Model:
    """Read a ``.keras`` zip (already open) into a Model."""
    members = _check_members(zf)
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
    model = build_model(config, where="config.json")
    model.source = source
    blob = _read(zf, members["model.weights.h5"])
    try:
        with h5py.File(io.BytesIO(blob), "r") as f:
            container = "layers" if gen == 3 else "_layer_checkpoint_dependencies"
            if container not in f and gen == 2 and "layers" in f:
                container = "layers"  # tf-keras versions that adopted the Keras 3 layout
            _attach(model, f.get(container), container, double=container == "_layer_checkpoint_dependencies")
    except OSError as exc:
        raise FormatError(f"model.weights.h5 inside the archive is not a readable HDF5 file ({exc})") from None
    return model


def _has_data(group: h5py.Group | None) -> bool:
    if group is None:
        return False
    found = []
    group.visititems(lambda _, obj: found.append(1) if isinstance(obj, h5py.Dataset) else None)
    return bool(found)


def _vars(group: h5py.Group | None, where: str) -> list[tuple[str, np.ndarray]]:
    if group is None or "vars" not in group:
        return []
    vars_group = group["vars"]
    if not isinstance(vars_group, h5py.Group):
        raise FormatError(f"{where}: 'vars' is not a group")
    keys = list(vars_group.keys())
    if not all(k.isdigit() for k in keys):
        raise FormatError(f"{where}: unexpected entries in vars: {', '.join(keys[:5])}")
    return [(f"vars/{k}", read_dataset(vars_group, k, where)) for k in sorted(keys, key=int)]


def _attach(model: Model, container: h5py.Group | None, name: str, *, double: bool) -> None:
    counts: dict[str, int] = {}
    for layer in model.layers:
        snake = snake_case(layer.class_name)
        index = counts.get(snake, 0)
        path = snake if index == 0 else f"{snake}_{index}"
        group = container.get(path) if container is not None else None
        if group is not None and not isinstance(group, h5py.Group):
            raise FormatError(f"model.weights.h5: '{name}/{path}' is not a group")
        counts[snake] = index + (2 if double and _has_data(group) else 1)
        where = f"layer {layer.label} (weights at {name}/{path})"
        if layer.model is not None:
            inner = group.get(name) if group is not None else None
            _attach(layer.model, inner, name, double=double)
            continue
        assign(layer, _vars(group, where))
