"""The float64 reference runner: a format-neutral :class:`~bnconvert.model.Model` executed in
numpy from the layer catalog (:mod:`bnconvert.catalog`), kind ``"reference"``.

It needs no TensorFlow and shares nothing with the ONNX export but the reader: each layer's
semantics are the catalog's float64 functions, written from Keras' behaviour. It is the
reference of ``fold``, ``export`` and ``verify`` when Keras is absent or cannot load the file.

Calls run in dependency order; call ``k`` of a layer reads the tensors ``layer.calls[k]`` and
produces ``TensorRef(layer, k, i)``, so shared layers and layers with several outputs work as the
model records them. A nested model runs its own graph with the caller's tensors bound to its
inputs. Intermediate tensors are dropped once their last reader has run, unless they are asked
for (``--locate``): top-level layers by name, calls after the first as ``name/call<k>``, layers
inside a nested model as ``outer/inner`` (the names bnconvert's ONNX export gives them).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..catalog.record import output_masks
from ..errors import BnconvertError, UnsupportedLayerError
from ..io import shown_path
from ..model import Layer, Model, TensorRef, given_mask_problem, is_operation
from ..readers.options import LoadOptions, LoadOptionsLike
from .inputs import InputSpec, with_values
from .runners import Runner, RunnerUnavailable

__all__ = ["ReferenceRunner", "blas_threads", "declared_input_specs", "run_reference"]

_INPUT_DTYPES = frozenset({"float32", "float16", "float64", "int32", "int64", "uint8", "int8"})


class blas_threads:
    """``with blas_threads(n):`` numpy's matrix products in the calling thread use at most ``n``
    threads (OpenBLAS's thread-local setting; nothing happens with another BLAS or an OpenBLAS
    without it). What the check's reference does while onnxruntime runs beside it: on two busy
    cores, a two-thread BLAS spends more time waiting for a core than computing."""

    _set: Any = None

    def __init__(self, n: int) -> None:
        self.n, self.previous = n, None

    @classmethod
    def _function(cls) -> Any:
        if cls._set is None:
            cls._set = False
            try:
                import ctypes
                import re

                with open("/proc/self/maps", encoding="utf-8") as maps:  # the BLAS numpy loaded
                    paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so[.\d]*)\s*$", maps.read(), re.MULTILINE)))
                for path in paths:
                    func = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
                    if func is not None:
                        func.argtypes, func.restype = [ctypes.c_int], ctypes.c_int
                        cls._set = func
                        break
            except (OSError, AttributeError, ValueError):
                pass
        return cls._set

    def __enter__(self) -> blas_threads:
        func = self._function()
        if func:
            self.previous = func(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        func = self._function()
        if func and self.previous is not None:
            func(self.previous)


def _dtype_name(value: Any) -> str:
    if isinstance(value, dict):  # Keras 3 DTypePolicy
        value = (value.get("config") or {}).get("name")
    return value if isinstance(value, str) and value in _INPUT_DTYPES else "float32"


def _n_outputs(layer: Layer) -> int:
    return len(layer.model.outputs) if layer.model is not None else 1


def _order(model: Model) -> list[tuple[Layer, int]]:
    """Every layer call ``(layer, k)`` whose inputs can be computed, in dependency order (Kahn's
    algorithm, model order among ready calls)."""
    known = set(model.inputs)
    producer = {(layer.name, k) for layer in model.layers for k in range(len(layer.calls))}
    calls = [(i, k) for i, layer in enumerate(model.layers) for k in range(len(layer.calls))]
    waiting: dict[tuple[int, int], int] = {}
    readers: dict[tuple[str, int], list[tuple[int, int]]] = {}
    ready: list[tuple[int, int]] = []
    for i, k in calls:
        deps = {(r.layer, r.node) for r in model.layers[i].calls[k] if r not in known}
        if any(d not in producer for d in deps):
            continue  # reads a tensor nothing produces: it never runs
        waiting[(i, k)] = len(deps)
        for d in deps:
            readers.setdefault(d, []).append((i, k))
        if not deps:
            ready.append((i, k))
    order: list[tuple[Layer, int]] = []
    ready.sort(reverse=True)
    while ready:
        i, k = ready.pop()
        layer = model.layers[i]
        order.append((layer, k))
        for reader in readers.get((layer.name, k), ()):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
                ready.sort(reverse=True)
    return order


class _Executor:
    """Runs one model (recursively its nested models) with the catalog's semantics."""

    def __init__(self, source: Any) -> None:
        from ..catalog import CallContext, catalog

        self.table = catalog()
        self.out_masks: list[np.ndarray | None] = []
        self.source = source
        self.context = CallContext
        self.keep: set[str] | None = None
        self.kept: dict[str, np.ndarray] = {}

    def run(self, model: Model, inputs: list[np.ndarray], path: str = "",
            masks: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """``model``'s outputs; their Keras masks are left in :attr:`out_masks`. ``masks``: the
        masks the inputs carry (a nested model's caller passes its own)."""
        env: dict[TensorRef, np.ndarray] = dict(zip(model.inputs, inputs))
        menv: dict[TensorRef, np.ndarray] = {r: m for r, m in zip(model.inputs, masks or []) if m is not None}
        order = _order(model)
        uses = Counter(r for layer, k in order for r in layer.calls[k])
        uses.update(model.outputs)
        for layer, k in order:
            xs = [env[r] for r in layer.calls[k]]
            ms = [menv.get(r) for r in layer.calls[k]]
            if layer.given_mask(k) and ms[0] is None:
                raise UnsupportedLayerError(given_mask_problem(f"{path}{layer.name}", layer, k))
            name = f"{path}{layer.name}" + (f"/call{k}" if k else "")
            outs, out_masks = self._call(layer, k, xs, ms, name, f"{path}{layer.name}")
            for i, (y, m) in enumerate(zip(outs, out_masks)):
                env[TensorRef(layer.name, k, i)] = y
                if m is not None:
                    menv[TensorRef(layer.name, k, i)] = m
            if self.keep is not None and len(outs) == 1 and name in self.keep:
                self.kept[name] = outs[0]
            for r in layer.calls[k]:  # forget what no later call reads
                uses[r] -= 1
                if uses[r] <= 0 and r not in model.inputs:
                    env.pop(r, None)
                    menv.pop(r, None)
        missing = [str(r) for r in model.outputs if r not in env]
        if missing:
            raise BnconvertError(f"model '{model.name}': outputs {', '.join(missing)} are not connected to its inputs")
        self.out_masks = [menv.get(r) for r in model.outputs]
        return [env[r] for r in model.outputs]

    def _call(self, layer: Layer, k: int, xs: list[np.ndarray], ms: list[np.ndarray | None], name: str,
              path: str) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        if layer.model is not None:
            if len(xs) != len(layer.model.inputs):
                raise UnsupportedLayerError(
                    f"'{name}' ({layer.source_class}: called with {len(xs)} inputs, the model has {len(layer.model.inputs)})")
            outs = self.run(layer.model, xs, f"{name}/", ms)
            return outs, self.out_masks
        record = self.table.get(layer.class_name)
        if record is None or record.call is None:
            raise UnsupportedLayerError(f"'{name}' {_unrunnable(layer)}")
        if is_operation(layer):  # an operation layer (x + y, keras.ops.mean, a TFOpLambda) neither reads nor passes masks
            ms = [None] * len(ms)
        context = self.context(source=self.source,
                               masks=ms if any(m is not None for m in ms) else None,
                               kwargs=layer.call_kwargs[k] if k < len(layer.call_kwargs) else None)
        outs = record.call(layer, xs, context)
        return outs, output_masks(record, layer, xs, context, len(outs))


def _per_sample(layer: Layer) -> bool:
    """An element-wise Keras 3 operation (``x + 3.0``, ``relu``, ``cast``, ``where``): each
    sample's output depends on that sample alone. Other operations are not assumed to be."""
    from ..catalog.operations import BINARY, UNARY

    name = layer.class_name.removeprefix("keras.ops.")
    return layer.class_name.startswith("keras.ops.") and (
        name in BINARY or name in UNARY or name in _ELEMENTWISE_WITH_CONFIG)


#: element-wise Keras 3 operations whose config holds parameters (not axes)
_ELEMENTWISE_WITH_CONFIG = frozenset({"clip", "round", "elu", "celu", "leaky_relu", "gelu", "squareplus", "cast", "where",
                                      "zeros_like", "ones_like"})


def _unrunnable(layer: Layer) -> str:
    """Why the reference cannot run ``layer``, after its name: an operation named the user's way."""
    if is_operation(layer):
        return f"({layer.class_name}: bnconvert has no semantics for this operation)"
    return f"({layer.source_class}): no float64 semantics for this class"


def run_reference(model: Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """``model``'s outputs on ``inputs`` (in the order of ``model.inputs``), in float64."""
    ex = _Executor(model.source)
    return ex.run(model, [np.asarray(x, np.float64) for x in inputs])


def declared_input_specs(model: Model, path: str) -> list[InputSpec]:
    """The inputs ``model``'s input layers declare (a dimension that is not positive is open)."""
    specs = []
    for ref in model.inputs:
        layer = model[ref.layer]
        shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
        if not shape:
            raise BnconvertError(f"{path}: input '{layer.name}' declares no shape")
        dims = tuple(int(d) if isinstance(d, int) and d > 0 else None for d in shape)
        specs.append(InputSpec(layer.name, dims, _dtype_name(layer.config.get("dtype"))))
    return specs


def _without_dead_layers(model: Model, table: Mapping[str, Any]) -> Model:
    """``model`` without the operation layers, and the layers it cannot run, whose outputs nothing
    reads. Keras 3 records the mask a layer was handed as the operations that computed it
    (``keras.ops.not_equal`` after a mask_zero Embedding, ``not_equal`` + ``any`` after Masking,
    ``expand_dims``, ``logical_or``, ``concatenate`` ... for a merge), read by no call (the reader
    keeps ``mask=`` tensors out of the calls' inputs); the reference propagates masks by the
    catalog's rules, which give the same values, so those layers are dead code."""
    from dataclasses import replace

    def droppable(layer: Layer) -> bool:
        return is_operation(layer) or getattr(table.get(layer.class_name), "call", None) is None

    layers = [replace(layer, model=_without_dead_layers(layer.model, table)) if layer.model is not None else layer
              for layer in model.layers]
    changed = any(a is not b for a, b in zip(layers, model.layers))
    while True:
        read = {r.layer for layer in layers for call in layer.calls for r in call}
        read |= {r.layer for r in model.outputs} | {r.layer for r in model.inputs}
        dead = {layer.name for layer in layers if layer.model is None and layer.name not in read and droppable(layer)}
        if not dead:
            return model.with_layers(layers) if changed else model
        layers, changed = [layer for layer in layers if layer.name not in dead], True


class ReferenceRunner(Runner):
    """A Keras file (or a Model already read) run by bnconvert's float64 numpy reference."""

    kind = "reference"
    #: threads :meth:`infer` may split the batch over (one slice of samples each, each with a
    #: one-thread BLAS: no barrier between threads, so none waits for a descheduled other)
    threads: int = 1

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        model: Model | None = None,
        load_options: LoadOptionsLike = None,
    ) -> None:
        super().__init__()
        from ..catalog import catalog

        self.path = str(path)
        self.model = model if model is not None else LoadOptions.of(load_options).read(path)
        if not self.model.has_graph:
            raise RunnerUnavailable(f"{path}: weights-only file without an architecture; pass the model JSON with --config")
        table = catalog()
        self.model = _without_dead_layers(self.model, table)
        missing = sorted({f"'{p}' {_unrunnable(layer)}" for p, layer, _ in self.model.walk()
                          if layer.model is None and getattr(table.get(layer.class_name), "call", None) is None})
        if missing:  # a layer no runtime can run without executing code from the file (Lambda ...)
            raise UnsupportedLayerError(f"{path}: bnconvert's float64 reference cannot run {', '.join(missing)}")

    def input_specs(self) -> list[InputSpec]:
        return with_values(declared_input_specs(self.model, self.path), self.model)

    def output_names(self) -> list[str]:
        names: list[str] = []
        inputs = {ref.layer for ref in self.model.inputs}
        for ref in self.model.outputs:
            base = ref.layer if (ref.node, ref.index) == (0, 0) else f"{ref.layer}_{ref.node}_{ref.index}"
            name, k = base, 0
            while name in names or name in inputs:
                k += 1
                name = f"{base}_{k}"
            names.append(name)
        return names

    def _feeds(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        specs = self.input_specs()
        missing = [s.name for s in specs if s.name not in feeds]
        if missing:
            raise BnconvertError(f"{self.path}: no data for inputs {missing} (given {sorted(feeds)})")
        # the data the model would see: cast to the input's dtype first (as Keras and ONNX do)
        return [np.asarray(feeds[s.name]).astype(s.dtype, copy=False).astype(np.float64) for s in specs]

    def _run(self, xs: list[np.ndarray], keep: set[str] | None = None) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        ex = _Executor(self.model.source)
        ex.keep = keep
        with np.errstate(all="ignore"):  # inf/nan propagate as in Keras; the comparison reports them
            outs = ex.run(self.model, xs)
        return outs, ex.kept

    def _mixes_samples(self) -> bool:
        """Whether some layer's output for one sample depends on the others (Keras 1 BN mode 2
        uses the batch's statistics; an ``axis`` of 0 acts across the batch; an operation layer
        other than an element-wise one may reshape, reduce or index across the batch)."""
        for _, layer, _ in self.model.walk():
            if is_operation(layer) and not _per_sample(layer):
                return True
            c = layer.config
            axis = c.get("axis")
            axes = [axis] if isinstance(axis, int) else list(axis) if isinstance(axis, (list, tuple)) else []
            if int(c.get("keras1_mode", 0) or 0) == 2 or 0 in axes:
                return True
        return False

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, the batch split over :attr:`threads` threads when no layer mixes samples."""
        xs = self._feeds(feeds)
        n = xs[0].shape[0] if xs and xs[0].ndim else 0
        parts = min(self.threads, n)
        if parts <= 1 or any(x.ndim == 0 or x.shape[0] != n for x in xs) or self._mixes_samples():
            return self._run(xs)[0]
        bounds = np.linspace(0, n, parts + 1).astype(int)
        results: list[list[np.ndarray] | None] = [None] * parts
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                with blas_threads(1):  # parallel by samples, not inside each product
                    results[i] = self._run([x[bounds[i]:bounds[i + 1]] for x in xs])[0]
            except BaseException as exc:  # noqa: BLE001 - re-raised below, in the calling thread
                errors.append(exc)

        helpers = [threading.Thread(target=work, args=(i,), name="bnconvert-reference-part") for i in range(1, parts)]
        for t in helpers:
            t.start()
        work(0)
        for t in helpers:
            t.join()
        if errors:
            raise errors[0]
        return [np.concatenate([r[j] for r in results if r is not None]) for j in range(len(results[0] or []))]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names(), self._timed(self._infer, feeds)))

    def describe(self) -> str:
        return f"bnconvert's own float64 computation (NumPy {np.__version__}, no TensorFlow): {shown_path(self.path)}"

    def layer_names(self) -> list[str]:
        names: list[str] = []

        def walk(model: Model, prefix: str) -> None:
            for layer, k in _order(model):
                name = f"{prefix}{layer.name}" + (f"/call{k}" if k else "")
                if layer.class_name == "InputLayer":
                    continue
                if layer.model is not None:
                    walk(layer.model, name + "/")
                if _n_outputs(layer) == 1:
                    names.append(name)

        walk(self.model, "")
        return names

    def layer_outputs(self, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        wanted = set(names) & set(self.layer_names())
        if not wanted:
            return {}
        _, kept = self._run(self._feeds(feeds), keep=wanted)
        return {n: kept[n] for n in names if n in kept}
