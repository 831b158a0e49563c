"""Classes of Keras 1 and of Keras 2 / tf.keras 2.x that Keras 3 no longer has, in float64.

- **LocallyConnected1D/2D** (tf.keras 2.x, tf_keras 2.21, Keras 2.0-2.3, Keras 1): a convolution
  whose weights are not shared between output positions. tf.keras stores its kernel in one of
  three layouts, chosen by ``implementation`` (``tf_keras/src/layers/locally_connected``):
  1 ``(P, prod(k) * C, F)`` per output position ``P`` (row-major over the output positions), the
  patch flattened in the layer's own memory order (``(*k, C)`` channels_last, ``(C, *k)``
  channels_first), ``backend.local_conv``; 2 a dense ``(*S_in, C, *S_out, F)`` kernel
  (channels_first: ``(C, *S_in, F, *S_out)``) times its 0/1 connectivity mask, one matmul
  (``local_conv_matmul``); 3 the connected entries only, ``(n,)`` in the sorted order of
  ``conv_kernel_idxs`` ``(output index, input index)`` (``local_conv_sparse_matmul``).
  Implementation 1 takes ``valid`` padding only; 2 and 3 also ``same``, whose window of output
  ``p`` is ``[p*s - k//2, p*s + k - k//2)`` clipped to the input (``conv_connected_inputs``: for
  an even kernel this is not TensorFlow's ``SAME`` convolution window). The bias is
  ``(*S_out, F)``; channels_first adds it **reshaped** (not transposed) to ``(F, *S_out)``
  (``backend.bias_add`` with a bias of rank > 1; Keras 1 ``th`` did the same). Keras 1 and
  Keras 2.0-2.2 wrote the layout of implementation 1 (the reader upgrades Keras 1's
  ``nb_filter``/``filter_length``/``subsample``/``dim_ordering``).
- **Highway** (Keras 1): ``t = sigmoid(x W_carry + b_carry)``, ``y = act(x W + b) t + (1 - t) x``;
  weights ``W, W_carry, b, b_carry`` in that order.
- **MaxoutDense** (Keras 1): ``max_f (x W[f] + b[f])``, ``W (nb_feature, in, out)``, ``b (nb_feature, out)``.
- **SReLU** (Keras 1, TensorFlow backend's ``K.relu``): with ``tr = t_left + |t_right|``,
  ``y = t_left + min(relu(x - t_left), tr - t_left) - a_left relu(t_left - x) + a_right relu(x - tr)``;
  weights ``t_left, a_left, t_right, a_right`` shaped like the input without its batch axis, 1 on
  the ``shared_axes`` (which the config does not record: the weight shapes say them).
- **ParametricSoftplus** (Keras 1): ``alphas * softplus(betas * x)``, weights ``alphas, betas``.
- **Merge** (Keras 1), for the modes no Keras 2 class took: ``cos``, the cosine of two vectors
  ``batch_dot(a, b) / max(sqrt(batch_dot(a, a) batch_dot(b, b)), 1e-7)`` with output shape
  ``(N, 1)`` (Keras 1's ``get_output_shape_for``; its backends computed ``(N, 1, 1)``, same
  values), for rank-2 inputs (for higher ranks the tensor Keras 1 computed and the shape it
  declared disagree: refused); and a Python function as ``mode`` (marshalled code, never run:
  refused with the reason). The other modes arrive as Add, Multiply, Average, Maximum,
  Concatenate and Dot (:mod:`bnconvert.readers.keras1`).

Masks: none of these supports masking in tf.keras (LocallyConnected) and the Keras 1 ones had no
``supports_masking`` (Highway, MaxoutDense) or gave none (Merge cos); SReLU and
ParametricSoftplus set ``supports_masking`` and keep their input's mask.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

import numpy as np

from ..errors import UnsupportedLayerError
from ..model import Layer
from . import checks
from .activations import apply_activation, sigmoid, softplus
from .facts import (
    ConfigProblem,
    Shape,
    WeightSpec,
    conv_output_length,
    input_channels,
    positive,
    same_shape,
)
from .legacy import Keras1Arg as K1
from .record import CallContext, defines
from .roles import barrier
from .util import f64

__all__ = ["COS_EPSILON", "connected_inputs", "kernel_indices", "local_geometry", "local_window_mask", "merge_refusal", "parameter_problem"]

#: Keras 1's ``K.epsilon()`` (``_EPSILON = 10e-8``), the floor of the cos merge's denominator
COS_EPSILON = 1e-7


# -- LocallyConnected ------------------------------------------------------------------------------
def local_geometry(config: dict[str, Any], shape: Shape, rank: int) -> tuple[list[int], int, list[int], list[int], list[int]]:
    """``(input spatial sizes, input channels, output spatial sizes, kernel, strides)`` of a
    LocallyConnected layer on an input of ``shape`` (every size must be known, as Keras requires)."""
    first = config.get("data_format") == "channels_first"
    spatial = list(shape[2:] if first else shape[1:-1])
    channels = shape[1] if first else shape[-1]
    if len(spatial) != rank or any(d is None for d in [*spatial, channels]):
        raise ConfigProblem(f"a LocallyConnected{rank}D input needs {rank} known spatial sizes and known channels, got {shape}")
    kernel, strides = list(_ints(config, "kernel_size", rank)), list(_ints(config, "strides", rank))
    padding = config.get("padding", "valid")
    out = [conv_output_length(n, k, padding, s) for n, k, s in zip(spatial, kernel, strides)]
    if any(o is None or o <= 0 for o in out):
        raise ConfigProblem(f"the output of a LocallyConnected{rank}D on {shape} would be empty")
    return spatial, int(channels), cast("list[int]", out), kernel, strides  # no None in out: refused above


def _ints(config: dict[str, Any], key: str, n: int) -> tuple[int, ...]:
    """``config[key]`` as ``n`` positive ints (one int, or a one-element list, stands for all)."""
    value = config.get(key, 1 if key == "strides" else None)
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    items = items * n if len(items) == 1 else items
    if len(items) != n or not all(checks.pos_int(v) for v in items):
        raise ConfigProblem(f"config '{key}' is {value!r}, not {n} positive integers")
    return cast("tuple[int, ...]", tuple(items))  # every item passed pos_int


def connected_inputs(n: int, k: int, s: int, padding: str, p: int) -> range:
    """The input positions output ``p`` reads along one axis (tf.keras ``conv_connected_inputs``)."""
    left = k // 2
    center = p * s + (left if padding == "valid" else 0)
    return range(max(0, center - left), min(n, center + k - left))


def local_window_mask(spatial: list[int], out: list[int], kernel: list[int], strides: list[int], padding: str) -> np.ndarray:
    """The 0/1 connectivity ``(*S_in, *S_out)`` of tf.keras' ``conv_kernel_mask``."""
    mask = np.zeros((*spatial, *out), bool)
    for pos in itertools.product(*(range(o) for o in out)):
        ranges = [connected_inputs(n, k, s, padding, p) for n, k, s, p in zip(spatial, kernel, strides, pos)]
        for src in itertools.product(*ranges):
            mask[src + pos] = True
    return mask


def _local_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    rank = len(shapes[0]) - 2
    first = c.get("data_format") == "channels_first"
    spatial = list(shapes[0][2:] if first else shapes[0][1:-1])
    kernel, strides = _ints(c, "kernel_size", rank), _ints(c, "strides", rank)
    out = [conv_output_length(n, k, c.get("padding", "valid"), s) for n, k, s in zip(spatial, kernel, strides)]
    filters = positive(c, "filters")
    return [(shapes[0][0], filters, *out) if first else (shapes[0][0], *out, filters)]


def _local_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``kernel`` in the layout of ``implementation`` (see the module docstring), ``bias (*S_out, F)``."""
    filters = positive(c, "filters")
    bias = [WeightSpec("bias", None)] if c.get("use_bias", True) else []
    if not shapes or not isinstance(shapes[0], tuple) or input_channels(c, shapes) is None:
        return [WeightSpec("kernel", None), *bias]
    rank = len(shapes[0]) - 2
    try:
        spatial, channels, out, kernel, strides = local_geometry(c, shapes[0], rank)
    except ConfigProblem:
        return [WeightSpec("kernel", None), *bias]
    implementation = c.get("implementation", 1)
    first = c.get("data_format") == "channels_first"
    if implementation == 2:
        shape = (channels, *spatial, filters, *out) if first else (*spatial, channels, *out, filters)
    elif implementation == 3:
        mask = local_window_mask(spatial, out, kernel, strides, c.get("padding", "valid"))
        shape = (int(mask.sum()) * channels * filters,)
    else:
        shape = (int(np.prod(out)), int(np.prod(kernel)) * channels, filters)
    bias = [WeightSpec("bias", (*out, filters))] if c.get("use_bias", True) else []
    return [WeightSpec("kernel", shape), *bias]


def _implementation_1(x: np.ndarray, w: np.ndarray, first: bool, out: list[int], kernel: list[int],
                      strides: list[int]) -> np.ndarray:
    """``backend.local_conv``: per output position, its window flattened in memory order, times
    that position's ``(prod(k) * C, F)`` matrix; the result ``(N, F, *S_out)`` or ``(N, *S_out, F)``."""
    n = x.shape[0]
    patches = []
    for pos in itertools.product(*(range(o) for o in out)):
        window = tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, strides, kernel))
        patches.append(x[(slice(None), slice(None)) + window] if first else x[(slice(None),) + window])
    stacked = np.stack([p.reshape(n, -1) for p in patches])  # (P, N, feature)
    y = np.matmul(stacked, w)  # (P, N, F)
    y = y.reshape(*out, n, w.shape[-1])
    rank = len(out)
    perm = (rank, rank + 1, *range(rank)) if first else (rank, *range(rank), rank + 1)
    return np.transpose(y, perm)


def _implementation_2(x: np.ndarray, w: np.ndarray, mask: np.ndarray, first: bool, out_shape: tuple) -> np.ndarray:
    """``local_conv_matmul``: the flattened input times the masked dense kernel made 2-D."""
    rank = mask.ndim // 2
    m = np.expand_dims(np.expand_dims(mask, 0), -rank - 1) if first else np.expand_dims(np.expand_dims(mask, rank), -1)
    dense = (w * m).reshape(int(np.prod(w.shape[:w.ndim // 2])), -1)
    return (x.reshape(x.shape[0], -1) @ dense).reshape(x.shape[0], *out_shape)


def kernel_indices(spatial: list[int], channels: int, out: list[int], filters: int, kernel: list[int],
                   strides: list[int], padding: str, first: bool) -> np.ndarray:
    """tf.keras ``sorted(conv_kernel_idxs(...))`` as an ``(n, 2)`` array of (output, input) flat
    indices in the layer's layout (channels first or last), built per output position with numpy."""
    in_dims = (channels, *spatial) if first else (*spatial, channels)
    out_dims = (filters, *out) if first else (*out, filters)
    blocks = []
    for pos in itertools.product(*(range(o) for o in out)):
        ranges = [connected_inputs(n, k, s, padding, p) for n, k, s, p in zip(spatial, kernel, strides, pos)]
        pixels = np.array(list(itertools.product(*ranges)), dtype=np.int64).reshape(-1, len(spatial))
        chans = np.arange(channels)
        pix = np.repeat(pixels, channels, axis=0)
        ch = np.tile(chans, len(pixels))
        ins = np.ravel_multi_index((ch, *pix.T) if first else (*pix.T, ch), in_dims)
        f = np.arange(filters)
        outs = np.ravel_multi_index((f, *[np.full(filters, p) for p in pos]) if first else
                                    (*[np.full(filters, p) for p in pos], f), out_dims)
        blocks.append(np.stack(np.broadcast_arrays(outs[:, None], ins[None, :]), axis=-1).reshape(-1, 2))
    pairs = np.concatenate(blocks) if blocks else np.zeros((0, 2), np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _implementation_3(x: np.ndarray, w: np.ndarray, idxs: np.ndarray, in_size: int, out_shape: tuple) -> np.ndarray:
    """``local_conv_sparse_matmul``: ``(sparse (out, in) @ x_flat^T)^T``."""
    matrix = np.zeros((int(np.prod(out_shape)), in_size))
    matrix[idxs[:, 0], idxs[:, 1]] = w
    return (x.reshape(x.shape[0], -1) @ matrix.T).reshape(x.shape[0], *out_shape)


_LOCAL_FIELDS = {"filters": checks.pos_int, "kernel_size": checks.pos_ints, "strides": checks.pos_ints,
                 "padding": checks.one_of("valid", "same"), "data_format": checks.FORMAT, "use_bias": checks.boolean,
                 "activation": checks.activation, "implementation": checks.one_of(1, 2, 3)}
#: Keras 1 spellings (the reader builds ``kernel_size``, ``strides``, ``data_format`` from
#: ``filter_length``/``nb_row``/``nb_col``, ``subsample(_length)`` and ``dim_ordering``)
_LOCAL_COMMON = (K1("filters", "nb_filter"), K1("padding", "border_mode", "valid"), K1("activation", "activation", "linear"),
                 K1("use_bias", "bias", True))
_LOCAL_KERAS1 = {"LocallyConnected1D": (*_LOCAL_COMMON, K1("kernel_size", "filter_length"), K1("strides", "subsample_length", 1)),
                 "LocallyConnected2D": (*_LOCAL_COMMON, K1("strides", "subsample", (1, 1)))}


@defines("LocallyConnected1D", "LocallyConnected2D", keras1=_LOCAL_KERAS1, shape=_local_shape, weights=_local_weights,
         fields=_LOCAL_FIELDS, fold=barrier("unshared kernels per output position: the fold does not rewrite them"),
         notes="tf.keras implementation 1/2/3 kernel layouts; channels_first adds the bias reshaped, not transposed")
def locally_connected_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """tf.keras ``LocallyConnected{1,2}D.call`` for the stored ``implementation``."""
    c = layer.config
    x = f64(xs[0])
    rank = x.ndim - 2
    first = c.get("data_format") == "channels_first"
    try:
        spatial, channels, out, kernel, strides = local_geometry(c, x.shape, rank)
        filters = positive(c, "filters")
    except ConfigProblem as exc:
        raise UnsupportedLayerError(f"layer {layer.label}: {exc}") from None
    padding = c.get("padding", "valid")
    w = f64(layer.weights["kernel"])
    implementation = c.get("implementation", 1)
    out_shape = (filters, *out) if first else (*out, filters)
    if implementation == 1:
        if padding != "valid":
            raise UnsupportedLayerError(f"layer {layer.label}: implementation 1 takes padding 'valid' only (as Keras)")
        y = _implementation_1(x, w, first, out, kernel, strides)
    elif implementation == 2:
        y = _implementation_2(x, w, local_window_mask(spatial, out, kernel, strides, padding), first, out_shape)
    else:
        idxs = kernel_indices(spatial, channels, out, filters, kernel, strides, padding, first)
        y = _implementation_3(x, w, idxs, int(np.prod(spatial)) * channels, out_shape)
    bias = layer.weights.get("bias")
    if bias is not None and c.get("use_bias", True) is not False:
        b = f64(bias)
        y = y + (b.reshape(1, filters, *out) if first else b.reshape(1, *out, filters))
    return [apply_activation(layer, y, ctx)]


# -- Keras 1 dense variants --------------------------------------------------------------------------
def _highway_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``W (in, in)``, ``W_carry (in, in)``, then ``b (in,)``, ``b_carry (in,)`` with a bias."""
    n = input_channels({}, shapes)
    square = [WeightSpec("kernel", (n, n)), WeightSpec("carry_kernel", (n, n))]
    return square + ([WeightSpec("bias", (n,)), WeightSpec("carry_bias", (n,))] if c.get("use_bias", True) else [])


def _maxout_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    return [(shapes[0][0], positive(c, "units"))]


def _maxout_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    """``W (nb_feature, in, out)``, ``b (nb_feature, out)``."""
    k, units = positive(c, "nb_feature", 4), positive(c, "units")
    kernel = WeightSpec("kernel", (k, input_channels({}, shapes), units))
    return [kernel, *([WeightSpec("bias", (k, units))] if c.get("use_bias", True) else [])]


_DENSE_KERAS1 = {"Highway": (K1("activation", "activation", "linear"), K1("use_bias", "bias", True)),
                 "MaxoutDense": (K1("units", "output_dim"), K1("nb_feature", "nb_feature", 4), K1("use_bias", "bias", True))}


@defines("Highway", "MaxoutDense", keras1=_DENSE_KERAS1, shape={"Highway": same_shape, "MaxoutDense": _maxout_shape},
         weights={"Highway": _highway_weights, "MaxoutDense": _maxout_weights},
         fields={"Highway": {"use_bias": checks.boolean, "activation": checks.activation},
                 "MaxoutDense": {"units": checks.pos_int, "nb_feature": checks.pos_int, "use_bias": checks.boolean}},
         fold=barrier("a Keras 1 gated or maxout dense layer: nonlinear in its kernels"))
def keras1_dense_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras 1.2.2 ``Highway.call`` and ``MaxoutDense.call`` (``layers/core.py``), rank-2 inputs."""
    x, w = f64(xs[0]), layer.weights
    if x.ndim != 2:
        raise UnsupportedLayerError(f"layer {layer.label}: Keras 1 {layer.class_name} takes (batch, features) inputs, got rank {x.ndim}")
    bias = layer.config.get("use_bias", True) is not False
    if layer.class_name == "Highway":
        t = x @ f64(w["carry_kernel"]) + (f64(w["carry_bias"]) if bias else 0.0)
        t = sigmoid(t)
        y = x @ f64(w["kernel"]) + (f64(w["bias"]) if bias else 0.0)
        return [apply_activation(layer, y, ctx) * t + (1.0 - t) * x]
    y = np.einsum("ni,fio->nfo", x, f64(w["kernel"]))
    if bias:
        y = y + f64(w["bias"])
    return [y.max(axis=1)]


# -- Keras 1 parametric activations ------------------------------------------------------------------
def _param_weights(names: tuple[str, ...]) -> Any:
    def rule(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
        """Shaped like the input without its batch axis, 1 on the shared axes (not recorded)."""
        return [WeightSpec(name, None) for name in names]
    return rule


_SRELU = ("t_left", "a_left", "t_right", "a_right")
_SOFTPLUS = ("alphas", "betas")


def parameter_problem(layer: Layer, shape: tuple) -> str | None:
    """Why SReLU/ParametricSoftplus weights do not fit an input of ``shape`` (batch first), or None:
    each is the input's shape without the batch axis, 1 on the shared axes."""
    names = _SRELU if layer.class_name == "SReLU" else _SOFTPLUS
    for name in names:
        value = layer.weights.get(name)
        if value is None:
            return f"weight {name} is missing"
        if np.ndim(value) != len(shape) - 1 or any(n is not None and p not in (1, n) for p, n in zip(np.shape(value), shape[1:])):
            return f"weight {name} of shape {np.shape(value)} does not fit an input of shape {tuple(shape[1:])} (batch excluded)"
    return None


@defines("SReLU", "ParametricSoftplus", keras1=True, shape=same_shape,
         weights={"SReLU": _param_weights(_SRELU), "ParametricSoftplus": _param_weights(_SOFTPLUS)}, masking="keep",
         fold=barrier("a learned piecewise or smooth activation"))
def keras1_activation_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras 1.2.2 ``SReLU.call`` (with the TensorFlow backend's ``K.relu(x, alpha, max_value)``:
    ``clip(relu(x), 0, max) - alpha relu(-x)``) and ``ParametricSoftplus.call``."""
    x, w = f64(xs[0]), {k: f64(v) for k, v in layer.weights.items()}
    problem = parameter_problem(layer, x.shape)
    if problem:
        raise UnsupportedLayerError(f"layer {layer.label}: {problem}")
    if layer.class_name == "ParametricSoftplus":
        return [softplus(w["betas"] * x) * w["alphas"]]
    t_left, a_left, a_right = w["t_left"], w["a_left"], w["a_right"]
    t_right = t_left + np.abs(w["t_right"])
    shifted = x - t_left
    centre = np.clip(np.maximum(shifted, 0.0), 0.0, t_right - t_left) - a_left * np.maximum(-shifted, 0.0)
    return [t_left + centre + np.maximum(x - t_right, 0.0) * a_right]


# -- Keras 1 Merge (modes without a Keras 2 class) ---------------------------------------------------
def _merge_shape(c: dict[str, Any], shapes: list[Shape]) -> list[Shape]:
    """Keras 1 ``Merge.get_output_shape_for`` for ``dot``/``cos``."""
    if c.get("mode") != "cos":  # a function mode: the shape it was declared to give, when given as numbers
        declared = c.get("output_shape")
        if isinstance(declared, list) and all(d is None or checks.nonneg_int(d) for d in declared):
            return [(shapes[0][0], *declared)]
        raise ConfigProblem(f"Keras 1 Merge mode {c.get('keras1_merge_mode')!r} declares no output shape")
    a, b = list(shapes[0]), list(shapes[1])
    axes = _dot_axes(c, len(a), len(b))
    a.pop(axes[0])
    b.pop(axes[1])
    b.pop(0)
    out = a + b
    return [tuple(out + [1] if len(out) == 1 else out)]


def _dot_axes(c: dict[str, Any], n1: int, n2: int) -> list[int]:
    axes = c.get("dot_axes", -1)
    if isinstance(axes, int) and not isinstance(axes, bool):
        return [axes % n1, axes % n2] if axes < 0 else [axes, axes]
    if isinstance(axes, (list, tuple)) and len(axes) == 2 and all(isinstance(a, int) for a in axes):
        return [int(axes[0]), int(axes[1])]
    raise ConfigProblem(f"config 'dot_axes' is {axes!r}, not an axis or two")


def _no_weights(c: dict[str, Any], shapes: list[Shape] | None) -> list[WeightSpec]:
    return []


def merge_refusal(layer: Layer, shapes: list[tuple]) -> str | None:
    """Why a Keras 1 Merge cannot be run or exported (None when it can): a Python function as
    ``mode`` is never run; ``cos`` is supported on two rank-2 inputs over axis 1."""
    c = layer.config
    if c.get("mode") != "cos":
        if isinstance(c.get("mode"), str):  # a legacy Merge (Keras 2.0 kept one) in a mode the reader did not upgrade
            return f"Merge mode {c['mode']!r} is not supported by the legacy Merge record (only 'cos')"
        return (f"Keras 1 Merge mode {c.get('keras1_merge_mode')!r} is Python code, which bnconvert never runs: "
                "give the layer a replacement (--replace)")
    if len(shapes) != 2 or any(len(s) != 2 for s in shapes):
        return "Keras 1 Merge mode 'cos' is supported on two (batch, features) inputs only"
    if _dot_axes(c, 2, 2) != [1, 1]:
        return f"Keras 1 Merge mode 'cos' with dot_axes {c.get('dot_axes')!r} (only axis 1 of two vectors is supported)"
    return None


@defines("Merge", shape=_merge_shape, weights=_no_weights,
         notes="Keras 1 Merge modes that became no Keras 2 class: cos (run), a Python function (refused)")
def keras1_merge_layer(layer: Layer, xs: list[np.ndarray], ctx: CallContext) -> list[np.ndarray]:
    """Keras 1.2.2 ``Merge.call`` mode ``cos`` (``engine/topology.py``)."""
    problem = merge_refusal(layer, [np.shape(x) for x in xs])
    if problem:
        raise UnsupportedLayerError(f"layer {layer.label}: {problem}")
    a, b = f64(xs[0]), f64(xs[1])
    dot = np.sum(a * b, axis=1)
    denominator = np.maximum(np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1)), COS_EPSILON)
    return [(dot / denominator)[:, None]]
