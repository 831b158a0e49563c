"""Find every place where a model config carries Python code, however deeply it is nested.

bnconvert itself never runs such code: a Lambda's bytecode stays an opaque string in the config,
a custom class is only a name. But the reference runners (the fold check and ``verify``) hand the
original file to Keras, and Keras *does* run it: tf-keras unmarshals a legacy ``.h5`` Lambda's
bytecode with no ``safe_mode`` at all. So before any file reaches Keras, its raw config is walked
completely here (not just the top-level layers: a Lambda can hide inside ``TimeDistributed``,
``Bidirectional``, a nested model or a Keras 1 ``Merge``), and a file with code never gets there.
"""

from __future__ import annotations

from typing import Any

from ..model import Model

__all__ = ["code_in_config", "code_in_model"]

#: keys whose value "lambda" means serialised bytecode follows (Keras 1/2 Lambda, Keras 1 Merge)
_TYPE_KEYS = ("function_type", "output_shape_type", "mode_type")
_CODE_CLASSES = {"Lambda", "__lambda__"}


def code_in_config(config: Any, limit: int = 10) -> list[str]:
    """Where ``config`` (parsed JSON) holds Python code, as readable paths; empty when nowhere."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(config, "config")]
    while stack and len(found) < limit:
        value, where = stack.pop()
        if isinstance(value, dict):
            cls = value.get("class_name")
            if cls in _CODE_CLASSES:
                inner = value.get("config")
                name = value.get("name") or (inner.get("name") if isinstance(inner, dict) else None)
                found.append(f"{where}: {cls}" + (f" '{name}'" if isinstance(name, str) else ""))
            for key in _TYPE_KEYS:
                if value.get(key) == "lambda":
                    found.append(f"{where}.{key} = {value[key]!r} (serialised bytecode)")
            stack.extend((v, f"{where}.{k}") for k, v in value.items() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value) if isinstance(v, (dict, list)))
    return found


def code_in_model(model: Model) -> list[str]:
    """Code anywhere in a loaded model: layers first (``layer 'lam' (Lambda)``), then every place
    in the file's raw config and in the layers' configs (a Lambda inside a wrapper)."""
    found = [f"layer '{path}' ({layer.source_class})"
             for path, layer, _ in model.walk() if layer.class_name in _CODE_CLASSES]
    for path, layer, _ in model.walk():
        found += [f"layer '{path}': {w}" for w in code_in_config(layer.config)]
    if model.source is not None and model.source.config is not None:
        found += code_in_config(model.source.config)
    return list(dict.fromkeys(found))
