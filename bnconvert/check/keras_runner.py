"""The Keras reference runner: the file loaded by the Keras that wrote it, TensorFlow imported lazily.

Which Keras loads a file follows the reader's ``Source.format``: Keras 3 files (``keras3-*``) go
to ``keras`` (3), tf.keras / Keras 2 files (``keras2-*``, ``tfkeras-zip``) to ``tf_keras``.
Keras 1 files load in no current Keras (their layers were renamed); they raise
:class:`~bnconvert.check.runners.RunnerUnavailable`, and the checks use bnconvert's export instead.

Loading is ``compile=False, safe_mode=True``; a model with a ``Lambda`` layer is refused before
Keras sees it (its config holds marshalled Python bytecode, which bnconvert never runs).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BnconvertError
from ..layerspec import CONV_CLASSES, DEPTHWISE_CLASSES, SEPARABLE_CLASSES, TRANSPOSE_CLASSES
from ..model import Model, Source, TensorRef
from ..readers import sniff
from .inputs import InputSpec
from .runners import Runner, RunnerUnavailable

__all__ = ["KerasRunner", "KerasLoadError", "keras_module_for", "keras_available", "tensor_name", "INSTALL_HINT"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'bnconvert[keras]'"

_SPATIAL_KERNELS = CONV_CLASSES | TRANSPOSE_CLASSES | DEPTHWISE_CLASSES | SEPARABLE_CLASSES


class KerasLoadError(RunnerUnavailable):
    """Keras is installed but cannot load this file (a damaged file, or a writer bug when it is ours)."""


def tensor_name(ref: TensorRef) -> str:
    """The name an output tensor goes by: its layer's name, as in bnconvert's ONNX export
    (``layer_<node>_<index>`` for another call or output of that layer)."""
    return ref.layer if (ref.node, ref.index) == (0, 0) else f"{ref.layer}_{ref.node}_{ref.index}"


def keras_module_for(source: Source | None) -> str | None:
    """``'keras'`` (3) or ``'tf_keras'`` for a file's format; None when no current Keras loads it."""
    if source is None or source.format.startswith("keras1"):
        return None
    return "keras" if source.format.startswith("keras3") else "tf_keras"


def keras_available(module: str = "keras") -> bool:
    """True when TensorFlow and ``module`` can be imported (checked without importing them)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", module))
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def _import(module: str) -> tuple[Any, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        tf = importlib.import_module("tensorflow")
        keras = importlib.import_module(module)
    except ImportError as exc:
        raise RunnerUnavailable(
            f"running the Keras reference needs TensorFlow and {module.replace('_', '-')} ({exc}): {INSTALL_HINT}"
        ) from None
    try:
        tf.get_logger().setLevel("ERROR")
    except Exception:  # noqa: BLE001 - logging setup is cosmetic
        pass
    return tf, keras


class KerasRunner(Runner):
    """A Keras file run by the Keras that reads it (``keras`` 3 or ``tf_keras``), on CPU."""

    kind = "keras"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        model: Model | None = None,
        load_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from ..readers import load

        self.path = str(path)
        options = dict(load_options or {})
        self.model = model if model is not None else load(path, **options)
        self.module = keras_module_for(self.model.source)
        if self.module is None:
            fmt = self.model.source.format if self.model.source else "unknown"
            raise RunnerUnavailable(f"{path}: a Keras 1 file ({fmt}) does not load in any current Keras")
        from ..readers.code import code_in_model

        code = code_in_model(self.model)  # the whole raw config: a Lambda can hide inside a wrapper
        if code:
            raise RunnerUnavailable(f"{path}: {code[0]} holds Python code; bnconvert never runs it in Keras")
        source = self.model.source
        foreign = sorted(_foreign_modules(source.config if source is not None else None))
        if foreign:  # tf_keras imports whatever module a config names: never let a file choose
            raise RunnerUnavailable(f"{path}: its config names Python modules outside Keras ({', '.join(foreign)})")
        if source is not None and source.kernels_flipped and any(
            layer.class_name in _SPATIAL_KERNELS for _, layer, _ in self.model.walk()
        ):
            # Keras 2 flipped Theano kernels on loading (true convolution -> cross-correlation);
            # tf_keras and Keras 3 load them as stored, so they compute another function.
            raise RunnerUnavailable(
                f"{path}: written by the Theano backend; {self.module} loads its conv kernels without the flip "
                "Keras 2 applied, so it is no reference for this file"
            )
        self.tf, self.keras = _import(self.module)
        self.keras_model = self._load(options.get("config"))
        self._xla = False

    # -- loading ----------------------------------------------------------------------------------
    def _load(self, config: str | None) -> Any:
        km, source = self.keras, self.model.source
        try:
            if source is not None and source.format.endswith("-weights"):
                if not config:
                    raise RunnerUnavailable(f"{self.path}: a weights-only file needs its architecture (--config)")
                net = km.models.model_from_json(Path(config).read_text(encoding="utf-8"))
                with _named_link(self.path, ".h5") as link:
                    net.load_weights(link)
                return net
            suffix = ".keras" if sniff(self.path) == "zip" else ".h5"
            with _named_link(self.path, suffix) as link:
                return km.models.load_model(link, compile=False, safe_mode=True)
        except BnconvertError:
            raise
        except Exception as exc:  # noqa: BLE001 - Keras raises anything; it all means "cannot load"
            raise KerasLoadError(f"{self.path}: {self.module} cannot load it ({_first_line(exc)})") from None

    # -- running ----------------------------------------------------------------------------------
    def input_specs(self) -> list[InputSpec]:
        tensors = list(self.keras_model.inputs)
        names = [ref.layer for ref in self.model.inputs]
        if len(names) != len(tensors):
            names = [getattr(t, "name", f"input_{i}") for i, t in enumerate(tensors)]
        return [InputSpec(n, _shape(t), _dtype(t)) for n, t in zip(names, tensors)]

    def output_names(self) -> list[str]:
        names = [tensor_name(ref) for ref in self.model.outputs]
        count = len(self.keras_model.outputs)
        return names if len(names) == count else [f"output_{i}" for i in range(count)]

    def _call(self, net: Any, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Eagerly, or under XLA once eager failed (TensorFlow has no NCHW Conv2D kernel on CPU)."""
        first: Exception | None = None
        if not self._xla:
            try:
                with warnings.catch_warnings():  # Keras 3: "structure of inputs doesn't match" for [x] vs x
                    warnings.simplefilter("ignore", UserWarning)
                    return _flatten(net(xs if len(xs) > 1 else xs[0], training=False))
            except Exception as exc:  # noqa: BLE001 - Keras raises anything
                log.info("eager Keras call failed (%s); retrying under XLA", _first_line(exc))
                first = exc
        try:
            fn = self.tf.function(
                lambda *a: net(list(a) if len(a) > 1 else a[0], training=False), jit_compile=True, autograph=False
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                values = _flatten(fn(*xs))
        except Exception as exc:  # noqa: BLE001
            raise BnconvertError(f"{self.path}: Keras failed to run it ({_first_line(first or exc)})") from None
        self._xla = True
        return values

    def _feed_list(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        specs = self.input_specs()
        missing = [s.name for s in specs if s.name not in feeds]
        if missing:
            raise BnconvertError(f"{self.path}: no data for inputs {missing} (given {sorted(feeds)})")
        return [np.asarray(feeds[s.name]).astype(s.dtype, copy=False) for s in specs]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._timed(self._call, self.keras_model, self._feed_list(feeds))
        return dict(zip(self.output_names(), values))

    def describe(self) -> str:
        return f"Keras {self.keras.__version__} ({self.module}, TensorFlow {self.tf.__version__}): {self.path}"

    # -- intermediate tensors ---------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.keras_model.layers if type(layer).__name__ != "InputLayer"]

    def _symbolic_output(self, name: str) -> Any | None:
        """The symbolic output of the only call of layer ``name`` (None: shared, unknown, several outputs).

        A layer called once may still hold several nodes (Keras 3 rebuilds a Sequential while
        loading; a nested model keeps its own node): the last one is the call inside this model.
        """
        if name not in self.model or len(self.model[name].calls) > 1:
            return None
        try:
            layer = self.keras_model.get_layer(name)
        except Exception:  # noqa: BLE001 - ValueError in both Kerases
            return None
        nodes = list(getattr(layer, "_inbound_nodes", []))
        if not nodes:
            return None
        outputs = getattr(nodes[-1], "output_tensors", None)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return outputs[0] if len(outputs) == 1 and outputs[0] is not None else None

    def layer_outputs(self, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        symbolic = {n: t for n in dict.fromkeys(names) if (t := self._symbolic_output(n)) is not None}
        if not symbolic:
            return {}
        try:
            probe = self.keras.Model(self.keras_model.inputs, list(symbolic.values()))
        except Exception:  # noqa: BLE001 - one disconnected tensor spoils the lot: keep the good ones
            good = {}
            for n, t in symbolic.items():
                try:
                    self.keras.Model(self.keras_model.inputs, [t])
                    good[n] = t
                except Exception:  # noqa: BLE001
                    log.info("layer %s: its output cannot be exposed", n)
            symbolic = good
            probe = self.keras.Model(self.keras_model.inputs, list(symbolic.values()))
        values = self._call(probe, self._feed_list(feeds))
        return dict(zip(symbolic, values))


_KERAS_PACKAGES = frozenset({"keras", "tf_keras", "tensorflow", "builtins", "keras_hub", "keras_cv", "keras_nlp"})


def _foreign_modules(config: Any, found: set[str] | None = None) -> set[str]:
    """Every ``"module"`` a Keras config names outside the Keras packages (custom code)."""
    found = set() if found is None else found
    if isinstance(config, dict):
        module = config.get("module")
        if isinstance(module, str) and module.split(".", 1)[0] not in _KERAS_PACKAGES:
            found.add(module)
        for value in config.values():
            _foreign_modules(value, found)
    elif isinstance(config, list):
        for value in config:
            _foreign_modules(value, found)
    return found


def _shape(tensor: Any) -> tuple[int | None, ...]:
    shape = tensor.shape
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(int(d) if d is not None else None for d in dims)


def _dtype(tensor: Any) -> str:
    dtype = getattr(tensor, "dtype", "float32")
    return str(getattr(dtype, "name", dtype))


def _flatten(values: Any) -> list[np.ndarray]:
    if isinstance(values, dict):
        values = list(values.values())
    if not isinstance(values, (list, tuple)):
        values = [values]
    return [np.asarray(v) for v in values]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _named_link:
    """A temporary name with the extension Keras dispatches on, linked to the real file.

    Keras picks its loader from the file name (``.keras`` zip or ``.h5``); a tf.keras 2.10 HDF5
    saved as ``model.keras`` would otherwise be refused.
    """

    def __init__(self, path: str, suffix: str) -> None:
        self.path, self.suffix = path, suffix
        self.tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> str:
        if self.path.lower().endswith(self.suffix):
            return self.path
        self.tmp = tempfile.TemporaryDirectory(prefix="bnconvert-")
        link = os.path.join(self.tmp.name, "model" + self.suffix)
        try:
            os.symlink(os.path.abspath(self.path), link)
        except OSError:
            import shutil

            shutil.copyfile(self.path, link)
        return link

    def __exit__(self, *exc: Any) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()
