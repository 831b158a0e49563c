"""What ``inspect`` says of Lambda and custom layers without running anything, and what the checks
say of a replaced model."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

from ..catalog import catalog
from ..catalog.facts import Shape
from ..errors import BnconvertError
from ..model import MODEL_CLASSES, Layer, Model


def replace_line(path: str, layer: Layer) -> str:
    """A ready-to-edit ``--replace`` option for ``layer``: an Identity, for the user to change into
    what the layer really computes (bnconvert cannot know it: it never runs the code)."""
    spec = json.dumps({"class_name": "Identity", "config": {}})
    return f"--replace {shlex.quote(f'{path}={spec}')}"  # quoted for a POSIX shell, whatever the name holds


def src_replaced(model: Model) -> list[str]:
    """What the user replaced in ``model`` (described), empty when nothing."""
    return list(model.source.replaced) if model.source is not None else []


def refuse_in_keras(model: Model) -> str | None:
    """Why Keras is no reference for ``model``: it holds the user's replacements (Keras would run
    the file as written, Lambda and custom classes included); None otherwise."""
    source = model.source
    if source is None or not source.replaced:
        return None
    return ("the reference is the model with the replacements (" + "; ".join(source.replaced) + "), "
            "not the file as written")


def _entries_by_path(raw: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(prefix, path, entry)`` for every layer entry of the file's config, nested models' included
    (``prefix``: the path of the model holding it, ``outer/``)."""
    from ..writers.config_edit import (  # not at import: inspect loads no writer
        entry_name,
        layer_entries,
    )

    stack: list[tuple[Any, str]] = [(raw, "")] if isinstance(raw, dict) else []
    while stack:
        model_entry, prefix = stack.pop()
        try:
            entries = layer_entries(model_entry)
        except BnconvertError:
            continue
        for entry in entries:
            if isinstance(entry, dict):
                yield prefix, prefix + entry_name(entry), entry
                if entry.get("class_name") in MODEL_CLASSES:
                    stack.append((entry, f"{prefix}{entry_name(entry)}/"))


def declared_shapes(raw: Any) -> dict[str, list[Shape]]:
    """layer path -> the shapes a Keras 3 config records for the tensors its consumers read
    (``__keras_tensor__`` references in ``inbound_nodes``); empty for Keras 1/2 configs, which
    record none."""
    from ..writers.config_edit import (  # not at import: inspect loads no writer
        node_refs,
        ref_triple,
    )

    found: dict[str, list[Shape]] = {}
    for prefix, _, entry in _entries_by_path(raw):
        for node in entry.get("inbound_nodes") or []:
            for ref in node_refs(node):
                if isinstance(ref, dict) and isinstance((ref.get("config") or {}).get("shape"), list):
                    shape = tuple(ref["config"]["shape"])
                    shapes = found.setdefault(prefix + ref_triple(ref)[0], [])
                    if shape not in shapes:
                        shapes.append(shape)
    return found


def _raw_entries(raw: Any) -> dict[str, dict[str, Any]]:
    """layer path -> its entry in the file's config."""
    return {path: entry for _, path, entry in _entries_by_path(raw)}


def _function(config: dict[str, Any]) -> dict[str, Any]:
    """What a Lambda's config says in plain text of its function: never the code itself (a
    marshalled string is not decoded, let alone run)."""
    fn = config.get("function")
    kind = config.get("function_type")
    if isinstance(fn, dict):  # Keras 3: {"class_name": "__lambda__", "config": {"code": ...}} or a named function
        if fn.get("class_name") == "__lambda__":
            return {"function": "<lambda>", "function_type": "lambda", "module": None}
        name = fn.get("config") if isinstance(fn.get("config"), str) else fn.get("registered_name")
        return {"function": name if isinstance(name, str) else None, "function_type": "function",
                "module": fn.get("module") if isinstance(fn.get("module"), str) else None}
    module = config.get("module") if isinstance(config.get("module"), str) else None
    if kind == "function" and isinstance(fn, str):
        return {"function": fn, "function_type": "function", "module": module}
    return {"function": "<lambda>" if kind in ("lambda", None) else None,
            "function_type": kind if isinstance(kind, str) else None, "module": module}


def opaque_layers(model: Model) -> list[dict[str, Any]]:
    """Every Lambda and custom layer of ``model`` (a class outside bnconvert's catalog, or one a
    user registered), with what the file tells of it without running anything: name, class,
    module and registered name, input and declared output shapes, the function's name where it is
    stored as text, the weights, and a ready-to-edit ``--replace`` line (plain, JSON-ready data)."""
    from ..custom import registered_layers
    from ..shapes import infer_shapes

    records = catalog()
    registered = set(registered_layers())
    raw = model.source.config if model.source is not None else None
    entries, declared = _raw_entries(raw), declared_shapes(raw)
    out: list[dict[str, Any]] = []

    def walk(m: Model, prefix: str, inputs: list[Shape] | None) -> None:
        shapes = infer_shapes(m, inputs) if m.has_graph else {}
        for layer in m.layers:
            path = prefix + layer.name
            ins = [shapes.get(ref) for ref in (layer.calls[0] if layer.calls else [])]
            if layer.model is not None:
                known = [s for s in ins if s]
                walk(layer.model, path + "/", known if ins and len(known) == len(ins) else None)
                continue
            custom = layer.class_name not in records or layer.class_name in registered \
                or layer.config.get("keras1_merge_mode") == "<python function>"  # a Keras 1 merge(mode=lambda)
            if layer.class_name != "Lambda" and not custom:
                continue
            entry = entries.get(path, {})
            item: dict[str, Any] = {
                "name": path, "class": layer.source_class,
                "kind": "Lambda" if layer.class_name == "Lambda" else "custom",
                "registered": layer.class_name in registered,
                "module": entry.get("module") if isinstance(entry.get("module"), str) else None,
                "registered_name": entry.get("registered_name") if isinstance(entry.get("registered_name"), str) else None,
                "input_shapes": [list(s) if s is not None else None for s in ins] or [],
                "output_shape": None,
                "weights": [{"name": k, "shape": list(v.shape)} for k, v in layer.weights.items()],
            }
            built = (entry.get("build_config") or {}).get("input_shape") if isinstance(entry.get("build_config"), dict) else None
            if len(ins) == 1 and ins[0] is None and isinstance(built, list):  # Keras 3 records what the layer was built on
                item["input_shapes"] = [built]
            stated = layer.config.get("output_shape") if layer.class_name == "Lambda" else None
            if isinstance(stated, (list, tuple)) and all(d is None or isinstance(d, int) for d in stated):
                item["output_shape"] = [None, *stated]
            elif declared.get(path):
                item["output_shape"] = list(declared[path][0])
            if layer.class_name == "Lambda":
                item.update(_function(layer.config))
            item["replace"] = replace_line(path, layer)
            out.append(item)

    if model.has_graph:
        walk(model, "", None)
    return out
