"""The file's own config rewritten for the replacements, so a folded file is the replaced model
(Keras 1/2 lists and Keras 3 dicts, Sequential, Functional, nested models)."""

from __future__ import annotations

import copy
from typing import Any

from ..catalog.facts import Shape
from ..errors import BnconvertError
from ..model import MODEL_CLASSES, Model, TensorRef
from .names import chain_names
from .spec import Replacement

#: config keys Keras 3's ``from_config`` reads without a default (Rescaling deserializes its
#: ``scale`` and ``offset`` by key): written into a replacement's entry when the user left them out
_KERAS3_REQUIRED = {"Rescaling": {"scale": 1.0, "offset": 0.0}}


def rewrite_entry(model_entry: dict[str, Any], prefix: str, plan: dict[str, tuple[str, Replacement]],
                  declared: dict[str, list[Shape]]) -> None:
    """Rewrite one model entry of the raw config in place: each replaced layer's entry becomes its
    chain's entries (names as :func:`_chain` gives them), and every reference to it a reference to
    the chain's last layer; the shapes a Keras 3 config records for those references are
    collected in ``declared`` (path -> shapes) for :func:`_chain` to hold the replacement to."""
    from ..writers.config_edit import (  # not at import: inspect loads no writer
        entry_name,
        layer_entries,
        node_refs,
        ref_triple,
        set_ref,
    )

    try:
        entries = layer_entries(model_entry)
    except BnconvertError:
        return  # no layer list (a Keras 1 config of another shape): the writers refuse it themselves
    names = {entry_name(e) for e in entries}
    for entry in entries:
        name = entry_name(entry)
        if entry.get("class_name") in MODEL_CLASSES and any(p.startswith(f"{prefix}{name}/") for p in plan):
            rewrite_entry(entry, f"{prefix}{name}/", plan, declared)
    sequential = model_entry.get("class_name") == "Sequential"
    alias: dict[str, str] = {}
    internal: set[str] = set()  # a chain's later layers: wired to the chain's previous layer already
    out: list[dict[str, Any]] = []
    taken = set(names)
    for entry in entries:
        name = entry_name(entry)
        if prefix + name not in plan:
            out.append(entry)
            continue
        _, r = plan[prefix + name]
        chain = chain_names(name, r, taken, f"replacement of '{prefix}{name}'")
        out.extend(_entries(entry, r, chain, sequential))
        alias[name] = chain[-1]
        internal.update(chain[1:])
    entries[:] = out
    if sequential or not alias:
        return

    for entry in entries:
        if entry_name(entry) in internal:
            continue
        for node in entry.get("inbound_nodes") or []:
            for ref in node_refs(node):
                layer, k, i = ref_triple(ref)
                if layer in alias:
                    if isinstance(ref, dict) and isinstance((ref.get("config") or {}).get("shape"), list):
                        declared.setdefault(prefix + layer, []).append(tuple(ref["config"]["shape"]))
                    set_ref(ref, (alias[layer], k, i))
    body = model_entry.get("config")
    for key in ("output_layers", "input_layers"):
        value = body.get(key) if isinstance(body, dict) else None
        for ref in _layer_refs(value):
            if ref[0] in alias:
                ref[0] = alias[ref[0]]


def _layer_refs(value: Any) -> list[list[Any]]:
    """The ``[name, node, index]`` lists of ``input_layers``/``output_layers`` (list or dict form)."""
    if isinstance(value, dict):
        return [ref for v in value.values() for ref in _layer_refs(v)]
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value]
    if isinstance(value, list):
        return [ref for v in value for ref in _layer_refs(v)]
    return []


def _entries(entry: dict[str, Any], r: Replacement, names: list[str], sequential: bool) -> list[dict[str, Any]]:
    """The config entries of a replacement chain, shaped like ``entry`` (the replaced one)."""
    given = entry.get("config")
    old = given if isinstance(given, dict) else {}
    keras3 = "module" in entry
    nodes = entry.get("inbound_nodes") or []
    out = []
    for j, (name, spec) in enumerate(zip(names, r.layers)):
        config = {**copy.deepcopy(spec["config"]), "name": name}
        if j == 0:  # the first layer of a Sequential without InputLayer declares the model's input
            config.update({k: old[k] for k in ("batch_input_shape", "batch_shape", "input_shape", "input_dim")
                           if old.get(k) is not None and k not in config})
        new: dict[str, Any] = {"class_name": spec["class_name"], "config": config}
        for key, value in _KERAS3_REQUIRED.get(spec["class_name"], {}).items():
            config.setdefault(key, value)
        if keras3:
            new = {"module": "keras.layers", **new, "registered_name": None}
            if j == 0 and "build_config" in entry:
                new["build_config"] = copy.deepcopy(entry["build_config"])
        if not sequential:
            new["name"] = name
            if j == 0:
                new["inbound_nodes"] = [_without_kwargs(node) for node in nodes]
            else:
                new["inbound_nodes"] = [_node_to(names[j - 1], k, node) for k, node in enumerate(nodes)]
        out.append(new)
    return out


def _without_kwargs(node: Any) -> Any:
    """A call node with its tensors and without the Lambda's or custom layer's own keyword arguments
    (``mask``, ``training`` ...: the replacement's ``call`` may not take them)."""
    node = copy.deepcopy(node)
    if isinstance(node, dict):
        return {"args": node.get("args", []), "kwargs": {}}
    if isinstance(node, list):
        for item in node:
            if isinstance(item, list) and len(item) > 3 and isinstance(item[3], dict):
                item[3] = {}
    return node


def _node_to(previous: str, k: int, like: Any) -> Any:
    """Call ``k`` of a chain's next layer: on output ``k`` of ``previous``, in ``like``'s form
    (Keras 3 records the tensor's shape: :func:`fill_shapes` writes it once it is known)."""
    if isinstance(like, dict):
        return {"args": [{"class_name": "__keras_tensor__",
                          "config": {"shape": None, "dtype": "float32", "keras_history": [previous, k, 0]}}],
                "kwargs": {}}
    return [[previous, k, 0, {}]]


def fill_shapes(raw: Any, model: Model) -> None:
    """The shapes of the Keras 3 tensor references a chain's wiring made (Keras 3 refuses an
    undefined one), from static shape inference of the replaced ``model``."""
    from ..shapes import infer_shapes
    from ..writers.config_edit import (  # not at import: inspect loads no writer
        entry_name,
        layer_entries,
        node_refs,
        ref_triple,
    )

    def walk(model_entry: dict[str, Any], m: Model, inputs: list[Shape] | None) -> None:
        try:
            entries = layer_entries(model_entry)
        except BnconvertError:
            return
        shapes = infer_shapes(m, inputs)
        for entry in entries:
            name = entry_name(entry) if isinstance(entry, dict) else ""
            if name not in m:
                continue
            layer = m[name]
            if entry.get("class_name") in MODEL_CLASSES and layer.model is not None:
                ins = [shapes.get(ref) for ref in (layer.calls[0] if layer.calls else [])]
                known = [s for s in ins if s]
                walk(entry, layer.model, known if ins and len(known) == len(ins) else None)
            for node in entry.get("inbound_nodes") or []:
                for ref in node_refs(node):
                    if isinstance(ref, dict) and (ref.get("config") or {}).get("shape", 0) is None:
                        shape = shapes.get(TensorRef(*ref_triple(ref)))
                        if shape is not None:
                            ref["config"]["shape"] = list(shape)

    if isinstance(raw, dict):
        walk(raw, model, None)
