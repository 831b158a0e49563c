"""Walk a Model's layer calls in dependency order and hand each one to its handler.

Nested Sequential/Functional models are inlined: their handler calls :func:`run_model` again
with the caller's tensors bound to the inner inputs, so the ONNX graph is flat and inner node
names read ``outer/inner``. Problems that make a layer unexportable are gathered (the class
check up front over every layer, configuration problems as they are met) and reported together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..catalog import catalog
from ..errors import UnsupportedLayerError
from ..model import Layer, Model, Source, TensorRef, given_mask_problem, is_operation
from ..shapes import infer_shapes
from .builder import Builder, Call, Tensor
from .registry import handlers

__all__ = ["Run", "format_problems", "run_model", "unsupported_layers"]

def unsupported_layers(model: Model) -> list[str]:
    """``'name' (Class)`` for every layer (nested ones included) that has no ONNX handler."""
    from .layers.activations import activation_problem

    table = handlers()
    found = []
    for path, layer, _ in model.walk():
        if layer.model is not None:
            continue
        if is_operation(layer) and layer.class_name not in table:
            found.append(f"'{path}' ({layer.class_name}: bnconvert has no ONNX conversion of this operation)")
        elif layer.class_name not in table:
            found.append(f"'{path}' ({layer.source_class})")
        else:
            reason = activation_problem(layer)
            if reason:
                found.append(f"'{path}' ({layer.source_class}: {reason})")
    return found


def format_problems(where: str, problems: list[str]) -> str:
    """One line naming every problem."""
    noun = "layer" if len(problems) == 1 else "layers"
    line = f"{where}: cannot export to ONNX, {len(problems)} unsupported {noun}: {', '.join(problems)}"
    if any("(Lambda" in p for p in problems):
        line += (" (Lambda layers hold Python code, which bnconvert never runs: say what they compute with --replace;"
                 " `bnconvert inspect` prints the line to edit)")
    return line


@dataclass
class Run:
    """State shared by the top-level model and every inlined nested model."""

    builder: Builder
    source: Source | None
    problems: list[str] = field(default_factory=list)
    #: the Keras masks of the outputs of the model :func:`run_model` converted last
    out_masks: list[Tensor | None] = field(default_factory=list)


def _call_name(prefix: str, layer: Layer, k: int) -> str:
    return f"{prefix}{layer.name}" + (f"/call{k}" if k else "")


def run_model(run: Run, model: Model, inputs: list[Tensor], *, prefix: str = "", path: str = "",
              masks: list[Tensor | None] | None = None) -> list[Tensor | None]:
    """Convert every call of ``model`` with ``inputs`` bound to its inputs; returns its outputs
    (``None`` for an output that depends on an unsupported layer). ``masks``: the Keras masks the
    inputs carry; the outputs' masks are left in ``run.out_masks``."""
    table = handlers()
    records = catalog()
    shapes = infer_shapes(model, [t.shape for t in inputs])
    env: dict[TensorRef, Tensor | None] = dict(zip(model.inputs, inputs))
    menv: dict[TensorRef, Tensor] = {r: m for r, m in zip(model.inputs, masks or []) if m is not None}
    for wave in _waves(model, set(env)):
        for i, k in wave:
            layer = model.layers[i]
            refs = _output_refs(layer, k, shapes)
            if any(r not in env for r in layer.calls[k]):
                continue  # an output index its producer does not have: it never exists
            xs = [env[r] for r in layer.calls[k]]
            if any(x is None for x in xs):
                env.update(dict.fromkeys(refs))
                continue
            call = Call(
                layer=layer, name=_call_name(prefix, layer, k), inputs=xs,  # type: ignore[arg-type]
                out_shapes=[shapes.get(r) for r in refs],  # type: ignore[misc]  # an unknown (None) shape is refused below
                source=run.source,
                # an operation layer (x + y, keras.ops.mean, a TFOpLambda) neither reads nor passes masks
                masks=[] if is_operation(layer) else [menv.get(r) for r in layer.calls[k]],
                kwargs=layer.call_kwargs[k] if k < len(layer.call_kwargs) else {},
            )
            try:
                if layer.given_mask(k) and call.mask(0) is None:
                    raise UnsupportedLayerError(given_mask_problem(call.name, layer, k))
                if layer.model is None and any(s is None for s in call.out_shapes):
                    raise UnsupportedLayerError(f"'{call.name}' ({layer.source_class}: output shape unknown)")
                if layer.model is None:
                    outs = table[layer.class_name](run.builder, call)
                    out_masks = _out_masks(records.get(layer.class_name), call, len(outs))
                else:
                    outs = _inline(run, call, f"{path}{layer.name}/")
                    out_masks = run.out_masks
            except UnsupportedLayerError as exc:
                if str(exc):
                    run.problems.append(str(exc))
                env.update(dict.fromkeys(refs))
                continue
            env.update(zip(refs, outs))
            menv.update((r, m) for r, m in zip(refs, out_masks) if m is not None)
    missing = [str(r) for r in model.outputs if r not in env]
    if missing and not run.problems:
        raise UnsupportedLayerError(f"model '{model.name}': outputs {', '.join(missing)} are not connected to its inputs")
    run.out_masks = [menv.get(r) for r in model.outputs]
    return [env.get(r) for r in model.outputs]


def _output_refs(layer: Layer, k: int, shapes: dict[TensorRef, Any]) -> list[TensorRef]:
    """The outputs of call ``k``: a nested model's outputs, else as many as the shape rule gave."""
    n = len(layer.model.outputs) if layer.model is not None else 1
    while layer.model is None and TensorRef(layer.name, k, n) in shapes:
        n += 1
    return [TensorRef(layer.name, k, j) for j in range(n)]


def _out_masks(record: Any, call: Call, n: int) -> list[Tensor | None]:
    """The masks of a handler's ``n`` outputs: what an ``own`` handler set, else the catalog's policy."""
    if call.out_masks is not None:
        return (list(call.out_masks) + [None] * n)[:n]
    if record is not None and record.masking == "keep":
        return [call.mask(0)] + [None] * (n - 1)
    if record is not None and record.masking == "own" and any(m is not None for m in call.masks):
        raise UnsupportedLayerError(f"'{call.name}' ({call.layer.source_class}: its output mask is not exported)")
    return [None] * n


def _waves(model: Model, known: set[TensorRef]) -> list[list[tuple[int, int]]]:
    """Layer calls ``(layer index, call index)`` grouped by dependency depth: a call is in wave
    ``n`` when its deepest input comes from wave ``n - 1`` (the model inputs are wave 0), in model
    order within a wave. Calls that depend on a tensor nothing produces (or on a cycle) are left
    out. Linear in the number of calls (Kahn's algorithm)."""
    producer = {(layer.name, k): (i, k) for i, layer in enumerate(model.layers) for k in range(len(layer.calls))}
    waiting: dict[tuple[int, int], int] = {}
    readers: dict[tuple[int, int], list[tuple[int, int]]] = {}
    level: dict[tuple[int, int], int] = {}
    frontier = []
    for i, layer in enumerate(model.layers):
        for k, call in enumerate(layer.calls):
            deps: set[tuple[int, int]] = set()
            never = False
            for ref in call:
                if ref in known:
                    continue
                dep = producer.get((ref.layer, ref.node))
                if dep is None:
                    never = True  # never produced: the call can never run
                    break
                deps.add(dep)
            if never:
                continue
            waiting[(i, k)] = len(deps)
            for dep in deps:
                readers.setdefault(dep, []).append((i, k))
            if not deps:
                level[(i, k)] = 1
                frontier.append((i, k))
    while frontier:
        item = frontier.pop()
        for reader in readers.get(item, ()):
            level[reader] = max(level.get(reader, 1), level[item] + 1)
            waiting[reader] -= 1
            if waiting[reader] == 0:
                frontier.append(reader)
    placed = sorted((n, item) for item, n in level.items() if waiting.get(item) == 0)
    waves: list[list[tuple[int, int]]] = []
    for n, item in placed:
        if len(waves) < n:
            waves.extend([] for _ in range(n - len(waves)))
        waves[n - 1].append(item)
    return [w for w in waves if w]


def _inline(run: Run, call: Call, path: str) -> list[Tensor]:
    inner = call.layer.model
    assert inner is not None
    if len(call.inputs) != len(inner.inputs):
        raise UnsupportedLayerError(
            f"'{call.name}' ({call.layer.source_class}: called with {len(call.inputs)} inputs, the model has {len(inner.inputs)})"
        )
    outs = run_model(run, inner, call.inputs, prefix=f"{call.name}/", path=path, masks=call.masks)
    if any(o is None for o in outs):
        raise UnsupportedLayerError("")  # the inner problem is already recorded
    return outs  # type: ignore[return-value]
