"""Recurrent layers: SimpleRNN, LSTM, GRU and the generic RNN with its cells (ConvLSTM: :mod:`.conv_lstm`).

Shapes (batch first): the input is ``(N, T, F)``; the output is ``(N, T, units)`` with
``return_sequences``, else ``(N, units)``; ``return_state`` adds the final states, each
``(N, units)``: ``h`` for SimpleRNN and GRU, ``h`` then ``c`` for LSTM. A generic ``RNN`` layer
takes its sizes from ``config["cell"]`` (a cell config, or a list of them / a ``StackedRNNCells``:
the output is the last cell's, the states are every cell's in order).

Weights by meaning, in Keras' order, gates side by side on the last axis:

- SimpleRNN: ``kernel (F, u)``, ``recurrent_kernel (u, u)``, ``bias (u,)``;
- LSTM: ``kernel (F, 4u)``, ``recurrent_kernel (u, 4u)``, ``bias (4u,)``, gates i, f, c, o;
- GRU: ``kernel (F, 3u)``, ``recurrent_kernel (u, 3u)``, gates z, r, h; ``bias (3u,)``, or
  ``(2, 3u)`` with ``reset_after`` (row 0 the input bias, row 1 the recurrent one);
- RNN: its cell's weights (a stack of cells: ``cells/<i>/kernel`` ..., cell by cell).

Keras 1 per-gate weights and CuDNNLSTM/CuDNNGRU layouts are turned into these by the readers.
"""

from __future__ import annotations

from typing import Any

from .facts import (
    ConfigProblem,
    Shape,
    ShapeRule,
    WeightRule,
    WeightSpec,
    positive,
)
from .record import declares

__all__ = ["CELL_CLASSES", "cell_configs", "recurrent_weights"]

#: the layer classes that are one cell run over time, and the cell class of each
CELL_CLASSES = {"SimpleRNN": "SimpleRNNCell", "LSTM": "LSTMCell", "GRU": "GRUCell"}
_GATES = {"SimpleRNNCell": 1, "LSTMCell": 4, "GRUCell": 3}
_STATES = {"SimpleRNNCell": 1, "LSTMCell": 2, "GRUCell": 1}


def _cell_of(entry: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise ConfigProblem("config 'cell' is not a layer config")
    return str(entry.get("class_name")), entry["config"]


def cell_configs(class_name: str, c: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The cells a recurrent layer runs, bottom first, as ``(cell class, cell config)``: one for
    SimpleRNN/LSTM/GRU (the layer's own config), the cell or stack of cells of a generic RNN."""
    if class_name in CELL_CLASSES:
        return [(CELL_CLASSES[class_name], c)]
    cell = c.get("cell")
    entries = cell if isinstance(cell, list) else [cell]
    out: list[tuple[str, dict[str, Any]]] = []
    for entry in entries:
        name, cfg = _cell_of(entry)
        if name == "StackedRNNCells":
            out += [_cell_of(e) for e in cfg.get("cells") or []]
        else:
            out.append((name, cfg))
    if not out or any(name not in _GATES for name, _ in out):
        raise ConfigProblem(f"cell classes {[n for n, _ in out]} are not SimpleRNNCell, LSTMCell or GRUCell")
    return out


def _cell_weights(cell: str, c: dict[str, Any], features: Any, prefix: str = "") -> list[WeightSpec]:
    units = positive(c, "units")
    gates = _GATES[cell]
    spec = [WeightSpec(f"{prefix}kernel", (features, gates * units)),
            WeightSpec(f"{prefix}recurrent_kernel", (units, gates * units))]
    if c.get("use_bias", True):
        two = cell == "GRUCell" and c.get("reset_after", True) is not False
        spec.append(WeightSpec(f"{prefix}bias", (2, gates * units) if two else (gates * units,)))
    return spec


def _features(shapes: list[Shape] | None) -> Any:
    return shapes[0][-1] if shapes and isinstance(shapes[0], tuple) and len(shapes[0]) == 3 else None


def recurrent_weights(class_name: str) -> WeightRule:
    """The weight rule of a recurrent layer class (a stack of cells prefixes ``cells/<i>/``)."""

    def rule(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
        cells = cell_configs(class_name, c)
        features, spec = _features(shapes), []
        for i, (cell, cfg) in enumerate(cells):
            spec += _cell_weights(cell, cfg, features, f"cells/{i}/" if len(cells) > 1 else "")
            features = positive(cfg, "units")
        return spec

    return rule


def _recurrent_shape(class_name: str) -> ShapeRule:
    def rule(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != 3:
            raise ValueError(f"rank-{len(x)} input")
        cells = cell_configs(class_name, c)
        units = cells[-1][1]["units"]
        first = (x[0], x[1], units) if c.get("return_sequences") else (x[0], units)
        if not c.get("return_state"):
            return [first]
        return [first] + [(x[0], cfg["units"]) for cell, cfg in cells for _ in range(_STATES[cell])]

    return rule


_RECURRENT = (*CELL_CLASSES, "RNN")
declares(*_RECURRENT, module=__name__, shape={name: _recurrent_shape(name) for name in _RECURRENT},
         weights={name: recurrent_weights(name) for name in _RECURRENT})
