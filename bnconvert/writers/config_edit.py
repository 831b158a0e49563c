"""Edit a Keras model config so it describes a folded model: the original JSON, minus the layers
the fold removed, with their consumers rewired and the few changed settings updated.

Works on both ``inbound_nodes`` forms: Keras 1/2 lists (``[[[name, node, tensor, kwargs], ...]]``)
and Keras 3 dicts (``[{"args": [...__keras_tensor__...], "kwargs": {...}}]``), on Sequential
models (list or dict body), on Functional models and, recursively, on nested models. Only
BatchNormalization and inference identities may be removed; anything else missing from the
folded model is an error.
"""

from __future__ import annotations

import copy
from typing import Any

from ..catalog import fold_role, kernel_layout
from ..catalog.normalization import READ_AS
from ..errors import OutputError
from ..model import MODEL_CLASSES, Model
from ..readers.rnn_layouts import upgrade_cudnn_config

__all__ = ["OVERRIDE_KEYS", "cudnn_as_native", "edit_config", "entry_name", "keras3_compatible", "layer_entries", "node_refs",
           "ref_triple", "set_ref"]

#: config keys a fold may change on a kept layer
OVERRIDE_KEYS = ("use_bias", "center", "scale")
_SHAPE_KEYS = ("batch_input_shape", "batch_shape", "input_shape", "input_dim", "input_length")


def entry_name(entry: dict[str, Any]) -> str:
    """A layer entry's name (Keras 2/3 put it beside ``config``; Sequential entries only inside)."""
    raw = entry.get("config")
    cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return entry.get("name") or cfg.get("name") or ""


def layer_entries(model_entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The list of layer entries of a ``{"class_name": Sequential|Functional, "config": ...}`` dict
    (the list object itself, so callers can edit it in place)."""
    body = model_entry.get("config")
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and isinstance(body.get("layers"), list):
        return body["layers"]
    raise OutputError(f"model config of '{entry_name(model_entry)}' has no layer list")


def edit_config(config: dict[str, Any], model: Model) -> dict[str, Any]:
    """A new config (the input is not modified) describing the folded ``model``."""
    out = copy.deepcopy(config)
    _edit(out, model)
    return out


def _edit(model_entry: dict[str, Any], model: Model) -> None:
    entries = layer_entries(model_entry)
    kept_names = {layer.name for layer in model.layers}
    removed = [e for e in entries if entry_name(e) not in kept_names]
    for entry in removed:
        cls = str(entry.get("class_name"))
        wraps = fold_role(cls).wraps  # a TimeDistributed(BatchNormalization) folds like a BN
        inner = (entry.get("config") or {}).get(wraps) if wraps else None
        wrapped_bn = isinstance(inner, dict) and inner.get("class_name") == "BatchNormalization"
        is_bn = READ_AS.get(cls, cls) == "BatchNormalization"  # tf.keras' SyncBatchNormalization too
        if not is_bn and not wrapped_bn and fold_role(cls).kind != "identity":
            raise OutputError(f"layer '{entry_name(entry)}' ({cls}) is missing from the folded model; only BN and identities may go")
    if model_entry.get("class_name") == "Sequential":
        _drop_sequential(entries, {entry_name(e) for e in removed})
    else:
        _drop_functional(model_entry, entries, removed)
        position = {layer.name: i for i, layer in enumerate(model.layers)}
        entries.sort(key=lambda e: position.get(entry_name(e), len(position)))  # Keras' order
    for entry in entries:
        name = entry_name(entry)
        if name not in model:
            continue
        layer = model[name]
        cfg = entry.get("config")
        if layer.model is not None and entry.get("class_name") in MODEL_CLASSES:
            _edit(entry, layer.model)
        elif isinstance(cfg, dict):
            _override(cfg, layer.config)


def _override(cfg: Any, ours: Any) -> None:
    """Set the :data:`OVERRIDE_KEYS` the fold changed, also inside nested layer configs (a
    Bidirectional's or TimeDistributed's inner layer, an RNN's cells: a fold may create their bias)."""
    if isinstance(cfg, dict) and isinstance(ours, dict):
        for key in OVERRIDE_KEYS:  # all three default to True in every Keras
            if key in ours and bool(cfg.get(key, True)) != bool(ours[key]):
                cfg[key] = bool(ours[key])
        for key, value in ours.items():
            if key in cfg and isinstance(value, (dict, list)):
                _override(cfg[key], value)
    elif isinstance(cfg, list) and isinstance(ours, list) and len(cfg) == len(ours):
        for a, b in zip(cfg, ours):
            _override(a, b)


def _drop_sequential(entries: list[dict[str, Any]], names: set[str]) -> None:
    carried: dict[str, Any] = {}
    i = 0
    while i < len(entries):
        entry = entries[i]
        if entry_name(entry) in names:
            raw = entry.get("config")
            cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
            # the first layer of a Sequential without InputLayer declares the input shape
            carried.update({k: cfg[k] for k in (*_SHAPE_KEYS, "dtype") if cfg.get(k) is not None and k not in carried})
            del entries[i]
            continue
        if carried:
            cfg = entry.setdefault("config", {})
            if not any(cfg.get(k) is not None for k in _SHAPE_KEYS) and any(k in carried for k in _SHAPE_KEYS):
                cfg.update({k: v for k, v in carried.items() if k in _SHAPE_KEYS or k not in cfg})
            carried = {}
        i += 1


# -- Functional: rewire every reference to a removed layer to that layer's own input ----------------------
def node_refs(node: Any) -> list[Any]:
    """The tensor references of one inbound node: Keras 2 lists ``[name, node, index, ...]`` or
    Keras 3 ``__keras_tensor__`` dicts (returned as the dicts themselves)."""
    found: list[Any] = []
    if isinstance(node, dict) and "args" in node:
        _k3(node.get("args"), found)
        _k3(node.get("kwargs"), found)
    elif isinstance(node, list):
        if node and isinstance(node[0], str):
            node = [node]  # tf.keras writes a call on one tensor unwrapped (TFOpLambda)
        for item in node:
            if isinstance(item, list) and item and isinstance(item[0], str):
                found.append(item)
                if len(item) > 3 and isinstance(item[3], dict):
                    _k2(item[3], found)  # tensors passed as keyword arguments (``y=``, ``value=``)
    return found


def _k2(value: Any, out: list[Any]) -> None:
    """Tensor references ``[name, node, index(, kwargs)]`` inside Keras 2 call keyword arguments."""
    if isinstance(value, dict):
        for v in value.values():
            _k2(v, out)
    elif isinstance(value, list):
        if len(value) in (3, 4) and isinstance(value[0], str) and all(type(x) is int for x in value[1:3]):
            out.append(value)
        else:
            for v in value:
                _k2(v, out)


def _k3(value: Any, out: list[Any]) -> None:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            out.append(value)
        else:
            for v in value.values():
                _k3(v, out)
    elif isinstance(value, list):
        for v in value:
            _k3(v, out)


def ref_triple(ref: Any) -> tuple[str, int, int]:
    if isinstance(ref, dict):
        hist = ref["config"]["keras_history"]
        return str(hist[0]), int(hist[1]), int(hist[2])
    return str(ref[0]), int(ref[1]), int(ref[2])


def set_ref(ref: Any, triple: tuple[str, int, int]) -> None:
    if isinstance(ref, dict):
        ref["config"]["keras_history"] = list(triple)
    else:
        ref[0], ref[1], ref[2] = triple


def _drop_functional(model_entry: dict[str, Any], entries: list[dict[str, Any]], removed: list[dict[str, Any]]) -> None:
    alias: dict[tuple[str, int, int], tuple[str, int, int]] = {}
    for entry in removed:
        for k, node in enumerate(entry.get("inbound_nodes") or []):
            if isinstance(node, dict) and isinstance(node.get("kwargs"), dict) and "mask" in node["kwargs"]:
                # Keras 3 passes a Keras mask as a ``mask`` kwarg tensor; the layers after this one
                # receive it in their own kwargs, so only the data input is rewired
                node = {**node, "kwargs": {key: v for key, v in node["kwargs"].items() if key != "mask"}}
            refs = node_refs(node)
            if len(refs) != 1:
                raise OutputError(f"removed layer '{entry_name(entry)}' has {len(refs)} inputs in call {k}")
            alias[(entry_name(entry), k, 0)] = ref_triple(refs[0])

    def resolve(triple: tuple[str, int, int]) -> tuple[str, int, int]:
        path: list[tuple[str, int, int]] = []
        while triple in alias:
            if len(path) > len(alias):
                raise OutputError(f"cycle among removed layers at '{triple[0]}'")
            path.append(triple)
            triple = alias[triple]
        for step in path:  # each ref into a chain of removed layers then takes one step, not the chain
            alias[step] = triple
        return triple

    gone = {entry_name(e) for e in removed}
    entries[:] = [e for e in entries if entry_name(e) not in gone]
    for entry in entries:
        for node in entry.get("inbound_nodes") or []:
            for ref in node_refs(node):
                set_ref(ref, resolve(ref_triple(ref)))
    body = model_entry["config"]
    for key in ("output_layers", "input_layers"):
        value = body.get(key)
        if isinstance(value, dict):  # keyed inputs/outputs (tf.keras 2.3+, Keras 3)
            value = list(value.values())
        if not isinstance(value, list) or not value:
            continue
        refs = [value] if isinstance(value[0], str) else value
        for ref in refs:
            if isinstance(ref, list) and len(ref) >= 3:
                set_ref(ref, resolve(ref_triple(ref)))


def keras3_compatible(config: dict[str, Any]) -> dict[str, Any]:
    """A Keras 2 config that Keras 3 also loads. tf.keras writes ``groups: 1`` in every
    convolution config and ``kernel_initializer/regularizer/constraint`` in separable ones, which
    Keras 3 refuses as unknown arguments for depthwise, separable and transposed convolutions;
    tf.keras does not need them (defaults, and training-only settings)."""
    for entry in layer_entries(config):
        cls, cfg = entry.get("class_name"), entry.get("config")
        if cls in MODEL_CLASSES and isinstance(cfg, (dict, list)):
            keras3_compatible(entry)
        elif isinstance(cfg, dict):
            kernel = kernel_layout(str(cls))
            if kernel is not None and kernel.kind != "conv" and cfg.get("groups") == 1:
                del cfg["groups"]
            if kernel is not None and kernel.separable:  # tf.keras inherits these from Conv; they only matter in training
                for key in ("kernel_initializer", "kernel_regularizer", "kernel_constraint"):
                    cfg.pop(key, None)
    return config



def cudnn_as_native(config: dict[str, Any]) -> dict[str, Any]:
    """The config with every CuDNNLSTM/CuDNNGRU as the LSTM/GRU computing the same function (tanh,
    sigmoid; GRU ``reset_after``): no Keras since tf.keras 1.x has the cuDNN classes, but every
    Keras that loads an LSTM/GRU from a legacy ``.h5`` converts cuDNN-layout weights, which the
    writer keeps (``_convert_rnn_weights``, telling them by the bias size)."""
    native = upgrade_cudnn_config(config)
    if native is config:
        return config
    stack: list[Any] = [native]
    while stack:  # the reader's bookkeeping: the class the input wrote
        item = stack.pop()
        if isinstance(item, dict):
            item.pop("source_class", None)
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
    return native
