"""Give a layer's stored arrays their meaning (reading them defensively is :mod:`.h5guard`'s job).

Both HDF5 layouts (legacy ``.h5`` and the ``model.weights.h5`` inside a ``.keras`` zip) end here:
a layer gets a list of ``(stored name, array)`` pairs, and :func:`assign` resolves them to
``kernel``/``bias``/``gamma``... by name when the names say it, by Keras' order otherwise.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..errors import FormatError
from ..layerspec import meaning_of, weight_spec
from ..model import Layer, Model

__all__ = ["assign", "distribute"]

Named = list[tuple[str, np.ndarray]]


def _expected(layer: Layer, keras1: bool) -> list[str] | None:
    spec = weight_spec(layer.class_name, layer.config)
    if spec is None:
        return None
    names = [m for m, _ in spec]
    if keras1 and layer.class_name == "BatchNormalization":
        names = ["running_std" if m == "moving_variance" else m for m in names]
    return names


def assign(layer: Layer, named: Named, *, keras1: bool = False) -> None:
    """Set ``layer.weights`` from stored ``(name, array)`` pairs in file order."""
    expected = _expected(layer, keras1)
    meanings = [meaning_of(n) for n, _ in named]
    if expected is None:  # a class we do not know: keep what the names say
        layer.weights = {}
        for i, ((n, arr), m) in enumerate(zip(named, meanings)):
            # a sublayer's ``.keras`` weight keeps its path (``query_dense/vars/0`` -> ``query_dense/0``)
            key = m or (n.replace("/vars/", "/") if "/vars/" in n else n.split(":")[0].split("/")[-1]) or f"weight_{i}"
            layer.weights[key if key not in layer.weights else f"{key}_{i}"] = arr
        return
    if len(named) != len(expected):
        found = ", ".join(n for n, _ in named) or "none"
        raise FormatError(
            f"layer {layer.label}: expected {len(expected)} weights ({', '.join(expected) or 'none'}), "
            f"found {len(named)} ({found})"
        )
    # a .keras layer's own save_own_variables may store its variables by name (vars/idf_weights):
    # those names must be the class's, or the file is not what Keras wrote
    by_name = [n.rsplit("vars/", 1)[1] for n, _ in named if "vars/" in n and not n.rsplit("vars/", 1)[1].isdigit()]
    if by_name and sorted(by_name) != sorted(expected):
        raise FormatError(f"layer {layer.label}: weights stored under the names {', '.join(by_name)}; "
                          f"the class's are {', '.join(expected) or 'none'}")
    known = [m for m in meanings if m]
    if len(known) == len(meanings) and sorted(known) == sorted(expected):
        layer.weights = {m: arr for m, (_, arr) in zip(known, named)}
        layer.weights = {m: layer.weights[m] for m in expected}
    else:
        layer.weights = {m: arr for m, (_, arr) in zip(expected, named)}


def _owner(name: str, candidates: set[str]) -> str | None:
    parts = name.split(":")[0].split("/")
    for part in reversed(parts[:-1]):
        if part in candidates:
            return part
    # Keras 1 style "<layer>_W": the longest candidate that prefixes the name up to a "_" (found
    # from the name's own underscores, not by trying every candidate: linear, not weights x layers)
    base = parts[-1]
    at = base.rfind("_")
    while at > 0:
        if base[:at] in candidates:
            return base[:at]
        at = base.rfind("_", 0, at)
    return None


def distribute(model: Model, named: Named, *, keras1: bool = False) -> None:
    """Assign the flat weight list of a nested model (legacy ``.h5``) to its sublayers.

    By name where every weight names its layer (``conv2d_1/kernel:0``), else in Keras' order:
    all trainable weights of all sublayers, then all non-trainable ones.
    """
    leaves = [layer for _, layer, _ in model.walk() if layer.model is None]
    with_weights = [layer for layer in leaves if weight_spec(layer.class_name, layer.config) != []]
    names = {layer.name for layer in with_weights}
    owners = [_owner(n, names) for n, _ in named]
    known = [owner for owner in owners if owner]
    if named and len(known) == len(owners):
        by_layer: dict[str, Named] = defaultdict(list)
        for owner, item in zip(known, named):
            by_layer[owner].append(item)
        for layer in with_weights:
            assign(layer, by_layer.get(layer.name, []), keras1=keras1)
        return
    order: list[tuple[Layer, str, bool]] = []
    for layer in with_weights:
        spec = weight_spec(layer.class_name, layer.config)
        if spec is None:
            raise FormatError(
                f"nested model '{model.name}': weights do not name their layers and layer {layer.label} "
                "is of a class bnconvert does not know, so they cannot be matched"
            )
        order += [(layer, m, t) for m, t in spec]
    order = [o for o in order if o[2]] + [o for o in order if not o[2]]
    if len(order) != len(named):
        raise FormatError(f"nested model '{model.name}': expected {len(order)} weights, found {len(named)}")
    per_layer: dict[str, Named] = defaultdict(list)
    for (layer, meaning, _), (_, arr) in zip(order, named):
        per_layer[layer.name].append((meaning, arr))
    for layer in with_weights:
        spec_names = [m for m, _ in weight_spec(layer.class_name, layer.config) or []]
        got = dict(per_layer[layer.name])
        assign(layer, [(m, got[m]) for m in spec_names], keras1=keras1)
