"""Write a folded model as a ``.keras`` zip: Keras 3, or tf.keras 2.13+ / tf-keras.

What ``model.save("x.keras")`` writes (checked against Keras 3.15 and tf-keras 2.21 with
zipfile/h5py): ``metadata.json``, ``config.json`` (both stored, dated 1980-01-01) and
``model.weights.h5``, whose groups are named by layer **class and order**, not layer name:
``layers/<snake_case class>[_N]/vars/<i>``, nested models nesting the same way
(``layers/functional/layers/dense/vars/0``), a root ``vars`` group, Sequential models not
listing their InputLayer. Keras 3.6+ adds an attribute ``name`` (the layer name) to each ``vars``
group. Sublayers nest under their layer's group (``lstm/cell/vars``, ``bidirectional/forward_layer/cell/vars``,
``time_distributed/layer/vars``, ``rnn/cell/cells/lstm_cell/vars``): they are copied from the
input, then each part's weights replace their ``vars`` (:func:`~bnconvert.layerspec.weight_parts`).
tf.keras 2.13-2.15 used ``_layer_checkpoint_dependencies/...`` instead of ``layers/``
and advanced the per-class counter by two for layers with weights; for such an input both
layouts are written (the old one for those versions, ``layers/`` for tf-keras 2.16+).
Other archive members (``assets/``) are copied as they are; optimizer state is not, nor the
input's provenance stamp (``bnconvert.json``: it describes the input).
"""

from __future__ import annotations

import datetime
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import OutputError
from ..layerspec import weight_parts, weight_spec, zip_group
from ..model import Layer, Model
from ..provenance import ZIP_ENTRY
from ..readers.keras_zip import open_weights
from .weights import layer_arrays

__all__ = ["write_zip", "weight_paths"]

_OLD = "_layer_checkpoint_dependencies"


def weight_paths(model: Model, *, double: bool = False) -> list[tuple[str, Layer]]:
    """``(group path, layer)`` for every layer of ``model`` as Keras names them in model.weights.h5
    (relative to the container; nested models are one entry, recurse yourself)."""
    counts: dict[str, int] = {}
    out = []
    for layer in model.layers:
        if model.kind == "Sequential" and layer.class_name == "InputLayer":
            continue
        snake = zip_group(layer.class_name, layer.source_class)
        index = counts.get(snake, 0)
        out.append((snake if index == 0 else f"{snake}_{index}", layer))
        counts[snake] = index + (2 if double and _has_weights(layer) else 1)
    return out


def _has_weights(layer: Layer) -> bool:
    if layer.model is not None:
        return any(_has_weights(sub) for sub in layer.model.layers)
    spec = weight_spec(layer.class_name, layer.config)
    return bool(layer.weights) if spec is None else bool(spec)


def write_zip(model: Model, out: Path, *, config: dict[str, Any], original: Model) -> None:
    """Write ``model`` (folded, ``config`` already edited) as a ``.keras`` zip shaped like the input."""
    source = model.source
    if source is None:
        raise OutputError("the model does not say which file it came from")
    with zipfile.ZipFile(source.path) as zin:
        members = {info.filename: info for info in zin.infolist()}
        with open_weights(zin.read("model.weights.h5")) as old:
            containers = [c for c in ("layers", _OLD) if c in old] or ["layers"]
            named = _vars_named(old)
            blob = io.BytesIO()
            with h5py.File(blob, "w") as new:
                for container in containers:
                    _write_container(new, old, container, model, original, double=container == _OLD, named=named)
                if _OLD in containers and "layers" not in containers:
                    _write_container(new, old, "layers", model, original, double=False, named=named, source=_OLD)
                root_vars = new.require_group("vars")
                if named:
                    root_vars.attrs["name"] = model.name
        metadata = json.loads(zin.read("metadata.json")) if "metadata.json" in members else {}
        metadata["date_saved"] = datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zout:
            _put(zout, "metadata.json", json.dumps(metadata).encode("utf-8"))
            _put(zout, "config.json", json.dumps(config).encode("utf-8"))
            zout.writestr("model.weights.h5", blob.getvalue())
            for name, info in members.items():
                if name not in ("metadata.json", "config.json", "model.weights.h5", ZIP_ENTRY) and not name.endswith("/"):
                    zout.writestr(info, zin.read(info))


def _put(zout: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    zout.writestr(info, data)


def _vars_named(old: h5py.File) -> bool:
    """True when the input's ``vars`` groups carry a ``name`` attribute (Keras 3.6+)."""
    found = []

    def visit(path: str, obj: Any) -> Any:
        if isinstance(obj, h5py.Group) and path.endswith("vars") and "name" in obj.attrs:
            found.append(path)
            return True
        return None

    old.visititems(visit)
    return bool(found)


def _write_container(
    new: h5py.Group, old: h5py.Group | None, container: str, model: Model, original: Model, *,
    double: bool, named: bool, source: str | None = None,
) -> None:
    """Write ``container/...`` for ``model`` under ``new``; layers of unknown classes are copied
    from the input's ``source`` container (default: the same one) at their original path."""
    src_name = source or container
    old_c = old.get(src_name) if old is not None else None
    new_c = new.require_group(container)
    old_paths = {layer.name: path for path, layer in weight_paths(original, double=src_name == _OLD)}
    for path, layer in weight_paths(model, double=double):
        group = new_c.require_group(path)
        old_group = old_c.get(old_paths[layer.name]) if old_c is not None and layer.name in old_paths else None
        vars_group = group.require_group("vars")
        if layer.model is not None:
            inner = original[layer.name].model if layer.name in original else None
            if inner is None:
                raise OutputError(f"nested model '{layer.name}' is not in the input")
            _write_container(group, old_group, container, layer.model, inner, double=double, named=named, source=src_name)
        elif weight_spec(layer.class_name, layer.config) is None:
            old_vars = old_group.get("vars") if old_group is not None else None
            if layer.weights and old_vars is None:
                raise OutputError(f"layer {layer.label}: its weights cannot be found in the input to copy")
            if old_vars is not None:
                for key in old_vars:
                    old_vars.copy(old_vars[key], vars_group, name=key)
            if old_group is not None:
                for key in old_group:  # its sublayers' weights too (a Keras 3 LSTM's cell ...)
                    if key != "vars" and key not in group and isinstance(old_group.get(key, getlink=True), h5py.HardLink):
                        old_group.copy(old_group[key], group, name=key)
        else:
            _write_parts(group, vars_group, old_group, layer)
        if named:
            vars_group.attrs["name"] = layer.name


def _write_parts(group: h5py.Group, vars_group: h5py.Group, old_group: h5py.Group | None, layer: Layer) -> None:
    """A layer of a known class: its sublayer groups as the input had them (a recurrent layer's
    ``cell``, a Bidirectional's ``forward_layer``/``backward_layer``, a TimeDistributed's
    ``layer``, with their ``vars`` attributes and the empty groups tf-keras also writes), then
    each part's weights in its own ``vars`` group (:func:`~bnconvert.layerspec.weight_parts`)."""
    if old_group is not None:
        for key in old_group:
            if key != "vars" and key not in group and isinstance(old_group.get(key, getlink=True), h5py.HardLink):
                old_group.copy(old_group[key], group, name=key)
    arrays = {meaning: array for meaning, array, _ in layer_arrays(layer)}
    parts = weight_parts(layer.class_name, layer.config)
    if parts is None:
        raise OutputError(f"layer {layer.label}: bnconvert does not know where a .keras archive keeps its weights")
    for part in parts:
        target = vars_group
        if part.zip_path:
            sub = group
            for name in part.zip_path.split("/"):
                sub = sub.require_group(name)
            target = sub.require_group("vars")
        for key in list(target):
            del target[key]
        for i, meaning in enumerate((*part.repeats, *part.meanings)):  # repeats: another part's, stored again first
            data = np.asarray(arrays[meaning])
            target.create_dataset(str(i), data=data, dtype=data.dtype)
