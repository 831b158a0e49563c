"""Replace Lambda and custom layers by Keras layers the user names: replace, never run.

bnconvert never runs a Lambda's bytecode nor imports a custom class (:mod:`bnconvert.readers.code`),
so a model holding one cannot be checked, folded through or exported as it is. The user, who knows
what the code does, says it with Keras layer configs::

    bnconvert export carnd.h5 -o carnd.onnx \\
        --replace 'lambda={"class_name": "Rescaling", "config": {"scale": 0.00392156862745098, "offset": -0.5}}'

A :class:`Replacement` maps a *target* to one Keras layer config or a short chain of them (a JSON
list: the layers run in sequence). The target is a layer name (a nested layer by its path,
``outer/inner``) or a class name (every layer of that class); a name wins over a class. What is
applied to the model as read (:func:`apply_replacements`), before audit, fold, export or check:

- each replacement config passes the config checks of its class (catalog ``fields``: it is
  untrusted input like a file's config), and its class must be one bnconvert runs;
- the replaced layer's weights go, in order, to the weights the replacement's classes declare
  (their catalog ``weights`` rule), when the counts and the shapes agree; otherwise one line says
  why (weights are never dropped or invented);
- the chain's output shape must be the one the file declares for the layer (a Lambda's
  ``output_shape``, the shape a Keras 3 config records for the tensors its consumers read), and
  the weights of every later layer must still fit (:func:`~bnconvert.readers.consistency.check_weights`);
- a replacement that names no layer of the model is an error (typo protection);
- one replacement layer keeps the replaced layer's name, and so does a chain's first layer with
  weights; a chain's other layers get fresh unique names (``<name>_<class>``), wired in sequence.

The model's ``source.config`` (the file's own config, what the writers edit) is rewritten the same
way, so a folded file is the *replaced* model and loads in Keras without the Lambda or the custom
class; ``source.replaced`` lists what was replaced, and every check then runs the replaced model in
bnconvert's float64 reference and says so (Keras would run the file's own code).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .catalog import catalog
from .catalog.facts import ConfigProblem, Shape
from .errors import BnconvertError, FormatError
from .model import GIVEN_MASK, MODEL_CLASSES, Layer, Model, TensorRef

__all__ = ["MAX_CHAIN", "Replacement", "ReplacementError", "ReplacementsLike", "apply_replacements", "as_replacements",
           "chain_names", "declared_shapes", "opaque_layers", "parse_replace_option", "read_replacements", "refuse_in_keras", "replace_line", "src_replaced"]

#: the longest chain one replacement may hold (a replacement is a short description, not a model)
MAX_CHAIN = 8
#: the largest replacements file read (JSON or YAML)
MAX_FILE_BYTES = 1 << 20
_SPEC_KEYS = frozenset({"class_name", "config", "module", "registered_name"})
#: config keys Keras 3's ``from_config`` reads without a default (Rescaling deserializes its
#: ``scale`` and ``offset`` by key): written into a replacement's entry when the user left them out
_KERAS3_REQUIRED = {"Rescaling": {"scale": 1.0, "offset": 0.0}}
#: classes no replacement may be: they run code, hold a model, or are the model's inputs
_NOT_REPLACEMENTS = frozenset({"Lambda", "InputLayer", *MODEL_CLASSES})


class ReplacementError(BnconvertError):
    """A replacement the user gave cannot be read or applied (exit 2, one line)."""


@dataclass(frozen=True)
class Replacement:
    """``target`` (a layer name or path, or a class name) -> ``layers``, Keras layer configs
    (``{"class_name": ..., "config": {...}}``) run in sequence; ``origin`` says where the user gave
    it (``--replace``, a file), for messages."""

    target: str
    layers: tuple[dict[str, Any], ...]
    origin: str = "--replace"

    @classmethod
    def of(cls, target: str, spec: Any, origin: str = "--replace") -> Replacement:
        """A checked replacement from a target and its spec: a layer config, a list of them, or
        their JSON text."""
        if not isinstance(target, str) or not target.strip():
            raise ReplacementError(f"{origin}: a replacement needs a layer name or class before '='")
        target = target.strip()
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as exc:
                raise ReplacementError(f"{origin}: the replacement of '{target}' is not JSON ({exc.msg} at "
                                       f"character {exc.pos})") from None
        specs = spec if isinstance(spec, list) else [spec]
        if not specs or len(specs) > MAX_CHAIN:
            raise ReplacementError(f"{origin}: the replacement of '{target}' holds {len(specs)} layers; give 1 to "
                                   f"{MAX_CHAIN}")
        layers = []
        for i, item in enumerate(specs):
            where = f"{origin}: the replacement of '{target}'" + (f", layer {i + 1}," if len(specs) > 1 else "")
            if not isinstance(item, dict) or not isinstance(item.get("class_name"), str):
                raise ReplacementError(f"{where} is not a Keras layer config "
                                       '({"class_name": "...", "config": {...}})')
            extra = sorted(set(item) - _SPEC_KEYS)
            if extra:
                raise ReplacementError(f"{where} has unknown keys {', '.join(map(repr, extra))} (a layer config has "
                                       "'class_name' and 'config')")
            config = item.get("config", {})
            if not isinstance(config, dict):
                raise ReplacementError(f"{where}: 'config' is not an object")
            layers.append({"class_name": item["class_name"], "config": copy.deepcopy(config)})
        return cls(target, tuple(layers), origin)

    def describe(self) -> str:
        """``Rescaling(scale=0.0039, offset=-0.5) -> Activation(activation='relu')``."""
        return " -> ".join(_short(spec) for spec in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "layers": [copy.deepcopy(s) for s in self.layers], "origin": self.origin}


#: what the API takes: a mapping target -> spec, Replacement objects, ``--replace`` texts, or a
#: path to a JSON/YAML file (a ``str`` naming a file must start with ``@``; a Path need not)
ReplacementsLike = Mapping[str, Any] | Iterable[Replacement | str] | os.PathLike | None


def _short(spec: dict[str, Any]) -> str:
    config = spec.get("config") or {}
    shown = ", ".join(f"{k}={_value(v)}" for k, v in config.items() if k != "name")
    return f"{spec['class_name']}({shown})"


def _value(v: Any) -> str:
    text = f"{v:.6g}" if isinstance(v, float) else repr(v)
    return text if len(text) <= 30 else text[:27] + "..."


# ------------------------------------------------------------------------------------ reading
def parse_replace_option(text: str) -> list[Replacement]:
    """One ``--replace`` value: ``NAME_OR_CLASS=SPEC`` (SPEC: a layer config JSON, or a JSON list
    of them) or ``@FILE`` (a JSON or YAML mapping of such replacements)."""
    if text.startswith("@"):
        return read_replacements(text[1:])
    target, sep, spec = text.partition("=")
    if not sep:
        raise ReplacementError(f"--replace {text!r}: expected NAME_OR_CLASS=SPEC or @FILE")
    return [Replacement.of(target, spec.strip())]


def read_replacements(path: str | os.PathLike[str]) -> list[Replacement]:
    """The replacements of a JSON or YAML file: a mapping ``NAME_OR_CLASS: SPEC`` (SPEC a layer
    config or a list of them)."""
    p = Path(path)
    origin = f"replacements file {p}"
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise ReplacementError(f"{origin}: not a regular file")
        if size > MAX_FILE_BYTES:
            raise ReplacementError(f"{origin}: {size:,} bytes is too large for a replacements file")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReplacementError(f"{origin}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ReplacementError(f"{origin}: not UTF-8 text") from None
    data = _parse_mapping(text, p, origin)
    if not isinstance(data, dict) or not data:
        raise ReplacementError(f"{origin}: expected a mapping NAME_OR_CLASS -> layer config (or a list of them)")
    return [Replacement.of(str(target), spec, origin) for target, spec in data.items()]


def _parse_mapping(text: str, path: Path, origin: str) -> Any:
    if path.suffix.lower() not in (".yaml", ".yml"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if path.suffix.lower() == ".json":
                raise ReplacementError(f"{origin}: not JSON ({exc.msg} at line {exc.lineno})") from None
    import yaml  # a dependency; imported here, as only replacement files need it

    try:
        return yaml.safe_load(text)  # safe_load: plain data only, never Python objects
    except yaml.YAMLError as exc:
        raise ReplacementError(f"{origin}: not YAML ({str(exc).splitlines()[0]})") from None


def as_replacements(value: ReplacementsLike) -> list[Replacement]:
    """The replacements given to an API function, in any of the forms of :data:`ReplacementsLike`;
    two replacements of one target are an error."""
    if value is None:
        return []
    if isinstance(value, os.PathLike):
        out = read_replacements(value)
    elif isinstance(value, str):
        out = parse_replace_option(value)
    elif isinstance(value, Mapping):
        out = [Replacement.of(str(target), spec, "replacements") for target, spec in value.items()]
    else:
        out = []
        for item in value:
            if isinstance(item, Replacement):
                out.append(item)
            elif isinstance(item, str):
                out.extend(parse_replace_option(item))
            else:
                raise TypeError(f"a replacement is a Replacement or a 'NAME=SPEC' text, not {type(item).__name__}")
    seen: dict[str, Replacement] = {}
    for r in out:
        if r.target in seen:
            raise ReplacementError(f"'{r.target}' is replaced twice ({seen[r.target].origin} and {r.origin})")
        seen[r.target] = r
    return out


# ----------------------------------------------------------------------------------- applying
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
        _rewrite_entry(raw, "", plan, declared)
    done: list[str] = []
    new = _apply(model, "", plan, None, declared, done)
    _fill_shapes(raw, new)
    from .readers.consistency import check_weights

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


def _unique(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _has_weights(spec: dict[str, Any]) -> bool:
    record = catalog().get(spec["class_name"])
    try:
        return bool(record is not None and record.weights is not None and record.weights(spec["config"], None))
    except (ConfigProblem, KeyError, TypeError, ValueError):
        return False


def chain_names(name: str, r: Replacement, taken: set[str], where: str) -> list[str]:
    """The names of the layers replacing layer ``name`` (``taken``: the names of its model, updated).
    The layer that takes the replaced layer's weights keeps ``name`` (one replacement layer, or a
    chain's first layer with weights: a legacy ``.h5`` keeps weights under the layer names it
    lists); the others are named by their configs, else ``<name>_<class>`` made unique. The model
    and the raw config are named by this one rule."""
    holder = 0 if len(r.layers) == 1 else next((j for j, spec in enumerate(r.layers) if _has_weights(spec)), None)
    names = []
    for j, spec in enumerate(r.layers):
        given = spec["config"].get("name")
        if j == holder:
            names.append(name)
        elif isinstance(given, str) and given:
            if given in taken:
                raise ReplacementError(f"{where}: the name '{given}' is taken by another layer")
            taken.add(given)
            names.append(given)
        else:
            names.append(_unique(f"{name}_{_snake(spec['class_name'])}", taken))
    taken.update(names)
    return names


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _chain(layer: Layer, path: str, r: Replacement, in_shapes: list[Shape | None], taken: set[str],
           declared: list[Shape]) -> list[Layer]:
    """The layers replacing ``layer``: configs checked, shapes followed, weights handed over."""
    from .readers.fields import check_fields

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
            weights = record.weights(item.config, shapes if known else None) if record.weights else None
        except ConfigProblem as exc:
            raise ReplacementError(f"{where}: {item.class_name}: {exc}") from None
        if weights is None:
            raise ReplacementError(f"{where}: bnconvert does not know the weights of {item.class_name!r}")
        specs.append(weights)
        if known:
            try:
                shapes = list(record.shape(item.config, shapes)) if record.shape else [None]
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
    from .shapes import infer_shapes

    shapes = infer_shapes(model, input_shapes)
    taken = {layer.name for layer in model.layers}
    layers: list[Layer] = []
    alias: dict[TensorRef, TensorRef] = {}
    internal: set[str] = set()  # a chain's later layers: their input is the chain's previous layer, already wired
    for layer in model.layers:
        path = prefix + layer.name
        if layer.model is not None and any(p.startswith(path + "/") for p in plan):
            ins = [shapes.get(ref) for ref in (layer.calls[0] if layer.calls else [])]
            inner = _apply(layer.model, path + "/", plan, ins if ins and all(ins) else None, declared, done)
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


# ------------------------------------------------------------------- the file's config, rewritten
def _rewrite_entry(model_entry: dict[str, Any], prefix: str, plan: dict[str, tuple[str, Replacement]],
                   declared: dict[str, list[Shape]]) -> None:
    """Rewrite one model entry of the raw config in place: each replaced layer's entry becomes its
    chain's entries (names as :func:`_chain` gives them), and every reference to it a reference to
    the chain's last layer; the shapes a Keras 3 config records for those references are
    collected in ``declared`` (path -> shapes) for :func:`_chain` to hold the replacement to."""
    from .writers.config_edit import entry_name, layer_entries

    try:
        entries = layer_entries(model_entry)
    except BnconvertError:
        return  # no layer list (a Keras 1 config of another shape): the writers refuse it themselves
    names = {entry_name(e) for e in entries}
    for entry in entries:
        name = entry_name(entry)
        if entry.get("class_name") in MODEL_CLASSES and any(p.startswith(f"{prefix}{name}/") for p in plan):
            _rewrite_entry(entry, f"{prefix}{name}/", plan, declared)
    sequential = model_entry.get("class_name") == "Sequential"
    alias: dict[str, str] = {}
    internal: set[str] = set()  # a chain's later layers: wired to the chain's previous layer already
    out: list[dict[str, Any]] = []
    taken = set(names)
    for entry in entries:
        name = entry_name(entry)
        if prefix + name not in plan:
            out.append(entry)
            continue
        _, r = plan[prefix + name]
        chain = chain_names(name, r, taken, f"replacement of '{prefix}{name}'")
        out.extend(_entries(entry, r, chain, sequential))
        alias[name] = chain[-1]
        internal.update(chain[1:])
    entries[:] = out
    if sequential or not alias:
        return
    from .writers.config_edit import _node_refs, _set, _triple

    for entry in entries:
        if entry_name(entry) in internal:
            continue
        for node in entry.get("inbound_nodes") or []:
            for ref in _node_refs(node):
                layer, k, i = _triple(ref)
                if layer in alias:
                    if isinstance(ref, dict) and isinstance((ref.get("config") or {}).get("shape"), list):
                        declared.setdefault(prefix + layer, []).append(tuple(ref["config"]["shape"]))
                    _set(ref, (alias[layer], k, i))
    body = model_entry.get("config")
    for key in ("output_layers", "input_layers"):
        value = body.get(key) if isinstance(body, dict) else None
        for ref in _layer_refs(value):
            if ref[0] in alias:
                ref[0] = alias[ref[0]]


def _layer_refs(value: Any) -> list[list[Any]]:
    """The ``[name, node, index]`` lists of ``input_layers``/``output_layers`` (list or dict form)."""
    if isinstance(value, dict):
        return [ref for v in value.values() for ref in _layer_refs(v)]
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value]
    if isinstance(value, list):
        return [ref for v in value for ref in _layer_refs(v)]
    return []


def _entries(entry: dict[str, Any], r: Replacement, names: list[str], sequential: bool) -> list[dict[str, Any]]:
    """The config entries of a replacement chain, shaped like ``entry`` (the replaced one)."""
    old = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    keras3 = "module" in entry
    nodes = entry.get("inbound_nodes") or []
    out = []
    for j, (name, spec) in enumerate(zip(names, r.layers)):
        config = {**copy.deepcopy(spec["config"]), "name": name}
        if j == 0:  # the first layer of a Sequential without InputLayer declares the model's input
            config.update({k: old[k] for k in ("batch_input_shape", "batch_shape", "input_shape", "input_dim")
                           if old.get(k) is not None and k not in config})
        new: dict[str, Any] = {"class_name": spec["class_name"], "config": config}
        for key, value in _KERAS3_REQUIRED.get(spec["class_name"], {}).items():
            config.setdefault(key, value)
        if keras3:
            new = {"module": "keras.layers", **new, "registered_name": None}
            if j == 0 and "build_config" in entry:
                new["build_config"] = copy.deepcopy(entry["build_config"])
        if not sequential:
            new["name"] = name
            if j == 0:
                new["inbound_nodes"] = [_without_kwargs(node) for node in nodes]
            else:
                new["inbound_nodes"] = [_node_to(names[j - 1], k, node) for k, node in enumerate(nodes)]
        out.append(new)
    return out


def _without_kwargs(node: Any) -> Any:
    """A call node with its tensors and without the Lambda's or custom layer's own keyword arguments
    (``mask``, ``training`` ...: the replacement's ``call`` may not take them)."""
    node = copy.deepcopy(node)
    if isinstance(node, dict):
        return {"args": node.get("args", []), "kwargs": {}}
    if isinstance(node, list):
        for item in node:
            if isinstance(item, list) and len(item) > 3 and isinstance(item[3], dict):
                item[3] = {}
    return node


def _node_to(previous: str, k: int, like: Any) -> Any:
    """Call ``k`` of a chain's next layer: on output ``k`` of ``previous``, in ``like``'s form
    (Keras 3 records the tensor's shape: :func:`_fill_shapes` writes it once it is known)."""
    if isinstance(like, dict):
        return {"args": [{"class_name": "__keras_tensor__",
                          "config": {"shape": None, "dtype": "float32", "keras_history": [previous, k, 0]}}],
                "kwargs": {}}
    return [[previous, k, 0, {}]]


def _fill_shapes(raw: Any, model: Model) -> None:
    """The shapes of the Keras 3 tensor references a chain's wiring made (Keras 3 refuses an
    undefined one), from static shape inference of the replaced ``model``."""
    from .shapes import infer_shapes
    from .writers.config_edit import _node_refs, _triple, entry_name, layer_entries

    def walk(model_entry: dict[str, Any], m: Model, inputs: list[Shape] | None) -> None:
        try:
            entries = layer_entries(model_entry)
        except BnconvertError:
            return
        shapes = infer_shapes(m, inputs)
        for entry in entries:
            name = entry_name(entry) if isinstance(entry, dict) else ""
            if name not in m:
                continue
            layer = m[name]
            if entry.get("class_name") in MODEL_CLASSES and layer.model is not None:
                ins = [shapes.get(ref) for ref in (layer.calls[0] if layer.calls else [])]
                walk(entry, layer.model, ins if ins and all(ins) else None)
            for node in entry.get("inbound_nodes") or []:
                for ref in _node_refs(node):
                    if isinstance(ref, dict) and (ref.get("config") or {}).get("shape", 0) is None:
                        shape = shapes.get(TensorRef(*_triple(ref)))
                        if shape is not None:
                            ref["config"]["shape"] = list(shape)

    if isinstance(raw, dict):
        walk(raw, model, None)


# -------------------------------------------------------------------------------------- inspect
def replace_line(path: str, layer: Layer) -> str:
    """A ready-to-edit ``--replace`` option for ``layer``: an Identity, for the user to change into
    what the layer really computes (bnconvert cannot know it: it never runs the code)."""
    spec = json.dumps({"class_name": "Identity", "config": {}})
    return f"--replace {shlex.quote(f'{path}={spec}')}"  # quoted for a POSIX shell, whatever the name holds


def src_replaced(model: Model) -> list[str]:
    """What the user replaced in ``model`` (described), empty when nothing."""
    return list(model.source.replaced) if model.source is not None else []


def refuse_in_keras(model: Model) -> str | None:
    """Why Keras is no reference for ``model``: it holds the user's replacements (Keras would run
    the file as written, Lambda and custom classes included); None otherwise."""
    source = model.source
    if source is None or not source.replaced:
        return None
    return ("the reference is the model with the replacements (" + "; ".join(source.replaced) + "), "
            "not the file as written")



# ------------------------------------------------------------------ what inspect says of them
def declared_shapes(raw: Any) -> dict[str, list[Shape]]:
    """layer path -> the shapes a Keras 3 config records for the tensors its consumers read
    (``__keras_tensor__`` references in ``inbound_nodes``); empty for Keras 1/2 configs, which
    record none."""
    from .writers.config_edit import _node_refs, _triple, entry_name, layer_entries

    found: dict[str, list[Shape]] = {}

    def walk(model_entry: dict[str, Any], prefix: str) -> None:
        try:
            entries = layer_entries(model_entry)
        except BnconvertError:
            return
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            if entry.get("class_name") in MODEL_CLASSES:
                walk(entry, f"{prefix}{entry_name(entry)}/")
            for node in entry.get("inbound_nodes") or []:
                for ref in _node_refs(node):
                    if isinstance(ref, dict) and isinstance((ref.get("config") or {}).get("shape"), list):
                        shape = tuple(ref["config"]["shape"])
                        shapes = found.setdefault(prefix + _triple(ref)[0], [])
                        if shape not in shapes:
                            shapes.append(shape)

    if isinstance(raw, dict):
        walk(raw, "")
    return found


def _raw_entries(raw: Any) -> dict[str, dict[str, Any]]:
    """layer path -> its entry in the file's config."""
    from .writers.config_edit import entry_name, layer_entries

    out: dict[str, dict[str, Any]] = {}

    def walk(model_entry: dict[str, Any], prefix: str) -> None:
        try:
            entries = layer_entries(model_entry)
        except BnconvertError:
            return
        for entry in entries:
            if isinstance(entry, dict):
                out[prefix + entry_name(entry)] = entry
                if entry.get("class_name") in MODEL_CLASSES:
                    walk(entry, f"{prefix}{entry_name(entry)}/")

    if isinstance(raw, dict):
        walk(raw, "")
    return out


def _function(config: dict[str, Any]) -> dict[str, Any]:
    """What a Lambda's config says in plain text of its function: never the code itself (a
    marshalled string is not decoded, let alone run)."""
    fn = config.get("function")
    kind = config.get("function_type")
    if isinstance(fn, dict):  # Keras 3: {"class_name": "__lambda__", "config": {"code": ...}} or a named function
        if fn.get("class_name") == "__lambda__":
            return {"function": "<lambda>", "function_type": "lambda", "module": None}
        name = fn.get("config") if isinstance(fn.get("config"), str) else fn.get("registered_name")
        return {"function": name if isinstance(name, str) else None, "function_type": "function",
                "module": fn.get("module") if isinstance(fn.get("module"), str) else None}
    module = config.get("module") if isinstance(config.get("module"), str) else None
    if kind == "function" and isinstance(fn, str):
        return {"function": fn, "function_type": "function", "module": module}
    return {"function": "<lambda>" if kind in ("lambda", None) else None,
            "function_type": kind if isinstance(kind, str) else None, "module": module}


def opaque_layers(model: Model) -> list[dict[str, Any]]:
    """Every Lambda and custom layer of ``model`` (a class outside bnconvert's catalog, or one a
    user registered), with what the file tells of it without running anything: name, class,
    module and registered name, input and declared output shapes, the function's name where it is
    stored as text, the weights, and a ready-to-edit ``--replace`` line (plain, JSON-ready data)."""
    from .custom import registered_layers
    from .shapes import infer_shapes

    records = catalog()
    registered = set(registered_layers())
    raw = model.source.config if model.source is not None else None
    entries, declared = _raw_entries(raw), declared_shapes(raw)
    out: list[dict[str, Any]] = []

    def walk(m: Model, prefix: str, inputs: list[Shape] | None) -> None:
        shapes = infer_shapes(m, inputs) if m.has_graph else {}
        for layer in m.layers:
            path = prefix + layer.name
            ins = [shapes.get(ref) for ref in (layer.calls[0] if layer.calls else [])]
            if layer.model is not None:
                walk(layer.model, path + "/", ins if ins and all(ins) else None)
                continue
            custom = layer.class_name not in records or layer.class_name in registered \
                or layer.config.get("keras1_merge_mode") == "<python function>"  # a Keras 1 merge(mode=lambda)
            if layer.class_name != "Lambda" and not custom:
                continue
            entry = entries.get(path, {})
            item: dict[str, Any] = {
                "name": path, "class": layer.source_class,
                "kind": "Lambda" if layer.class_name == "Lambda" else "custom",
                "registered": layer.class_name in registered,
                "module": entry.get("module") if isinstance(entry.get("module"), str) else None,
                "registered_name": entry.get("registered_name") if isinstance(entry.get("registered_name"), str) else None,
                "input_shapes": [list(s) if s is not None else None for s in ins] or [],
                "output_shape": None,
                "weights": [{"name": k, "shape": list(v.shape)} for k, v in layer.weights.items()],
            }
            built = (entry.get("build_config") or {}).get("input_shape") if isinstance(entry.get("build_config"), dict) else None
            if len(ins) == 1 and ins[0] is None and isinstance(built, list):  # Keras 3 records what the layer was built on
                item["input_shapes"] = [built]
            stated = layer.config.get("output_shape") if layer.class_name == "Lambda" else None
            if isinstance(stated, (list, tuple)) and all(d is None or isinstance(d, int) for d in stated):
                item["output_shape"] = [None, *stated]
            elif declared.get(path):
                item["output_shape"] = list(declared[path][0])
            if layer.class_name == "Lambda":
                item.update(_function(layer.config))
            item["replace"] = replace_line(path, layer)
            out.append(item)

    if model.has_graph:
        walk(model, "", None)
    return out
