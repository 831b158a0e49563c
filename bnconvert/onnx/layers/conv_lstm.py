"""ConvLSTM1D/2D/3D: every step's input convolution at once, then a Scan over time whose body
holds the recurrent convolution and the gates.

ONNX has no convolutional LSTM, so the recurrence is a ``Scan`` (dynamic batch and dynamic
number of steps; the spatial sizes are static, as Keras requires them). The input convolution
does not depend on the state, so it runs once over all ``N*T`` images before the Scan::

    x (N, T, C, *S) -> Reshape (N*T, C, *S) -> Conv(kernel, strides, padding, dilation) + bias
      -> Reshape (N, T, 4F, *S') -> Scan over axis 1 (reversed for go_backwards), states h, c (N, F, *S')
    body: z = xg_t + Conv(h, recurrent_kernel, stride 1, 'same'); i, f, g, o = Split(z, 4, axis 1)
          c = rec(f)*c + rec(i)*act(g); h = rec(o)*act(c)   [a mask: Where(m_t, new, old)]

Kernels go from Keras' ``(*k, C, 4F)`` to ONNX ``(4F, C, *k)``; the gate order i, f, c, o stays on
the output-channel axis. Everything inside is channels-first; the outputs are held channels-first
and the builder transposes them only where a consumer needs Keras' layout. The body's weights
are its own initializers (a subgraph that read outer initializers would hide them from the
export's pruning of unread values). A mask is the catalog's rule (:mod:`bnconvert.catalog.conv_lstm`):
the step's mask with trailing unit axes, broadcast against the state.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ...catalog.activations import activation_name
from ...catalog.facts import conv_output_length
from ...layerspec import data_format
from ..builder import Builder, Call, Tensor
from ..layout import channels_first, held_shape, identity, same_memory_order
from ..registry import converts, refuse
from .activations import ACTIVATIONS, emit_activation
from .conv import window_pads

__all__ = ["conv_lstm"]

_log = logging.getLogger(__name__)

_LINEAR = ("linear", None)


def _ints(value: Any, n: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * n


def _activation(call: Call, key: str, default: str) -> str:
    """The Keras name of the ``key`` activation, refused when ONNX has no emitter for it."""
    spec = call.config.get(key, default)
    name = "linear" if spec is None else activation_name(spec)
    if name not in _LINEAR and name not in ACTIVATIONS:
        raise refuse(call, f"{key} {name or spec!r} is not supported")
    return name or "linear"


def _step_mask(b: Builder, call: Call, mask: Tensor, state_keras: tuple, state_perm: tuple) -> str:
    """The mask ``(N, T, *m)`` reshaped so that its step ``(N, *held)`` broadcasts against the
    state held channels-first, as Keras broadcasts ``(N, *m, 1, ...)`` against the Keras state."""
    m = tuple(mask.shape[2:])
    if any(d is None for d in m) or m != tuple(state_keras[1:1 + len(m)]):
        raise refuse(call, f"a mask of shape {mask.shape} does not fit the state {state_keras}")
    expanded = (state_keras[0], *m, *(1,) * (len(state_keras) - 1 - len(m)))
    if not same_memory_order(expanded, identity(len(expanded)), state_perm):
        raise refuse(call, f"a mask of shape {mask.shape} on the channel axis is not supported")
    held = held_shape(expanded, state_perm)
    source = b.view(mask, identity(mask.rank))
    return b.node("Reshape", [source, b.ints(f"{call.name}/mask_shape", [0, 0, *held[1:]])], name=f"{call.name}/mask")


def _body(b: Builder, call: Call, base: str, recurrent: np.ndarray, masked: bool, state_dims: list[int]) -> Any:
    """The Scan body: ``(h, c, xg_t[, m_t]) -> (h, c, h as the step's output)``, every name
    under ``base`` (unique in the whole model, as ONNX wants for a subgraph's values)."""
    n = recurrent.ndim - 2
    filters = int(recurrent.shape[-2])
    body = Builder(b.opset)

    def name(what: str) -> str:
        return f"{base}/{what}"

    h, c, xg, m = (body.claim(name(v)) for v in ("h_in", "c_in", "xg_t", "mask_t"))
    act = _activation(call, "activation", "tanh")
    rec = _activation(call, "recurrent_activation", "sigmoid" if call.generation >= 3 else "hard_sigmoid")
    # a softmax activation acts on Keras' last axis: the channels (axis 1 here) when channels_last
    axis = n + 1 if data_format(call.config) == "channels_first" else 1
    ks = list(recurrent.shape[:n])
    w = body.const(name("recurrent_kernel"), np.transpose(recurrent, (n + 1, n, *range(n))))
    r = body.node("Conv", [h, w], name=name("recurrent_conv"), kernel_shape=ks, strides=[1] * n,
                  **window_pads(call, list[int | None](state_dims), ks, [1] * n, [1] * n, "same"))
    z = body.node("Add", [xg, r], name=name("z"))
    gates = [body.fresh(name(g)) for g in ("zi", "zf", "zg", "zo")]
    body.nodes.append(helper.make_node("Split", [z, body.ints(name("split"), [filters] * 4)], gates,
                                       name=name("split"), axis=1))

    def apply(what: str, x: str, fn: str) -> str:
        return emit_activation(body, fn, x, node=name(what), out=name(what), axis=axis, generation=call.generation)

    i, f, o = (apply(g, v, rec) for g, v in zip(("i", "f", "o"), (gates[0], gates[1], gates[3])))
    cell = body.node("Add", [body.node("Mul", [f, c], name=name("f_c")),
                             body.node("Mul", [i, apply("g", gates[2], act)], name=name("i_g"))], name=name("c_new"))
    out = body.node("Mul", [o, apply("act_c", cell, act)], name=name("h_new"))
    if masked:  # a masked step keeps both states; its output is the kept h
        out = body.node("Where", [m, out, h], name=name("h_kept"))
        cell = body.node("Where", [m, cell, c], name=name("c_kept"))
    seq = body.node("Identity", [out], name=name("h_t"))
    state = [None, filters, *state_dims]
    inputs = [helper.make_tensor_value_info(h, TensorProto.FLOAT, state),
              helper.make_tensor_value_info(c, TensorProto.FLOAT, state),
              helper.make_tensor_value_info(xg, TensorProto.FLOAT, [None, 4 * filters, *state_dims])]
    if masked:
        inputs.append(helper.make_tensor_value_info(m, TensorProto.BOOL, None))
    outputs = [helper.make_tensor_value_info(v, TensorProto.FLOAT, state) for v in (out, cell, seq)]
    inits = [numpy_helper.from_array(v, k) for k, v in body.constants.items()]
    return helper.make_graph(body.nodes, base, inputs, outputs, initializer=inits)


def _input_gates(b: Builder, call: Call, xv: str, kernel: np.ndarray, image: list[int], out_sizes: list[int]) -> str:
    """Every step's input convolution at once (they do not depend on the state): ``xv``
    ``(N, T, C, *S)`` -> ``(N*T, C, *S)`` -> Conv + bias -> ``(N, T, 4F, *S')``."""
    c, n = call.config, kernel.ndim - 2
    ks = list(kernel.shape[:n])
    strides, dilations = _ints(c.get("strides", 1), n), _ints(c.get("dilation_rate", 1), n)
    padding = str(c.get("padding", "valid")).lower()
    images = b.node("Reshape", [xv, b.ints(f"{call.name}/images_shape", [-1, *image])], name=f"{call.name}/images")
    bias = call.layer.weights.get("bias")
    bias_in = [] if bias is None or c.get("use_bias", True) is False else [
        b.const(f"{call.name}/bias", np.asarray(bias).reshape(-1))]
    w = b.const(f"{call.name}/kernel", np.transpose(kernel, (n + 1, n, *range(n))))
    conv = b.node("Conv", [images, w, *bias_in], name=f"{call.name}/input_conv", kernel_shape=ks, strides=strides,
                  dilations=dilations, **window_pads(call, list[int | None](image[1:]), ks, strides, dilations, padding))
    batch_time = b.node("Slice", [b.node("Shape", [xv], name=f"{call.name}/shape"), b.ints(f"{call.name}/zero", [0]),
                                  b.ints(f"{call.name}/two", [2])], name=f"{call.name}/batch_time")
    seq_shape = b.node("Concat", [batch_time, b.ints(f"{call.name}/gates_shape", [int(kernel.shape[-1]), *out_sizes])],
                       name=f"{call.name}/seq_shape", axis=0)
    return b.node("Reshape", [conv, seq_shape], name=f"{call.name}/input_gates")


def _zero_state(b: Builder, call: Call, xv: str, dims: list[int]) -> str:
    """Zeros ``(N, *dims)``, N the input's batch. A stateful layer starts from zeros too, as a
    freshly loaded (or reset) Keras model does; the export says so."""
    if call.config.get("stateful"):
        _log.warning("'%s' (%s) is stateful: exported with zero initial states, as a freshly reset layer",
                     call.name, call.layer.source_class)
    batch = b.node("Slice", [b.node("Shape", [xv], name=f"{call.name}/batch_shape"), b.ints(f"{call.name}/zero", [0]),
                             b.ints(f"{call.name}/one", [1])], name=f"{call.name}/batch")
    state_shape = b.node("Concat", [batch, b.ints(f"{call.name}/state_dims", dims)], name=f"{call.name}/state_shape", axis=0)
    return b.node("ConstantOfShape", [state_shape], name=f"{call.name}/zeros",
                  value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))


@converts("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
def conv_lstm(b: Builder, call: Call) -> list[Tensor]:
    c = call.config
    kernel, recurrent = call.layer.weights.get("kernel"), call.layer.weights.get("recurrent_kernel")
    if kernel is None or recurrent is None:
        raise refuse(call, "kernel or recurrent_kernel missing")
    n = kernel.ndim - 2
    first = data_format(c) == "channels_first"
    x, rank = call.x, call.x.rank
    if rank != n + 3:
        raise refuse(call, f"rank-{rank} input, expected {n + 3}")
    image = list(x.shape[2:] if first else (x.shape[-1], *x.shape[2:-1]))  # (C, *S)
    if any(s is None for s in image):
        raise refuse(call, f"input {x.shape}: the spatial sizes and channels must be known")
    filters = int(kernel.shape[-1]) // 4
    strides, dilations = _ints(c.get("strides", 1), n), _ints(c.get("dilation_rate", 1), n)
    padding = str(c.get("padding", "valid")).lower()
    # known input sizes give known output sizes
    out_sizes = [cast(int, conv_output_length(s, k, padding, t, d))
                 for s, k, t, d in zip(image[1:], kernel.shape[:n], strides, dilations)]
    seq_perm = identity(rank) if first else (0, 1, rank - 1, *range(2, rank - 1))  # (N, T, C, *S)
    xv = b.view(x, seq_perm)
    xg = _input_gates(b, call, xv, kernel, image, out_sizes)
    zeros = _zero_state(b, call, xv, [filters, *out_sizes])
    state_perm = identity(n + 2) if first else channels_first(n + 2)  # held (N, F, *S')
    state_keras = (None, filters, *out_sizes) if first else (None, *out_sizes, filters)
    mask = call.mask(0)
    scan_in = [xg] + ([_step_mask(b, call, mask, state_keras, state_perm)] if mask is not None else [])
    graph = _body(b, call, b.fresh(f"{call.name}/step"), recurrent, mask is not None, out_sizes)
    sequences = bool(c.get("return_sequences"))
    h, cell, seq = (b.fresh(f"{call.name}/h" if sequences else call.name), b.fresh(f"{call.name}/c"),
                    b.fresh(call.name if sequences else f"{call.name}/sequence"))
    backwards = 1 if c.get("go_backwards") else 0
    b.nodes.append(helper.make_node("Scan", [zeros, zeros, *scan_in], [h, cell, seq], name=b.fresh(f"{call.name}/scan"),
                                    body=graph, num_scan_inputs=len(scan_in), scan_input_axes=[1] * len(scan_in),
                                    scan_input_directions=[backwards] * len(scan_in), scan_output_axes=[1]))
    results = [b.tensor(call.out_shapes[0], seq_perm, seq) if sequences else b.tensor(call.out_shapes[0], state_perm, h)]
    if c.get("return_state"):
        results += [b.tensor(call.out_shapes[1], state_perm, h), b.tensor(call.out_shapes[2], state_perm, cell)]
    call.out_masks = [mask if sequences else None] + [None] * (len(results) - 1)
    return results
