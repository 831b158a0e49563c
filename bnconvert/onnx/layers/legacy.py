"""Classes Keras 3 no longer has: LocallyConnected1D/2D (tf.keras 2.x, Keras 1/2) and the Keras 1
only Highway, MaxoutDense, SReLU, ParametricSoftplus and Merge (mode ``cos``).

Every handler computes in Keras' own layout (the layer's data format), as the layer does.

LocallyConnected: the input flattened in its memory order, one Gather of every output position's
window (``(N, P, M)``, the window in memory order, a clipped same window padded with a zero) and
one batched MatMul with a ``(P, M, F)`` kernel: implementation 1's stored kernel as it is, the
connected entries of implementation 2's dense kernel, or implementation 3's entries put in place
(the kernel layouts are :mod:`bnconvert.catalog.legacy_layers`'). So no zero-filled
``(input, output)`` matrix is ever built: it grows with the square of the image. The bias is
added in the layer's layout (channels_first: the stored ``(*S_out, F)`` reshaped to
``(F, *S_out)``, as tf.keras and Keras 1 do), then the activation.
"""

from __future__ import annotations

import itertools

import numpy as np

from ...catalog.activations import activation_name
from ...catalog.facts import ConfigProblem
from ...catalog.legacy_layers import (
    COS_EPSILON,
    connected_inputs,
    kernel_indices,
    local_geometry,
    merge_refusal,
    parameter_problem,
)
from ..builder import Builder, Call, Tensor
from ..layout import identity
from ..registry import converts, refuse
from .activations import activation_problem, emit_activation, fused, pre_activation_name

__all__ = ["keras1_activation", "keras1_dense", "keras1_merge", "locally_connected"]


def _windows(spatial: list[int], channels: int, out: list[int], kernel: list[int], strides: list[int], padding: str,
             first: bool) -> tuple[list[tuple[int, ...]], list[list[tuple[int, ...]]]]:
    """Per output position (row-major): its position, and the input entries ``(*pixel, channel)``
    it reads, in the order tf.keras' ``local_conv`` flattens a window (the memory order of the
    layer's layout: channel-major for channels_first, channel-minor for channels_last); a same
    window is clipped at the border (``conv_connected_inputs``)."""
    positions, windows = [], []
    for pos in itertools.product(*(range(o) for o in out)):
        ranges = [connected_inputs(n, k, s, padding, p) for n, k, s, p in zip(spatial, kernel, strides, pos)]
        pixels = list(itertools.product(*ranges))
        entries = [(*px, ch) for ch in range(channels) for px in pixels] if first else \
            [(*px, ch) for px in pixels for ch in range(channels)]
        positions.append(pos)
        windows.append(entries)
    return positions, windows


def _window_kernel(c: dict, w: np.ndarray, spatial: list[int], channels: int, out: list[int], kernel: list[int],
                   strides: list[int], filters: int) -> tuple[np.ndarray, np.ndarray]:
    """The layer as ``(index (P, M), kernel (P, M, F))``: per output position, the flat input
    indices of its window (padded with the index one past the input, a zero) and the weights of
    each, taken from whichever of tf.keras' three layouts the layer stores."""
    first = c.get("data_format") == "channels_first"
    padding = c.get("padding", "valid")
    implementation = c.get("implementation", 1)
    positions, windows = _windows(spatial, channels, out, kernel, strides, padding, first)
    in_dims = (channels, *spatial) if first else (*spatial, channels)
    in_size = int(np.prod(in_dims))
    width = max(len(window) for window in windows)
    index = np.full((len(windows), width), in_size, np.int64)
    weights = np.zeros((len(windows), width, filters), np.float32)
    w = np.asarray(w)
    if implementation == 3:
        pairs = kernel_indices(spatial, channels, out, filters, kernel, strides, padding, first)
        keys = pairs[:, 0] * in_size + pairs[:, 1]  # sorted, as tf.keras sorts its (output, input) pairs
        out_dims = (filters, *out) if first else (*out, filters)
    for p, (pos, window) in enumerate(zip(positions, windows)):
        flat = np.ravel_multi_index(tuple(np.array([(e[-1], *e[:-1]) if first else e for e in window]).T), in_dims)
        index[p, :len(window)] = flat
        if implementation == 1:
            weights[p, :len(window)] = w[p]
            continue
        entries = np.array(window, dtype=np.int64)
        px, ch = tuple(entries[:, :-1].T), entries[:, -1]
        if implementation == 2:  # (C, *S_in, F, *S_out) or (*S_in, C, *S_out, F)
            at = (ch, *px, slice(None), *pos) if first else (*px, ch, *pos)
            weights[p, :len(window)] = w[at]
        else:
            f = np.arange(filters)
            fixed = [np.full(filters, q) for q in pos]
            outs = np.ravel_multi_index((f, *fixed) if first else (*fixed, f), out_dims)
            weights[p, :len(window)] = w[np.searchsorted(keys, outs[None, :] * in_size + flat[:, None])]
    return index, weights


@converts("LocallyConnected1D", "LocallyConnected2D")
def locally_connected(b: Builder, call: Call) -> list[Tensor]:
    """One Gather of every output position's window and one batched MatMul, whatever the stored
    layout: no zero-filled (input, output) matrix, whose size grows with the square of the image."""
    c = call.config
    w = call.layer.weights.get("kernel")
    if w is None:
        raise refuse(call, "no kernel weight")
    problem = activation_problem(call.layer)
    if problem:
        raise refuse(call, problem)
    x = call.x
    try:
        spatial, channels, out, kernel, strides = local_geometry(c, x.shape, x.rank - 2)
    except ConfigProblem as exc:
        raise refuse(call, str(exc)) from None
    if c.get("implementation", 1) == 1 and c.get("padding", "valid") != "valid":
        raise refuse(call, "implementation 1 takes padding 'valid' only (as Keras)")
    first = c.get("data_format") == "channels_first"
    filters = int(c["filters"])
    index, weights = _window_kernel(c, w, spatial, channels, out, kernel, strides, filters)
    keras = identity(x.rank)
    flat = b.node("Reshape", [b.view(x, keras), b.ints(f"{call.name}/flat_shape", [0, -1])], name=f"{call.name}/flatten")
    if (index == int(np.prod(spatial)) * channels).any():  # a clipped same window reads a zero past the input
        flat = b.node("Pad", [flat, b.ints(f"{call.name}/zero_pad", [0, 0, 0, 1])], name=f"{call.name}/zero")
    patches = b.node("Gather", [flat, b.const(f"{call.name}/windows", index, np.int64)], name=f"{call.name}/windows", axis=1)
    per_position = b.node("Transpose", [patches], name=f"{call.name}/by_position", perm=[1, 0, 2])  # (P, N, M)
    y = b.node("MatMul", [per_position, b.const(f"{call.name}/kernel", weights)], name=f"{call.name}/matmul")  # (P, N, F)
    y = b.node("Transpose", [y], name=f"{call.name}/by_sample", perm=[1, 2, 0] if first else [1, 0, 2])
    out_shape = [filters, *out] if first else [*out, filters]
    bias = call.layer.weights.get("bias")
    final = pre_activation_name(call)
    use_bias = bias is not None and c.get("use_bias", True) is not False
    y = b.node("Reshape", [y, b.ints(f"{call.name}/out_shape", [0, *out_shape])], name=f"{call.name}/unflatten",
               out=None if use_bias else final)
    if use_bias:
        y = b.node("Add", [y, b.const(f"{call.name}/bias", np.asarray(bias).reshape(1, *out_shape))], name=call.name, out=final)
    return fused(b, call, y, keras)


@converts("Highway", "MaxoutDense")
def keras1_dense(b: Builder, call: Call) -> list[Tensor]:
    """Highway: ``t * (act(x W + b) - x) + x`` with ``t = sigmoid(x W_carry + b_carry)``;
    MaxoutDense: one Gemm over the ``nb_feature`` kernels side by side, then ReduceMax."""
    w, x = call.layer.weights, call.x
    if x.rank != 2:
        raise refuse(call, f"Keras 1 {call.layer.class_name} takes (batch, features) inputs, got rank {x.rank}")
    xv = b.view(x, identity(2))
    bias = call.config.get("use_bias", True) is not False
    if call.layer.class_name == "MaxoutDense":
        k = np.asarray(w["kernel"])  # (nb_feature, in, out)
        side = np.transpose(k, (1, 0, 2)).reshape(k.shape[1], -1)
        inputs = [xv, b.const(f"{call.name}/kernel", side)]
        if bias:
            inputs.append(b.const(f"{call.name}/bias", np.asarray(w["bias"]).reshape(-1)))
        y = b.node("Gemm", inputs, name=f"{call.name}/gemm")
        y = b.node("Reshape", [y, b.ints(f"{call.name}/features", [0, k.shape[0], k.shape[2]])], name=f"{call.name}/split")
        return [b.tensor(call.out_shape, identity(2), b.reduce("ReduceMax", y, [1], keepdims=False, name=call.name,
                                                             out=call.name))]
    problem = activation_problem(call.layer)
    if problem:
        raise refuse(call, problem)

    def gemm(kernel: str, bias_key: str, tag: str) -> str:
        inputs = [xv, b.const(f"{call.name}/{kernel}", w[kernel])]
        if bias:
            inputs.append(b.const(f"{call.name}/{bias_key}", np.asarray(w[bias_key]).reshape(-1)))
        return b.node("Gemm", inputs, name=f"{call.name}/{tag}")

    t = b.node("Sigmoid", [gemm("carry_kernel", "carry_bias", "carry")], name=f"{call.name}/transform_gate")
    h = gemm("kernel", "bias", "transform")
    name = activation_name(call.config.get("activation"))
    h = emit_activation(b, name, h, node=f"{call.name}/{name}", out=f"{call.name}/activated", axis=1,
                        generation=call.generation)
    gated = b.node("Mul", [t, b.node("Sub", [h, xv], name=f"{call.name}/minus_x")], name=f"{call.name}/gated")
    return [b.tensor(call.out_shape, identity(2), b.node("Add", [gated, xv], name=call.name))]


@converts("SReLU", "ParametricSoftplus")
def keras1_activation(b: Builder, call: Call) -> list[Tensor]:
    """Per-element parameters shaped like the input without its batch axis: they broadcast
    against ``(N, ...)`` in Keras' layout."""
    problem = parameter_problem(call.layer, call.x.shape)
    if problem:
        raise refuse(call, problem)
    keras = identity(call.x.rank)
    x = b.view(call.x, keras)
    w = {k: np.asarray(v, np.float64) for k, v in call.layer.weights.items()}
    n = call.name
    if call.layer.class_name == "ParametricSoftplus":
        y = b.node("Softplus", [b.node("Mul", [x, b.const(f"{n}/betas", w["betas"])], name=f"{n}/scaled")],
                   name=f"{n}/softplus")
        return [b.tensor(call.out_shape, keras, b.node("Mul", [y, b.const(f"{n}/alphas", w["alphas"])], name=n))]
    t_left = w["t_left"]
    t_right = t_left + np.abs(w["t_right"])
    shifted = b.node("Sub", [x, b.const(f"{n}/t_left", t_left)], name=f"{n}/shifted")
    centre = b.node("Min", [b.node("Relu", [shifted], name=f"{n}/above_left"), b.const(f"{n}/width", t_right - t_left)],
                    name=f"{n}/centre")
    below = b.node("Relu", [b.node("Neg", [shifted], name=f"{n}/negated")], name=f"{n}/below_left")
    left = b.node("Mul", [below, b.const(f"{n}/a_left", w["a_left"])], name=f"{n}/left")
    right = b.node("Relu", [b.node("Sub", [x, b.const(f"{n}/t_right", t_right)], name=f"{n}/past_right")],
                   name=f"{n}/above_right")
    right = b.node("Mul", [right, b.const(f"{n}/a_right", w["a_right"])], name=f"{n}/right")
    y = b.node("Add", [b.const(f"{n}/t_left_out", t_left), centre], name=f"{n}/from_left")
    y = b.node("Sub", [y, left], name=f"{n}/with_left")
    return [b.tensor(call.out_shape, keras, b.node("Add", [y, right], name=n))]


@converts("Merge")
def keras1_merge(b: Builder, call: Call) -> list[Tensor]:
    """Mode ``cos``: ``a.b / max(sqrt(a.a b.b), 1e-7)`` over axis 1 of two vectors, ``(N, 1)``."""
    problem = merge_refusal(call.layer, [t.shape for t in call.inputs])
    if problem:
        raise refuse(call, problem)
    a, c = (b.view(t, identity(2)) for t in call.inputs)
    n = call.name

    def total(value: str, tag: str) -> str:
        return b.reduce("ReduceSum", value, [1], keepdims=True, name=f"{n}/{tag}")

    dot = total(b.node("Mul", [a, c], name=f"{n}/products"), "dot")
    norms = b.node("Mul", [total(b.node("Mul", [a, a], name=f"{n}/a_squared"), "a_dot_a"),
                           total(b.node("Mul", [c, c], name=f"{n}/b_squared"), "b_dot_b")], name=f"{n}/norms")
    denominator = b.node("Max", [b.node("Sqrt", [norms], name=f"{n}/sqrt"), b.const(f"{n}/epsilon", COS_EPSILON)],
                         name=f"{n}/denominator")
    return [b.tensor(call.out_shape, identity(2), b.node("Div", [dot, denominator], name=n))]
