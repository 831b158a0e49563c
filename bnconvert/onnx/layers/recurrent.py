"""SimpleRNN, LSTM, GRU, the generic RNN (SimpleRNNCell/LSTMCell/GRUCell, StackedRNNCells) and
Bidirectional.

A recurrent layer is a chain of cells (one, or a StackedRNNCells stack, bottom first) run over
time. Without a mask a stack equals its cells run one after the other over the whole sequence,
and with a mask too: a masked step keeps every cell's state whatever the cell below it outputs.
So each cell is emitted on its own, in one of two ways:

- the native ONNX ``LSTM`` / ``GRU`` / ``RNN`` operator (time-major, ``layout=0``: onnxruntime's
  CPU kernels refuse ``layout=1``) when there is no mask and both activations are ONNX RNN
  activations; Keras' gate order i, f, c, o becomes ONNX's i, o, f, c; GRU's ``reset_after``
  is ``linear_before_reset``;
- otherwise a ``Scan`` over time whose body is the cell written out in ONNX ops, with Keras'
  mask rule per step (``keras/src/backend/tensorflow/rnn.py``, tf_keras ``backend.rnn``): a
  masked step keeps the previous states, and outputs the previous output (zeros before the
  first unmasked step), or zeros when ``zero_output_for_mask`` is set (Bidirectional sets it on
  both its layers when they return sequences). The input projection ``x @ kernel + bias`` is one
  MatMul over the whole sequence, outside the loop.

Order of the outputs over time: a ``go_backwards`` layer returns its sequence in processing
order (reversed), and Bidirectional flips its backward layer's sequence back.

ONNX leaves open whether ``activation_alpha``/``activation_beta`` hold one value per activation
or one per activation that takes the parameter (onnxruntime reads the latter); a native node is
only emitted when both readings give every activation the same values (else a Bidirectional
becomes two one-direction nodes, and a single direction a Scan).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from ...catalog.facts import ConfigProblem
from ...catalog.recurrent import cell_configs
from ...catalog.wrappers import backward_config, inner_layer
from ..builder import Builder, Call, Tensor
from ..layout import Perm, identity, position
from ..registry import converts, refuse
from .activations import ACTIVATIONS, activation_name, emit_activation

__all__ = ["bidirectional", "recurrent"]

_log = logging.getLogger(__name__)

_GATES = {"SimpleRNNCell": 1, "LSTMCell": 4, "GRUCell": 3}
_ONNX_OP = {"SimpleRNNCell": "RNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}
#: Keras gate order -> ONNX gate order (LSTM: Keras i, f, c, o; ONNX i, o, f, c)
_GATE_ORDER = {"SimpleRNNCell": [0], "LSTMCell": [0, 3, 1, 2], "GRUCell": [0, 1, 2]}
_LINEAR = ("linear", None)
_TIME_MAJOR: Perm = (1, 0, 2)
#: ONNX RNN activations that read ``activation_alpha`` / ``activation_beta``
_USES = {"alpha": {"Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu"},
         "beta": {"Affine", "ScaledTanh", "HardSigmoid"}}


@dataclass(frozen=True)
class Cell:
    """One cell's weights by meaning (Keras gate order, gates side by side) and functions."""

    kind: str  # SimpleRNNCell, LSTMCell or GRUCell
    units: int
    activation: str
    recurrent_activation: str
    kernel: np.ndarray  # (F, G*u)
    recurrent_kernel: np.ndarray  # (u, G*u)
    bias: np.ndarray | None  # (G*u,), or (2, G*u) for a GRU with reset_after
    reset_after: bool

    @property
    def gates(self) -> int:
        return _GATES[self.kind]

    @property
    def n_states(self) -> int:
        return 2 if self.kind == "LSTMCell" else 1


@dataclass(frozen=True)
class Direction:
    """One recurrent layer (or one half of a Bidirectional): its cells and how it walks time."""

    cells: list[Cell]
    backwards: bool
    zero_output: bool
    unroll: bool

    @property
    def n_states(self) -> int:
        return sum(c.n_states for c in self.cells)


# -- reading the config ----------------------------------------------------------------------
def _function(call: Call, cfg: dict[str, Any], key: str, default: str) -> str:
    name = activation_name(cfg.get(key, default))
    if name not in _LINEAR and name not in ACTIVATIONS:
        raise refuse(call, f"{key} {name or cfg.get(key)!r} is not supported")
    return name or "linear"


def _direction(call: Call, class_name: str, c: dict[str, Any], prefix: str, *, zero_output: bool) -> Direction:
    """The Direction of a recurrent layer config whose weights are ``<prefix><meaning>``."""
    if c.get("time_major"):
        raise refuse(call, "time_major=True (time-first input) is not supported")
    if c.get("stateful"):
        _log.warning("'%s' (%s) is stateful: exported with zero initial states, as a freshly reset layer",
                     call.name, call.layer.source_class)
    try:
        configs = cell_configs(class_name, c)
    except ConfigProblem as exc:
        raise refuse(call, str(exc)) from None
    weights, cells = call.layer.weights, []
    for i, (kind, cfg) in enumerate(configs):
        p = prefix + (f"cells/{i}/" if len(configs) > 1 else "")
        kernel, rkernel = weights.get(f"{p}kernel"), weights.get(f"{p}recurrent_kernel")
        use_bias = cfg.get("use_bias", True) is not False
        bias = weights.get(f"{p}bias") if use_bias else None
        if kernel is None or rkernel is None or (use_bias and bias is None):
            raise refuse(call, f"weights {p}kernel, {p}recurrent_kernel, {p}bias missing")
        units, gates = int(cfg["units"]), _GATES[kind]
        reset_after = kind == "GRUCell" and cfg.get("reset_after", True) is not False
        want_bias = (2, gates * units) if reset_after else (gates * units,)
        if kernel.shape[1:] != (gates * units,) or rkernel.shape != (units, gates * units) or (
                bias is not None and bias.shape != want_bias):
            raise refuse(call, f"{kind} weights of shapes {kernel.shape}, {rkernel.shape}, "
                               f"{None if bias is None else bias.shape} for {units} units")
        recurrent = "linear" if kind == "SimpleRNNCell" else _function(call, cfg, "recurrent_activation", "sigmoid")
        cells.append(Cell(kind=kind, units=units, activation=_function(call, cfg, "activation", "tanh"),
                          recurrent_activation=recurrent, kernel=np.asarray(kernel), recurrent_kernel=np.asarray(rkernel),
                          bias=None if bias is None else np.asarray(bias), reset_after=reset_after))
    return Direction(cells=cells, backwards=bool(c.get("go_backwards")), zero_output=zero_output,
                     unroll=bool(c.get("unroll")))


def _initial_states(b: Builder, call: Call, states: list[Tensor], n: int) -> list[str] | None:
    """The initial states passed as extra call inputs (``[x, h0, c0]``), as (N, u) values."""
    if not states:
        return None
    if len(states) != n:
        raise refuse(call, f"called with {len(states)} initial states, the layer has {n}")
    return [b.view(s, identity(2)) for s in states]


# -- native ONNX operators -------------------------------------------------------------------
def _onnx_activation(name: str, generation: int) -> tuple[str, float | None, float | None] | None:
    """Keras activation -> (ONNX RNN activation, alpha, beta); None when ONNX has no such one."""
    table: dict[str, tuple[str, float | None, float | None]] = {
        "tanh": ("Tanh", None, None), "sigmoid": ("Sigmoid", None, None), "relu": ("Relu", None, None),
        "linear": ("Affine", 1.0, 0.0), "elu": ("Elu", 1.0, None), "softsign": ("Softsign", None, None),
        "softplus": ("Softplus", None, None), "leaky_relu": ("LeakyRelu", 0.2, None),
        # Keras 3: relu6(x + 3) / 6; Keras 1/2 and tf.keras: clip(0.2 x + 0.5, 0, 1)
        "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0 if generation >= 3 else 0.2, 0.5),
    }
    return table.get(name)


def _cell_activations(cell: Cell) -> list[str]:
    """The ONNX activation list of one direction: f (gates), g (candidate), h (LSTM output)."""
    if cell.kind == "SimpleRNNCell":
        return [cell.activation]
    if cell.kind == "GRUCell":
        return [cell.recurrent_activation, cell.activation]
    return [cell.recurrent_activation, cell.activation, cell.activation]


def _native_activations(cells: list[Cell], generation: int) -> dict[str, Any] | None:
    """The activation attributes of a native node running ``cells`` (one per direction), or None
    when a function has no ONNX RNN equivalent or the alpha/beta lists would be ambiguous."""
    mapped = [_onnx_activation(a, generation) for cell in cells for a in _cell_activations(cell)]
    if any(m is None for m in mapped):
        return None
    names = [m[0] for m in mapped]  # type: ignore[index]
    attrs: dict[str, Any] = {"activations": names}
    for key, index in (("alpha", 1), ("beta", 2)):
        users = [name in _USES[key] for name in names]
        if any(users) and not all(users[: max(i for i, u in enumerate(users) if u) + 1]):
            return None  # a function without the parameter comes before one with it
        values = [float(m[index]) for m, u in zip(mapped, users) if u]  # type: ignore[index,arg-type]
        if values:
            attrs[f"activation_{key}"] = values
    return attrs


def _onnx_weights(cell: Cell) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """W (G*u, F), R (G*u, u), B (2*G*u,) of one direction in ONNX gate order."""
    g, u, order = cell.gates, cell.units, _GATE_ORDER[cell.kind]

    def gates(m: np.ndarray) -> np.ndarray:  # (rows, G*u) Keras order -> (G*u, rows) ONNX order
        return m.reshape(m.shape[0], g, u)[:, order, :].reshape(m.shape[0], g * u).T

    if cell.bias is None:
        return gates(cell.kernel), gates(cell.recurrent_kernel), None
    rows = cell.bias.reshape(-1, g * u)  # [input bias] or, for reset_after, [input bias, recurrent bias]
    if rows.shape[0] == 1:  # the recurrent bias Rb is zero
        rows = np.concatenate([rows, np.zeros_like(rows)])
    return gates(cell.kernel), gates(cell.recurrent_kernel), gates(rows).T.reshape(-1)


def _native(b: Builder, name: str, cells: list[Cell], x: str, h0: list[list[str]] | None, *, direction: str,
            generation: int, want_y: bool) -> tuple[str, list[str]]:
    """One native node; returns Y ``(T, dirs, N, u)`` (``""`` unless ``want_y``) and the final
    states, each ``(dirs, N, u)`` (h, and c for an LSTM)."""
    cell = cells[0]
    parts = [_onnx_weights(c) for c in cells]
    w = b.const(f"{name}/W", np.stack([p[0] for p in parts]))
    r = b.const(f"{name}/R", np.stack([p[1] for p in parts]))
    inputs = [x, w, r]
    if any(p[2] is not None for p in parts):
        zeros = np.zeros(2 * cell.gates * cell.units, np.float32)
        inputs.append(b.const(f"{name}/B", np.stack([p[2] if p[2] is not None else zeros for p in parts])))
    if h0 is not None:
        inputs += [""] * (4 - len(inputs)) + [""]  # B (when absent), sequence_lens
        for k in range(cell.n_states):
            each = [b.node("Unsqueeze", [states[k], b.ints(f"{name}/axis0", [0])], name=f"{name}/initial{k}")
                    for states in h0]
            inputs.append(each[0] if len(each) == 1 else b.node("Concat", each, name=f"{name}/initial{k}", axis=0))
    attrs = _native_activations(cells, generation) or {}
    if cell.kind == "GRUCell":
        attrs["linear_before_reset"] = int(cell.reset_after)
    outs = ["Y" if want_y else None, "Y_h"] + (["Y_c"] if cell.kind == "LSTMCell" else [])
    # time-major: ``layout`` (opset 14+) left at its default 0, which is all opset 13 knows
    got = b.nodes_out(_ONNX_OP[cell.kind], inputs, outs, name=name, hidden_size=cell.units, direction=direction, **attrs)
    return got[0], got[1:]


def _reverse_time(b: Builder, value: str, axis: int, name: str) -> str:
    """``value`` with its time axis reversed (a Slice with step -1, any length)."""
    return b.node("Slice", [value, b.ints(f"{name}/start", [-1]), b.ints(f"{name}/end", [-(2**63)]),
                            b.ints(f"{name}/axes", [axis]), b.ints(f"{name}/step", [-1])], name=name)


def _pick(b: Builder, value: str, index: int, name: str, axis: int = 0) -> str:
    """``value[index]`` along ``axis``: one direction of a native node's states (axis 0) or of
    its Y (axis 1)."""
    return b.node("Gather", [value, b.const(f"{name}/index", np.int64(index), np.int64)], name=name, axis=axis)


@dataclass
class Run:
    """What running one Direction gives: the sequence (when asked) and last output as Tensors,
    and the final states as ``(N, u)`` values."""

    sequence: Tensor | None
    last: Tensor
    states: list[str]


def _run_native_cell(b: Builder, name: str, cell: Cell, x: Tensor, h0: list[str] | None, *, backwards: bool,
                     want_seq: bool, flip: bool, generation: int) -> Run:
    n, t = x.shape[0], x.shape[1]
    y, states = _native(b, name, [cell], b.view(x, _TIME_MAJOR), None if h0 is None else [h0],
                        direction="reverse" if backwards else "forward", generation=generation, want_y=want_seq)
    states = [b.node("Squeeze", [s, b.ints(f"{name}/axis0", [0])], name=f"{name}/state{k}") for k, s in enumerate(states)]
    seq = None
    if want_seq:
        y = b.node("Squeeze", [y, b.ints(f"{name}/axis1", [1])], name=f"{name}/sequence")
        if flip:
            y = _reverse_time(b, y, 0, f"{name}/reversed")
        seq = b.tensor((n, t, cell.units), _TIME_MAJOR, y)
    return Run(sequence=seq, last=b.tensor((n, cell.units), identity(2), states[0]), states=states)


# -- the general loop ------------------------------------------------------------------------
def _zeros(b: Builder, name: str, x: str, batch_axis: int, units: int) -> str:
    """A float ``(N, units)`` zero state, N read from ``x`` at run time."""
    batch = b.node("Gather", [b.node("Shape", [x], name=f"{name}/shape"),
                              b.ints(f"{name}/batch_axis", [batch_axis])], name=f"{name}/batch")
    shape = b.node("Concat", [batch, b.ints(f"{name}/units", [units])], name=f"{name}/zeros_shape", axis=0)
    return b.node("ConstantOfShape", [shape], name=f"{name}/zeros",
                  value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))


def _step(bb: Builder, name: str, cell: Cell, xw: str, h: str, c: str | None, generation: int) -> tuple[str, str | None]:
    """The cell's new ``h`` (and ``c``) from the projected input ``xw = x @ kernel + input bias``."""
    u = cell.units

    def act(which: str, v: str, step: str) -> str:
        fn = cell.activation if which == "activation" else cell.recurrent_activation
        return emit_activation(bb, fn, v, node=f"{name}/{step}", out=f"{name}/{step}", axis=1, generation=generation)

    def split(v: str, k: int, step: str) -> list[str]:
        return bb.nodes_out("Split", [v, bb.ints(f"{name}/{step}_sizes", [u] * k)], [f"{step}{i}" for i in range(k)],
                            name=f"{name}/{step}", axis=1)

    def mm(v: str, matrix: np.ndarray, step: str) -> str:
        return bb.node("MatMul", [v, bb.const(f"{name}/{step}_kernel", matrix)], name=f"{name}/{step}")

    def add(p: str, q: str, step: str) -> str:
        return bb.node("Add", [p, q], name=f"{name}/{step}")

    def mul(p: str, q: str, step: str) -> str:
        return bb.node("Mul", [p, q], name=f"{name}/{step}")

    rk = cell.recurrent_kernel
    if cell.kind == "SimpleRNNCell":
        return act("activation", add(xw, mm(h, rk, "recurrent"), "preact"), "h"), None
    if cell.kind == "LSTMCell":
        i, f, g, o = split(add(xw, mm(h, rk, "recurrent"), "z"), 4, "gates")
        i, f, o = (act("recurrent", v, s) for v, s in ((i, "i"), (f, "f"), (o, "o")))
        c_new = add(mul(f, c, "keep"), mul(i, act("activation", g, "candidate"), "write"), "c")  # type: ignore[arg-type]  # an LSTM has c
        return mul(o, act("activation", c_new, "c_act"), "h"), c_new
    xz, xr, xh = split(xw, 3, "x_gates")
    if cell.reset_after:
        inner = mm(h, rk, "recurrent")
        if cell.bias is not None:
            inner = add(inner, bb.const(f"{name}/recurrent_bias", cell.bias[1]), "recurrent_biased")
        mz, mr, mh = split(inner, 3, "h_gates")
        z, r = act("recurrent", add(xz, mz, "z_pre"), "z"), act("recurrent", add(xr, mr, "r_pre"), "r")
        recurrent_h = mul(r, mh, "reset")
    else:
        mz, mr = split(mm(h, rk[:, : 2 * u], "recurrent"), 2, "h_gates")
        z, r = act("recurrent", add(xz, mz, "z_pre"), "z"), act("recurrent", add(xr, mr, "r_pre"), "r")
        recurrent_h = mm(mul(r, h, "reset"), rk[:, 2 * u:], "recurrent_h")
    hh = act("activation", add(xh, recurrent_h, "hh_pre"), "hh")
    one_minus = bb.node("Sub", [bb.const(f"{name}/one", np.float32(1.0)), z], name=f"{name}/one_minus_z")
    return add(mul(z, h, "keep"), mul(one_minus, hh, "write"), "h"), None


def _run_scan_cell(b: Builder, name: str, cell: Cell, x: Tensor, mask: str | None, h0: list[str] | None, *,
                   backwards: bool, zero_output: bool, want_seq: bool, flip: bool, generation: int) -> Run:
    """One cell as a Scan over time; ``mask`` is the ``(N, T, 1)`` bool mask or None."""
    perm, xv = b.native(x)
    if perm not in (identity(3), _TIME_MAJOR):
        perm, xv = identity(3), b.view(x, identity(3))
    t_axis, n_axis = position(perm, 1), position(perm, 0)
    xw = b.node("MatMul", [xv, b.const(f"{name}/kernel", cell.kernel)], name=f"{name}/project")
    if cell.bias is not None:
        xw = b.node("Add", [xw, b.const(f"{name}/bias", cell.bias.reshape(-1, cell.bias.shape[-1])[0])],
                    name=f"{name}/project_biased")
    carry_y = mask is not None and (zero_output or h0 is not None)
    init = list(h0) if h0 is not None else [_zeros(b, f"{name}/initial", xv, n_axis, cell.units)] * cell.n_states
    if carry_y:  # the output before the first step is zeros, whatever the initial state
        init.append(init[0] if h0 is None else _zeros(b, f"{name}/initial_output", xv, n_axis, cell.units))
    bb = b.body()
    h_prev = bb.fresh(f"{name}/h_prev")
    c_prev = bb.fresh(f"{name}/c_prev") if cell.n_states == 2 else None
    y_prev = bb.fresh(f"{name}/y_prev") if carry_y else None
    xw_t = bb.fresh(f"{name}/xw_t")
    m_t = bb.fresh(f"{name}/mask_t") if mask is not None else None
    h, c = _step(bb, name, cell, xw_t, h_prev, c_prev, generation)
    y = h
    if m_t is not None:
        h = bb.node("Where", [m_t, h, h_prev], name=f"{name}/h_masked")
        if c is not None:
            c = bb.node("Where", [m_t, c, c_prev], name=f"{name}/c_masked")  # type: ignore[list-item]
        if zero_output:
            y = bb.node("Where", [m_t, y, bb.const(f"{name}/zero", np.float32(0.0))], name=f"{name}/y_masked")
        elif y_prev is not None:
            y = bb.node("Where", [m_t, y, y_prev], name=f"{name}/y_masked")
        else:
            y = h  # the previous output is the kept state
    body_inputs = [h_prev] + ([c_prev] if c_prev else []) + ([y_prev] if y_prev else []) + [xw_t] + ([m_t] if m_t else [])
    body_outputs = [h] + ([c] if c else []) + ([y] if carry_y else [])
    if want_seq:
        body_outputs.append(bb.node("Identity", [y], name=f"{name}/y_t"))
    body = bb.graph(f"{name}/step", body_inputs, body_outputs, types={m_t: TensorProto.BOOL} if m_t else None)
    rev = int(backwards)
    scans = [xw] + ([mask] if mask is not None else [])
    outs = b.nodes_out("Scan", init + scans, [f"state{k}" for k in range(len(init))] + (["sequence"] if want_seq else []),
                       name=name, body=body, num_scan_inputs=len(scans), scan_input_axes=[t_axis] + [1] * (len(scans) - 1),
                       scan_input_directions=[rev] * len(scans), scan_output_axes=[t_axis] if want_seq else None,
                       scan_output_directions=[int(flip != backwards)] if want_seq else None)
    n, t = x.shape[0], x.shape[1]
    states = outs[: cell.n_states]
    last = outs[cell.n_states] if carry_y else states[0]
    seq = b.tensor((n, t, cell.units), perm, outs[-1]) if want_seq else None
    return Run(sequence=seq, last=b.tensor((n, cell.units), identity(2), last), states=states)


# -- one direction, cell after cell --------------------------------------------------------------
def _step_mask(call: Call) -> Tensor | None:
    """The mask the layer computes with. Keras 3 fills a call's ``mask`` argument only when the
    call has a single tensor argument (``keras/src/layers/layer.py``, ``__call__`` step 6), so a
    Keras 3 RNN handed initial states (``[x, h0, c0]``) runs unmasked, although its output keeps
    the mask; tf_keras masks it."""
    return None if call.generation >= 3 and len(call.inputs) > 1 else call.mask(0)


def _native_ok(cell: Cell, generation: int) -> bool:
    return _native_activations([cell], generation) is not None


def _run(b: Builder, call: Call, name: str, d: Direction, x: Tensor, h0: list[str] | None, *, want_seq: bool,
         flip: bool) -> Run:
    """Run ``d`` over ``x``: the sequence in time order (reversed when ``flip``), the last output
    in processing order, and every cell's final states in order."""
    mask = _step_mask(call)
    mask3 = None
    if mask is not None:
        mask3 = b.node("Unsqueeze", [b.view(mask, identity(2)), b.ints(f"{name}/axis2", [2])], name=f"{name}/mask")
    quirk = mask3 is not None and d.unroll and d.zero_output and d.backwards and want_seq
    states: list[str] = []
    run: Run | None = None
    offset = 0
    for i, cell in enumerate(d.cells):
        top = i == len(d.cells) - 1
        cname = name if len(d.cells) == 1 else f"{name}/cell{i}"
        init = None if h0 is None else h0[offset: offset + cell.n_states]
        offset += cell.n_states
        seq_here, flip_here = (want_seq, flip) if top else (True, False)
        if mask3 is None and _native_ok(cell, call.generation):
            run = _run_native_cell(b, cname, cell, x, init, backwards=d.backwards, want_seq=seq_here, flip=flip_here,
                                   generation=call.generation)
        else:
            run = _run_scan_cell(b, cname, cell, x, mask3, init, backwards=d.backwards,
                                 zero_output=d.zero_output and top and not quirk, want_seq=seq_here, flip=flip_here,
                                 generation=call.generation)
        states += run.states
        if not top:
            x = run.sequence  # type: ignore[assignment]
    assert run is not None
    if quirk and run.sequence is not None and mask3 is not None:
        # unroll=True zeroes the outputs, kept in processing order, with the mask in time order
        # (keras backend.rnn, unrolled branch): in the order asked for, that is the mask as is
        # when it is the processing order, else the reversed mask
        keep = mask3 if flip == d.backwards else _reverse_time(b, mask3, 1, f"{name}/mask_reversed")
        perm, seq = b.native(run.sequence)
        keep = keep if perm == identity(3) else b.node("Transpose", [keep], name=f"{name}/mask_time_major", perm=[1, 0, 2])
        zero = b.const(f"{name}/zero", np.float32(0.0))
        run.sequence = b.tensor(run.sequence.shape, perm, b.node("Where", [keep, seq, zero], name=f"{name}/zeroed"))
    return Run(sequence=run.sequence, last=run.last, states=states)


def _state_tensors(b: Builder, call: Call, states: list[str], first: int) -> list[Tensor]:
    return [b.tensor(call.out_shapes[first + k], identity(2), s) for k, s in enumerate(states)]


@converts("SimpleRNN", "LSTM", "GRU", "RNN")
def recurrent(b: Builder, call: Call) -> list[Tensor]:
    c = call.config
    d = _direction(call, call.layer.class_name, c, "", zero_output=bool(c.get("zero_output_for_mask")))
    h0 = _initial_states(b, call, call.inputs[1:], d.n_states)
    seq = bool(c.get("return_sequences"))
    run = _run(b, call, call.name, d, call.x, h0, want_seq=seq, flip=d.backwards)
    outs = [run.sequence if seq else run.last]
    if c.get("return_state"):
        outs += _state_tensors(b, call, run.states, 1)
    if call.mask(0) is not None:
        call.out_masks = [call.mask(0) if seq else None] + [None] * (len(outs) - 1)
    return outs  # type: ignore[return-value]


# -- Bidirectional ---------------------------------------------------------------------------
def _mirrored(fwd: Direction, bwd: Direction, generation: int) -> bool:
    """True when one ``direction="bidirectional"`` node computes both halves."""
    if len(fwd.cells) != 1 or len(bwd.cells) != 1 or fwd.backwards or not bwd.backwards:
        return False
    f, k = fwd.cells[0], bwd.cells[0]
    same = (f.kind, f.units, f.activation, f.recurrent_activation, f.reset_after) == (
        k.kind, k.units, k.activation, k.recurrent_activation, k.reset_after)
    return same and _native_activations([f, k], generation) is not None


def _merge(b: Builder, call: Call, mode: str | None, y: Tensor, y_rev: Tensor) -> list[Tensor]:
    """Keras' merge of the forward and (flipped) backward outputs."""
    if mode is None:
        return [y, y_rev]
    perm, a = b.native(y)
    other = b.view(y_rev, perm)
    name = call.name
    if mode == "concat":
        out = b.node("Concat", [a, other], name=name, axis=position(perm, -1))
    elif mode == "sum":
        out = b.node("Add", [a, other], name=name)
    elif mode == "mul":
        out = b.node("Mul", [a, other], name=name)
    elif mode == "ave":
        total = b.node("Add", [a, other], name=f"{name}/sum")
        out = b.node("Div", [total, b.const(f"{name}/two", np.float32(2.0))], name=name)
    else:
        raise refuse(call, f"merge_mode {mode!r} is not supported")
    return [b.tensor(call.out_shape, perm, out)]


@converts("Bidirectional")
def bidirectional(b: Builder, call: Call) -> list[Tensor]:
    c = call.config
    try:
        fname, fcfg = inner_layer(c)
        bname, bcfg = backward_config(c)
    except ConfigProblem as exc:
        raise refuse(call, str(exc)) from None
    seq, with_states = bool(fcfg.get("return_sequences")), bool(fcfg.get("return_state") or c.get("return_state"))
    # Keras' Bidirectional sets zero_output_for_mask = return_sequences on both its layers
    fwd = _direction(call, fname, fcfg, "forward/", zero_output=seq)
    bwd = _direction(call, bname, bcfg, "backward/", zero_output=seq)
    given = call.inputs[1:]
    if given and len(given) != fwd.n_states + bwd.n_states:
        raise refuse(call, f"called with {len(given)} initial states, the layers have {fwd.n_states + bwd.n_states}")
    h0 = _initial_states(b, call, given, len(given))
    h0f, h0b = (None, None) if h0 is None else (h0[: fwd.n_states], h0[fwd.n_states:])
    x, n, t = call.x, call.x.shape[0], call.x.shape[1]
    if _step_mask(call) is None and _mirrored(fwd, bwd, call.generation):
        cell = fwd.cells[0]
        y, finals = _native(b, call.name, [cell, bwd.cells[0]], b.view(x, _TIME_MAJOR),
                            None if h0 is None else [h0f, h0b], direction="bidirectional",  # type: ignore[list-item]
                            generation=call.generation, want_y=seq)
        fstates = [_pick(b, s, 0, f"{call.name}/forward_state{k}") for k, s in enumerate(finals)]
        bstates = [_pick(b, s, 1, f"{call.name}/backward_state{k}") for k, s in enumerate(finals)]
        if seq:  # Y (T, 2, N, u): the reverse half is in time order already, as Keras flips it
            halves = [b.tensor((n, t, cell.units), _TIME_MAJOR, _pick(b, y, k, f"{call.name}/{side}", axis=1))
                      for k, side in enumerate(("forward", "backward"))]
        else:
            halves = [b.tensor((n, cell.units), identity(2), s[0]) for s in (fstates, bstates)]
        outs = _merge(b, call, c.get("merge_mode", "concat"), *halves)
    else:
        rf = _run(b, call, f"{call.name}/forward", fwd, x, h0f, want_seq=seq, flip=fwd.backwards)
        rb = _run(b, call, f"{call.name}/backward", bwd, x, h0b, want_seq=seq, flip=not bwd.backwards)
        fstates, bstates = rf.states, rb.states
        pair = (rf.sequence, rb.sequence) if seq else (rf.last, rb.last)
        assert pair[0] is not None and pair[1] is not None
        outs = _merge(b, call, c.get("merge_mode", "concat"), pair[0], pair[1])
    merged = len(outs)
    if with_states:
        outs += _state_tensors(b, call, fstates + bstates, merged)
    if call.mask(0) is not None:
        call.out_masks = [call.mask(0) if seq else None] * merged + [None] * (len(outs) - merged)
    return outs

