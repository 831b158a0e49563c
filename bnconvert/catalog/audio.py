"""Keras 3's audio front ends at inference, in float64.

**STFTSpectrogram** is a strided convolution of each channel with its stored
``real_kernel``/``imag_kernel`` (windowed DFT rows, ``(frame_length, 1, fft_length // 2 + 1)``),
then per ``mode`` the real or imaginary part, their angle, both, the power (``psd`` adds the
inner frequencies once more), its square root (``magnitude``, floored at ``1e-7``) or that
root's log, laid out as its ``data_format``/``expand_dims`` say (Keras'
``STFTSpectrogram._adjust_shapes``).

**MelSpectrogram** (no weights: everything is in its config) is Keras' ``ops.stft`` with
``center=True`` (the signal reflect-padded by ``fft_length // 2`` on both sides; a periodic
Hann or Hamming window of ``sequence_length`` centred in ``fft_length``), the magnitude to the
power ``mag_exp``, TensorFlow's HTK mel filter bank (``linear_to_mel_weight_matrix``, DC bin
excluded) and, with ``power_to_db``, ``10 log10(max(x, min_power))`` relative to ``ref_power``,
floored at the largest value of the *whole batch* minus ``top_db`` (so a sample's output
depends on the others in its batch, as in Keras). Output ``(N, num_mel_bins, frames)`` with
``frames = 1 + T // sequence_stride`` for an even ``fft_length`` (Keras' declared
``compute_output_shape`` differs for some lengths; the values have this many frames).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..model import Layer
from . import checks
from .conv import conv_nd
from .facts import ConfigProblem, Shape, WeightSpec, conv_output_length, no_weights
from .record import CallContext, defines
from .util import f64

__all__ = ["STFT_MODES", "mel_matrix", "mel_settings", "stft_settings", "stft_window"]


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


def mel_settings(c: dict[str, Any]) -> dict[str, Any]:
    """A MelSpectrogram config with Keras' defaults filled in."""
    fft = c.get("fft_length", 2048)
    out = {"fft_length": fft, "sequence_stride": c.get("sequence_stride", 512),
           "sequence_length": c.get("sequence_length") or fft, "window": c.get("window", "hann"),
           "sampling_rate": c.get("sampling_rate", 16000), "num_mel_bins": c.get("num_mel_bins", 128),
           "min_freq": c.get("min_freq", 20.0), "max_freq": c.get("max_freq") or int(c.get("sampling_rate", 16000) / 2),
           "power_to_db": c.get("power_to_db", True), "top_db": c.get("top_db", 80.0), "mag_exp": c.get("mag_exp", 2.0),
           "min_power": c.get("min_power", 1e-10), "ref_power": c.get("ref_power", 1.0)}
    ints = ("fft_length", "sequence_stride", "sequence_length", "num_mel_bins")
    if not all(checks.pos_int(out[k]) for k in ints) or out["sequence_length"] > out["fft_length"]:
        raise ConfigProblem(f"config {', '.join(f'{k!r}: {out[k]!r}' for k in ints)}: positive integers, "
                            "sequence_length at most fft_length, expected")
    if not all(checks.number(out[k]) for k in ("sampling_rate", "min_freq", "max_freq", "mag_exp", "min_power", "ref_power")):
        raise ConfigProblem("config frequencies and powers must be finite numbers")
    return out


def stft_window(s: dict[str, Any]) -> np.ndarray:
    """The ``fft_length`` window of ``ops.stft``: periodic Hann/Hamming (or the given values, or
    ones) over ``sequence_length``, zero-padded to the centre of ``fft_length``."""
    n, fft, window = s["sequence_length"], s["fft_length"], s["window"]
    k = np.arange(n)
    if window == "hann":
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)
    elif window == "hamming":
        w = 0.54 - 0.46 * np.cos(2.0 * np.pi * k / n)
    elif window is None:
        w = np.ones(n)
    else:
        w = f64(window)
        if w.shape != (n,):
            raise ConfigProblem(f"config 'window' has shape {w.shape}, expected ({n},)")
    left = (fft - n) // 2
    return np.pad(w, (left, fft - n - left))


def _hertz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + hz / 700.0)


def mel_matrix(s: dict[str, Any]) -> np.ndarray:
    """TensorFlow's (HTK) ``linear_to_mel_weight_matrix``: ``(fft_length // 2 + 1, num_mel_bins)``,
    triangles peaking at 1 between mel-spaced edges from ``min_freq`` to ``max_freq``, DC bin zero."""
    bins, mels = s["fft_length"] // 2 + 1, s["num_mel_bins"]
    linear = _hertz_to_mel(np.linspace(0.0, s["sampling_rate"] / 2.0, bins)[1:])[:, None]
    edges = np.linspace(_hertz_to_mel(np.float64(s["min_freq"])), _hertz_to_mel(np.float64(s["max_freq"])), mels + 2)
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    weights = np.maximum(0.0, np.minimum((linear - lower) / (center - lower), (upper - linear) / (upper - center)))
    return np.pad(weights, [(1, 0), (0, 0)])


def _mel_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    s = mel_settings(c)
    x = shapes[0]
    if len(x) != 2:
        raise ConfigProblem(f"rank-{len(x)} input, expected (batch, samples)")
    pad = s["fft_length"] // 2
    frames = None if x[1] is None else 1 + (x[1] + 2 * pad - s["fft_length"]) // s["sequence_stride"]
    return [(x[0], s["num_mel_bins"], frames)]


@defines("MelSpectrogram", shape=_mel_shape, weights=no_weights,
         fields={"fft_length": checks.pos_int, "sequence_stride": checks.pos_int,
                 "sequence_length": checks.opt(checks.pos_int), "num_mel_bins": checks.pos_int,
                 "power_to_db": checks.boolean})
def mel_spectrogram_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    s = mel_settings(layer.config)
    x = f64(xs[0])
    fft, stride = s["fft_length"], s["sequence_stride"]
    x = np.pad(x, [(0, 0), (fft // 2, fft // 2)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, fft, axis=1)[:, ::stride]  # (N, frames, fft)
    spectrum = np.fft.rfft(frames * stft_window(s), n=fft, axis=-1)
    magnitude = np.abs(spectrum) ** s["mag_exp"]
    mel = magnitude @ mel_matrix(s)  # (N, frames, mels)
    if s["power_to_db"]:
        floor = s["min_power"]
        mel = 10.0 * np.log10(np.maximum(mel, floor)) - 10.0 * np.log10(max(abs(s["ref_power"]), floor))
        mel = np.maximum(mel, mel.max() - s["top_db"])
    return [np.swapaxes(mel, 1, 2)]
