"""Where inside a layer a fold lands: its own weights, a wrapper's inner layer, a cell.

A plain Dense or Conv is one site: its weights, its config, its fold role. A TimeDistributed is
its inner layer's site on a tensor with one more axis (the weights are stored unprefixed, the
inner config sits at ``config["layer"]["config"]``); a Bidirectional is two sites, ``forward/``
and ``backward/``; a generic RNN's input kernel is its first cell's (``cells/0/`` in a stack).
The catalog's fold roles (:mod:`bnconvert.catalog.roles`: ``wraps``, ``sides``, ``cell``,
``steps``) say which; nothing here names a class.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..catalog import FoldRole, fold_role
from ..catalog.facts import ConfigProblem
from .kernels import fold_backward_role, fold_forward_role

__all__ = ["Site", "fold_site", "set_use_bias", "sites"]


@dataclass(frozen=True)
class Site:
    """One place a fold rewrites: the weights under ``prefix``, read with ``role`` and the config
    found at ``path`` inside the layer's config (``()``: the layer's own); ``steps`` axes lie
    between the batch axis and what the kernel sees (a TimeDistributed's time axis)."""

    role: FoldRole
    config: dict[str, Any]
    class_name: str
    prefix: str = ""
    path: tuple[str | int, ...] = ()
    steps: int = 0

    def has_bias(self, weights: dict[str, np.ndarray]) -> bool:
        """The site has a bias now (else a fold creates one and sets ``use_bias``)."""
        return bool(self.config.get("use_bias", True)) and f"{self.prefix}bias" in weights


def _entry(value: Any) -> tuple[str, dict[str, Any]] | None:
    if isinstance(value, dict) and isinstance(value.get("class_name"), str) and isinstance(value.get("config"), dict):
        return value["class_name"], value["config"]
    return None


def sites(class_name: str, config: dict[str, Any], *, depth: int = 0) -> list[Site]:
    """The sites of a layer of ``class_name`` with ``config``; ``[]`` when a wrapper's or an RNN's
    inner config cannot be read (the layer is then a barrier to folding)."""
    role = fold_role(class_name)
    if role.wraps is not None:
        inner = _entry(config.get(role.wraps))
        if inner is None or depth > 4:
            return []
        out: list[Site] = []
        for prefix, key in role.sides or (("", role.wraps),):
            own = _entry(config.get(key))
            name, cfg = own if own is not None else inner
            where = key if own is not None else role.wraps
            for site in sites(name, cfg, depth=depth + 1):
                out.append(Site(site.role, site.config, site.class_name, prefix + site.prefix,
                                (where, "config", *site.path), site.steps + role.steps))
        return out
    if role.cell is not None:
        try:
            prefix, path, cfg, cell_role = role.cell(config)
        except (ValueError, ConfigProblem):  # a cell config the catalog cannot read: no site
            return []
        return [Site(cell_role, cfg, class_name, prefix, path, role.steps)]
    return [Site(role, config, class_name, "", (), role.steps)]


def fold_site(site: Site, weights: dict[str, np.ndarray], s: np.ndarray, t: np.ndarray, *,
              backward: bool) -> dict[str, np.ndarray]:
    """``weights`` (the whole layer's) with the site's ones folded (``backward``: the site feeds
    ``s*x + t``; else it reads it); the other weights are passed through untouched."""
    mine = {k[len(site.prefix):]: v for k, v in weights.items() if k.startswith(site.prefix)}
    move = fold_backward_role if backward else fold_forward_role
    new = move(site.role, mine, s, t, config=site.config, what=site.class_name)
    return {**weights, **{f"{site.prefix}{k}": v for k, v in new.items()}}


def set_use_bias(config: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    """A copy of ``config`` with ``use_bias`` true in the config at ``path`` (the original,
    shared with the unfolded model, is never modified)."""
    new = copy.deepcopy(config)
    node: Any = new
    for key in path:
        node = node[key]
    node["use_bias"] = True
    return new
