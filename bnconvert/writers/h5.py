"""Write a folded model as a legacy Keras HDF5 file (Keras 2 / tf.keras, or Keras 3 ``.h5``).

The layout is what ``model.save("x.h5")`` writes (checked against tf-keras 2.21 and Keras 3.15
with h5py): root attributes ``keras_version``, ``backend``, ``model_config`` (and
``training_config`` when the input had one); a ``model_weights`` group with attributes
``layer_names``, ``backend``, ``keras_version`` and one group per layer whose ``weight_names``
attribute lists its datasets in Keras order (Keras loads them by position). Attributes larger
than 64512 bytes are split into ``name0``, ``name1``... as Keras does.

Layers of classes bnconvert does not know, and a ``top_level_model_weights`` group, are copied
from the input file untouched; every other layer is written from the model (the reader may have
transformed its weights: Keras 1 layouts, Theano kernel flips). Optimizer state is not copied.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import OutputError
from ..layerspec import weight_parts
from ..model import Layer, Model
from ..provenance import H5_ATTRIBUTE
from ..readers.h5 import attr_list
from ..readers.rnn_layouts import CUDNN_PARTS, to_cudnn
from .weights import derive_name, is_known, layer_arrays, nested_arrays

__all__ = ["write_h5", "HDF5_OBJECT_HEADER_LIMIT", "KERAS2_VERSION"]

HDF5_OBJECT_HEADER_LIMIT = 64512
#: ``keras_version`` written for a Keras 1 input re-expressed as Keras 2 (any 2.x makes loaders
#: skip their Keras 1 conversions, which bnconvert already did)
KERAS2_VERSION = "2.15.0"


def write_h5(model: Model, out: Path, *, config: dict[str, Any], keras1: bool, original: Model) -> None:
    """Write ``model`` (folded from ``original``) with ``config`` (already edited) to ``out``.

    ``keras1``: the input was a Keras 1 file; the output is a Keras 2 file (TensorFlow backend,
    weights named ``<layer>/<weight>:0``). Otherwise every weight keeps the name it had in the
    input, and a new one (a created bias) is named after its siblings.
    """
    source = model.source
    if source is None:
        raise OutputError("the model does not say which file it came from")
    # Built in memory, written with plain file I/O: libhdf5 writing straight to a full disk can
    # crash the process (found by tests/hostile); Python's write raises a clean OSError instead.
    image = io.BytesIO()
    with h5py.File(source.path, "r") as orig, h5py.File(image, "w") as f:
        full = "model_weights" in orig and "model_config" in orig.attrs
        root = orig["model_weights"] if full else orig
        _root_attrs(orig, f, config, keras1=keras1, flipped=source.kernels_flipped)
        group = f.create_group("model_weights")
        names = _layer_names(root, model)
        vlen = _is_vlen(root, "layer_names")
        save_list_attr(group, "layer_names", names, vlen=vlen)
        backend = "tensorflow" if keras1 or source.kernels_flipped else _text(root.attrs.get("backend") or orig.attrs.get("backend") or "tensorflow")
        version = KERAS2_VERSION if keras1 else _text(root.attrs.get("keras_version") or orig.attrs.get("keras_version") or KERAS2_VERSION)
        group.attrs["backend"] = backend
        group.attrs["keras_version"] = version
        for name in sorted(names):
            layer = model[name] if name in model else None  # noqa: SIM401 (Model has no .get)
            stored = attr_list(root[name], "weight_names") if name in root else None
            if layer is None or not is_known(layer):
                if name not in root:
                    raise OutputError(f"layer '{name}': no weights in the input to copy")
                root.copy(root[name], group, name=name)
                continue
            known = {} if keras1 or name not in original else _names_by_meaning(original[name], stored or [])
            _write_layer(group.create_group(name), layer, stored or [], known, keras1=keras1, vlen=vlen)
        if "top_level_model_weights" in root:
            root.copy(root["top_level_model_weights"], group, name="top_level_model_weights")
    with image.getbuffer() as view:  # the buffer itself: getvalue() would copy the whole file once more
        out.write_bytes(view)


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _is_vlen(group: h5py.Group, name: str) -> bool:
    for key in (name, f"{name}0"):
        if key in group.attrs:
            return group.attrs.get_id(key).dtype.kind == "O"
    return True


def _root_attrs(orig: h5py.File, f: h5py.File, config: dict[str, Any], *, keras1: bool, flipped: bool) -> None:
    text = json.dumps(config)
    if keras1:
        f.attrs["keras_version"] = KERAS2_VERSION
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = text
        return
    for key, value in orig.attrs.items():
        if key in ("model_config", "layer_names", H5_ATTRIBUTE) or key.startswith("layer_names"):
            continue  # the input's provenance stamp describes the input, not this file
        f.attrs[key] = value
    if flipped:
        f.attrs["backend"] = "tensorflow"  # kernels are now cross-correlation kernels
    elif "backend" not in f.attrs:
        f.attrs["backend"] = "tensorflow"
    if "keras_version" not in f.attrs:
        f.attrs["keras_version"] = KERAS2_VERSION
    raw = orig.attrs.get("model_config")
    f.attrs["model_config"] = text.encode("utf-8") if isinstance(raw, bytes) else text


def _layer_names(root: h5py.Group, model: Model) -> list[str]:
    """The input's ``layer_names`` minus the layers the fold removed, in ``model``'s order (which
    :func:`~.order.in_keras_order` made the order Keras lists them in, and loads weights by)."""
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    original = attr_list(root, "layer_names") or []
    return sorted((name for name in original if name in model), key=position.__getitem__)


def _names_by_meaning(layer: Layer, stored: list[str]) -> dict[tuple[str, str], str]:
    """``(sublayer, meaning) -> stored name`` for the input's layer, by Keras' order (the way the
    reader matched them), so every weight keeps its name even when the name does not say its
    meaning (Keras 3 calls a depthwise kernel ``kernel``)."""
    if layer.model is not None:
        order = [(sub.name, meaning) for sub, meaning, _ in nested_arrays(layer.model)]
    else:
        order = [(layer.name, meaning) for meaning, _, _ in layer_arrays(layer)]
    return dict(zip(order, stored)) if len(order) == len(stored) else {}


def _write_layer(
    group: h5py.Group, layer: Layer, stored: list[str], known: dict[tuple[str, str], str], *, keras1: bool, vlen: bool
) -> None:
    colon = keras1 or _colon(stored) or not stored
    if layer.model is not None:
        items = [(sub, meaning, array) for sub, meaning, array in nested_arrays(layer.model)]
    else:
        items = [(layer, meaning, array) for meaning, array, _ in _stored_layout(layer)]
    names = []
    for sub, meaning, _ in items:
        default = f"{sub.name}/{meaning}:0" if colon else f"{sub.name}/{meaning}"
        if keras1:
            names.append(default)
        elif (sub.name, meaning) in known:
            names.append(known[(sub.name, meaning)])
        else:
            siblings = [n for (owner, _), n in known.items() if owner == sub.name] or (
                [n for n in stored if _owner(n) == sub.name] if layer.model is not None else stored)
            names.append(derive_name(siblings, meaning, default))
    arrays = [array for _, _, array in items]
    if len(set(names)) != len(names):
        raise OutputError(f"layer {layer.label}: two weights would be stored under the same name")
    save_list_attr(group, "weight_names", names, vlen=vlen)
    for name, array in zip(names, arrays):
        data = np.asarray(array)
        dset = group.create_dataset(name, data.shape, dtype=data.dtype)
        if data.shape:
            dset[:] = data
        else:
            dset[()] = data


def _stored_layout(layer: Layer) -> list[tuple[str, np.ndarray, bool]]:
    """:func:`layer_arrays`, with the parts the input stored in the cuDNN layout turned back into it
    (Keras converts them again on loading, by the bias size)."""
    arrays = layer_arrays(layer)
    cudnn = layer.config.get(CUDNN_PARTS) or []
    parts = weight_parts(layer.class_name, layer.config) if cudnn else None
    if not parts:
        return arrays
    out = {meaning: (array, trainable) for meaning, array, trainable in arrays}
    for i in cudnn:
        part = parts[i]
        converted = to_cudnn(part.kind, [out[m][0] for m in part.meanings])
        out.update({m: (a, out[m][1]) for m, a in zip(part.meanings, converted)})
    return [(m, out[m][0], out[m][1]) for m, _, _ in arrays]


def _colon(names: list[str]) -> bool:
    return any(":" in n for n in names)


def _owner(name: str) -> str:
    parts = name.split(":")[0].split("/")
    return parts[-2] if len(parts) >= 2 else ""


def save_list_attr(group: h5py.Group, name: str, values: list[str], *, vlen: bool = True) -> None:
    """Keras' ``save_attributes_to_hdf5_group``: a list of names, split into chunks over 64512 bytes."""
    for key in [k for k in group.attrs if k == name or (k.startswith(name) and k[len(name):].isdigit())]:
        del group.attrs[key]
    if not values:
        group.attrs[name] = np.zeros((0,), dtype=np.float64)  # what Keras writes for an empty list
        return
    encoded = np.asarray([v.encode("utf-8") for v in values])
    if any(len(v) > HDF5_OBJECT_HEADER_LIMIT for v in encoded):
        raise OutputError(f"a name in '{name}' is longer than {HDF5_OBJECT_HEADER_LIMIT} bytes")
    chunks, n = [encoded], 1
    while any(c.nbytes > HDF5_OBJECT_HEADER_LIMIT for c in chunks):
        n += 1
        chunks = np.array_split(encoded, n)
    if n > 1:
        for i, chunk in enumerate(chunks):
            group.attrs[f"{name}{i}"] = chunk
    elif vlen:
        group.attrs[name] = np.array(values, dtype=h5py.string_dtype())
    else:
        group.attrs[name] = encoded
