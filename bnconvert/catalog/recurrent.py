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

Semantics (Keras 3 ``keras/src/layers/rnn/{rnn,simple_rnn,lstm,gru}.py`` and the TensorFlow
backend's ``rnn()``, which tf.keras and Keras 1/2 share step for step):

- the states start at zero, or at the call's extra inputs (``initial_state``: ``[x, h0, c0]``,
  a stack's states cell after cell); a ``stateful`` layer's states are taken as zero too (a
  fresh model: bnconvert never carries states between calls);
- ``go_backwards`` reverses the input in time and returns the outputs *in processing order*
  (the first output step is the last input step); Keras does not reverse them back, only
  Bidirectional does;
- a masked step (``mask[:, t]`` False) keeps every state, and its output is the previous output
  (zeros before the first unmasked step), or zero when ``zero_output_for_mask`` (which
  Bidirectional forces to ``return_sequences``); a fully masked row gives the initial states;
- dropouts and ``implementation`` change nothing at inference; nor does ``unroll``, except in
  one case the TensorFlow backend's unrolled loop has (Keras 3 and tf.keras alike): with a mask,
  ``zero_output_for_mask`` and ``go_backwards``, it repeats the previous output at masked steps
  and then zeroes the outputs (held in processing order) with the mask in *time* order;
- Keras 3 fills a layer's mask only when its call has one tensor argument
  (``Layer.__call__``): a recurrent layer given ``initial_state`` runs unmasked there (its
  output still carries the mask); tf.keras and Keras 1/2 apply the mask;
- ``hard_sigmoid`` is the generation's (Keras 1/2, tf.keras ``clip(0.2x + 0.5)``, Keras 3
  ``clip(x/6 + 0.5)``), as every activation from :mod:`.activations`.

Masks: the output carries the input's mask with ``return_sequences``, else none; states none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from .activations import ACTIVATIONS, activation_name
from .facts import (
    ConfigProblem,
    Shape,
    ShapeRule,
    WeightRule,
    WeightSpec,
    positive,
)
from .record import CallContext, defines
from .roles import RECURRENT_ROLES
from .util import f64

__all__ = ["CELL_CLASSES", "cell_configs", "recurrent_weights", "recurrent_layer", "recurrent_masks", "run_cells"]

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


_RECURRENT_CLASSES = (*CELL_CLASSES, "RNN")


def _default_recurrent_activation(ctx: CallContext) -> str:
    """What a config without ``recurrent_activation`` meant: Keras 1 (``inner_activation``) and
    standalone Keras 2 before 2.3 defaulted to ``hard_sigmoid``, later Keras to ``sigmoid``
    (saved configs always name it; this only matters for hand-written ones)."""
    version = ctx.keras_version
    old = ctx.generation == 1 or (ctx.generation == 2 and version is not None and version < (2, 3))
    return "hard_sigmoid" if old else "sigmoid"


def _function(layer: Layer, spec: Any, ctx: CallContext) -> Callable[[np.ndarray], np.ndarray]:
    """The float64 activation named by ``spec`` (None is linear, as Keras' ``activations.get``)."""
    name = activation_name(spec)
    fn = ACTIVATIONS.get(name or "")
    if fn is None:
        raise UnsupportedLayerError(f"layer {layer.label}: activation {name!r} has no float64 semantics")
    generation = ctx.generation
    return lambda x: fn(x, generation)


@dataclass(frozen=True)
class _Cell:
    """One cell's weights and functions; :meth:`step` is Keras' ``cell.call`` at inference."""

    kind: str
    units: int
    kernel: np.ndarray
    recurrent: np.ndarray
    bias: np.ndarray | None  # GRU reset_after: (2, 3u)
    act: Callable[[np.ndarray], np.ndarray]
    rec_act: Callable[[np.ndarray], np.ndarray]
    reset_after: bool

    @property
    def n_states(self) -> int:
        return _STATES[self.kind]

    def project(self, x: np.ndarray) -> np.ndarray:
        """The input's share of every gate, ``x @ kernel + input bias`` (any leading axes)."""
        y = np.matmul(x, self.kernel)
        if self.bias is not None:
            y += self.bias[0] if self.bias.ndim == 2 else self.bias
        return y

    def step(self, xw: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One time step from the projected input ``xw``: ``(output, new states)``."""
        u, h = self.units, states[0]
        if self.kind == "SimpleRNNCell":
            out = self.act(xw + h @ self.recurrent)
            return out, [out]
        if self.kind == "LSTMCell":
            z = xw + h @ self.recurrent
            i, f = self.rec_act(z[:, :u]), self.rec_act(z[:, u:2 * u])
            c = f * states[1] + i * self.act(z[:, 2 * u:3 * u])
            o = self.rec_act(z[:, 3 * u:])
            out = o * self.act(c)
            return out, [out, c]
        # GRUCell: gates z, r, h; the reset gate acts after the recurrent product (reset_after,
        # with its own recurrent bias) or on the state before it
        if self.reset_after:
            inner = h @ self.recurrent
            if self.bias is not None:
                inner = inner + self.bias[1]
            z = self.rec_act(xw[:, :u] + inner[:, :u])
            r = self.rec_act(xw[:, u:2 * u] + inner[:, u:2 * u])
            hh = self.act(xw[:, 2 * u:] + r * inner[:, 2 * u:])
        else:
            inner = h @ self.recurrent[:, :2 * u]
            z = self.rec_act(xw[:, :u] + inner[:, :u])
            r = self.rec_act(xw[:, u:2 * u] + inner[:, u:])
            hh = self.act(xw[:, 2 * u:] + (r * h) @ self.recurrent[:, 2 * u:])
        out = z * h + (1.0 - z) * hh
        return out, [out]


def _cells(layer: Layer, ctx: CallContext) -> list[_Cell]:
    """The layer's cells, bottom first, with their weights by meaning."""
    configs = cell_configs(layer.class_name, layer.config)
    cells = []
    for i, (kind, c) in enumerate(configs):
        prefix = f"cells/{i}/" if len(configs) > 1 else ""
        w = layer.weights
        missing = [n for n in ("kernel", "recurrent_kernel") if f"{prefix}{n}" not in w]
        if missing:
            raise UnsupportedLayerError(f"layer {layer.label}: no weight {prefix}{missing[0]}")
        bias = w.get(f"{prefix}bias") if c.get("use_bias", True) is not False else None
        bias = None if bias is None else f64(bias)
        reset_after = kind == "GRUCell" and c.get("reset_after", True) is not False
        if bias is not None and bias.ndim == 2 and not reset_after:
            raise UnsupportedLayerError(f"layer {layer.label}: a (2, 3u) GRU bias with reset_after=False")
        cells.append(_Cell(kind, int(c["units"]), f64(w[f"{prefix}kernel"]), f64(w[f"{prefix}recurrent_kernel"]), bias,
                           _function(layer, c.get("activation", "tanh"), ctx),
                           _function(layer, c.get("recurrent_activation", _default_recurrent_activation(ctx)), ctx),
                           reset_after))
    return cells


def _initial_states(layer: Layer, cells: list[_Cell], xs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Per cell, its starting states: the call's extra inputs in order, else zeros."""
    n = xs[0].shape[0]
    given = [f64(x) for x in xs[1:]]
    if not given:
        return [[np.zeros((n, cell.units)) for _ in range(cell.n_states)] for cell in cells]
    if len(given) != sum(cell.n_states for cell in cells):
        raise UnsupportedLayerError(f"layer {layer.label}: called with {len(given)} initial states, its cells have "
                                    f"{sum(cell.n_states for cell in cells)}")
    out, it = [], iter(given)
    for cell in cells:
        out.append([next(it) for _ in range(cell.n_states)])
    return out


def run_cells(cells: list[_Cell], x: np.ndarray, states: list[list[np.ndarray]], mask: np.ndarray | None, *,
              go_backwards: bool, zero_output_for_mask: bool,
              unroll: bool = False) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Keras' ``backend.rnn`` loop: the outputs per processed step (in processing order), then
    the last output (what ``return_sequences=False`` returns), and the final states. A stack
    feeds each cell's output to the next cell within the step."""
    if unroll and mask is not None and zero_output_for_mask and go_backwards:
        # the TensorFlow backend's unrolled loop (see the module docstring): previous outputs at
        # masked steps, then the sequence zeroed by the mask in time order; the last output is
        # zeroed by the last processed step's mask, as in the loop
        outs, states = run_cells(cells, x, states, mask, go_backwards=True, zero_output_for_mask=False)
        last = np.where(mask[:, 0][:, None], outs[-1], 0.0)
        return [np.where(mask[:, k][:, None], y, 0.0) for k, y in enumerate(outs[:-1])] + [last], states
    steps = x.shape[1]
    if steps == 0:
        raise UnsupportedLayerError("a recurrent layer needs at least one time step")
    projected = cells[0].project(x)  # the bottom cell's input share, for every step at once
    prev = np.zeros((x.shape[0], cells[-1].units))
    outs = []
    for t in (range(steps - 1, -1, -1) if go_backwards else range(steps)):
        y, new = projected[:, t], []
        for i, (cell, st) in enumerate(zip(cells, states)):
            y, ns = cell.step(y if i == 0 else cell.project(y), st)
            new.append(ns)
        if mask is not None:
            keep = mask[:, t][:, None]
            y = np.where(keep, y, 0.0 if zero_output_for_mask else prev)
            new = [[np.where(keep, s1, s0) for s1, s0 in zip(ns, st)] for ns, st in zip(new, states)]
        prev, states = y, new
        outs.append(y)
    return outs + [outs[-1]], states


def recurrent_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """Keras' ``RNN.compute_mask``: the input's mask on a returned sequence, none on states."""
    return [ctx.mask(0) if layer.config.get("return_sequences") else None]


@defines(*_RECURRENT_CLASSES, shape={name: _recurrent_shape(name) for name in _RECURRENT_CLASSES},
         weights={name: recurrent_weights(name) for name in _RECURRENT_CLASSES},
         masking="own", mask=recurrent_masks, fold=RECURRENT_ROLES,
         notes="hard_sigmoid by generation; masked steps keep states and the previous output "
               "(zero when zero_output_for_mask); go_backwards returns outputs in processing order; "
               "a stateful layer starts from zero states (a fresh model), as an unstateful one")
def recurrent_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """SimpleRNN, LSTM, GRU and RNN(cell | [cells] | StackedRNNCells): outputs, then with
    ``return_state`` the final states (every cell's, in order)."""
    c = layer.config
    if c.get("time_major"):
        raise UnsupportedLayerError(f"layer {layer.label}: time_major=True (time-first tensors) is not supported")
    x = f64(xs[0])
    if x.ndim != 3:
        raise UnsupportedLayerError(f"layer {layer.label}: rank-{x.ndim} input, expected (batch, time, features)")
    cells = _cells(layer, ctx)
    mask = ctx.mask(0) if len(xs) == 1 or ctx.generation < 3 else None  # Keras 3: no mask with initial states
    outs, states = run_cells(cells, x, _initial_states(layer, cells, xs), None if mask is None else np.asarray(mask, bool),
                             go_backwards=bool(c.get("go_backwards")),
                             zero_output_for_mask=bool(c.get("zero_output_for_mask")), unroll=bool(c.get("unroll")))
    first = np.stack(outs[:-1], axis=1) if c.get("return_sequences") else outs[-1]
    if not c.get("return_state"):
        return [first]
    return [first] + [s for cell_states in states for s in cell_states]
