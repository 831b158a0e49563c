"""ConvLSTM1D/2D/3D (Keras 2.x, tf.keras, Keras 3): an LSTM whose products are convolutions.

The input is ``(N, T, *S, C)`` (channels_last) or ``(N, T, C, *S)`` (channels_first); each step is
a convolution of the step's image, so the spatial sizes follow the convolution rule (``strides``,
``padding`` valid/same, ``dilation_rate``) and the channels become ``filters``.
``return_sequences`` keeps ``T``; ``return_state`` adds the last hidden and cell states, each of
the last output's shape. Weights, the four gates (input, forget, cell, output) side by side on
the last axis: ``kernel (*k, C, 4*filters)``, ``recurrent_kernel (*k, filters, 4*filters)``,
``bias (4*filters,)``.

Semantics (Keras 3 ``keras/src/layers/rnn/conv_lstm.py`` ``ConvLSTMCell.call`` and tf.keras
``base_conv_lstm.py``, the same formulas), per step ``t`` from zero states ``h``, ``c``::

    z = conv(x_t, kernel, strides, padding, dilation_rate) + bias + conv(h, recurrent_kernel, 1, 'same')
    i, f, g, o = split(z, 4, channel axis)
    c = rec(f) * c + rec(i) * act(g);  h = rec(o) * act(c)

``rec`` is ``recurrent_activation`` (tf.keras and Keras 2 default ``hard_sigmoid``, which is
``0.2x + 0.5`` there and ``x/6 + 0.5`` in Keras 3: the generation decides), ``act`` is
``activation``. The recurrent convolution has no dilation (Keras passes none). Dropouts are the
identity at inference; ``stateful`` layers start from zero states, as a freshly loaded model
does; ``unroll`` changes nothing. ``go_backwards`` reads the steps last to first and returns the
sequence in that (reversed) order, as Keras' ``backend.rnn`` does.

Masks (the RNN base class of both Kerases, ``zero_output_for_mask`` False): a masked step keeps
the previous ``h`` and ``c``, and its output is the previous output, which is always ``h``. The
mask of step ``t`` is ``mask[:, t]``; TensorFlow's ``backend.rnn`` gives it trailing unit axes up
to the state's rank and tiles it, so a mask ``(N, T)`` masks whole steps and a Masking layer's
``(N, T, *S)`` masks pixels (its axes must then equal the state's leading ones). The output
carries the input's mask when ``return_sequences``, else none; the states carry none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from .activations import apply_activation
from .conv import conv_nd
from .facts import (
    Shape,
    ShapeRule,
    WeightRule,
    WeightSpec,
    assemble,
    conv_output_length,
    input_channels,
    positive,
    positives,
    settings,
    split_spatial,
)
from .record import CallContext, defines
from .roles import CONV_LSTM
from .util import channels_first, f64, from_last, ntuple

__all__ = ["step_mask"]


def _conv_lstm_shape(n: int) -> ShapeRule:
    def rule(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != n + 3:
            raise ValueError(f"rank-{len(x)} input")
        batch, steps, image = x[0], x[1], (x[0], *x[2:])  # one step's image, batch first
        spatial, _ = split_spatial(image, c)
        ks, strides = settings(c.get("kernel_size"), n), settings(c.get("strides", 1), n)
        dilations, padding = settings(c.get("dilation_rate", 1), n), c.get("padding", "valid")
        out = [conv_output_length(s, k, padding, t, d) for s, k, t, d in zip(spatial, ks, strides, dilations)]
        state = assemble(batch, out, c["filters"], c)
        first = (batch, steps, *state[1:]) if c.get("return_sequences") else state
        return [first, state, state] if c.get("return_state") else [first]

    return rule


def _conv_lstm_weights(n: int) -> WeightRule:
    def rule(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
        ks = positives(c, "kernel_size", n)
        filters = positive(c, "filters")
        image = [(shapes[0][0], *shapes[0][2:])] if shapes and isinstance(shapes[0], tuple) and len(shapes[0]) == n + 3 else None
        cin = input_channels(c, image, n)
        spec = [WeightSpec("kernel", (*ks, cin, 4 * filters)), WeightSpec("recurrent_kernel", (*ks, filters, 4 * filters))]
        return spec + ([WeightSpec("bias", (4 * filters,))] if c.get("use_bias", True) else [])

    return rule


def step_mask(layer: Layer, mask: np.ndarray, t: int, state_shape: tuple[int, ...]) -> np.ndarray:
    """The boolean mask of step ``t`` broadcast to the state's Keras shape ``state_shape``:
    TensorFlow's ``_expand_mask`` (trailing unit axes, then a tile that needs the mask's axes to
    equal the state's leading ones)."""
    m = np.asarray(mask, dtype=bool)[:, t]
    if m.shape != tuple(state_shape[:m.ndim]):
        raise UnsupportedLayerError(
            f"layer {layer.label}: a mask of shape {tuple(mask.shape)} does not fit the state {tuple(state_shape)}")
    return np.broadcast_to(m.reshape(m.shape + (1,) * (len(state_shape) - m.ndim)), state_shape)


def _recurrent_activation(layer: Layer, ctx: CallContext) -> Any:
    """The config's ``recurrent_activation``; absent, the default of the generation that wrote
    the file (Keras 3 ``sigmoid``, Keras 2 and tf.keras ``hard_sigmoid``); None is linear."""
    spec = layer.config.get("recurrent_activation", "sigmoid" if ctx.generation >= 3 else "hard_sigmoid")
    return "linear" if spec is None else spec


def _conv_lstm_mask(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """Keras' ``RNN.compute_mask``: the input mask on the sequence output, none on the states."""
    out = ctx.mask(0) if layer.config.get("return_sequences") else None
    return [out, None, None] if layer.config.get("return_state") else [out]


_CONV_LSTM = {f"ConvLSTM{n}D": n for n in (1, 2, 3)}


@defines(*_CONV_LSTM, shape={name: _conv_lstm_shape(n) for name, n in _CONV_LSTM.items()},
         weights={name: _conv_lstm_weights(n) for name, n in _CONV_LSTM.items()},
         masking="own", mask=_conv_lstm_mask, fold=CONV_LSTM,
         notes="hard_sigmoid as a recurrent activation is 0.2x+0.5 in Keras 2/tf.keras, x/6+0.5 in Keras 3; "
               "stateful layers run from zero states")
def conv_lstm_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """The whole sequence, channels_last inside: every step's input convolution at once (they do
    not depend on the state), then the recurrence one step at a time."""
    c = layer.config
    kernel, recurrent = f64(layer.weights["kernel"]), f64(layer.weights["recurrent_kernel"])
    n = kernel.ndim - 2
    first = channels_first(c)
    x = f64(xs[0])
    x = np.moveaxis(x, 2, -1) if first else x  # (N, T, *S, C)
    batch, steps = x.shape[:2]
    xg = conv_nd(x.reshape(batch * steps, *x.shape[2:]), kernel, strides=ntuple(c.get("strides", 1), n),
                 dilations=ntuple(c.get("dilation_rate", 1), n), padding=str(c.get("padding", "valid")).lower())
    xg = xg.reshape(batch, steps, *xg.shape[1:])
    bias = layer.weights.get("bias")
    if bias is not None and c.get("use_bias", True) is not False:
        xg += f64(bias)
    rec_spec = _recurrent_activation(layer, ctx)
    state_shape = xg.shape[2:-1] + (kernel.shape[-1] // 4,)  # (*S_out, F)
    h, cell = np.zeros((batch, *state_shape)), np.zeros((batch, *state_shape))
    keras_state = (batch, state_shape[-1], *state_shape[:-1]) if first else (batch, *state_shape)
    mask = ctx.mask(0)
    outputs = []
    for t in (range(steps - 1, -1, -1) if c.get("go_backwards") else range(steps)):
        z = xg[:, t] + conv_nd(h, recurrent, strides=(1,) * n, dilations=(1,) * n, padding="same")
        zi, zf, zg, zo = np.split(z, 4, axis=-1)
        i, f, o = (apply_activation(layer, v, ctx, rec_spec) for v in (zi, zf, zo))
        new_cell = f * cell + i * apply_activation(layer, zg, ctx)
        new_h = o * apply_activation(layer, new_cell, ctx)
        if mask is None:
            h, cell = new_h, new_cell
        else:
            keep = step_mask(layer, mask, t, keras_state)
            keep = np.moveaxis(keep, 1, -1) if first else keep
            h, cell = np.where(keep, new_h, h), np.where(keep, new_cell, cell)
        outputs.append(h)
    h, cell = from_last(h, first), from_last(cell, first)
    if c.get("return_sequences"):
        seq = np.stack(outputs, axis=1)  # (N, T, *S_out, F)
        out = np.moveaxis(seq, -1, 2) if first else seq
    else:
        out = h
    return [out, h, cell] if c.get("return_state") else [out]
