"""Do the weights a file holds fit the architecture it declares?

Run by :func:`bnconvert.readers.load` on every model before it is returned, so no later stage
sees a kernel that disagrees with its layer. Checked per layer, with input channels from static
shape inference where they are known (an unknown dimension is never held against a file):

* Dense ``kernel (in, units)``, ``bias (units,)``;
* ConvND ``kernel (*kernel_size, in / groups, filters)``, ConvNDTranspose ``(*kernel_size, filters, in)``;
* DepthwiseConvND ``depthwise_kernel (*kernel_size, in, depth_multiplier)``;
* SeparableConvND ``depthwise_kernel`` as above and ``pointwise_kernel (1.., in * dm, filters)``;
* BatchNormalization: gamma, beta, mean and variance all of one size, equal to the normalised
  axes of its input;
* weights of these classes are floating point.

Problems are gathered over the whole model and reported together with their count.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import FormatError
from ..layerspec import CONV_CLASSES, DEPTHWISE_CLASSES, SEPARABLE_CLASSES, TRANSPOSE_CLASSES, data_format, spatial_rank
from ..model import Layer, Model
from ..shapes import infer_shapes

__all__ = ["check_weights", "expected_shapes"]

Dim = int | None
_SHOWN = 5


def _dim(value: Any) -> Dim:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _positive(layer: Layer, key: str, default: Any = None) -> int:
    value = layer.config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _Problem(f"config '{key}' is {value!r}, not a positive integer")
    return value


def _sizes(layer: Layer, key: str, n: int) -> tuple[int, ...]:
    value = layer.config.get(key)
    items = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(items) != n or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise _Problem(f"config '{key}' is {value!r}, not {n} positive integers")
    return tuple(items)


class _Problem(Exception):
    """One disagreement, worded for the user; collected, never raised out of this module."""


def _channels(layer: Layer, shape: tuple[Dim, ...] | None, rank: int) -> Dim:
    if shape is None or len(shape) != rank + 2:
        return None
    return _dim(shape[1] if data_format(layer.config) == "channels_first" else shape[-1])


def _mul(a: Dim, b: Dim) -> Dim:
    return None if a is None or b is None else a * b


def expected_shapes(layer: Layer, input_shape: tuple[Dim, ...] | None) -> dict[str, tuple[Dim, ...]]:
    """The weight shapes a layer's config implies (``None`` for a dimension not known here).

    Empty for classes this module does not check. Raises ``_Problem`` for a config value that
    cannot describe any weights (``filters: -3``).
    """
    cls = layer.class_name
    if cls == "Dense":
        units = _positive(layer, "units")
        inp = _dim(input_shape[-1]) if input_shape else None
        return {"kernel": (inp, units), "bias": (units,)}
    n = spatial_rank(cls)
    if n is None or cls not in CONV_CLASSES | TRANSPOSE_CLASSES | DEPTHWISE_CLASSES | SEPARABLE_CLASSES:
        return {}
    ks = _sizes(layer, "kernel_size", n)
    cin = _channels(layer, input_shape, n)
    if cls in DEPTHWISE_CLASSES:
        dm = _positive(layer, "depth_multiplier", 1)
        return {"depthwise_kernel": (*ks, cin, dm), "bias": (_mul(cin, dm),)}
    filters = _positive(layer, "filters")
    if cls in SEPARABLE_CLASSES:
        dm = _positive(layer, "depth_multiplier", 1)
        return {"depthwise_kernel": (*ks, cin, dm), "pointwise_kernel": (*([1] * n), _mul(cin, dm), filters),
                "bias": (filters,)}
    if cls in TRANSPOSE_CLASSES:
        return {"kernel": (*ks, filters, cin), "bias": (filters,)}
    groups = _positive(layer, "groups", 1)
    per_group = None if cin is None or cin % groups else cin // groups
    return {"kernel": (*ks, per_group, filters), "bias": (filters,)}


def _fits(actual: tuple[int, ...], expected: tuple[Dim, ...]) -> bool:
    return len(actual) == len(expected) and all(e is None or a == e for a, e in zip(actual, expected))


def _show(shape: tuple[Dim, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _bn_problems(layer: Layer, input_shape: tuple[Dim, ...] | None) -> list[str]:
    params = ("gamma", "beta", "moving_mean", "moving_variance")
    sizes = {k: int(v.size) for k, v in layer.weights.items() if k in params}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in sizes.items())
        return [f"BatchNormalization parameters differ in size ({listed})"]
    if not sizes or input_shape is None:
        return []
    axis = layer.config.get("axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    rank = len(input_shape)
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        return [f"config 'axis' is {axis!r}, not an axis"]
    if layer.config.get("virtual_batch_size"):  # tf.keras saves the axes of its internal rank+1 view
        axes = [a - 1 if a > 0 else a for a in axes]
    if any(not -rank <= a < rank for a in axes):
        return [f"config 'axis' is {axis!r}, outside its rank-{rank} input {_show(input_shape)}"]
    dims = [_dim(input_shape[a]) for a in axes]
    if any(d is None for d in dims):
        return []
    want = math.prod(dims)
    got = next(iter(sizes.values()))
    if got != want:
        return [f"BatchNormalization has {got} parameters per array but its input {_show(input_shape)} has {want} "
                f"features on axis {axis}"]
    return []


def _layer_problems(layer: Layer, input_shape: tuple[Dim, ...] | None, *, has_config: bool) -> list[str]:
    out = []
    if not has_config:  # weights-only file: classes are guessed, only BN sizes can be checked
        return _bn_problems(layer, None) if layer.class_name == "BatchNormalization" else []
    if layer.class_name == "BatchNormalization":
        out += _bn_problems(layer, input_shape)
        checked = set(layer.weights)
    else:
        try:
            expected = expected_shapes(layer, input_shape)
        except _Problem as exc:
            return [str(exc)]
        checked = set(expected) & set(layer.weights)
        for key in sorted(checked):
            actual = tuple(layer.weights[key].shape)
            if not _fits(actual, expected[key]):
                out.append(f"weight '{key}' has shape {_show(actual)}, the config implies {_show(expected[key])}")
    for key in sorted(checked):
        if layer.weights[key].dtype.kind != "f":
            out.append(f"weight '{key}' has dtype {layer.weights[key].dtype}, not floating point")
    return out


def _opaque_lambdas(model: Model) -> Model:
    """The model with every Lambda that declares no output shape made opaque to shape inference.

    :func:`~bnconvert.shapes.infer_shapes` assumes such a Lambda keeps its input's shape; real
    files resize images in Lambdas, so that guess must not be held against their weights.
    """
    def opaque(layer: Layer) -> bool:
        return layer.class_name == "Lambda" and not isinstance(layer.config.get("output_shape"), (list, tuple))

    if not any(opaque(layer) for layer in model.layers):
        return model
    layers = [layer.copy(class_name="Lambda (opaque)") if opaque(layer) else layer for layer in model.layers]
    return model.with_layers(layers)


def _shapes(model: Model, inputs: list[Any] | None) -> dict[Any, Any]:
    if not model.has_graph:
        return {}
    # a shape the config does not determine is None there, and never held against the file; the
    # values shapes are computed from were checked by .fields: whatever this raises is a bug
    return infer_shapes(_opaque_lambdas(model), inputs)


def _clean(shape: Any) -> tuple[Dim, ...] | None:
    if not isinstance(shape, tuple):
        return None
    return tuple(_dim(d) for d in shape)


def _empty(shape: Any) -> bool:
    dims = shape[1:] if isinstance(shape, tuple) else ()
    return any(isinstance(d, (int, float)) and not d >= 1 for d in dims)


def _collect(model: Model, inputs: list[Any] | None, prefix: str, problems: list[str]) -> None:
    shapes = _shapes(model, inputs)
    for ref, shape in shapes.items():
        if _empty(shape):
            layer = model[ref.layer]
            call = layer.calls[ref.node] if ref.node < len(layer.calls) else []
            if any(_empty(shapes.get(r)) for r in call):
                continue  # follows from the layer that made its input empty, which is named
            shown = "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
            problems.append(f"layer '{prefix}{layer.name}' ({layer.source_class}): its output shape {shown} has an "
                            "empty or negative dimension (a kernel, pool or crop larger than its input?)")
    for layer in model.layers:
        first = layer.calls[0] if layer.calls else []
        in_shapes = [shapes.get(ref) for ref in first]
        if layer.model is not None:
            known = in_shapes and all(isinstance(s, tuple) for s in in_shapes)
            _collect(layer.model, in_shapes if known else None, f"{prefix}{layer.name}/", problems)
            continue
        if not layer.weights:
            continue
        in_shape = _clean(in_shapes[0]) if len(in_shapes) == 1 else None
        for text in _layer_problems(layer, in_shape, has_config=model.has_graph):
            problems.append(f"layer '{prefix}{layer.name}' ({layer.source_class}): {text}")


def check_weights(model: Model) -> None:
    """FormatError listing every layer whose weights disagree with the config (with a count)."""
    problems: list[str] = []
    _collect(model, None, "", problems)
    if not problems:
        return
    shown = "; ".join(problems[:_SHOWN])
    more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    count = f"{len(problems)} problem" + ("s" if len(problems) > 1 else "")
    raise FormatError(f"weights disagree with the model config ({count}): {shown}{more}")

