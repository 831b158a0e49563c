"""Layers that score by dot products, in float64: Attention (Luong), AdditiveAttention (Bahdanau),
Dot; ReversibleEmbedding (an Embedding whose reverse call scores vectors against every row) and
tf.keras' RandomFourierFeatures (a fixed random projection through a cosine).

From ``keras/src/layers/attention/attention.py``, ``additive_attention.py``,
``keras/src/layers/merging/dot.py``, ``keras/src/layers/core/reversible_embedding.py`` (Keras 3)
and ``tf_keras/src/layers/attention/base_dense_attention.py``, ``merging/dot.py``,
``kernelized.py``.

- **Attention** is called on ``[query, value]`` or ``[query, value, key]`` (key defaults to
  value). Scores: ``dot`` ``query @ key^T`` (times ``scale`` with ``use_scale``); ``concat``
  ``concat_score_weight * sum(tanh(scale * (query_i + key_j)))``. AdditiveAttention:
  ``sum(scale * tanh(query_i + key_j))`` (``scale`` a vector over the features, 1 without
  ``use_scale``). A causal call (``use_causal_mask=True``; older tf.keras configs: ``causal``)
  keeps key ``j <= i``; the value's Keras mask keeps its steps. Kept and masked scores then go
  through ``scores - 1e9`` for the masked ones (Keras 3 ``where``, tf.keras subtracting
  ``1e9 * padding``: the same numbers), a softmax over the keys and a product with the value.
  The query's mask zeroes the output rows it drops (Keras 3 ``where``, tf.keras a product) and is
  the output's mask; the attention scores (``return_attention_scores=True``, a second output)
  carry none. Dropout is the identity at inference.
- **Dot** contracts ``axes`` (an int for both inputs, or a pair; negative from the end; never the
  batch) of its two inputs, batch by batch: the output is the first input's other axes, then the
  second's (batch excluded); a result of rank 1 becomes ``(N, 1)``. ``normalize`` first divides
  each input by its L2 norm along its axis: Keras 3 ``x * min(rsqrt(sum x**2), 1e7)`` (1/epsilon),
  tf.keras ``x * rsqrt(max(sum x**2, 1e-12))``. Its output carries no mask (Keras:
  ``compute_mask`` returns None although it ``supports_masking``).
- **ReversibleEmbedding** (Keras 3.15): called normally it is an Embedding (and keeps its
  ``mask_zero`` mask); called with ``reverse=True`` it returns ``x @ embeddings^T`` (or ``x @
  reverse_embeddings`` when ``tie_weights`` is False), then ``tanh(logits / cap) * cap`` with a
  ``logit_soft_cap``; that output has no mask. Quantized variants are refused.
- **RandomFourierFeatures** (tf.keras ``experimental``): ``cos(x @ (unscaled_kernel /
  kernel_scale) + bias)`` on a rank-2 input (tf-keras 2.x's code has no ``sqrt(2 / output_dim)``
  factor, although its docstring mentions one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from . import checks
from .activations import softmax
from .dense import embedding_layer
from .facts import CALL_KWARGS, Shape, WeightSpec, no_weights, positive
from .record import CallContext, defines
from .util import f64

__all__ = ["MASKED_SCORE", "attention_layer", "batch_dot", "causal", "dot_axes", "dot_layer", "keep_scores",
           "random_fourier_features_layer", "reversible_embedding_layer", "reversible_problem"]

#: what Keras subtracts from a masked score (Keras 3: ``1e9`` unless float16; tf.keras the same)
MASKED_SCORE = 1.0e9


def _kwarg(c: dict[str, Any], name: str, default: Any = None) -> Any:
    return (c.get(CALL_KWARGS) or {}).get(name, default)


def causal(config: dict[str, Any], kwargs: Any) -> bool:
    """A causal attention call: ``use_causal_mask=True`` at the call (Keras 3, tf.keras 2.10+), or
    the deprecated ``causal`` of older tf.keras configs."""
    return bool((kwargs or {}).get("use_causal_mask") or config.get("causal"))


# -- Attention, AdditiveAttention ----------------------------------------------------------------
def _attention_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """``(*query[:-1], value[-1])``; with ``return_attention_scores`` also ``(*query[:-1], Tv)``."""
    query, value = shapes[0], shapes[1]
    key = shapes[2] if len(shapes) > 2 else value
    out = [(*query[:-1], value[-1])]
    if _kwarg(c, "return_attention_scores"):
        out.append((*query[:-1], key[-2]))
    return out


def _attention_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """Attention: ``scale ()`` with ``use_scale``, ``concat_score_weight ()`` for ``score_mode="concat"``."""
    out = [WeightSpec("scale", ())] if c.get("use_scale", False) else []
    return out + ([WeightSpec("concat_score_weight", ())] if c.get("score_mode", "dot") == "concat" else [])


def _additive_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """AdditiveAttention: ``scale (dim,)`` with ``use_scale`` (its default)."""
    if not c.get("use_scale", True):
        return []
    dim = shapes[0][-1] if shapes and isinstance(shapes[0], tuple) else None
    return [WeightSpec("scale", (dim if isinstance(dim, int) else None,))]


def _attention_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """``compute_mask``: the query's mask on the output, none on the scores."""
    return [ctx.mask(0), None]


def _scores(layer: Layer, query: np.ndarray, key: np.ndarray) -> np.ndarray:
    c, w = layer.config, layer.weights
    if layer.class_name == "AdditiveAttention":
        additive_scale = f64(w["scale"]) if c.get("use_scale", True) else 1.0
        return np.sum(additive_scale * np.tanh(query[..., :, None, :] + key[..., None, :, :]), axis=-1)
    scale = float(np.asarray(w["scale"])) if c.get("use_scale", False) else None
    if c.get("score_mode", "dot") == "dot":
        scores = query @ np.swapaxes(key, -1, -2)
        return scores * scale if scale is not None else scores
    summed = query[..., :, None, :] + key[..., None, :, :]
    tanh = np.tanh(scale * summed if scale is not None else summed)
    return float(np.asarray(w["concat_score_weight"])) * np.sum(tanh, axis=-1)


def keep_scores(shape: tuple[int, ...], value_mask: np.ndarray | None, is_causal: bool) -> np.ndarray | None:
    """Which scores ``(N, Tq, Tv)`` count: key ``j <= i`` when causal, and the value's kept steps."""
    keep = None
    if is_causal:
        rows, cols = shape[-2], shape[-1]
        keep = np.arange(rows)[:, None] >= np.arange(cols)[None, :]
    if value_mask is not None:
        vm = np.asarray(value_mask, bool)[..., None, :]
        keep = vm if keep is None else np.logical_and(vm, keep)
    return keep


def _masked(scores: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """``scores - 1e9`` where not kept, as the model's float32 rounds it (a fully masked row is
    then a uniform softmax in Keras, which float64 ``scores - 1e9`` would not reproduce)."""
    if keep is None:
        return scores
    low = (scores.astype(np.float32) - np.float32(MASKED_SCORE)).astype(np.float64)
    return np.where(keep, scores, low)


@defines("Attention", "AdditiveAttention", shape=_attention_shape,
         weights={"Attention": _attention_weights, "AdditiveAttention": _additive_weights},
         fields={"Attention": {"use_scale": checks.boolean, "score_mode": checks.one_of("dot", "concat"),
                               "dropout": checks.finite_nonneg, "causal": checks.boolean},
                 "AdditiveAttention": {"use_scale": checks.boolean, "dropout": checks.finite_nonneg,
                                       "causal": checks.boolean}},
         masking="own", mask=_attention_masks,
         notes="masked scores: Keras 3 where(mask, s, s - 1e9), tf.keras s - 1e9 * padding (equal); the query mask "
               "zeroes output rows (Keras 3 where, tf.keras a product)")
def attention_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    if len(xs) not in (2, 3):
        raise UnsupportedLayerError(f"layer {layer.label}: called on {len(xs)} tensors, not [query, value(, key)]")
    query, value = f64(xs[0]), f64(xs[1])
    key = f64(xs[2]) if len(xs) > 2 else value
    scores = _scores(layer, query, key)
    keep = keep_scores(scores.shape, ctx.mask(1), causal(layer.config, ctx.kwargs))
    weights = softmax(_masked(scores, keep), -1)
    out = weights @ value
    if ctx.mask(0) is not None:
        out = np.where(np.asarray(ctx.mask(0), bool)[..., None], out, 0.0)
    return [out, weights] if ctx.kwarg("return_attention_scores") else [out]


# -- Dot ---------------------------------------------------------------------------------------------
def dot_axes(config: dict[str, Any], ranks: tuple[int, int]) -> tuple[int, int]:
    """The contracted axis of each input, non-negative (Keras: ``axes % rank`` for a negative one)."""
    axes = config.get("axes", -1)
    pair = [axes, axes] if isinstance(axes, int) else list(axes)
    if len(pair) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in pair):
        raise UnsupportedLayerError(f"Dot axes {axes!r} are not an int or a pair of ints")
    out = (pair[0] % ranks[0], pair[1] % ranks[1])
    if 0 in out:
        raise UnsupportedLayerError(f"Dot axes {axes!r} include the batch axis")
    return out


def _dot_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """Keras' ``Dot.compute_output_shape``."""
    a, b = dot_axes(c, (len(shapes[0]), len(shapes[1])))
    first = [d for i, d in enumerate(shapes[0]) if i != a]
    second = [d for i, d in enumerate(shapes[1]) if i not in (0, b)]
    out = first + second
    return [tuple(out + [1] if len(out) == 1 else out)]


def batch_dot(x: np.ndarray, y: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """Keras' ``batch_dot``: per batch entry, the tensor product contracted on ``axes`` (x's axis
    moved last, y's to the front, both flattened around it, one batched matmul)."""
    a, b = axes
    xm, ym = np.moveaxis(x, a, -1), np.moveaxis(y, b, 1)
    x_rest, y_rest = xm.shape[1:-1], ym.shape[2:]
    n, d = x.shape[0], x.shape[a]
    out = xm.reshape(n, -1, d) @ ym.reshape(n, d, -1)
    out = out.reshape(n, *x_rest, *y_rest)
    return out.reshape(n, 1) if out.ndim == 1 else out


def _l2_normalize(x: np.ndarray, axis: int, generation: int) -> np.ndarray:
    square_sum = np.sum(x * x, axis=axis, keepdims=True)
    if generation >= 3:  # x * min(rsqrt(sum), 1 / epsilon)
        with np.errstate(divide="ignore"):
            return x * np.minimum(1.0 / np.sqrt(square_sum), 1.0e7)
    return x / np.sqrt(np.maximum(square_sum, 1.0e-12))


def _no_mask(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    return [None]


@defines("Dot", shape=_dot_shape, weights=no_weights, fields={"normalize": checks.boolean}, masking="own",
         mask=_no_mask, notes="normalize: Keras 3 x * min(rsqrt(sum x^2), 1e7), tf.keras x * rsqrt(max(sum x^2, 1e-12))")
def dot_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    if len(xs) != 2:
        raise UnsupportedLayerError(f"layer {layer.label}: called on {len(xs)} tensors, not 2")
    x, y = f64(xs[0]), f64(xs[1])
    try:
        axes = dot_axes(layer.config, (x.ndim, y.ndim))
    except UnsupportedLayerError as exc:
        raise UnsupportedLayerError(f"layer {layer.label}: {exc}") from None
    if layer.config.get("normalize"):
        x, y = _l2_normalize(x, axes[0], ctx.generation), _l2_normalize(y, axes[1], ctx.generation)
    return [batch_dot(x, y, axes)]


# -- ReversibleEmbedding, RandomFourierFeatures -----------------------------------------------------
def _reversible_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    if _kwarg(c, "reverse"):
        return [(*shapes[0][:-1], c["input_dim"])]
    return [(*shapes[0], c["output_dim"])]


def _reversible_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``embeddings (input_dim, output_dim)``, then ``reverse_embeddings (output_dim, input_dim)``
    unless ``tie_weights``."""
    rows, cols = positive(c, "input_dim"), positive(c, "output_dim")
    untied = [] if c.get("tie_weights", True) else [WeightSpec("reverse_embeddings", (cols, rows))]
    return [WeightSpec("embeddings", (rows, cols)), *untied]


def _reversible_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """A forward call keeps Embedding's ``mask_zero`` mask (set by ``call``: its ``compute_mask``
    says None); a reverse call gives none."""
    if ctx.kwarg("reverse") or not layer.config.get("mask_zero"):
        return [None]
    return [np.asarray(xs[0]) != 0]


def reversible_problem(config: dict[str, Any]) -> str | None:
    """Why a ReversibleEmbedding cannot be computed, or None (quantized tables, a reverse product
    in another precision)."""
    if config.get("quantization_mode") or config.get("quantization_config"):
        return f"quantized ({config.get('quantization_mode')!r}) tables are not supported"
    if config.get("reverse_dtype") not in (None, "float32", "float64"):
        return f"reverse_dtype {config.get('reverse_dtype')!r}: the reverse product in another precision is not supported"
    return None


@defines("ReversibleEmbedding", shape=_reversible_shape, weights=_reversible_weights, masking="own",
         mask=_reversible_masks, fields={"tie_weights": checks.boolean, "mask_zero": checks.boolean,
                                         "logit_soft_cap": checks.opt(checks.number)})
def reversible_embedding_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    problem = reversible_problem(layer.config)
    if problem:
        raise UnsupportedLayerError(f"layer {layer.label}: {problem}")
    if not ctx.kwarg("reverse"):
        return embedding_layer(layer, xs, ctx)
    c = layer.config
    table = f64(layer.weights["embeddings"]).T if c.get("tie_weights", True) else f64(layer.weights["reverse_embeddings"])
    logits = f64(xs[0]) @ table
    cap = c.get("logit_soft_cap")
    return [np.tanh(logits / float(cap)) * float(cap) if cap is not None else logits]


def _rff_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    return [(shapes[0][0], c["output_dim"])]


def _rff_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``kernel_scale (1,)`` (a trainable variable, stored first even in a frozen layer, the
    default), then ``unscaled_kernel (in, output_dim)`` and ``bias (output_dim,)`` (never trained)."""
    dim = positive(c, "output_dim")
    inp = shapes[0][-1] if shapes and isinstance(shapes[0], tuple) and isinstance(shapes[0][-1], int) else None
    return [WeightSpec("kernel_scale", (1,)), WeightSpec("unscaled_kernel", (inp, dim), False),
            WeightSpec("bias", (dim,), False)]


@defines("RandomFourierFeatures", shape=_rff_shape, weights=_rff_weights, fields={"output_dim": checks.pos_int})
def random_fourier_features_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    w = layer.weights
    kernel = f64(w["unscaled_kernel"]) / float(np.asarray(w["kernel_scale"]).reshape(-1)[0])
    return [np.cos(f64(xs[0]) @ kernel + f64(w["bias"]))]
