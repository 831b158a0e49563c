"""EinsumDense, MultiHeadAttention and GroupQueryAttention at inference, in float64.

Written from Keras 3 (``keras/src/layers/core/einsum_dense.py``,
``keras/src/layers/attention/multi_head_attention.py``, ``grouped_query_attention.py``) and
tf_keras (``tf_keras/src/layers/attention/multi_head_attention.py``), which agree except where
said:

- **EinsumDense**: ``activation(einsum(equation, x, kernel) + bias)``; the kernel and bias shapes
  are Keras' ``_analyze_einsum_string`` (the bias spans the output axes from the first of
  ``bias_axes`` to the end, 1 where an axis is not a bias axis). A quantized layer (an int8,
  int4, float8, GPTQ or AWQ dtype policy or ``quantization_config``) is refused: its file holds
  integer kernels and scales, not the float kernel. A LoRA layer saves its kernel with the LoRA
  product merged in, so ``lora_rank`` changes nothing here.
- **MultiHeadAttention**: each of query, key, value is projected by an EinsumDense over its last
  axis into ``(heads, key_dim)`` (value: ``value_dim``); the scores are ``einsum(key, query /
  sqrt(key_dim))`` over the ``attention_axes`` (Keras' ``_build_attention_equation``: several
  axes attend jointly, e.g. ``(H, W)`` of an image); the masked softmax runs over the key axes,
  the combination over the value, Keras 3's optional gate (``use_gate``: ``sigmoid`` of a fourth
  projection of the query, multiplied in), and the output projection back to the query's last
  size or ``output_shape``. Dropout is the identity.
- **Masks**: the attention mask is the AND of the ``attention_mask`` tensor (the call's keyword
  argument; nonzero is True), the Keras masks of query ``[B, T, 1]``, value and key ``[B, 1, S]``,
  the causal mask (``use_causal_mask``: position ``t`` sees ``s <= t``) and Keras 3's
  ``sliding_window`` band (``|t - s| < window``). Masked scores become, per generation and path
  (a fully masked row is where they differ):

  * Keras 3, projected rank 4 (one attention axis), no dropout, no scores returned
    (``ops.dot_product_attention``): ``-0.7 * 3.38953e38``; a fully masked row is uniform;
  * Keras 3 otherwise (``Softmax(mask=)``): ``-1e9``, and the probabilities are zeroed where masked
    (a fully masked row is all zeros);
  * tf.keras: ``scores + (1 - mask) * -1e9`` in float32 (``softmax_robust_masking``: ``-1e9``),
    not zeroed. In float32 ``s - 1e9`` rounds to a multiple of 64, so a fully masked row is
    uniform; the reference rounds masked scores the same way, or it would keep ``softmax(s)``.

  The output carries the query's mask (Keras 3 sets it; tf.keras' default ``compute_mask``);
  the scores output carries none. Keras 3's ``call`` also removes the masks from the tensors it
  was given, so a layer Keras runs later on the same tensor sees none (two attention layers
  reading one masked embedding): that depends on Keras' execution order and is not reproduced.
- **GroupQueryAttention** (Keras 3 only; tf.keras has no such class): a rank-3 query with
  ``num_query_heads`` heads, key and value with ``num_key_value_heads`` heads, each repeated
  ``num_query_heads / num_key_value_heads`` times (query head ``u`` reads key/value head
  ``u // repeats``); scale ``1/sqrt(head_dim)``, masks as MultiHeadAttention's.

The call's tensors: the first positional one is the query, then value and key as positional or
keyword arguments (``key`` defaults to ``value``), and ``attention_mask`` as a keyword argument
(:data:`bnconvert.readers.graph.TENSOR_KWARGS` says which input each keyword tensor is).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from . import checks
from .activations import apply_activation
from .facts import CALL_KWARGS, ConfigProblem, Shape, WeightSpec, positive
from .record import CATALOG, CallContext, defines
from .roles import barrier
from .util import f64

__all__ = [
    "MASKED_FAST",
    "MASKED_SLOW",
    "MASKED_TF",
    "SUBLAYERS",
    "AttentionInputs",
    "AttentionSpec",
    "attention_equations",
    "attention_inputs",
    "attention_mask",
    "attention_spec",
    "einsum_shapes",
    "quantization_mode",
    "quantization_problem",
    "softmax_path",
    "zip_sublayers",
]

#: the tensor keyword arguments the reader files as call inputs (``readers.graph.TENSOR_KWARGS``)
_TENSOR_KWARGS = "tensor_kwargs"
#: what a masked score becomes (see the module docstring)
MASKED_FAST = -0.7 * 3.38953e38
MASKED_SLOW = -1e9
MASKED_TF = -1e9


# -- EinsumDense -----------------------------------------------------------------------------------
_PLAIN = re.compile(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)")
_LEFT = re.compile(r"0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)")
_RIGHT = re.compile(r"([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0")


def einsum_shapes(equation: object, bias_axes: str | None, input_shape: Sequence[Any],
                  output_shape: Any) -> tuple[list[Any], list[Any] | None, list[Any]]:
    """``(kernel shape, bias shape or None, full output shape)`` of an EinsumDense, as Keras'
    ``_analyze_einsum_string`` computes them (``None`` where the input shape does not tell);
    :class:`ConfigProblem` for an equation or ``bias_axes`` Keras refuses."""
    if not isinstance(equation, str):
        raise ConfigProblem(f"config 'equation' is {equation!r}, not an einsum equation")
    text = equation.replace("...", "0")
    left = False
    match = _PLAIN.fullmatch(text)
    if match is None:
        match, left = _LEFT.fullmatch(text), True
    if match is None:
        match, left = _RIGHT.fullmatch(text), False
    if match is None:
        raise ConfigProblem(f"config 'equation' is {equation!r}: Keras accepts [X],[Y]->[Z], ...[X],[Y]->...[Z] "
                            "or [X]...,[Y]->[Z]...")
    ins, ws, outs = match.groups()
    input_shape = list(input_shape)
    elided = len(input_shape) - len(ins)
    out = [output_shape] if isinstance(output_shape, int) else list(output_shape or [])
    out.insert(0, input_shape[0])
    if elided > 0 and left:
        for i in range(1, elided):
            out.insert(1, input_shape[i])
    elif elided > 0:
        out += input_shape[len(input_shape) - elided:]
    in_map = {d: (i + elided) - len(input_shape) for i, d in enumerate(ins)} if left else {d: i for i, d in enumerate(ins)}
    out_map = {d: i + elided for i, d in enumerate(outs)} if left else {d: i for i, d in enumerate(outs)}
    if len(out) != len(outs) + max(elided, 0):
        raise ConfigProblem(f"config 'output_shape' {output_shape!r} does not have the {len(outs) - 1} axes of "
                            f"'{equation}' after the batch")
    for d in outs:
        if d not in ins and d not in ws:
            raise ConfigProblem(f"config 'equation' {equation!r}: output axis '{d}' is in neither the input nor the kernel")
    kernel = []
    for d in ws:
        if d in out_map:
            kernel.append(out[out_map[d]])
        elif d in in_map:
            kernel.append(input_shape[in_map[d]])
        else:
            raise ConfigProblem(f"config 'equation' {equation!r}: kernel axis '{d}' is in neither the input nor the output")
    bias = None
    if bias_axes:
        if not isinstance(bias_axes, str) or any(c not in outs for c in bias_axes):
            raise ConfigProblem(f"config 'bias_axes' {bias_axes!r} names axes that are not in the output '{outs}'")
        shift = elided if left else 0
        sizes = {c: out[i + shift] for i, c in enumerate(outs)}
        first = min(outs.find(c) for c in bias_axes)
        bias = [sizes[c] if c in bias_axes else 1 for c in outs[first:]]
        if not left:
            bias += [1] * max(elided, 0)
    for d in ins:  # a shared axis keeps the input's size (Keras refuses another one)
        if d in out_map and out[out_map[d]] is None:
            out[out_map[d]] = input_shape[in_map[d]]
    return kernel, bias, out


#: what a quantized EinsumDense stores, per mode, in order (Keras 3 ``variable_serialization_spec``)
_QUANTIZED = {
    "int8": ("kernel", "bias", "kernel_scale"),
    "int4": ("kernel", "bias", "kernel_scale", "kernel_zero", "g_idx"),
    "float8": ("kernel", "bias", "inputs_scale", "inputs_amax_history", "kernel_scale", "kernel_amax_history",
               "outputs_grad_scale", "outputs_grad_amax_history"),
    "gptq": ("bias", "quantized_kernel", "kernel_scale", "kernel_zero", "g_idx"),
    "awq": ("bias", "quantized_kernel", "kernel_scale", "kernel_zero", "awq_scales", "g_idx"),
}


def quantization_mode(config: Mapping[str, Any]) -> str | None:
    """The quantization mode of a Keras 3 layer config (its dtype policy's ``mode``, or a
    ``<mode>_from_<dtype>`` policy name), None when it is not quantized."""
    policy = config.get("dtype")
    if isinstance(policy, dict):
        inner = policy.get("config") or {}
        mode = inner.get("mode") or inner.get("quantization_mode")
        name = str(inner.get("name") or "")
        if mode or "Quant" in str(policy.get("class_name") or ""):
            return str(mode or name.split("_from_")[0] or policy.get("class_name"))
        policy = name
    if isinstance(policy, str) and "_from_" in policy:
        return policy.split("_from_")[0]
    return None


def quantization_problem(config: Mapping[str, Any]) -> str | None:
    """Why a (Keras 3) layer config is quantized, None when it is not."""
    mode = quantization_mode(config)
    if mode is None and not config.get("quantization_config"):
        return None
    return (f"quantized ({mode or 'quantization_config'}): its file holds integer kernels and scales, not the float "
            "kernel; export the model before quantizing it")


def _einsum_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    return [tuple(einsum_shapes(c["equation"], c.get("bias_axes"), shapes[0], c.get("output_shape"))[2])]


def _dims(shape: Sequence[Any] | None) -> tuple[int | None, ...] | None:
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else None for d in shape)


def _einsum_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``kernel`` (its shape from the equation), ``bias`` when ``bias_axes`` is set; a quantized
    layer's stored variables unshaped (so that the file reads, and the call refuses it by name)."""
    mode = quantization_mode(c)
    if mode in _QUANTIZED:
        return [WeightSpec(name) for name in _QUANTIZED[mode] if name != "bias" or c.get("bias_axes")]
    kernel = bias = None
    if shapes and isinstance(shapes[0], tuple):
        kernel_shape, bias_shape, _ = einsum_shapes(c.get("equation"), c.get("bias_axes"), shapes[0], c.get("output_shape"))
        kernel, bias = _dims(kernel_shape), _dims(bias_shape)
    return [WeightSpec("kernel", kernel), *([WeightSpec("bias", bias)] if c.get("bias_axes") else [])]


def _einsum_text(v: Any) -> bool:
    return isinstance(v, str) and len(v) < 64 and bool(re.fullmatch(r"[a-zA-Z.]+,[a-zA-Z]+->[a-zA-Z.]+", v))


_einsum_text.want = "an einsum equation such as 'ab,bc->ac'"  # type: ignore[attr-defined]


def _axes_text(v: Any) -> bool:
    return v is None or (isinstance(v, str) and 0 < len(v) <= 26 and v.isalpha())


_axes_text.want = "null or output axis letters"  # type: ignore[attr-defined]

_EINSUM_FIELDS = {"equation": _einsum_text, "bias_axes": _axes_text, "activation": checks.activation}


def einsum(equation: str, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``np.einsum`` with the contraction order numpy finds best (Keras' einsum is exact in the
    order of its sums up to float rounding; float64 makes that order immaterial)."""
    return np.einsum(equation, x, kernel, optimize=True)


@defines("EinsumDense", shape=_einsum_shape, weights=_einsum_weights, fields=_EINSUM_FIELDS,
         fold=barrier("contracts the axes its equation names, which need not be the BN's channels (not folded)"))
def einsum_dense_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """``activation(einsum(equation, x, kernel) + bias)``; quantized layers are refused."""
    c = layer.config
    problem = quantization_problem(c)
    if problem:
        raise UnsupportedLayerError(f"layer {layer.label}: {problem}")
    y = einsum(c["equation"], f64(xs[0]), f64(layer.weights["kernel"]))
    bias = layer.weights.get("bias")
    if bias is not None and c.get("bias_axes"):
        y = y + f64(bias)
    return [apply_activation(layer, y, ctx, in_place=True)]


# -- the attention layers' calls -------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionInputs:
    """Which of a call's inputs is which (indices into the call's inputs; ``key`` is ``value``
    when the call gives none, ``mask`` None without ``attention_mask``), and its flags."""

    query: int
    value: int
    key: int
    mask: int | None
    causal: bool
    scores: bool


_ROLES = ("query", "value", "key")


def attention_inputs(label: str, n_inputs: int, kwargs: Mapping[str, Any] | None) -> AttentionInputs:
    """The roles of a MultiHeadAttention/GroupQueryAttention call's ``n_inputs`` inputs, from its
    recorded keyword arguments: positional tensors are query, value, key in that order, keyword
    tensors are named. UnsupportedLayerError for a tensor argument Keras' call does not take or a
    call without query and value."""
    kwargs = kwargs or {}
    named = dict(kwargs.get(_TENSOR_KWARGS) or {})
    taken = {i for idx in named.values() for i in idx}
    positional = [i for i in range(n_inputs) if i not in taken]
    roles: dict[str, int] = {}
    for role, i in zip(_ROLES, positional):
        roles[role] = i
    if len(positional) > len(_ROLES):
        raise UnsupportedLayerError(f"layer {label}: called with {len(positional)} positional tensors (query, value, key)")
    for name, idx in named.items():
        if name not in (*_ROLES, "attention_mask") or len(idx) != 1 or name in roles:
            raise UnsupportedLayerError(f"layer {label}: the call's tensor argument {name!r} is not supported "
                                        "(query, value, key, attention_mask are)")
        roles[name] = idx[0]
    if "query" not in roles or "value" not in roles:
        raise UnsupportedLayerError(f"layer {label}: the call has no {'query' if 'query' not in roles else 'value'} tensor")
    return AttentionInputs(roles["query"], roles["value"], roles.get("key", roles["value"]), roles.get("attention_mask"),
                           bool(kwargs.get("use_causal_mask", False)), bool(kwargs.get("return_attention_scores", False)))


@dataclass(frozen=True)
class AttentionSpec:
    """A layer's attention, by Keras' construction: heads, sizes, the attention axes of the
    projected rank, the equations, the scale, the repeats of the key/value heads (GQA)."""

    heads: int
    key_dim: int
    value_dim: int
    axes: tuple[int, ...]
    dot: str
    combine: str
    scale: float
    repeats: int = 1
    gate: bool = False
    window: int | None = None
    bias: bool = True


def attention_equations(rank: int, axes: tuple[int, ...]) -> tuple[str, str]:
    """Keras' ``_build_attention_equation``: ``(dot product, combination)`` equations for
    projected tensors of ``rank`` with attention over ``axes`` (the heads are the second last axis
    and count among the batch axes)."""
    letters = string.ascii_lowercase
    target = letters[:rank]
    batch = [i for i in range(rank) if i not in (*axes, rank - 1)]
    source, offset = "", rank
    for i in range(rank):
        if i in batch or i == rank - 1:
            source += target[i]
        else:
            source += letters[offset]
            offset += 1
    product = "".join([target[i] for i in batch] + [target[i] for i in axes] + [source[i] for i in axes])
    return f"{source},{target}->{product}", f"{product},{source}->{target}"


def attention_spec(class_name: str, config: Mapping[str, Any], query_rank: int) -> AttentionSpec:
    """The attention of a MultiHeadAttention or GroupQueryAttention config on a query of
    ``query_rank`` (ConfigProblem for sizes or axes Keras would refuse)."""
    window = config.get("sliding_window")
    gate = bool(config.get("use_gate", False))
    bias = config.get("use_bias", True) is not False
    if class_name == "MultiHeadAttention":
        heads, key_dim = positive(dict(config), "num_heads"), positive(dict(config), "key_dim")
        value_dim = config.get("value_dim") or key_dim
        rank = query_rank + 1
        given = config.get("attention_axes")
        if given is None:
            axes = tuple(range(1, rank - 2))
        else:
            items = [given] if isinstance(given, int) else list(given)
            axes = tuple(a if a >= 0 else (rank - 1) + a for a in items)
        if not axes or any(not 0 < a < rank - 2 for a in axes) or len(set(axes)) != len(axes):
            raise ConfigProblem(f"config 'attention_axes' {given!r} are not distinct axes among 1..{rank - 3} of a "
                                f"rank-{query_rank} query")
        dot, combine = attention_equations(rank, axes)
        return AttentionSpec(heads, key_dim, int(value_dim), axes, dot, combine, 1.0 / math.sqrt(float(key_dim)),
                             gate=gate, window=window, bias=bias)
    heads, kv, dim = (positive(dict(config), k) for k in ("num_query_heads", "num_key_value_heads", "head_dim"))
    if heads % kv:
        raise ConfigProblem(f"config 'num_query_heads' {heads} is not a multiple of 'num_key_value_heads' {kv}")
    if query_rank != 3:
        raise ConfigProblem(f"GroupQueryAttention takes a rank-3 query, not rank {query_rank}")
    return AttentionSpec(heads, dim, dim, (1,), "bkuh,bquh->buqk", "buqk,bkuh->bquh", 1.0 / math.sqrt(float(dim)),
                         repeats=heads // kv, gate=gate, window=window, bias=bias)


def attention_mask(spec: AttentionSpec, t: int, s: int, *, given: np.ndarray | None, query: np.ndarray | None,
                   value: np.ndarray | None, key: np.ndarray | None, causal: bool) -> np.ndarray | None:
    """Keras' ``_compute_attention_mask`` for one attention axis: the AND of the given mask
    (nonzero), the Keras masks of query ``[B, T, 1]``, value and key ``[B, 1, S]``, the causal
    triangle and the sliding window band ``[1, T, S]``; None when there is none. With several
    attention axes only the given mask applies (Keras' automatic masks are ``(B, T)``/``(B, S)``)."""
    parts: list[np.ndarray] = []
    if query is not None:
        parts.append(np.asarray(query, bool)[:, :, None])
    for m in (value, key):
        if m is not None:
            parts.append(np.asarray(m, bool)[:, None, :])
    rows, cols = np.arange(t)[:, None], np.arange(s)[None, :]
    if causal:
        parts.append((rows >= cols)[None])
    if spec.window is not None:
        parts.append((np.abs(rows - cols) < spec.window)[None])
    if given is not None:
        parts.insert(0, np.asarray(given) != 0)
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out & p
    return out


# -- weights, shapes, masks ------------------------------------------------------------------------
#: where each projection's weights live: the meaning prefix (tf.keras ``.h5`` and Keras 3 ``.h5``
#: name the sublayers so) -> the group a ``.keras`` archive keeps its ``vars`` in. Keras 3 saves
#: MultiHeadAttention's under its public properties (``query_dense``), tf.keras under the
#: attributes (``_query_dense``), as Keras 3 does GroupQueryAttention's.
SUBLAYERS = {"query": "query_dense", "key": "key_dense", "gate": "gate_dense", "value": "value_dense",
             "attention_output": "output_dense"}
_CLASSES = ("MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention")


def zip_sublayers(class_name: str, config: Mapping[str, Any]) -> dict[str, str]:
    """Meaning prefix -> ``.keras`` group of each projection of a layer with ``config``. Only
    tf.keras writes ``query_shape`` (and ``softmax_robust_masking``) into the config, which tells
    its archives from Keras 3's."""
    keras3_mha = class_name == "MultiHeadAttention" and "query_shape" not in config and "softmax_robust_masking" not in config
    return {part: (group if keras3_mha and part != "gate" else f"_{group}") for part, group in SUBLAYERS.items()}


def _attention_weights(class_name: str) -> Any:
    def weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
        """Per projection (query, key, gate with ``use_gate``, value, output: Keras' build order)
        its ``kernel`` and, with ``use_bias``, its ``bias``; shapes from the heads and sizes."""
        bias = c.get("use_bias", True) is not False
        if class_name == "MultiHeadAttention":
            heads, kd = positive(c, "num_heads"), positive(c, "key_dim")
            qh = kh = heads
            vd = c.get("value_dim") or kd
        else:
            qh, kh, kd = positive(c, "num_query_heads"), positive(c, "num_key_value_heads"), positive(c, "head_dim")
            vd = kd
        # the query is the first input; which other input is the key or the value depends on the
        # call's keywords, not on the config: their kernels' first size is left unchecked
        q_in = shapes[0][-1] if shapes and isinstance(shapes[0], tuple) else None
        out = c.get("output_shape") if class_name == "MultiHeadAttention" else None
        out_dims = tuple([out] if isinstance(out, int) else out) if out else (q_in,)
        spec = [("query", (q_in, qh, kd), (qh, kd)), ("key", (None, kh, kd), (kh, kd))]
        if c.get("use_gate"):
            spec.append(("gate", (q_in, qh, vd), (qh, vd)))
        spec += [("value", (None, kh, vd), (kh, vd)), ("attention_output", (qh, vd, *out_dims), out_dims)]
        result = []
        for name, kernel, b in spec:
            result.append(WeightSpec(f"{name}/kernel", _dims(kernel)))
            if bias:
                result.append(WeightSpec(f"{name}/bias", _dims(b)))
        return result
    return weights


def _attention_shape(class_name: str) -> Any:
    def shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
        """The query's shape with its last axis replaced by ``output_shape`` (MultiHeadAttention)
        or kept; the scores' ``(B, heads, *T, *S)`` too when the call returns them."""
        kwargs = c.get(CALL_KWARGS) or {}
        roles = attention_inputs(c.get("name", "?"), len(shapes), kwargs)
        query, value = shapes[roles.query], shapes[roles.value]
        out = c.get("output_shape") if class_name == "MultiHeadAttention" else None
        tail = tuple([out] if isinstance(out, int) else out) if out else (query[-1],)
        result = [(*query[:-1], *tail)]
        if roles.scores:
            spec = attention_spec(class_name, c, len(query))
            batch = [query[i] for i in range(len(query) - 1) if i not in spec.axes]
            result.append((*batch, spec.heads, *(query[a] for a in spec.axes), *(value[a] for a in spec.axes)))
        return result
    return shape


def _attention_masks(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray | None]:
    """The output carries the query's mask; the scores carry none."""
    roles = attention_inputs(layer.label, len(xs), ctx.kwargs)
    return [ctx.mask(roles.query), None]


_GQA_FIELDS = {"num_query_heads": checks.pos_int, "num_key_value_heads": checks.pos_int, "head_dim": checks.pos_int,
               "use_bias": checks.boolean, "use_gate": checks.boolean, "dropout": checks.opt(checks.finite_nonneg),
               "sliding_window": checks.opt(checks.pos_int)}
_ATTENTION_FIELDS = {
    "MultiHeadAttention": {"num_heads": checks.pos_int, "key_dim": checks.pos_int, "value_dim": checks.opt(checks.pos_int),
                           "use_bias": checks.boolean, "use_gate": checks.boolean, "dropout": checks.opt(checks.finite_nonneg),
                           "attention_axes": checks.opt(checks.axis), "sliding_window": checks.opt(checks.pos_int),
                           "softmax_robust_masking": checks.boolean},
    "GroupQueryAttention": _GQA_FIELDS, "GroupedQueryAttention": _GQA_FIELDS,
}

_NOT_FOLDED = barrier("multiplies projections of its inputs together: a per-channel affine does not pass it")


@defines("MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention", masking="own", mask=_attention_masks,
         shape={n: _attention_shape(n) for n in _CLASSES}, weights={n: _attention_weights(n) for n in _CLASSES},
         fields=_ATTENTION_FIELDS, fold=_NOT_FOLDED,
         notes="masked scores: Keras 3 fast path -0.7*float32 max, Keras 3 scores path -1e9 then zeroed, "
               "tf.keras +(1-mask)*-1e9 in float32 (a fully masked row differs)")
def attention_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras' ``call``: project, score, mask, softmax, combine, (gate,) project back."""
    c, w = layer.config, layer.weights
    roles = attention_inputs(layer.label, len(xs), ctx.kwargs)
    problem = quantization_problem(c)
    if problem:
        raise UnsupportedLayerError(f"layer {layer.label}: {problem}")
    q_in, v_in, k_in = (f64(xs[i]) for i in (roles.query, roles.value, roles.key))
    spec = attention_spec(layer.class_name, c, q_in.ndim)
    if spec.window is not None and ctx.generation != 3:
        raise UnsupportedLayerError(f"layer {layer.label}: sliding_window is a Keras 3 option")

    def project(name: str, x: np.ndarray, equation: str) -> np.ndarray:
        y = einsum(equation, x, f64(w[f"{name}/kernel"]))
        return y + f64(w[f"{name}/bias"]) if spec.bias else y

    q = project("query", q_in, "...d,dnh->...nh")
    k = project("key", k_in, "...d,dnh->...nh")
    v = project("value", v_in, "...d,dnh->...nh")
    if spec.repeats > 1:
        k, v = np.repeat(k, spec.repeats, axis=-2), np.repeat(v, spec.repeats, axis=-2)
    scores = einsum(spec.dot, k, q * spec.scale)
    mask = _mask(layer, spec, roles, xs, ctx, q_in, v_in)
    probs = masked_softmax(scores, mask, spec, ctx, path=softmax_path(c, roles, q.ndim, ctx.generation))
    out = einsum(spec.combine, probs, v)
    if spec.gate:
        gate = project("gate", q_in, "...d,dnh->...nh")
        out = out * (0.5 * (1.0 + np.tanh(0.5 * gate)))
    n_out = f64(w["attention_output/kernel"]).ndim - 2
    letters = string.ascii_lowercase[:n_out]
    y = einsum(f"...nh,nh{letters}->...{letters}", out, f64(w["attention_output/kernel"]))
    if spec.bias:
        y = y + f64(w["attention_output/bias"])
    return [y, probs] if roles.scores else [y]


def _mask(layer: Layer, spec: AttentionSpec, roles: AttentionInputs, xs: list[np.ndarray], ctx: CallContext,
          q_in: np.ndarray, v_in: np.ndarray) -> np.ndarray | None:
    """The attention mask of the call, ``[B|1, *T, *S]`` (None: nothing masked)."""
    given = np.asarray(xs[roles.mask]) if roles.mask is not None else None
    keras_masks = [ctx.mask(roles.query), ctx.mask(roles.value),
                   ctx.mask(roles.key) if roles.key != roles.value or ctx.generation != 3 else None]
    if spec.axes != (1,):  # Keras builds these masks from axis 1 only: wrong (or failing) elsewhere
        if roles.causal or spec.window is not None or any(m is not None for m in keras_masks):
            raise UnsupportedLayerError(f"layer {layer.label}: a causal, sliding-window or Keras mask with attention "
                                        f"axes {list(spec.axes)} is not supported (Keras builds them on axis 1)")
        return given
    return attention_mask(spec, q_in.shape[1], v_in.shape[1], given=given, query=keras_masks[0],
                          value=keras_masks[1], key=keras_masks[2], causal=roles.causal)


def softmax_path(config: Mapping[str, Any], roles: AttentionInputs, projected_rank: int, generation: int) -> str:
    """Which masked softmax the file's Keras runs (see the module docstring): ``fast`` (Keras 3
    ``dot_product_attention``: projected rank 4, no dropout, no scores returned), ``slow`` (Keras 3
    ``Softmax(mask=)``), ``tf`` or ``tf_robust`` (tf.keras, ``softmax_robust_masking``)."""
    if generation != 3:
        return "tf_robust" if config.get("softmax_robust_masking") else "tf"
    dropout = float(config.get("dropout") or 0.0)
    return "fast" if projected_rank == 4 and dropout == 0.0 and not roles.scores else "slow"


def masked_softmax(scores: np.ndarray, mask: np.ndarray | None, spec: AttentionSpec, ctx: CallContext, *,
                   path: str) -> np.ndarray:
    """The softmax over the key axes (the last ``len(axes)``), masked as the file's Keras does
    (see the module docstring); the mask is broadcast by Keras' expansion at the heads axis."""
    n = len(spec.axes)
    axes = tuple(range(scores.ndim - n, scores.ndim))
    if mask is None:
        return _softmax(scores, axes)
    m = np.asarray(mask, bool)
    while m.ndim < scores.ndim:
        m = np.expand_dims(m, -2 * n - 1)
    if path == "fast":
        return _softmax(np.where(m, scores, MASKED_FAST), axes)
    if path == "slow":
        return np.where(m, _softmax(np.where(m, scores, MASKED_SLOW), axes), 0.0)
    if path == "tf_robust":
        return _softmax(np.where(m, scores, MASKED_TF), axes)
    # float32 arithmetic of ``s + (1 - m) * -1e9``: a masked score rounds to float32 near -1e9
    rounded = (scores.astype(np.float32) + np.float32(MASKED_TF)).astype(np.float64)
    return _softmax(np.where(m, scores, rounded), axes)


def _softmax(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axes, keepdims=True))
    return e / np.sum(e, axis=axes, keepdims=True)


for _name in _CLASSES:  # where a .keras archive keeps each projection (layerspec.weight_parts)
    CATALOG[_name].extra["sublayers"] = lambda config, _n=_name: zip_sublayers(_n, config)
    if _name != "MultiHeadAttention":  # the archive's group is named after the Python class
        CATALOG[_name].extra["zip_name"] = "grouped_query_attention"
