"""Static int8 quantisation of a folded float32 ONNX export, calibrated on the user's data.

Why after folding: onnxruntime quantises the merged Conv (and Gemm, MatMul), not a
BatchNormalization on its own; bnconvert folds BN into the kernels in float64 first, so the int8
weights carry the BN scale and the activations are quantised once, after the merged op.

What is done (onnxruntime's recommended CPU setting, "S8S8 with QDQ format ... should be the first
choice", https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):

* pre-processing with ``quant_pre_process`` (ONNX shape inference and onnxruntime's basic graph
  optimisation; when the optimisation fails onnxruntime logs it and goes on without); its symbolic
  shape inference is skipped: it needs ``sympy``, which onnxruntime no longer depends on, and it
  helps transformer graphs, not the CNNs this is for;
* ``quantize_static`` in QDQ format: weights int8, symmetric, per output channel by default
  (``per_channel``); activations int8 (onnxruntime's first choice for QDQ on CPUs) or uint8
  (``activations="uint8"``: on x86 CPUs onnxruntime runs more of the graph in integer kernels,
  ResNet50 in 0.39 of float32's time against 0.72 with int8 activations, see benchmarks/RESULTS.md, at the risk its documentation
  names: a saturating intermediate on CPUs without VNNI); MinMax calibration on the user's samples, fed ``batch`` at
  a time through the dynamic batch dimension bnconvert writes (a fixed batch is fed as declared);
  onnxruntime's default op set except Softmax, which stays float (:data:`FLOAT_OPS` says why).

Random inputs calibrate badly (the activation ranges are those of the real data), so there is no
default data: :func:`refuse_without_calibration` is the one line to show instead.

The report compares the int8 model with the float32 model on the calibration data: per output the
max and mean abs error, the relative error ``max|int8 - float| / max|float|``, and for outputs
shaped like a classifier's (rank 2, at least 2 classes) the share of samples whose top class
agrees; for 1000 classes or more also the top-5 agreement, defined as the share of samples whose
float top-1 class is among the int8 model's top 5.

Files: :func:`quantize_int8` writes ``out`` through :func:`bnconvert.io.atomic_output` (a private
folder beside ``out``, renamed into place on success, removed on any failure: nothing is ever left
at ``out`` half-written); the pre-processed model lives in that folder too. onnxruntime's own
temporary files (the augmented calibration model) go to ``tempfile.TemporaryDirectory`` folders
that onnxruntime removes when it is done or fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import BnconvertError, FormatError
from ..io import atomic_output
from ..text import one_line
from ..topclass import top_agreement

__all__ = [
    "FLOAT_OPS",
    "RECOMMENDED_SAMPLES",
    "Int8Report",
    "OutputAgreement",
    "load_calibration",
    "model_inputs",
    "quantize_int8",
    "refuse_without_calibration",
]

log = logging.getLogger(__name__)

#: fewer calibration samples than this are used, with a note in the report
RECOMMENDED_SAMPLES = 32

#: op types left in float. Softmax: onnxruntime quantises its output on the fixed range [0, 1]
#: (steps of 1/255), which rounds every probability below 0.002 to 0, all of them for 1000 classes
#: (measured: top-1 agreement 0% on a 1000-class head); its input, the logits, is still quantised.
#: LayerNormalization: onnxruntime 1.32's per-channel weight-scale adjustment for int32 biases
#: fails on its multi-dimensional scale and bias (fixtures/norm_tfk_layernorm.h5: "truth value of
#: an array ... is ambiguous"), and a normalisation's statistics lose most from 8-bit steps.
FLOAT_OPS = ("Softmax", "LayerNormalization")

Dim = int | str | None


def refuse_without_calibration() -> BnconvertError:
    """The error to raise when int8 is asked for without calibration data."""
    return BnconvertError(
        f"int8 needs calibration data: --calibration DATA.npz with {RECOMMENDED_SAMPLES} or more representative inputs "
        "(random data calibrates badly)"
    )


# --- the model's inputs -------------------------------------------------------------------------

def model_inputs(onnx_path: str | os.PathLike[str]) -> tuple[list[str], list[tuple[Dim, ...]], list[np.dtype[Any]]]:
    """The graph inputs of an ONNX file (initializers excluded): names, shapes (an int per fixed
    dimension, the symbol or None per free one) and numpy dtypes; for :func:`load_calibration`."""
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]  # stubs are optional
    from onnx import helper

    try:
        proto = onnx.load(os.fspath(onnx_path), load_external_data=False)
    except OSError as exc:
        raise FormatError(f"{onnx_path}: cannot be read ({one_line(exc.strerror or exc)})") from None
    except DecodeError:
        raise FormatError(f"{onnx_path}: not an ONNX model") from None
    initializers = {t.name for t in proto.graph.initializer}
    names, shapes, dtypes = [], [], []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims: list[Dim] = []
        for d in tensor.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        names.append(value.name)
        shapes.append(tuple(dims))
        dtypes.append(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)))
    return names, shapes, dtypes


# --- calibration data ---------------------------------------------------------------------------

def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` file, or of the ``.npy`` files of a folder (by file stem); never
    unpickled."""
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise FormatError(f"{path}: calibration folder holds no .npy files")
        items = [(f.stem, f) for f in files]
    elif path.is_file():
        items = []
    else:
        raise FormatError(f"{path}: calibration data not found")
    arrays: dict[str, np.ndarray] = {}
    key = ""
    try:
        if items:
            for key, file in items:
                arrays[key] = np.load(file, allow_pickle=False)
        else:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise FormatError(f"{path}: calibration data must be a .npz file (np.savez) or a folder of .npy files")
            with data:
                for key in data.files:
                    arrays[key] = data[key]
    except ValueError as exc:
        if "Object arrays" in str(exc):  # numpy's words for an array of Python objects
            raise FormatError(f"{path}: calibration array '{one_line(key)}' holds Python objects; "
                              "only numeric arrays are read (never unpickled)") from None
        if "allow_pickle" in str(exc):  # np.load falls back to unpickling what is neither .npz nor .npy
            where = f"{path}/{key}.npy" if items else f"{path}"
            raise FormatError(f"{where}: not a readable .npz/.npy file (neither format; bnconvert never unpickles)") from None
        raise FormatError(f"{path}: not a readable .npz/.npy file ({one_line(exc)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: not a readable .npz/.npy file ({one_line(exc)})") from None
    except MemoryError:  # a header declaring more than memory holds (numpy allocates before reading)
        raise FormatError(f"{path}: calibration array '{one_line(key)}' declares more data than fits in memory") from None
    if not arrays:
        raise FormatError(f"{path}: calibration file holds no arrays")
    return arrays


def _compatible(shape: tuple[int, ...], declared: tuple[Dim, ...]) -> bool:
    if len(shape) != len(declared):
        return False
    return all(not isinstance(d, int) or d == s for s, d in zip(shape[1:], declared[1:]))


def _shape_text(declared: tuple[Dim, ...]) -> str:
    return "(" + ", ".join("N" if i == 0 and not isinstance(d, int) else ("?" if not isinstance(d, int) else str(d))
                           for i, d in enumerate(declared)) + ")"


def load_calibration(
    path: str | os.PathLike[str],
    input_names: Sequence[str],
    input_shapes: Sequence[tuple[Dim, ...]],
    *,
    input_dtypes: Sequence[np.dtype[Any] | type] | None = None,
) -> dict[str, np.ndarray]:
    """Calibration samples for the model's inputs, validated; ``{input name: array}``.

    ``path`` is a ``.npz`` (``np.savez``) whose arrays are keyed by the input names (a single-input
    model may use any one key, ``x`` or ``arr_0``), or a folder of ``NAME.npy`` files. Shapes are
    the declared input shapes with the batch first (None or a symbol for a free dimension): every
    array holds N >= 1 samples along its first axis, the same N for all inputs, the rest as declared.
    Float inputs take float arrays (converted to float32, or to the input's float type); integer
    inputs take integer arrays. Values must be finite. Each problem raises one
    :class:`~bnconvert.errors.FormatError` line; user data is never unpickled.
    """
    src = Path(path)
    names = list(input_names)
    dtypes = [np.dtype(d) for d in input_dtypes] if input_dtypes is not None else [np.dtype(np.float32)] * len(names)
    arrays = _read_arrays(src)
    if len(names) == 1 and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        wanted = ", ".join(f"'{one_line(n)}'" for n in names)
        found = ", ".join(f"'{one_line(k)}'" for k in sorted(arrays))
        raise FormatError(f"{src}: calibration arrays must be named after the model's inputs ({wanted}); found {found}")
    out: dict[str, np.ndarray] = {}
    counts = set()
    for name, declared, dtype in zip(names, input_shapes, dtypes):
        a = arrays[name]
        what = f"{src}: calibration array '{one_line(name)}'"
        if a.dtype.kind not in "fiub":
            raise FormatError(f"{what} has dtype {a.dtype}; numeric arrays only")
        if dtype.kind == "f" and a.dtype.kind != "f":
            raise FormatError(f"{what} has dtype {a.dtype}; the input takes {dtype}: save the float values the model is fed")
        if dtype.kind in "iub" and a.dtype.kind == "f":
            raise FormatError(f"{what} has dtype {a.dtype}; the input takes {dtype} (integer) values")
        if a.ndim == 0 or a.shape[0] < 1:
            raise FormatError(f"{what} holds no samples (shape {a.shape}); expected {_shape_text(tuple(declared))}")
        if not _compatible(a.shape, tuple(declared)):
            raise FormatError(f"{what} has shape {a.shape}; the input takes {_shape_text(tuple(declared))} "
                              "with the samples along the first axis")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int(np.count_nonzero(~np.isfinite(a)))
            raise FormatError(f"{what} holds {bad} NaN or infinite value{'s' if bad != 1 else ''}")
        with np.errstate(over="ignore", invalid="ignore"):  # checked on the next line
            converted = a.astype(dtype, copy=False)
        if dtype.kind == "f" and not np.isfinite(converted).all():
            raise FormatError(f"{what} has values beyond {dtype}'s range")
        out[name] = np.ascontiguousarray(converted)
        counts.add(a.shape[0])
    if len(counts) > 1:
        raise FormatError(f"{src}: calibration arrays hold different numbers of samples ({', '.join(map(str, sorted(counts)))})")
    return out


def _batches(calibration: Mapping[str, np.ndarray], batch: int) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(calibration.values())))
    for start in range(0, n, batch):
        yield {k: v[start:start + batch] for k, v in calibration.items()}


# --- the report ---------------------------------------------------------------------------------

@dataclass
class OutputAgreement:
    """How one output of the int8 model agrees with the float model on the calibration data."""

    name: str
    max_abs: float
    mean_abs: float
    rel: float  #: max|int8 - float| / max|float|
    classes: int | None = None  #: set for classifier-shaped outputs (rank 2, >= 2 classes)
    top1: float | None = None  #: share of samples whose top class is the same
    top5: float | None = None  #: share whose float top-1 class is in the int8 top 5 (>= 1000 classes)


@dataclass
class Int8Report:
    """What :func:`quantize_int8` did and how close the int8 model stays to the float one."""

    source: str
    output: str
    samples: int
    batch: int
    per_channel: bool
    weights: str = "int8 (symmetric)"
    activations: str = "int8 (asymmetric)"
    calibration_method: str = "MinMax"
    quantize_nodes: int = 0
    dequantize_nodes: int = 0
    op_types: dict[str, int] = field(default_factory=dict)
    float_bytes: int = 0
    int8_bytes: int = 0
    outputs: list[OutputAgreement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """The report in plain English (:func:`bnconvert.render.int8_text`)."""
        from ..render import int8_text

        return int8_text(self)



def agreement(name: str, ref: np.ndarray, out: np.ndarray) -> OutputAgreement:
    """Compare one output of the int8 model (``out``) with the float model's (``ref``)."""
    ref64, out64 = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    diff = np.abs(ref64 - out64)
    scale = float(np.abs(ref64).max()) if ref64.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    result = OutputAgreement(name=name, max_abs=max_abs, mean_abs=float(diff.mean()) if diff.size else 0.0,
                             rel=max_abs / scale if scale > 0 else max_abs)
    top = top_agreement(ref64, out64, output=name)  # the same agreement as ``verify`` reports
    if top is not None:
        result.classes, result.top1, result.top5 = top.classes, top.top1_share, top.top5_share
    return result


# --- quantisation -------------------------------------------------------------------------------

def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


def _run(session: Any, calibration: Mapping[str, np.ndarray], batch: int) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = []
    for feeds in _batches(calibration, batch):
        parts.append(session.run(None, feeds))
    return [np.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0]))]


def _file_bytes(path: Path) -> int:
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    total = path.stat().st_size
    for location in {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}:
        extra = path.parent / location
        if extra.is_file():
            total += extra.stat().st_size
    return total


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantisation tools log through the root logger (``logging.warning``), which
    on first use also installs a handler printing to stderr for the rest of the process: their
    remarks ("Axis 1 is out-of-range for weight ..." where a per-channel weight falls back to one
    scale) are not the user's business, and bnconvert's output stays its own. A handler that
    prints nothing keeps the root logger from being configured, and warnings are off meanwhile."""
    root = logging.getLogger()
    null = logging.NullHandler()
    root.addHandler(null)
    previous = root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
        root.removeHandler(null)


def quantize_int8(
    float_onnx: str | os.PathLike[str],
    out: str | os.PathLike[str],
    calibration: Mapping[str, np.ndarray],
    *,
    per_channel: bool = True,
    activations: Literal["int8", "uint8"] = "int8",
    batch: int = 8,
    force: bool = False,
    label: str | None = None,
) -> Int8Report:
    """Quantise the float32 ONNX model ``float_onnx`` to int8 (static QDQ) into ``out``.

    ``calibration`` is ``{input name: samples}`` as :func:`load_calibration` returns it; it is fed
    ``batch`` samples at a time (the declared batch when the model's is fixed) both to calibrate and
    to compare the int8 model with the float one. ``out`` is written atomically (see the module
    docstring); ``force`` replaces an existing file. Raises BnconvertError when there is no
    calibration data or onnxruntime cannot quantise the model; nothing is written then.
    """
    start = time.perf_counter()
    src, dst = Path(float_onnx), Path(out)
    named = label or str(src)  # how messages name the model (the pipeline's float file is a temporary one)
    if not calibration:
        raise refuse_without_calibration()
    if batch < 1:
        raise BnconvertError(f"int8: the calibration batch must be at least 1, not {batch}")
    if activations not in ("int8", "uint8"):
        raise ValueError(f"activations must be 'int8' or 'uint8', not {activations!r}")
    names, shapes, dtypes = model_inputs(src)
    if sorted(calibration) != sorted(names):
        given = ", ".join(f"'{one_line(k)}'" for k in sorted(calibration))
        raise BnconvertError(f"{named}: calibration data for inputs {given}; the model's are " + ", ".join(f"'{one_line(n)}'" for n in names))
    calibration = {n: np.ascontiguousarray(calibration[n], dtype=d) for n, d in zip(names, dtypes)}
    samples = len(next(iter(calibration.values())))
    notes: list[str] = []
    fixed = {s[0] for s in shapes if s and isinstance(s[0], int) and s[0] > 0}
    if len(fixed) == 1:  # a fixed batch: feed exactly that many samples at a time
        batch = fixed.pop()
        if samples % batch:
            notes.append(f"the model's batch is fixed at {batch}: the last {samples % batch} samples are not used")
            samples -= samples % batch
            calibration = {k: v[:samples] for k, v in calibration.items()}
        if samples == 0:
            raise BnconvertError(f"{named}: the model's batch is fixed at {batch}: calibration needs at least {batch} samples")
    if samples < RECOMMENDED_SAMPLES:
        notes.append(f"calibrated on {samples} samples; {RECOMMENDED_SAMPLES} or more representative inputs are recommended")
    report = Int8Report(source=named, output=str(dst), samples=samples, batch=min(batch, samples),
                        per_channel=per_channel, activations=f"{activations} (asymmetric)", notes=notes)

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime's default op set, without the ones that stay float (FLOAT_OPS)
    op_types = sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - set(FLOAT_OPS))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = _batches(calibration, batch)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = _batches(calibration, batch)

    with atomic_output(dst, force=force, inputs=[src]) as tmp:
        pre = tmp.parent / ("pre-" + tmp.name)
        try:
            with _quiet_root_logger():
                quant_pre_process(os.fspath(src), os.fspath(pre), skip_symbolic_shape=True)
                quantize_static(os.fspath(pre), os.fspath(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                                weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=op_types)
            float_session = _session(src)
            output_names = [o.name for o in float_session.get_outputs()]
            reference = _run(float_session, calibration, batch)
            del float_session
            quantized = _run(_session(tmp), calibration, batch)
        except (BnconvertError, MemoryError):
            raise
        except Exception as exc:  # onnxruntime raises anything; the user gets its words in one line
            raise BnconvertError(f"{named}: onnxruntime could not quantise the model to int8 or run the result "
                                 f"({one_line(exc)}); nothing written") from exc
        import onnx

        q = onnx.load(os.fspath(tmp))
        ops = Counter(n.op_type for n in q.graph.node)
        report.op_types = dict(ops)
        report.quantize_nodes, report.dequantize_nodes = ops.get("QuantizeLinear", 0), ops.get("DequantizeLinear", 0)
        if report.dequantize_nodes == 0:
            notes.append("onnxruntime quantised nothing: the model has no Conv, Gemm or MatMul it can quantise")
        del q
        report.outputs = [agreement(n, r, o) for n, r, o in zip(output_names, reference, quantized)]
        report.float_bytes, report.int8_bytes = _file_bytes(src), tmp.stat().st_size
        pre.unlink(missing_ok=True)
    report.seconds = time.perf_counter() - start
    log.info("int8: %s -> %s, %d samples", src, dst, samples)
    return report
