"""Do the weights a file holds fit the architecture it declares?

Run by :func:`bnconvert.readers.load` on every model before it is returned, so no later stage
sees a kernel that disagrees with its layer. Checked per layer against the shapes its catalog
record's ``weights`` implies, with input channels from static shape inference where they are
known (an unknown dimension is never held against a file), for example:

* Dense ``kernel (in, units)``, ``bias (units,)``;
* ConvND ``kernel (*kernel_size, in / groups, filters)``, ConvNDTranspose ``(*kernel_size, filters, in)``;
* DepthwiseConvND ``depthwise_kernel (*kernel_size, in, depth_multiplier)``;
* SeparableConvND ``depthwise_kernel`` as above and ``pointwise_kernel (1.., in * dm, filters)``;
* BatchNormalization: gamma, beta, mean and variance all of one size, equal to the normalised
  axes of its input;
* ConvLSTM, Embedding, PReLU, LayerNormalization, LayerScale as their records say;
* weights of these classes are floating point.

Problems are gathered over the whole model and reported together with their count.
"""

from __future__ import annotations

import math
from typing import Any

from ..catalog import catalog
from ..catalog.facts import ConfigProblem
from ..errors import FormatError
from ..model import Layer, Model
from ..shapes import infer_shapes

__all__ = ["check_weights", "expected_shapes"]

Dim = int | None
_SHOWN = 5


def _dim(value: Any) -> Dim:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def expected_shapes(layer: Layer, input_shape: tuple[Dim, ...] | None) -> dict[str, tuple[Dim, ...]]:
    """The weight shapes a layer's config implies (``None`` for a dimension not known here), from
    its catalog record's ``weights``; empty for classes whose shapes are not checked.

    Raises :class:`~bnconvert.catalog.facts.ConfigProblem` for a config value that cannot
    describe any weights (``filters: -3``).
    """
    record = catalog().get(layer.class_name)
    if record is None or record.weights is None:
        return {}
    specs = record.weights(layer.config, None if input_shape is None else [input_shape])
    return {w.name: w.shape for w in specs if w.shape is not None}


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
    known = [d for d in dims if d is not None]
    if len(known) < len(dims):
        return []
    want = math.prod(known)
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
        except ConfigProblem as exc:
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

