"""Runners: one object per way of executing a model, all with the same call.

``infer(feeds: dict[str, ndarray]) -> dict[str, ndarray]`` runs the model on named inputs and
returns named outputs; ``input_specs()`` says what to feed; ``layer_outputs(feeds, names)``
returns intermediate tensors for ``--locate``. Three runners (Polygraphy's backend split):

- :class:`OnnxRunner`: onnxruntime on CPU, graph optimisations **off** by default (at its basic
  level ORT folds Conv+BN and MatMul+BN itself, and the check would then prove nothing).
- :class:`~bnconvert.check.reference.ReferenceRunner` (kind ``"reference"``): the model run in
  float64 numpy from the layer catalog, independent of the ONNX export: the reference when
  TensorFlow is absent or cannot load the file.
- :class:`~bnconvert.check.keras_runner.KerasRunner`: the real Keras (in its own module, since it
  is the only one that imports TensorFlow, lazily).
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import BnconvertError, FormatError
from ..io import shown_path
from .inputs import InputSpec

__all__ = ["ONNX_DTYPES", "OnnxLoadError", "OnnxRunner", "Runner", "RunnerUnavailable"]

log = logging.getLogger(__name__)

#: onnxruntime type strings -> numpy dtypes
ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(bool)": "bool",
}


class RunnerUnavailable(BnconvertError):
    """This runner cannot run this model here (TensorFlow missing, a Keras 1 file for Keras...).

    The built-in checks catch it and fall back to the TensorFlow-free reference.
    """


class OnnxLoadError(FormatError):
    """onnxruntime refuses to load an ONNX model: bad input when the user gave the file, a
    bnconvert bug when bnconvert just wrote it (the export turns it into an InternalError)."""


class Runner(ABC):
    """A model that can be run: feeds in, named outputs back."""

    #: short kind for reports: "keras", "reference" or "onnxruntime"
    kind: str = ""
    path: str = ""

    def __init__(self) -> None:
        self.infer_seconds = 0.0

    @abstractmethod
    def input_specs(self) -> list[InputSpec]:
        """The model inputs in order, with their shapes (None for dynamic) and dtypes."""

    @abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on ``feeds`` (by input name) and return every output by name, in order."""

    @abstractmethod
    def describe(self) -> str:
        """One line for reports: what runs which file."""

    def layer_names(self) -> list[str]:
        """Names of intermediate tensors :meth:`layer_outputs` can return, in topological order."""
        return []

    def layer_outputs(self, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        """Intermediate tensors by name (those of ``names`` this runner can expose)."""
        return {}

    def _timed(self, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.infer_seconds += time.perf_counter() - start


# --------------------------------------------------------------------------------- onnxruntime
def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise RunnerUnavailable("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


def _dims(shape: Sequence[Any]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


class OnnxRunner(Runner):
    """An ONNX model (file or ``ModelProto``) in onnxruntime on CPU.

    ``optimize=False`` (the default) sets ``ORT_DISABLE_ALL``: ORT otherwise folds BN into the
    preceding Conv/MatMul at load time, so an unfolded reference would stop being one.
    """

    kind = "onnxruntime"

    def __init__(
        self,
        source: str | os.PathLike[str] | Any,
        *,
        optimize: bool = False,
        label: str | None = None,
    ) -> None:
        super().__init__()
        self.optimize = optimize
        if isinstance(source, (str, os.PathLike)):
            self.path, self._proto = str(source), None
        else:
            self.path, self._proto = label or "<in-memory ONNX>", source
        self.label = shown_path(label or self.path)  # a file being written is named by its final path
        self.session = self._session(self._proto if self._proto is not None else self.path)

    def _options(self) -> Any:
        ort = _ort()
        opts = ort.SessionOptions()
        level = ort.GraphOptimizationLevel
        opts.graph_optimization_level = level.ORT_ENABLE_ALL if self.optimize else level.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
        # no weight pre-packing: it copies every Gemm/MatMul weight into another layout once per
        # session to speed up later runs, i.e. a second copy of a Dense-heavy model (3 s for 2 GB),
        # and a check runs each model once or twice
        opts.add_session_config_entry("session.disable_prepacking", "1")
        # idle worker threads sleep instead of spinning: a check runs two sessions at once (the
        # reference ahead, the written file), and a spinning pool takes the core the other needs
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return opts

    def _session(self, target: Any) -> Any:
        """A session for a file path or a ModelProto."""
        ort = _ort()
        opts = self._options()
        if not isinstance(target, str):
            target = target.SerializeToString()
        try:
            return ort.InferenceSession(target, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind classes; all mean "cannot load"
            raise OnnxLoadError(f"{self.label}: onnxruntime cannot load it ({_first_line(exc)})") from None

    @property
    def proto(self) -> Any:
        """The ONNX ModelProto (loaded from the file on first use)."""
        if self._proto is None:
            import onnx

            self._proto = onnx.load(self.path)
        return self._proto

    def input_specs(self) -> list[InputSpec]:
        return [
            InputSpec(i.name, _dims(i.shape), ONNX_DTYPES.get(i.type, "float32")) for i in self.session.get_inputs()
        ]

    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def _run(self, session: Any, names: list[str], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        specs = {s.name: s for s in self.input_specs()}
        missing = [n for n in specs if n not in feeds]
        if missing:
            raise BnconvertError(f"{self.label}: no data for inputs {missing} (given {sorted(feeds)})")
        ready = {n: np.asarray(feeds[n]).astype(specs[n].dtype, copy=False) for n in specs}
        quiet = _ort().RunOptions()
        quiet.log_severity_level = 4  # a failed run is raised below as one line: ORT does not print it too
        try:
            values = session.run(names, ready, quiet)
        except Exception as exc:  # noqa: BLE001 - ORT's run errors (shape, type) as one line
            raise BnconvertError(f"{self.label}: onnxruntime failed to run it ({_first_line(exc)})") from None
        return dict(zip(names, (np.asarray(v) for v in values)))

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._timed(self._run, self.session, self.output_names(), feeds)

    def describe(self) -> str:
        ort = _ort()
        state = "on (ORT_ENABLE_ALL)" if self.optimize else "off (ORT_DISABLE_ALL)"
        return f"onnxruntime {ort.__version__} CPU, graph optimisations {state}: {self.label}"

    # -- intermediate tensors -------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Every node output of the graph, in node (topological) order."""
        seen: list[str] = []
        for node in self.proto.graph.node:
            seen.extend(o for o in node.output if o)
        return seen

    def layer_outputs(self, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        import onnx

        available = set(self.layer_names())
        wanted = [n for n in dict.fromkeys(names) if n in available]
        if not wanted:
            return {}
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        existing = {o.name for o in model.graph.output}
        for name in wanted:
            if name not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        session = self._session(model)
        return self._run(session, wanted, feeds)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
