"""The Keras reference runner: the file loaded by the Keras that wrote it, TensorFlow imported lazily.

Which Keras loads a file follows the reader's ``Source.format``: Keras 3 files (``keras3-*``) go
to ``keras`` (3), tf.keras / Keras 2 files (``keras2-*``, ``tfkeras-zip``) to ``tf_keras``.
Keras 1 files load in no current Keras (their layers were renamed); they raise
:class:`~bnconvert.check.runners.RunnerUnavailable`, and the checks use bnconvert's export instead.

Loading is ``compile=False, safe_mode=True``, and only after every config Keras will be handed
has been checked (:mod:`bnconvert.readers.code`): the file's own ``model_config`` (HDF5) or
``config.json`` (``.keras``), or the ``--config`` JSON of a weights-only file, whatever bnconvert
itself read. One with a ``Lambda`` (marshalled Python bytecode, which bnconvert never runs) or a
module outside Keras is refused before Keras sees the file.

TensorFlow is imported quietly: ``TF_CPP_MIN_LOG_LEVEL=3`` unless set, and what its native
libraries print while loading (oneDNN, CUDA, CPU features: absl logging, before that level is in
force) goes to the debug log instead of stderr, so a refusal stays one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import lzma
import os
import re
import sys
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..catalog import kernel_layout
from ..errors import BnconvertError, FormatError
from ..io import shown_path
from ..model import Model, Source, TensorRef
from ..readers import sniff
from ..readers.code import code_in_model, scan_config
from ..readers.graph import flat_keyed
from ..readers.options import LoadOptions, LoadOptionsLike
from ..readers.rnn_layouts import CUDNN_CLASSES
from .inputs import InputSpec, with_values
from .runners import Runner, RunnerUnavailable

__all__ = ["KerasRunner", "KerasLoadError", "keras_module_for", "keras_available", "tensor_name", "INSTALL_HINT"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'bnconvert[keras]'"


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


#: what TensorFlow's native libraries print while they load, before absl logging is initialised
#: and ``TF_CPP_MIN_LOG_LEVEL`` is in force ("I0000 00:00:... port.cc:153] oneDNN custom operations
#: are on...", the CUDA and CPU-feature notes)
_NATIVE_LOG = re.compile(
    r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"  # before InitializeLog the seconds are epoch seconds
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: "
)


class _NativeStderrToLog:
    """File descriptor 2 sent to a temporary file while TensorFlow loads: the lines its native
    libraries write go to the debug log, anything else written meanwhile back to stderr."""

    def __init__(self) -> None:
        self.saved: int | None = None
        self.tmp: Any = None

    def __enter__(self) -> _NativeStderrToLog:
        _flush_stderr()
        try:
            self.tmp = tempfile.TemporaryFile()
            self.saved = os.dup(2)
            os.dup2(self.tmp.fileno(), 2)
        except OSError:  # no descriptor 2 (a daemon) or no temporary folder: leave stderr alone
            if self.saved is not None:
                os.close(self.saved)
                self.saved = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            if self.tmp is not None:
                self.tmp.close()
            return
        _flush_stderr()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.tmp.seek(0)
        text = self.tmp.read(1 << 20).decode("utf-8", errors="replace")
        self.tmp.close()
        other = []
        for line in text.splitlines():
            if _NATIVE_LOG.match(line):
                log.debug("TensorFlow: %s", line)
            elif line.strip():
                other.append(line)
        if other:
            try:
                sys.stderr.write("\n".join(other) + "\n")
            except (OSError, ValueError):
                pass


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # None, closed or broken: nothing to flush
        pass


#: one import at a time: descriptor 2 is process-wide, two redirections must not interleave
_IMPORT_LOCK = threading.Lock()


def _import(module: str) -> tuple[Any, Any]:
    """TensorFlow and ``module`` (``keras`` or ``tf_keras``), imported without a line on stderr."""
    first = "tensorflow" not in sys.modules
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # never TF_ENABLE_ONEDNN_OPTS: it changes numerics
    try:
        with _IMPORT_LOCK, warnings.catch_warnings(), _NativeStderrToLog():
            warnings.simplefilter("ignore")  # DeprecationWarnings and the like, from TensorFlow's own imports
            tf = importlib.import_module("tensorflow")
            keras = importlib.import_module(module)
    except ImportError as exc:
        raise RunnerUnavailable(
            f"running the Keras reference needs TensorFlow and {module.replace('_', '-')} ({exc}): {INSTALL_HINT}"
        ) from None
    if first:  # bnconvert loaded TensorFlow: its Python loggers (tensorflow, absl) stay off the terminal
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    return tf, keras


class KerasRunner(Runner):
    """A Keras file run by the Keras that reads it (``keras`` 3 or ``tf_keras``), on CPU."""

    kind = "keras"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        model: Model | None = None,
        load_options: LoadOptionsLike = None,
    ) -> None:
        super().__init__()
        self.path = str(path)
        options = LoadOptions.of(load_options)
        self.model = model if model is not None else options.read(path)
        self.module = keras_module_for(self.model.source)
        if self.module is None:
            fmt = self.model.source.format if self.model.source else "unknown"
            raise RunnerUnavailable(f"{path}: a Keras 1 file ({fmt}) does not load in any current Keras")
        source = self.model.source
        raw = None if source is None else _as_loaded(source.config, source.format.endswith("-zip"))
        # the whole raw config (a Lambda can hide inside a wrapper), in one walk; a model built in
        # code, without one, layer by layer
        modules: list[str] = []
        names: list[str] = []
        if raw is None:
            code = code_in_model(self.model)
        else:
            code, modules, names = scan_config(raw)
        if code:
            raise RunnerUnavailable(
                f"{path}: {code[0]} holds Python code or loads it from elsewhere; bnconvert never runs it in Keras"
            )
        _refuse_foreign(self.path, "its config", modules, names)
        # What bnconvert read is not always what Keras will load (a full HDF5 read with --config):
        # check exactly what will be handed over, read the way Keras reads it.
        self._config_text: str | None = None
        # Keras gets a private copy, taken before its configs are checked: the checks below and the
        # load read the same bytes, whatever happens to the user's file in between.
        self._private = _PrivateCopy(self.path)
        for what, config in self._configs_for_keras(options.config):
            _refuse_unbuildable(self.path, what, config)
            code, modules, names = scan_config(config)
            if code:
                raise RunnerUnavailable(
                    f"{path}: {what}, which Keras would load, holds Python code or loads it from elsewhere ({code[0]}); "
                    "bnconvert never runs it in Keras"
                )
            _refuse_foreign(self.path, what, modules, names)
        if source is not None and source.kernels_flipped and any(
            kernel_layout(layer.class_name) is not None for _, layer, _ in self.model.walk()
        ):
            # Keras 2 flipped Theano kernels on loading (true convolution -> cross-correlation);
            # tf_keras and Keras 3 load them as stored, so they compute another function.
            raise RunnerUnavailable(
                f"{path}: written by the Theano backend; {self.module} loads its conv kernels without the flip "
                "Keras 2 applied, so it is no reference for this file"
            )
        cudnn = sorted({f"'{p}' ({layer.source_class})" for p, layer, _ in self.model.walk()
                        if layer.source_class in CUDNN_CLASSES})  # Keras runs them only on a GPU
        if cudnn:
            # tf.keras loads them, then fails on the first call without a GPU
            raise RunnerUnavailable(f"{path}: {', '.join(cudnn)} run only on a GPU in Keras; the Keras reference runs "
                                    "on the CPU")
        from ..custom import registered_layers

        users = sorted({f"'{p}' ({layer.source_class})" for p, layer, _ in self.model.walk()
                        if layer.class_name in registered_layers()})
        if users:  # Keras would need the user's own Python class, which bnconvert never imports
            raise RunnerUnavailable(f"{path}: {', '.join(users)} registered with bnconvert.register_layer: Keras "
                                    "cannot load it without the class's own code")
        self.tf, self.keras = _import(self.module)
        self.keras_model = self._load(options.config)
        self._xla = False

    # -- loading ----------------------------------------------------------------------------------
    def _weights_only(self) -> bool:
        source = self.model.source
        return source is not None and source.format.endswith("-weights")

    def _configs_for_keras(self, config: str | None) -> list[tuple[str, Any]]:
        """Every config :meth:`_load` will hand to Keras, parsed: the ``--config`` JSON when one
        was given (a weights-only file, or a full file whose architecture bnconvert read from it;
        its text is kept and handed over as checked, with the file's weights), else the file's own
        ``model_config`` (HDF5) or ``config.json`` (zip; without the top-level ``compile_config``,
        which Keras drops when loading with ``compile=False``). Sniffed like :meth:`_load` does."""
        from ..readers import root_attributes
        from ..readers.h5 import parse_config

        try:
            if config or self._weights_only():  # the architecture bnconvert read is the one Keras gets
                if not config:
                    raise RunnerUnavailable(f"{self.path}: a weights-only file needs its architecture (--config)")
                self._config_text = _read_json(config)
                return [(f"its architecture {config}", parse_config(self._config_text, str(config)))]
            if self._private.kind == "zip":
                text = _zip_config(self._private.path)
                return [] if text is None else [("its config.json", _as_loaded(parse_config(text, "config.json"), True))]
            text = root_attributes(self._private.path, ("model_config",))["model_config"]
            return [] if text is None else [("its model_config", parse_config(text, "model_config"))]
        except RunnerUnavailable:
            raise
        except BnconvertError as exc:  # unreadable: Keras is not asked to load it
            message = str(exc) if str(exc).startswith(self.path) else f"{self.path}: {exc}"
            raise RunnerUnavailable(message) from None

    def _load(self, config: str | None) -> Any:
        km = self.keras
        try:
            if self._config_text is not None or self._weights_only():
                if self._config_text is None:
                    raise RunnerUnavailable(f"{self.path}: a weights-only file needs its architecture (--config)")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    net = km.models.model_from_json(self._config_text)  # the text checked, not the file again
                    net.load_weights(self._private.path)
                return net
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras' notes on legacy files: the user gets one line or a report
                return km.models.load_model(self._private.path, compile=False, safe_mode=True)
        except BnconvertError:
            raise
        except Exception as exc:  # noqa: BLE001 - Keras raises anything; it all means "cannot load"
            raise KerasLoadError(f"{shown_path(self.path)}: {self.module} cannot load it ({_first_line(exc)})") from None

    # -- running ----------------------------------------------------------------------------------
    def input_specs(self) -> list[InputSpec]:
        tensors = list(self.keras_model.inputs)
        names = [ref.layer for ref in self.model.inputs]
        if len(names) != len(tensors):
            names = [getattr(t, "name", f"input_{i}") for i, t in enumerate(tensors)]
        return with_values([InputSpec(n, _shape(t), _dtype(t)) for n, t in zip(names, tensors)], self.model)

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
                    return _flatten(net(_structured(net, xs), training=False))
            except Exception as exc:  # noqa: BLE001 - Keras raises anything
                log.info("eager Keras call failed (%s); retrying under XLA", _first_line(exc))
                first = exc
        try:
            fn = self.tf.function(
                lambda *a: net(_structured(net, list(a)), training=False), jit_compile=True, autograph=False
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
        return f"Keras {self.keras.__version__} ({self.module}, TensorFlow {self.tf.__version__}): {shown_path(self.path)}"

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


def _refuse_foreign(path: str, what: str, modules: list[str], names: list[str]) -> None:
    """RunnerUnavailable when a config names modules or registered objects outside Keras
    (:func:`~bnconvert.readers.code.scan_config`): Keras imports the module a config names
    (tf_keras any at all), so a file never chooses."""
    if modules:
        raise RunnerUnavailable(f"{path}: {what} names Python modules outside Keras ({', '.join(modules)})")
    if names:
        raise RunnerUnavailable(f"{path}: {what} names objects registered outside Keras ({', '.join(names)})")


def _as_loaded(config: Any, zipped: bool) -> Any:
    """A ``.keras`` config as Keras deserialises it with ``compile=False``: without its top-level
    ``compile_config`` (the optimizer and losses, custom ones included, are never built)."""
    if zipped and isinstance(config, dict) and "compile_config" in config:
        return {k: v for k, v in config.items() if k != "compile_config"}
    return config


def _read_json(path: str | os.PathLike[str]) -> str:
    """The text of an architecture JSON, bounded like the readers bound it."""
    from ..readers.h5 import MAX_CONFIG_CHARS

    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_CHARS + 1)
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_CHARS:
        raise FormatError(f"{path}: too large for an architecture JSON; refused")
    return data.decode("utf-8", errors="replace")


def _zip_config(path: str) -> str | None:
    """``config.json`` of a ``.keras`` zip (None when absent), with the readers' checks of the
    archive and never inflated past its declared size."""
    from ..readers.keras_zip import check_members

    try:
        with zipfile.ZipFile(path) as zf:
            info = check_members(zf).get("config.json")
            if info is None:
                return None
            with zf.open(info) as fh:
                data = fh.read(info.file_size + 1)
    except BnconvertError as exc:
        raise FormatError(f"{path}: {exc}") from None
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error,
            lzma.LZMAError) as exc:
        raise FormatError(f"{path}: damaged .keras (zip) file ({exc})") from None
    if len(data) != info.file_size:
        raise FormatError(f"{path}: zip entry 'config.json' does not have the size its header declares")
    try:  # decoded as Keras' json.loads(bytes) decodes it (UTF-8, -16 or -32)
        return data.decode(json.detect_encoding(data), "surrogatepass")
    except (UnicodeDecodeError, LookupError):
        raise FormatError(f"{path}: zip entry 'config.json' is not text") from None


def _shape(tensor: Any) -> tuple[int | None, ...]:
    shape = tensor.shape
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(int(d) if d is not None else None for d in dims)


def _dtype(tensor: Any) -> str:
    dtype = getattr(tensor, "dtype", "float32")
    return str(getattr(dtype, "name", dtype))


def _structured(net: Any, xs: list[Any]) -> Any:
    """The inputs as the model takes them: one tensor, a list, or for a model built on a dict of
    inputs the dict (``xs`` come in sorted-key order, as the reader lists such inputs)."""
    struct = getattr(net, "_inputs_struct", None)  # Keras 3
    if struct is None:
        struct = getattr(net, "_nested_inputs", None)  # tf.keras
    if isinstance(struct, dict) and len(struct) == len(xs):
        return dict(zip(flat_keyed({key: key for key in struct}), xs))
    return xs if len(xs) > 1 else xs[0]


def _flatten(values: Any) -> list[np.ndarray]:
    if isinstance(values, dict):  # by sorted key, as Keras flattens them and the reader lists them
        values = flat_keyed(values)
    if not isinstance(values, (list, tuple)):
        values = [values]
    return [np.asarray(v) for v in values]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _refuse_unbuildable(path: str, what: str, config: Any) -> None:
    """RunnerUnavailable unless bnconvert's reader builds ``config`` (what Keras will be handed):
    a graph with a cycle makes tf.keras wait forever, and what bnconvert cannot build it has not
    checked. (The same text bnconvert read builds; a file changed since it was read may not.)"""
    from ..readers.graph import build_model

    if not isinstance(config, dict):
        raise RunnerUnavailable(f"{path}: {what} is not a model config")
    try:
        build_model(config, where=what)
    except BnconvertError as exc:
        raise RunnerUnavailable(f"{path}: {exc}") from None


class _PrivateCopy:
    """The model file copied into a private temporary folder, named with the extension Keras
    dispatches on (``.keras`` zip or ``.h5``: a tf.keras 2.10 HDF5 saved as ``model.keras`` would
    otherwise be refused).

    Keras re-opens the file it loads, so handing it the user's path would let the bytes change
    between bnconvert's check of the config and Keras' load. The copy is checked and loaded; it is
    removed with the runner (or at exit)."""

    def __init__(self, path: str) -> None:
        import shutil

        self.kind = sniff(path)
        self._tmp = tempfile.TemporaryDirectory(prefix="bnconvert-keras-")
        self.path = os.path.join(self._tmp.name, "model" + (".keras" if self.kind == "zip" else ".h5"))
        try:
            shutil.copyfile(path, self.path)
        except OSError as exc:
            self._tmp.cleanup()
            raise RunnerUnavailable(f"{path}: cannot be copied for Keras ({exc.strerror})") from None
        if sniff(self.path) != self.kind:  # replaced between the sniff and the copy
            self._tmp.cleanup()
            raise RunnerUnavailable(f"{path}: the file changed while it was being read")
