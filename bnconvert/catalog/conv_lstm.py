"""ConvLSTM1D/2D/3D (Keras 2.x, tf.keras, Keras 3): an LSTM whose products are convolutions.

The input is ``(N, T, *S, C)`` (channels_last) or ``(N, T, C, *S)`` (channels_first); each step is
a convolution of the step's image, so the spatial sizes follow the convolution rule (``strides``,
``padding`` valid/same, ``dilation_rate``) and the channels become ``filters``.
``return_sequences`` keeps ``T``; ``return_state`` adds the last hidden and cell states, each of
the last output's shape. Weights, the four gates (input, forget, cell, output) side by side on
the last axis: ``kernel (*k, C, 4*filters)``, ``recurrent_kernel (*k, filters, 4*filters)``,
``bias (4*filters,)``.
"""

from __future__ import annotations

from typing import Any

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
from .record import declares

__all__: list[str] = []


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


_CONV_LSTM = {f"ConvLSTM{n}D": n for n in (1, 2, 3)}
declares(*_CONV_LSTM, module=__name__, shape={name: _conv_lstm_shape(n) for name, n in _CONV_LSTM.items()},
         weights={name: _conv_lstm_weights(n) for name, n in _CONV_LSTM.items()})
