"""Replacements applied to a Model as read: configs checked, shapes followed, weights handed over,
the graph rewired (and the file's config rewritten alike, :mod:`.config`)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from ..catalog import catalog
from ..catalog.facts import ConfigProblem, Shape
from ..errors import FormatError
from ..model import GIVEN_MASK, MODEL_CLASSES, Layer, Model, TensorRef
from .config import fill_shapes, rewrite_entry
from .names import chain_names
from .spec import Replacement, ReplacementError, ReplacementsLike, as_replacements

#: classes no replacement may be: they run code, hold a model, or are the model's inputs
_NOT_REPLACEMENTS = frozenset({"Lambda", "InputLayer", *MODEL_CLASSES})


def apply_replacements(model: Model, replacements: ReplacementsLike) -> Model:
    """A new model with every targeted layer replaced (see the module docstring); ``model`` itself
    is not changed. No replacements: ``model`` as it is."""
    reps = as_replacements(replacements)
    if not reps:
        return model
    if not model.has_graph:
        raise ReplacementError("a weights-only file has no layers to replace (pass its architecture with --config)")
    targets = {r.target: r for r in reps}
    plan = _plan(model, targets)
    unused = [r for r in reps if r.target not in {t for t, _ in plan.values()}]
    if unused:
        names = ", ".join(f"'{r.target}'" for r in unused)
        raise ReplacementError(f"{names} names no layer or class of the model ({unused[0].origin})")
    source = model.source
    raw = copy.deepcopy(source.config) if source is not None and source.config is not None else None
    declared: dict[str, list[Shape]] = {}
    if isinstance(raw, dict):
        rewrite_entry(raw, "", plan, declared)
    done: list[str] = []
    new = _apply(model, "", plan, None, declared, done)
    fill_shapes(raw, new)
    from ..readers.consistency import check_weights

    try:
        check_weights(new)
    except FormatError as exc:
        raise ReplacementError(f"with the replacements, {exc}") from None
    if source is not None:
        new.source = replace(source, config=raw, replaced=list(source.replaced) + done)
    return new


def _plan(model: Model, targets: dict[str, Replacement]) -> dict[str, tuple[str, Replacement]]:
    """layer path -> (the target that matched, its replacement): by path or name first, then by class."""
    plan: dict[str, tuple[str, Replacement]] = {}
    replaced_models: list[str] = []
    for path, layer, _ in model.walk():
        if any(path.startswith(p + "/") for p in replaced_models):
            continue
        key = next((k for k in (path, layer.name) if k in targets), None)
        if key is None:
            key = next((k for k in (layer.source_class, layer.class_name) if k in targets), None)
        if key is None:
            continue
        if layer.class_name == "InputLayer":
            raise ReplacementError(f"'{path}' is an InputLayer: an input cannot be replaced")
        if layer.model is not None:
            raise ReplacementError(f"'{path}' ({layer.source_class}) is a nested model: replace its layers by name "
                                   f"('{path}/<layer>')")
        plan[path] = (key, targets[key])
    return plan


def _record(spec: dict[str, Any], where: str) -> Any:
    cls = spec["class_name"]
    record = catalog().get(cls)
    if cls in _NOT_REPLACEMENTS or record is None or record.call is None:
        why = ("runs code or holds a model" if cls in _NOT_REPLACEMENTS else
               "is not a class bnconvert runs" if record is None or record.call is None else "")
        raise ReplacementError(f"{where}: {cls!r} {why}; a replacement is a Keras layer bnconvert knows "
                               "(bnconvert.catalog.classes(), or one registered with bnconvert.register_layer)")
    return record


def _fits(shape: Shape | None, declared: Sequence[Any]) -> bool:
    if shape is None or len(shape) != len(declared):
        return False
    return all(a is None or b is None or a == b for a, b in zip(shape, declared))


def _show(shape: Sequence[Any] | None) -> str:
    return "unknown" if shape is None else "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _chain(layer: Layer, path: str, r: Replacement, in_shapes: list[Shape | None], taken: set[str],
           declared: list[Shape]) -> list[Layer]:
    """The layers replacing ``layer``: configs checked, shapes followed, weights handed over."""
    from ..readers.fields import check_fields

    where = f"replacement of {_label(path, layer)}"
    names = chain_names(layer.name, r, taken, where)
    new: list[Layer] = []
    shapes = list(in_shapes)
    specs = []
    for name, spec in zip(names, r.layers):
        _record(spec, where)
        config = {**copy.deepcopy(spec["config"]), "name": name}
        new.append(Layer(name=name, class_name=spec["class_name"], config=config))
    try:
        check_fields(Model("replacement", new, [], [], kind="Functional"))
    except FormatError as exc:
        raise ReplacementError(f"{where}: {exc}") from None
    known = all(s is not None for s in shapes)
    for item in new:
        record = catalog()[item.class_name]
        try:
            given = cast("list[Shape]", shapes) if known else None  # known: no None among them
            weights = record.weights(item.config, given) if record.weights else None
        except ConfigProblem as exc:
            raise ReplacementError(f"{where}: {item.class_name}: {exc}") from None
        if weights is None:
            raise ReplacementError(f"{where}: bnconvert does not know the weights of {item.class_name!r}")
        specs.append(weights)
        if known:
            try:
                shapes = list(record.shape(item.config, cast("list[Shape]", shapes))) if record.shape else [None]
            except (ConfigProblem, KeyError, TypeError, ValueError, IndexError) as exc:
                raise ReplacementError(f"{where}: {item.class_name} cannot take input {_show(shapes[0])} "
                                       f"({exc})") from None
            if len(shapes) != 1:
                raise ReplacementError(f"{where}: {item.class_name} gives {len(shapes)} outputs; a replacement "
                                       "layer gives one")
            known = shapes[0] is not None
    out = shapes[0] if known else None
    for shape in declared:
        if out is None:
            raise ReplacementError(f"{where}: the file declares its output {_show(shape)}, and the replacement's "
                                   "output shape cannot be computed")
        if not _fits(out, shape):
            raise ReplacementError(f"{where}: the replacement gives {_show(out)}, the file declares "
                                   f"{_show(shape)}")
    _hand_over(layer, new, specs, where)
    return new


def _hand_over(layer: Layer, new: list[Layer], specs: list[list[Any]], where: str) -> None:
    """The replaced layer's weights, in order, to the weights the replacement declares."""
    arrays = list(layer.weights.items())
    wanted = [(item, spec) for item, weights in zip(new, specs) for spec in weights]
    if len(arrays) != len(wanted):
        have = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays) or "none"
        want = ", ".join(f"{s.name}" + (f" {_show(s.shape)}" if s.shape is not None else "") for _, s in wanted) or "none"
        raise ReplacementError(f"{where}: the replacement takes {len(wanted)} weights ({want}), the layer has "
                               f"{len(arrays)} ({have})")
    for (key, array), (item, spec) in zip(arrays, wanted):
        if spec.shape is not None and not _fits(tuple(array.shape), spec.shape):
            raise ReplacementError(f"{where}: weight '{key}' {_show(tuple(array.shape))} does not fit "
                                   f"{item.class_name} '{spec.name}' {_show(spec.shape)}")
        item.weights[spec.name] = array


def _label(path: str, layer: Layer) -> str:
    return f"'{path}' ({layer.source_class})"


def _apply(model: Model, prefix: str, plan: dict[str, tuple[str, Replacement]],
           input_shapes: list[Shape] | None, declared: dict[str, list[Shape]], done: list[str]) -> Model:
    from ..shapes import infer_shapes

    shapes = infer_shapes(model, input_shapes)
    taken = {layer.name for layer in model.layers}
    layers: list[Layer] = []
    alias: dict[TensorRef, TensorRef] = {}
    internal: set[str] = set()  # a chain's later layers: their input is the chain's previous layer, already wired
    for layer in model.layers:
        path = prefix + layer.name
        if layer.model is not None and any(p.startswith(path + "/") for p in plan):
            ins = [shapes.get(ref) for ref in (layer.calls[0] if layer.calls else [])]
            given = [s for s in ins if s]
            inner = _apply(layer.model, path + "/", plan, given if ins and len(given) == len(ins) else None, declared, done)
            layers.append(layer.copy(model=inner))
            continue
        if path not in plan:
            layers.append(layer)
            continue
        _, r = plan[path]
        in_shapes = [shapes.get(ref) for ref in (layer.calls[0] if layer.calls else [])]
        wanted = list(declared.get(path, []))
        record = catalog().get(layer.class_name)
        if layer.class_name != "Lambda" and record is not None and record.shape is not None:
            known = shapes.get(TensorRef(layer.name, 0, 0))  # a class bnconvert knows: its shape is the file's
            if known is not None:
                wanted.append(known)
        output_shape = layer.config.get("output_shape") if layer.class_name == "Lambda" else None
        if isinstance(output_shape, (list, tuple)) and all(d is None or isinstance(d, int) for d in output_shape):
            wanted.append((None, *output_shape))
        chain = _chain(layer, path, r, in_shapes, taken, wanted)
        for k, call in enumerate(layer.calls):
            chain[0].calls.append(list(call))
            chain[0].call_kwargs.append({})
            for prev, item in itertools.pairwise(chain):
                item.calls.append([TensorRef(prev.name, k, 0)])
                item.call_kwargs.append({})
            alias[TensorRef(layer.name, k, 0)] = TensorRef(chain[-1].name, k, 0)
        internal.update(item.name for item in chain[1:])
        layers.extend(chain)
        done.append(f"{_label(path, layer)} by {r.describe()} ({r.origin})")
    if not alias:
        return model.with_layers(layers)
    gone = {ref.layer for ref in alias}

    def rewire(ref: TensorRef) -> TensorRef:
        if ref.layer in gone and ref not in alias:
            raise ReplacementError(f"'{prefix}{ref.layer}' is read at output {ref.index}; a replacement gives one output")
        return alias.get(ref, ref)

    rewired = []
    for layer in layers:
        if layer.name in internal:
            rewired.append(layer)
            continue
        if any(ref.layer in gone for call in layer.calls for ref in call) or any(
                ref.layer in gone for kw in layer.call_kwargs for ref in kw.get(GIVEN_MASK) or []):
            layer = layer.copy()
            layer.calls = [[rewire(ref) for ref in call] for call in layer.calls]
            layer.call_kwargs = [{**kw, GIVEN_MASK: [rewire(r) for r in kw[GIVEN_MASK]]} if kw.get(GIVEN_MASK) else kw
                                 for kw in layer.call_kwargs]
        rewired.append(layer)
    return model.with_layers(rewired, outputs=[rewire(ref) for ref in model.outputs])
