"""Keras 3's STFTSpectrogram (one strided Conv per stored kernel over each channel's signal) and
MelSpectrogram (the windowed DFT as strided Convs, the mel filter bank as a MatMul).

The float64 semantics and the settings are the catalog's (:mod:`bnconvert.catalog.audio`).
"""

from __future__ import annotations

import numpy as np

from ...catalog.audio import mel_matrix, mel_settings, stft_settings, stft_window
from ...catalog.facts import ConfigProblem, conv_output_length
from ...catalog.util import same_pads
from ...layerspec import data_format
from ..builder import Builder, Call, Tensor
from ..layout import identity
from ..registry import converts, refuse

__all__ = ["atan2", "mel_spectrogram", "stft_spectrogram"]


def atan2(b: Builder, y: str, x: str, name: str) -> str:
    """``atan2(y, x)`` as C and numpy define it: ``atan(y / x)`` (0 where both are 0), plus or minus
    pi (the sign of ``y``) where ``x`` is negative; signed zeros count by their sign, which
    ``1 / v`` (+-inf) reveals."""
    def const(what: str, value: float) -> str:
        return b.const(f"{name}/{what}", np.float32(value))

    base = b.node("Atan", [b.node("Div", [y, x], name=f"{name}/ratio")], name=f"{name}/atan")
    base = b.node("Where", [b.node("IsNaN", [base], name=f"{name}/both_zero"), const("zero", 0.0), base], name=f"{name}/principal")
    upper = b.node("Greater", [b.node("Div", [const("one", 1.0), y], name=f"{name}/inverse_y"), const("zero_y", 0.0)],
                   name=f"{name}/upper")
    turn = b.node("Where", [upper, const("pi", np.pi), const("minus_pi", -np.pi)], name=f"{name}/turn")
    left = b.node("Less", [b.node("Div", [const("one_x", 1.0), x], name=f"{name}/inverse_x"), const("zero_x", 0.0)],
                  name=f"{name}/left")
    return b.node("Add", [base, b.node("Where", [left, turn, const("none", 0.0)], name=f"{name}/correction")], name=name)


@converts("STFTSpectrogram")
def stft_spectrogram(b: Builder, call: Call) -> list[Tensor]:
    """Each channel as a ``(N*C, 1, T)`` signal, one strided Conv per stored kernel (real,
    imaginary: ``(F, 1, frame_length)`` in ONNX), then the mode's arithmetic on ``(N, C, F, T')``
    and Keras' layout (``angle``: :func:`atan2`, which ONNX lacks as one operator)."""
    c, w = call.config, call.layer.weights
    try:
        mode, length, step, _, padding = stft_settings(c)
    except ConfigProblem as exc:
        raise refuse(call, str(exc)) from None
    first = data_format(c) == "channels_first"
    x = call.x
    channels, time = (x.shape[1], x.shape[2]) if first else (x.shape[2], x.shape[1])
    if not (isinstance(channels, int) and isinstance(time, int)):
        raise refuse(call, f"the channels and time steps must be static, got {x.shape}")
    n = call.name
    keras_x = b.view(x, identity(3))
    signals = keras_x if first else b.node("Transpose", [keras_x], name=f"{n}/channels_first", perm=[0, 2, 1])
    flat = b.node("Reshape", [signals, b.ints(f"{n}/signal_shape", [-1, 1, time])], name=f"{n}/signals")
    pads = list(same_pads(time, length, step)) if padding == "same" else [0, 0]
    steps = conv_output_length(time, length, padding, step)

    def part(name: str) -> str:
        kernel = np.ascontiguousarray(np.transpose(w[name], (2, 1, 0)))  # (F, 1, frame_length)
        y = b.node("Conv", [flat, b.const(f"{n}/{name}", kernel)], name=f"{n}/{name}_conv", kernel_shape=[length],
                   strides=[step], pads=pads)
        return b.node("Reshape", [y, b.ints(f"{n}/{name}_shape", [-1, channels, kernel.shape[0], steps])], name=f"{n}/{name}_split")

    eps = b.const(f"{n}/epsilon", np.float32(1e-7))
    if mode in ("real", "imag"):
        out = part(f"{mode}_kernel")
    else:
        re, im = part("real_kernel"), part("imag_kernel")
        if mode == "angle":
            out = atan2(b, im, re, f"{n}/angle")
        elif mode == "stft":
            out = b.node("Concat", [re, im], name=f"{n}/stft", axis=2)
        else:
            power = b.node("Add", [b.node("Mul", [re, re], name=f"{n}/re2"), b.node("Mul", [im, im], name=f"{n}/im2")],
                           name=f"{n}/power")
            if mode == "psd":
                inner = b.node("Slice", [power, b.ints(f"{n}/inner_start", [1]), b.ints(f"{n}/inner_end", [-1]),
                                         b.ints(f"{n}/inner_axis", [2])], name=f"{n}/inner")
                padded = b.node("Pad", [inner, b.ints(f"{n}/inner_pads", [0, 0, 1, 0, 0, 0, 1, 0])], name=f"{n}/inner_padded")
                out = b.node("Add", [power, padded], name=f"{n}/psd")
            else:
                out = b.node("Sqrt", [b.node("Max", [power, eps], name=f"{n}/power_eps")], name=f"{n}/magnitude")
                if mode == "log":
                    out = b.node("Log", [b.node("Max", [out, eps], name=f"{n}/magnitude_eps")], name=f"{n}/log")
    if c.get("expand_dims"):
        out = b.node("Transpose", [out], name=n, perm=[0, 1, 3, 2] if first else [0, 3, 2, 1])
    else:
        freqs = call.out_shape[1] if first else call.out_shape[2]
        out = b.node("Reshape", [out, b.ints(f"{n}/flat_shape", [-1, freqs, steps])], name=n if first else f"{n}/flat")
        if not first:
            out = b.node("Transpose", [out], name=n, perm=[0, 2, 1])
    return [b.tensor(call.out_shape, identity(len(call.out_shape)), out)]


@converts("MelSpectrogram")
def mel_spectrogram(b: Builder, call: Call) -> list[Tensor]:
    """Reflect Pad, then the windowed DFT as two strided Convs (cosine and sine rows of
    ``fft_length``), the magnitude's power, the mel filter bank as one MatMul, and the dB scale
    floored at the batch's maximum minus ``top_db`` (a ReduceMax over every axis)."""
    try:
        s = mel_settings(call.config)
    except ConfigProblem as exc:
        raise refuse(call, str(exc)) from None
    if call.x.rank != 2:
        raise refuse(call, f"expected (batch, samples), got rank {call.x.rank}")
    n, fft, stride = call.name, s["fft_length"], s["sequence_stride"]
    x = b.view(call.x, identity(2))
    padded = b.node("Pad", [b.node("Unsqueeze", [x, b.ints(f"{n}/channel_axis", [1])], name=f"{n}/signal"),
                            b.ints(f"{n}/center_pads", [0, 0, fft // 2, 0, 0, fft // 2])], name=f"{n}/centered", mode="reflect")
    window = stft_window(s)
    k = np.arange(fft // 2 + 1)[:, None] * np.arange(fft)[None, :] * (2.0 * np.pi / fft)
    power = None
    for part, rows in (("cos", np.cos(k)), ("sin", np.sin(k))):
        kernel = (rows * window)[:, None, :]  # (F, 1, fft)
        y = b.node("Conv", [padded, b.const(f"{n}/dft_{part}", kernel)], name=f"{n}/dft_{part}", kernel_shape=[fft],
                   strides=[stride])
        square = b.node("Mul", [y, y], name=f"{n}/{part}_squared")
        power = square if power is None else b.node("Add", [power, square], name=f"{n}/power")
    assert power is not None
    if s["mag_exp"] != 2.0:
        power = b.node("Pow", [power, b.const(f"{n}/half_exponent", np.float32(s["mag_exp"] / 2.0))], name=f"{n}/magnitude")
    mel = b.node("MatMul", [b.const(f"{n}/mel_matrix", np.ascontiguousarray(mel_matrix(s).T)), power], name=f"{n}/mel")
    if s["power_to_db"]:
        floor = s["min_power"]
        logged = b.node("Log", [b.node("Max", [mel, b.const(f"{n}/min_power", np.float32(floor))], name=f"{n}/floored")],
                        name=f"{n}/ln")
        offset = -10.0 * np.log10(max(abs(s["ref_power"]), floor))
        db = b.node("Add", [b.node("Mul", [logged, b.const(f"{n}/db_scale", np.float32(10.0 / np.log(10.0)))], name=f"{n}/db_raw"),
                            b.const(f"{n}/ref_db", np.float32(offset))], name=f"{n}/db")
        top = b.node("ReduceMax", [db], name=f"{n}/batch_max", keepdims=1)
        mel = b.node("Max", [db, b.node("Sub", [top, b.const(f"{n}/top_db", np.float32(s["top_db"]))], name=f"{n}/db_floor")],
                     name=f"{n}/db_clipped")
    return [b.tensor(call.out_shape, identity(3), b.node("Identity", [mel], name=n))]
