"""EinsumDense, MultiHeadAttention and GroupQueryAttention: ONNX Einsum, Softmax and the masks.

Everything is computed in Keras' layout (batch first, the layer's own axes), with the equations
Keras builds (:mod:`bnconvert.catalog.attention`, which also says how each generation masks):

- **EinsumDense**: one ``Einsum`` with the config's equation, the bias added with numpy
  broadcasting (its Keras shape already lines up with the output's last axes), then the activation.
- **MultiHeadAttention / GroupQueryAttention**: the query, key and value projections are
  ``Einsum`` + ``Add``; GroupQueryAttention repeats each key/value head (``Unsqueeze``,
  ``Expand``, ``Reshape``); the scores are ``Einsum(key, query * scale)``; the attention mask is
  built in the graph from the ``attention_mask`` input, the Keras masks of query/value/key and the
  causal and sliding-window bands (``Range`` over the sequence lengths, so a dynamic length stays
  dynamic), and applied as the file's Keras does (``Where`` with ``-0.7 * 3.4e38``, or ``-1e9``
  then zeroed, or tf.keras' added ``(1 - mask) * -1e9``); the softmax runs over the key axes, the
  combination and the output projection are ``Einsum`` again. Dropout is the identity.

Einsum is in every opset bnconvert writes (12+).
"""

from __future__ import annotations

import string

import numpy as np
from onnx import TensorProto

from ...catalog.attention import (
    MASKED_FAST,
    MASKED_SLOW,
    MASKED_TF,
    AttentionInputs,
    AttentionSpec,
    attention_inputs,
    attention_spec,
    quantization_problem,
    softmax_path,
)
from ...catalog.facts import ConfigProblem
from ...errors import UnsupportedLayerError
from ..builder import Builder, Call, Tensor
from ..layout import identity
from ..registry import converts, refuse
from .activations import fused, pre_activation_name

__all__ = ["attention", "einsum_dense"]

_LETTERS = string.ascii_lowercase


@converts("EinsumDense")
def einsum_dense(b: Builder, call: Call) -> list[Tensor]:
    c, w = call.config, call.layer.weights
    problem = quantization_problem(c)
    if problem:
        raise refuse(call, problem)
    kernel = w.get("kernel")
    if kernel is None:
        raise refuse(call, "no kernel weight")
    keras = identity(call.x.rank)
    out = pre_activation_name(call)
    bias = w.get("bias") if c.get("bias_axes") else None
    y = b.node("Einsum", [b.view(call.x, keras), b.const(f"{call.name}/kernel", kernel)],
               name=call.name if bias is None else f"{call.name}/einsum", out=out if bias is None else None,
               equation=str(c["equation"]))
    if bias is not None:
        y = b.node("Add", [y, b.const(f"{call.name}/bias", bias)], name=call.name, out=out)
    return fused(b, call, y, identity(len(call.out_shape)))


def _project(b: Builder, call: Call, name: str, x: str, rank: int, bias: bool) -> str:
    """``x @ kernel (+ bias)`` over the last axis of a rank-``rank`` value into ``(heads, dim)``."""
    kernel = call.layer.weights[f"{name}/kernel"]
    free = _LETTERS[:rank - 1]
    y = b.node("Einsum", [x, b.const(f"{call.name}/{name}/kernel", kernel)], name=f"{call.name}/{name}",
               equation=f"{free}z,zxy->{free}xy")
    if bias:
        y = b.node("Add", [y, b.const(f"{call.name}/{name}/bias", call.layer.weights[f"{name}/bias"])],
                   name=f"{call.name}/{name}/add_bias")
    return y


def _repeat_heads(b: Builder, call: Call, x: str, repeats: int, heads: int, dim: int, what: str) -> str:
    """``(B, S, kv, h)`` -> ``(B, S, kv * repeats, h)``, each head ``repeats`` times in a row (``ops.repeat``)."""
    n = f"{call.name}/{what}_repeat"
    wide = b.node("Unsqueeze", [x, b.ints(f"{n}/axis", [3])], name=f"{n}/unsqueeze")
    wide = b.node("Expand", [wide, b.ints(f"{n}/shape", [1, 1, 1, repeats, 1])], name=f"{n}/expand")
    return b.node("Reshape", [wide, b.ints(f"{n}/to", [0, 0, heads, dim])], name=n)


def _length(b: Builder, call: Call, x: str, what: str) -> str:
    """The (int64, 1-element) length of axis 1 of ``x``."""
    n = f"{call.name}/{what}_length"
    shape = b.node("Shape", [x], name=f"{n}/shape")
    return b.node("Gather", [shape, b.ints(f"{n}/axis1", [1])], name=n, axis=0)


def _positions(b: Builder, call: Call, length: str, what: str, axis: int) -> str:
    """``0 .. length-1`` (int64) as a ``(1, T, 1)`` (``axis`` 1) or ``(1, 1, S)`` (``axis`` 2) value."""
    n = f"{call.name}/{what}_positions"
    scalar = b.node("Squeeze", [length, b.ints(f"{n}/axis", [0])], name=f"{n}/length")
    zero, one = b.const(f"{n}/zero", np.int64(0), np.int64), b.const(f"{n}/one", np.int64(1), np.int64)
    steps = b.node("Range", [zero, scalar, one], name=f"{n}/range")
    return b.node("Unsqueeze", [steps, b.ints(f"{n}/axes", [0, 3 - axis])], name=n)


def _and(b: Builder, call: Call, a: str | None, c: str, what: str) -> str:
    return c if a is None else b.node("And", [a, c], name=f"{call.name}/mask_and_{what}")


def _mask(b: Builder, call: Call, spec: AttentionSpec, roles: AttentionInputs, q_in: str, v_in: str) -> str | None:
    """The bool attention mask ``[B|1, *T, *S]``, as the catalog's :func:`attention_mask` builds it."""
    given = None
    if roles.mask is not None:
        m = call.inputs[roles.mask]
        as_float = b.node("Cast", [b.view(m, identity(m.rank))], name=f"{call.name}/given_mask_float", to=TensorProto.FLOAT)
        same = b.node("Equal", [as_float, b.const(f"{call.name}/zero", np.float32(0.0))], name=f"{call.name}/given_zero")
        given = b.node("Not", [same], name=f"{call.name}/given_mask")
    masks = [call.mask(roles.query), call.mask(roles.value),
             call.mask(roles.key) if roles.key != roles.value or call.generation != 3 else None]
    if spec.axes != (1,):
        if roles.causal or spec.window is not None or any(m is not None for m in masks):
            raise refuse(call, f"a causal, sliding-window or Keras mask with attention axes {list(spec.axes)} is not "
                               "supported (Keras builds them on axis 1)")
        return given
    out = given
    for i, (keras_mask, axis) in enumerate(zip(masks, (-1, -2, -2))):
        if keras_mask is not None:
            held = b.view(keras_mask, identity(keras_mask.rank))
            part = b.node("Unsqueeze", [held, b.ints(f"{call.name}/keras_mask{i}/axis", [axis])],
                          name=f"{call.name}/keras_mask{i}")
            out = _and(b, call, out, part, f"keras{i}")
    if roles.causal or spec.window is not None:
        rows = _positions(b, call, _length(b, call, q_in, "query"), "query", 1)
        cols = _positions(b, call, _length(b, call, v_in, "value"), "value", 2)
        if roles.causal:
            out = _and(b, call, out, b.node("GreaterOrEqual", [rows, cols], name=f"{call.name}/causal"), "causal")
        if spec.window is not None:
            apart = b.node("Abs", [b.node("Sub", [rows, cols], name=f"{call.name}/offset")], name=f"{call.name}/distance")
            band = b.node("Less", [apart, b.const(f"{call.name}/window", np.int64(spec.window), np.int64)],
                          name=f"{call.name}/window_band")
            out = _and(b, call, out, band, "window")
    return out


def _softmax(b: Builder, call: Call, x: str, rank: int, n: int) -> str:
    """Softmax over the last ``n`` axes of a rank-``rank`` value."""
    if n == 1:
        return b.node("Softmax", [x], name=f"{call.name}/softmax", axis=-1)
    axes = list(range(rank - n, rank))
    top = b.reduce("ReduceMax", x, axes, keepdims=True, name=f"{call.name}/softmax_max")
    e = b.node("Exp", [b.node("Sub", [x, top], name=f"{call.name}/softmax_shift")], name=f"{call.name}/softmax_exp")
    total = b.reduce("ReduceSum", e, axes, keepdims=True, name=f"{call.name}/softmax_sum")
    return b.node("Div", [e, total], name=f"{call.name}/softmax")


def _masked_softmax(b: Builder, call: Call, scores: str, mask: str | None, mask_rank: int, rank: int, spec: AttentionSpec,
                    path: str) -> str:
    n = len(spec.axes)
    if mask is None:
        return _softmax(b, call, scores, rank, n)
    if mask_rank < rank:  # Keras' expand_dims at -2n-1, repeated
        axes = [rank - 2 * n - 1 - j for j in range(rank - mask_rank)]
        mask = b.node("Unsqueeze", [mask, b.ints(f"{call.name}/mask_heads", sorted(axes))], name=f"{call.name}/mask_expanded")
    if path == "tf":
        keep = b.node("Cast", [mask], name=f"{call.name}/mask_float", to=TensorProto.FLOAT)
        drop = b.node("Sub", [b.const(f"{call.name}/one", np.float32(1.0)), keep], name=f"{call.name}/masked")
        adder = b.node("Mul", [drop, b.const(f"{call.name}/large_negative", np.float32(MASKED_TF))], name=f"{call.name}/adder")
        return _softmax(b, call, b.node("Add", [scores, adder], name=f"{call.name}/masked_scores"), rank, n)
    fill = {"fast": MASKED_FAST, "slow": MASKED_SLOW, "tf_robust": MASKED_TF}[path]
    masked = b.node("Where", [mask, scores, b.const(f"{call.name}/large_negative", np.float32(fill))],
                    name=f"{call.name}/masked_scores")
    probs = _softmax(b, call, masked, rank, n)
    if path == "slow":
        probs = b.node("Where", [mask, probs, b.const(f"{call.name}/zero_probability", np.float32(0.0))],
                       name=f"{call.name}/masked_probabilities")
    return probs


@converts("MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention")
def attention(b: Builder, call: Call) -> list[Tensor]:
    c = call.config
    problem = quantization_problem(c)
    if problem:
        raise refuse(call, problem)
    try:
        roles = attention_inputs(call.layer.label, len(call.inputs), call.kwargs)
        spec = attention_spec(call.layer.class_name, c, call.inputs[roles.query].rank)
    except (UnsupportedLayerError, ConfigProblem) as exc:
        raise refuse(call, str(exc)) from None
    if spec.window is not None and call.generation != 3:
        raise refuse(call, "sliding_window is a Keras 3 option")
    tensors = {role: call.inputs[getattr(roles, role)] for role in ("query", "value", "key")}
    q_in, v_in, k_in = (b.view(t, identity(t.rank)) for t in (tensors["query"], tensors["value"], tensors["key"]))
    rank = tensors["query"].rank + 1
    q = _project(b, call, "query", q_in, rank - 1, spec.bias)
    k = _project(b, call, "key", k_in, rank - 1, spec.bias)
    v = _project(b, call, "value", v_in, rank - 1, spec.bias)
    if spec.repeats > 1:
        k = _repeat_heads(b, call, k, spec.repeats, spec.heads, spec.key_dim, "key")
        v = _repeat_heads(b, call, v, spec.repeats, spec.heads, spec.value_dim, "value")
    scaled = b.node("Mul", [q, b.const(f"{call.name}/scale", np.float32(spec.scale))], name=f"{call.name}/query_scaled")
    scores = b.node("Einsum", [k, scaled], name=f"{call.name}/scores", equation=spec.dot)
    mask = _mask(b, call, spec, roles, q_in, v_in)
    mask_rank = 3 if roles.mask is None else call.inputs[roles.mask].rank  # [B, T, S], or as given
    path = softmax_path(c, roles, rank, call.generation)
    probs = _masked_softmax(b, call, scores, mask, mask_rank, rank - 1 + len(spec.axes), spec, path)
    out = b.node("Einsum", [probs, v], name=f"{call.name}/combine", equation=spec.combine)
    if spec.gate:
        gate = b.node("Sigmoid", [_project(b, call, "gate", q_in, rank - 1, spec.bias)], name=f"{call.name}/gate_sigmoid")
        out = b.node("Mul", [out, gate], name=f"{call.name}/gated")
    kernel = call.layer.weights["attention_output/kernel"]
    free, tail = _LETTERS[:rank - 2], _LETTERS[rank:rank + kernel.ndim - 2]
    y = b.node("Einsum", [out, b.const(f"{call.name}/attention_output/kernel", kernel)],
               name=call.name if not spec.bias else f"{call.name}/attention_output",
               equation=f"{free}yz,yz{tail}->{free}{tail}")
    if spec.bias:
        y = b.node("Add", [y, b.const(f"{call.name}/attention_output/bias", call.layer.weights["attention_output/bias"])],
                   name=call.name)
    results = [b.tensor(call.out_shapes[0], identity(len(call.out_shapes[0])), y)]
    if roles.scores:
        results.append(b.tensor(call.out_shapes[1], identity(len(call.out_shapes[1])), probs))
    call.out_masks = [call.mask(roles.query), None][:len(results)]
    return results
