"""Attention, AdditiveAttention, Dot, ReversibleEmbedding and RandomFourierFeatures.

The formulas are the catalog's (:mod:`bnconvert.catalog.scoring`, which cites Keras' source);
everything runs in Keras' layout. Attention: MatMul (or the broadcast ``tanh`` sum of the concat
and additive scores), the causal and value masks combined into one bool ``(N | 1, Tq, Tv)``
value and applied as ``Where(keep, s, s - 1e9)`` (the float32 arithmetic of both Kerases),
Softmax over the keys, MatMul with the value, the query mask as a ``Where``. The causal mask is
built from the scores' own shape (Range + GreaterOrEqual), so any sequence length works. Dot is
one Einsum (opset 12+) whose equation is Keras' ``batch_dot``; ``normalize`` multiplies by the
clipped reciprocal norm of the file's generation.
"""

from __future__ import annotations

import numpy as np

from ...catalog.scoring import MASKED_SCORE, causal, dot_axes, reversible_problem
from ...errors import UnsupportedLayerError
from ..builder import Builder, Call, Tensor
from ..layout import identity
from ..registry import converts, refuse
from .sequence import embedding, mask_value

__all__ = ["attention", "dot", "random_fourier_features", "reversible_embedding"]


def _keras(b: Builder, t: Tensor) -> str:
    return b.view(t, identity(t.rank))


def _scores(b: Builder, call: Call, q: str, k: str, rank: int) -> str:
    c, w, n = call.config, call.layer.weights, call.name
    if call.layer.class_name == "AdditiveAttention" or c.get("score_mode", "dot") == "concat":
        qe = b.node("Unsqueeze", [q, b.ints(f"{n}/query_axis", [-2])], name=f"{n}/query_rows")
        ke = b.node("Unsqueeze", [k, b.ints(f"{n}/key_axis", [-3])], name=f"{n}/key_cols")
        pairs = b.node("Add", [qe, ke], name=f"{n}/pairs")
        if call.layer.class_name == "AdditiveAttention":
            t = b.node("Tanh", [pairs], name=f"{n}/tanh")
            if c.get("use_scale", True):
                t = b.node("Mul", [t, b.const(f"{n}/scale", np.asarray(w["scale"]).reshape(-1))], name=f"{n}/scaled")
            return b.reduce("ReduceSum", t, [rank], keepdims=False, name=f"{n}/scores")
        if c.get("use_scale", False):
            pairs = b.node("Mul", [pairs, b.const(f"{n}/scale", np.float32(np.asarray(w["scale"])))], name=f"{n}/scaled")
        total = b.reduce("ReduceSum", b.node("Tanh", [pairs], name=f"{n}/tanh"), [rank], keepdims=False, name=f"{n}/sum")
        weight = b.const(f"{n}/concat_score_weight", np.float32(np.asarray(w["concat_score_weight"])))
        return b.node("Mul", [total, weight], name=f"{n}/scores")
    perm = [*range(rank - 2), rank - 1, rank - 2]
    kt = b.node("Transpose", [k], name=f"{n}/key_t", perm=perm)
    scores = b.node("MatMul", [q, kt], name=f"{n}/scores" if not c.get("use_scale", False) else f"{n}/dot")
    if c.get("use_scale", False):
        scores = b.node("Mul", [scores, b.const(f"{n}/scale", np.float32(np.asarray(w["scale"])))], name=f"{n}/scores")
    return scores


def _causal_keep(b: Builder, n: str, scores: str) -> str:
    """``row >= col`` over the scores' last two axes, ``(Tq, Tv)`` from their runtime shape."""
    shape = b.node("Shape", [scores], name=f"{n}/scores_shape")
    dims = []
    for what, axis in (("rows", -2), ("cols", -1)):
        dim = b.node("Gather", [shape, b.const(f"{n}/{what}_axis", np.int64(axis), np.int64)], name=f"{n}/{what}")
        dims.append(b.node("Range", [b.const(f"{n}/{what}_start", np.int64(0), np.int64), dim,
                                     b.const(f"{n}/{what}_step", np.int64(1), np.int64)], name=f"{n}/{what}_index"))
    rows = b.node("Unsqueeze", [dims[0], b.ints(f"{n}/row_axis", [1])], name=f"{n}/row_column")
    return b.node("GreaterOrEqual", [rows, dims[1]], name=f"{n}/causal")


@converts("Attention", "AdditiveAttention")
def attention(b: Builder, call: Call) -> list[Tensor]:
    if len(call.inputs) not in (2, 3):
        raise refuse(call, f"called on {len(call.inputs)} tensors, not [query, value(, key)]")
    n, rank = call.name, call.x.rank
    q, v = _keras(b, call.inputs[0]), _keras(b, call.inputs[1])
    k = _keras(b, call.inputs[2]) if len(call.inputs) > 2 else v
    scores = _scores(b, call, q, k, rank)
    keep = _causal_keep(b, n, scores) if causal(call.config, call.kwargs) else None
    value_mask = call.mask(1)
    if value_mask is not None:
        vm = b.node("Unsqueeze", [mask_value(b, value_mask), b.ints(f"{n}/value_mask_axis", [-2])], name=f"{n}/value_keep")
        keep = vm if keep is None else b.node("And", [vm, keep], name=f"{n}/keep")
    if keep is not None:
        low = b.node("Sub", [scores, b.const(f"{n}/masked_score", np.float32(MASKED_SCORE))], name=f"{n}/lowered")
        scores = b.node("Where", [keep, scores, low], name=f"{n}/masked")
    return_scores = bool(call.kwargs.get("return_attention_scores"))
    weights = b.node("Softmax", [scores], name=f"{n}/weights" if return_scores else f"{n}/softmax", axis=-1)
    query_mask = call.mask(0)
    out = b.node("MatMul", [weights, v], name=n if query_mask is None else f"{n}/attended")
    if query_mask is not None:
        qm = b.node("Unsqueeze", [mask_value(b, query_mask), b.ints(f"{n}/query_mask_axis", [-1])], name=f"{n}/query_keep")
        out = b.node("Where", [qm, out, b.const(f"{n}/zero", np.float32(0.0))], name=n)
    call.out_masks = [query_mask, None]
    outs = [b.tensor(call.out_shape, identity(len(call.out_shape)), out)]
    if return_scores:
        outs.append(b.tensor(call.out_shapes[1], identity(len(call.out_shapes[1])), weights))
    return outs


def _normalized(b: Builder, call: Call, x: str, axis: int, which: str) -> str:
    """``x`` over its L2 norm along ``axis``, clipped as the file's Keras clips it."""
    n = f"{call.name}/{which}"
    square_sum = b.reduce("ReduceSum", b.node("Mul", [x, x], name=f"{n}/square"), [axis], keepdims=True, name=f"{n}/sum")
    if call.generation >= 3:  # x * min(rsqrt(sum), 1 / epsilon)
        inv = b.node("Reciprocal", [b.node("Sqrt", [square_sum], name=f"{n}/norm")], name=f"{n}/inv_norm")
        inv = b.node("Min", [inv, b.const(f"{n}/max_inv", np.float32(1.0e7))], name=f"{n}/inv_clipped")
    else:  # x * rsqrt(max(sum, 1e-12))
        floor = b.node("Max", [square_sum, b.const(f"{n}/min_sum", np.float32(1.0e-12))], name=f"{n}/sum_clipped")
        inv = b.node("Reciprocal", [b.node("Sqrt", [floor], name=f"{n}/norm")], name=f"{n}/inv_norm")
    return b.node("Mul", [x, inv], name=f"{n}/normalized")


@converts("Dot")
def dot(b: Builder, call: Call) -> list[Tensor]:
    if len(call.inputs) != 2:
        raise refuse(call, f"called on {len(call.inputs)} tensors, not 2")
    xt, yt = call.inputs
    try:
        a, c = dot_axes(call.config, (xt.rank, yt.rank))
    except UnsupportedLayerError as exc:
        raise refuse(call, str(exc)) from None
    x, y = _keras(b, xt), _keras(b, yt)
    if call.config.get("normalize"):
        x, y = _normalized(b, call, x, a, "x"), _normalized(b, call, y, c, "y")
    letters = iter("bcdefghijklmnopqrstuvwxyz")
    xs = ["a"] + [next(letters) for _ in range(xt.rank - 1)]
    ys = ["a"] + [next(letters) for _ in range(yt.rank - 1)]
    ys[c] = xs[a]
    out = [s for i, s in enumerate(xs) if i != a] + [s for i, s in enumerate(ys) if i not in (0, c)]
    flat = len(out) == 1
    y_out = b.node("Einsum", [x, y], name=f"{call.name}/einsum" if flat else call.name,
                   equation=f"{''.join(xs)},{''.join(ys)}->{''.join(out)}")
    if flat:  # Keras turns a (N,) result into (N, 1)
        y_out = b.node("Unsqueeze", [y_out, b.ints(f"{call.name}/axis", [1])], name=call.name)
    call.out_masks = [None]
    return [b.tensor(call.out_shape, identity(len(call.out_shape)), y_out)]


@converts("ReversibleEmbedding")
def reversible_embedding(b: Builder, call: Call) -> list[Tensor]:
    problem = reversible_problem(call.config)
    if problem:
        raise refuse(call, problem)
    if not call.kwargs.get("reverse"):
        return embedding(b, call)  # Embedding's rows and mask_zero mask
    c, w, n = call.config, call.layer.weights, call.name
    table = np.asarray(w["embeddings"]).T if c.get("tie_weights", True) else np.asarray(w.get("reverse_embeddings"))
    if table.ndim != 2:
        raise refuse(call, "no 2-D reverse table")
    cap = c.get("logit_soft_cap")
    logits = b.node("MatMul", [_keras(b, call.x), b.const(f"{n}/reverse_kernel", table)], name=f"{n}/logits" if cap else n)
    if cap is not None:
        t = b.node("Tanh", [b.node("Div", [logits, b.const(f"{n}/cap", np.float32(cap))], name=f"{n}/capped")], name=f"{n}/tanh")
        logits = b.node("Mul", [t, b.const(f"{n}/cap_out", np.float32(cap))], name=n)
    call.out_masks = [None]
    return [b.tensor(call.out_shape, identity(len(call.out_shape)), logits)]


@converts("RandomFourierFeatures")
def random_fourier_features(b: Builder, call: Call) -> list[Tensor]:
    w, n = call.layer.weights, call.name
    if call.x.rank != 2:
        raise refuse(call, f"input of rank {call.x.rank}, not 2")
    scale = np.float32(np.asarray(w["kernel_scale"], np.float32).reshape(-1)[0])
    kernel = (np.float32(1.0) / scale) * np.asarray(w["unscaled_kernel"], np.float32)  # tf.keras' float32 product
    proj = b.node("Gemm", [_keras(b, call.x), b.const(f"{n}/kernel", kernel), b.const(f"{n}/bias", np.asarray(w["bias"]))],
                  name=f"{n}/projection")
    return [b.tensor(call.out_shape, identity(2), b.node("Cos", [proj], name=n))]
