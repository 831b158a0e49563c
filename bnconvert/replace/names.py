"""How the layers of a replacement chain are named: one rule for the model and the file's config."""

from __future__ import annotations

import re
from typing import Any

from ..catalog import catalog
from ..catalog.facts import ConfigProblem
from .spec import Replacement, ReplacementError


def chain_names(name: str, r: Replacement, taken: set[str], where: str) -> list[str]:
    """The names of the layers replacing layer ``name`` (``taken``: the names of its model, updated).
    The layer that takes the replaced layer's weights keeps ``name`` (one replacement layer, or a
    chain's first layer with weights: a legacy ``.h5`` keeps weights under the layer names it
    lists); the others are named by their configs, else ``<name>_<class>`` made unique. The model
    and the raw config are named by this one rule."""
    holder = 0 if len(r.layers) == 1 else next((j for j, spec in enumerate(r.layers) if _has_weights(spec)), None)
    names = []
    for j, spec in enumerate(r.layers):
        given = spec["config"].get("name")
        if j == holder:
            names.append(name)
        elif isinstance(given, str) and given:
            if given in taken:
                raise ReplacementError(f"{where}: the name '{given}' is taken by another layer")
            taken.add(given)
            names.append(given)
        else:
            names.append(_unique(f"{name}_{_snake(spec['class_name'])}", taken))
    taken.update(names)
    return names


def _has_weights(spec: dict[str, Any]) -> bool:
    record = catalog().get(spec["class_name"])
    try:
        return bool(record is not None and record.weights is not None and record.weights(spec["config"], None))
    except (ConfigProblem, KeyError, TypeError, ValueError):
        return False


def _unique(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
