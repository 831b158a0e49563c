"""Keras 3's audio front ends at inference, in float64.

**STFTSpectrogram** is a strided convolution of each channel with its stored
``real_kernel``/``imag_kernel`` (windowed DFT rows, ``(frame_length, 1, fft_length // 2 + 1)``),
then per ``mode`` the real or imaginary part, their angle, both, the power (``psd`` adds the
inner frequencies once more), its square root (``magnitude``, floored at ``1e-7``) or that
root's log, laid out as its ``data_format``/``expand_dims`` say (Keras'
``STFTSpectrogram._adjust_shapes``). MelSpectrogram is refused (:mod:`.preprocessing`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..model import Layer
from . import checks
from .conv import conv_nd
from .facts import ConfigProblem, Shape, WeightSpec, conv_output_length
from .record import CallContext, defines
from .util import f64

__all__ = ["STFT_MODES", "stft_settings"]


#: STFTSpectrogram's output modes
STFT_MODES = ("log", "magnitude", "psd", "real", "imag", "angle", "stft")


def stft_settings(c: dict[str, Any]) -> tuple[str, int, int, int, str]:
    """``(mode, frame_length, frame_step, frequencies, padding)`` of an STFTSpectrogram config,
    with Keras' defaults (step ``frame_length // 2``, ``fft_length`` the next power of two)."""
    mode, length = c.get("mode", "log"), c.get("frame_length", 256)
    if mode not in STFT_MODES or not checks.pos_int(length):
        raise ConfigProblem(f"config 'mode'/'frame_length' are {mode!r}/{length!r}")
    step = c.get("frame_step") or length // 2
    fft = c.get("fft_length") or 2 ** math.ceil(math.log2(length))
    padding = c.get("padding", "valid")
    if not (checks.pos_int(step) and checks.pos_int(fft)) or padding not in ("valid", "same"):
        raise ConfigProblem(f"config 'frame_step'/'fft_length'/'padding' are {step!r}/{fft!r}/{padding!r}")
    return mode, length, step, fft // 2 + 1, padding


def _stft_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    mode, length, _, freqs, _ = stft_settings(c)
    names = [n for n, skip in (("real_kernel", "imag"), ("imag_kernel", "real")) if mode != skip]
    return [WeightSpec(n, (length, 1, freqs)) for n in names]


def _stft_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    mode, length, step, freqs, padding = stft_settings(c)
    x = shapes[0]
    if len(x) != 3:
        raise ConfigProblem(f"rank-{len(x)} input, expected (batch, time, channels)")
    first = c.get("data_format") == "channels_first"
    time, channels = (x[2], x[1]) if first else (x[1], x[2])
    steps = conv_output_length(time, length, padding, step)
    freqs *= 2 if mode == "stft" else 1
    if c.get("expand_dims"):
        return [(x[0], channels, steps, freqs) if first else (x[0], steps, freqs, channels)]
    flat = None if channels is None else channels * freqs
    return [(x[0], flat, steps) if first else (x[0], steps, flat)]


@defines("STFTSpectrogram", shape=_stft_shape, weights=_stft_weights,
         fields={"frame_length": checks.pos_int, "frame_step": checks.opt(checks.pos_int),
                 "fft_length": checks.opt(checks.pos_int), "mode": checks.one_of(*STFT_MODES),
                 "padding": checks.one_of("valid", "same"), "expand_dims": checks.boolean, "data_format": checks.FORMAT})
def stft_spectrogram_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    c, w = layer.config, layer.weights
    mode, _, step, _, padding = stft_settings(c)
    first = c.get("data_format") == "channels_first"
    x = f64(xs[0])
    signals = x if first else np.moveaxis(x, 2, 1)  # (N, C, T)
    n, channels, time = signals.shape
    flat = signals.reshape(n * channels, time, 1)

    def part(name: str) -> np.ndarray:  # (N, C, F, T')
        y = conv_nd(flat, f64(w[name]), strides=(step,), dilations=(1,), padding=padding)  # (N*C, T', F)
        return np.moveaxis(y, 2, 1).reshape(n, channels, y.shape[2], y.shape[1])

    eps = 1e-7  # keras.backend.epsilon()
    if mode == "real":
        out = part("real_kernel")
    elif mode == "imag":
        out = part("imag_kernel")
    else:
        re, im = part("real_kernel"), part("imag_kernel")
        power = re * re + im * im
        if mode == "angle":
            out = np.arctan2(im, re)
        elif mode == "stft":
            out = np.concatenate([re, im], axis=2)
        elif mode == "psd":
            out = power + np.pad(power[:, :, 1:-1, :], [(0, 0), (0, 0), (1, 1), (0, 0)])
        else:
            out = np.sqrt(np.maximum(power, eps))
            out = out if mode == "magnitude" else np.log(np.maximum(out, eps))
    if c.get("expand_dims"):
        return [np.transpose(out, (0, 1, 3, 2) if first else (0, 3, 2, 1))]
    flat_out = out.reshape(n, -1, out.shape[3])  # (N, C*F, T')
    return [flat_out if first else np.moveaxis(flat_out, 1, 2)]
