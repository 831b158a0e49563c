"""The flows of bnconvert: read, fold, write or export, check (``fold_file``, ``export_file``,
``verify``).

The stage packages know nothing of each other: :mod:`~bnconvert.readers` read a file into a
:class:`~bnconvert.model.Model`, :mod:`~bnconvert.fold` folds a Model, :mod:`~bnconvert.writers`
write a Model as a Keras file, :mod:`~bnconvert.onnx` builds ONNX from a Model, and
:mod:`~bnconvert.check` runs two models and compares them. This module is the one place that
strings them together; the CLI only parses options and prints (:mod:`bnconvert.render`).

Every flow writes atomically: the output is written to a temporary file beside its final path,
checked there, and renamed into place only when the check passed (or could not run, in which case
the report says NOT CHECKED, or ``require_check`` refuses). The input is never modified.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .bn import require_usable
from .check.compare import DEFAULT_ATOL, DEFAULT_RTOL
from .check.results import CheckResult, VerifyResult
from .errors import EquivalenceError, InternalError, OutputError, UnsupportedLayerError
from .fold import FoldReport, fold_model
from .io import atomic_output, check_output
from .model import Model
from .provenance import make_provenance, onnx_props
from .readers import LoadOptions, LoadOptionsLike
from .replace import ReplacementsLike, apply_replacements, src_replaced
from .text import refuse_unencodable

__all__ = ["PRECISIONS", "CheckOptions", "ExportReport", "Precision", "default_output", "export_file", "fold_file", "verify"]

#: what :func:`export_file` computes in: float32 (the default), float16 or int8
Precision = Literal["float32", "float16", "int8"]
PRECISIONS: tuple[str, ...] = ("float32", "float16", "int8")


# -------------------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class CheckOptions:
    """How ``fold`` and ``export`` check what they wrote: the check's keyword arguments of
    :func:`fold_file` and :func:`export_file`, held once. A check passes when every output
    satisfies ``|reference - written| <= atol + rtol * max|reference|`` on inputs uniform in
    [0, 1) from ``seed`` with batch ``batch`` (:mod:`bnconvert.check.compare`)."""

    run: bool = True
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    seed: int = 1
    batch: int = 2
    #: a check that did not run (``run`` False, a model no runtime may execute) refuses the output
    require: bool = False

    def skipped(self, what: str, original: str, reason: str) -> CheckResult:
        return CheckResult.not_run(what, original, reason, atol=self.atol, rtol=self.rtol)

    def settle(self, result: CheckResult, report: Any, where: str, differs: str) -> None:
        """Keep ``result`` in ``report``; raise :class:`EquivalenceError` (the report as its
        ``.report``, nothing written) when it failed, or did not run and ``require`` is set."""
        report.check = result
        if result.checked and not result.passed:
            raise EquivalenceError(f"{where}: {differs}; nothing written", report=report)
        if not result.checked and self.require:
            raise EquivalenceError(f"{where}: NOT CHECKED and --require-check was given: nothing written "
                                   "(the report says why no check could run)", report=report)


def _read(path: str | os.PathLike[str], options: LoadOptions, replacements: ReplacementsLike, action: str,
          *, lazy: bool = False) -> Model:
    """The model to work on: the file as read, with the user's replacements, refused when its
    numbers cannot be computed with (NaN/Inf weights, a BN whose variance + epsilon <= 0)."""
    model = apply_replacements(options.read(path, lazy=lazy), replacements)
    require_usable(model, f"{path}: refusing to {action}")
    return model


# ---------------------------------------------------------------------------------------- fold
_SUFFIXES = {"keras3-zip": (".keras",), "tfkeras-zip": (".keras",), "keras2-h5": (".h5", ".hdf5"), "keras3-h5": (".h5", ".hdf5")}


def default_output(path: str | os.PathLike[str], fmt: str | None = None) -> Path:
    """``<stem>.folded<ext>`` beside the input. With the output format ``fmt``, an extension that
    would make Keras pick the wrong reader becomes the format's own: an HDF5 file named ``.keras``
    (tf.keras 2.10's ``model.save("model.keras")``) folds to ``<stem>.folded.h5``, which Keras 3
    loads (it takes every ``.keras`` name for a zip archive)."""
    p = Path(path)
    allowed = _SUFFIXES.get(fmt or "", ())
    suffix = p.suffix if not allowed or p.suffix.lower() in allowed else allowed[0]
    return p.with_name(f"{p.stem}.folded{suffix}")


def _check_suffix(out: Path, fmt: str, source: Path) -> None:
    allowed = _SUFFIXES.get(fmt, ())
    if out.suffix.lower() in allowed or out.suffix.lower() == source.suffix.lower():
        return
    raise OutputError(f"{out}: a {fmt} file needs the extension {' or '.join(allowed)} (Keras picks the reader by it)")


def fold_file(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
    check: bool = True,
    load_options: LoadOptionsLike = None,
    replacements: ReplacementsLike = None,
    keep: Sequence[str] = (),
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 1,
    batch: int = 2,
    require_check: bool = False,
) -> FoldReport:
    """Fold every BN of ``path`` that can go and write the result in the input's own Keras format.

    ``output`` defaults to ``<stem>.folded<ext>`` beside the input (:func:`default_output`). The
    file is written to a temporary path, checked against the original (``check``: Keras when
    TensorFlow is installed, else bnconvert's float64 reference; inputs uniform [0, 1) from
    ``seed``, batch ``batch``; passes when every output satisfies
    ``|original - folded| <= atol + rtol * max|original|``), and only then renamed into place. A
    check that cannot run (``check=False``, a Lambda no runtime may execute) leaves
    ``report.check.checked`` False with the reason, and the file is written, unless
    ``require_check``. BN layers whose names match a glob of ``keep`` stay. Raises
    :class:`~bnconvert.errors.EquivalenceError` (the report as ``.report``) when the check fails
    or, with ``require_check``, did not run, and :class:`~bnconvert.errors.BnconvertError`
    subclasses on bad input; either way nothing is written. ``dry_run`` plans and reports
    without writing. ``replacements`` replace Lambda and custom layers of the model as read
    (:func:`bnconvert.replace.apply_replacements`): the file written is the replaced model, and
    the check's reference is the replaced model too.
    """
    from .writers import describe_format, output_format, stamp_keras, write_model

    checks = CheckOptions(check, atol, rtol, seed, batch, require_check)
    options = LoadOptions.of(load_options)
    original = _read(path, options, replacements, "fold")
    if not dry_run:
        refuse_unencodable(original, path, "fold", hdf5=True)  # before anything is written
    fmt = output_format(original)
    out = Path(output) if output is not None else default_output(path, fmt)
    inputs = [path, options.config]  # the model and its --config: never the output
    if not dry_run:
        check_output(out, force=force, inputs=inputs)
        _check_suffix(out, fmt, Path(path))
        if not original.has_graph:
            raise OutputError(f"{path}: weights only, no architecture: pass the model JSON with --config to fold it")
    folded, report = fold_model(original, keep=keep)
    report.output_format = fmt
    report.notes.append(f"output: {describe_format(fmt, original)}")
    report.notes += [f"replaced {what}: the file written is the replaced model" for what in src_replaced(original)]
    src = original.source
    if src is not None and src.generation != 1 and not src.format.endswith("weights"):
        report.notes.append("optimizer state is not copied (the folded model is for inference)")
    if dry_run:
        return report
    source = original.source
    with atomic_output(out, force=force, inputs=inputs) as tmp:
        write_model(folded, tmp, original=original)
        if checks.run:
            handed = [original]
            del folded, original  # so that the check never holds the weights more than twice
            result = _check_written(str(path), tmp, options, handed, checks)
        else:
            result = checks.skipped("fold", str(path), "--no-check")
        checks.settle(result, report, str(path), "the folded model differs from the original")
        stamp_keras(tmp, fmt, make_provenance(source, made="fold", fold=report, check=result))
    report.output = str(out)
    return report


def _check_written(original: str, written: Path, options: LoadOptions, handed: list[Model],
                   checks: CheckOptions) -> CheckResult:
    """The check of a written Keras file against its original. ``handed`` holds the original
    model as already read, the only reference left to it: the TensorFlow-free reference is built
    from it (not from a second read) and the check lets it go once a runtime has the weights."""
    from .check import check_written

    try:
        return check_written(original, written, load_options=options, original_model=handed.pop(),
                             atol=checks.atol, rtol=checks.rtol, seed=checks.seed, batch=checks.batch)
    except UnsupportedLayerError as exc:
        return checks.skipped("fold", original, f"no runtime can run the model without executing code from the file ({exc})")


# -------------------------------------------------------------------------------------- export
@dataclass
class ExportReport:
    """What :func:`export_file` did: the ONNX written, the fold before it, the check after it."""

    source: str
    output: str
    opset: int
    layout: str
    nodes: int
    op_types: dict[str, int]
    parameters: int
    size_bytes: int
    external_data: str | None = None
    #: None with ``fold=False``
    fold: FoldReport | None = None
    check: CheckResult | None = None
    #: ``float32``, ``float16`` or ``int8`` (see :func:`export_file`)
    precision: str = "float32"
    #: what the float16 conversion did (``precision="float16"``)
    fp16: Any = None
    #: the int8 model against the float one on the calibration samples (``precision="int8"``)
    int8: Any = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from .render import check_headline

        return {
            "source": self.source, "output": self.output, "opset": self.opset, "layout": self.layout,
            "nodes": self.nodes, "op_types": dict(self.op_types), "parameters": self.parameters,
            "size_bytes": self.size_bytes, "external_data": self.external_data,
            "fold": self.fold.to_dict() if self.fold is not None else None,
            "check": self.check.to_dict() if self.check is not None else None,
            "check_summary": check_headline(self.check) if self.check is not None else None,
            "precision": self.precision,
            "fp16": self.fp16.to_dict() if self.fp16 is not None else None,
            "int8": self.int8.to_dict() if self.int8 is not None else None,
            "seconds": self.seconds, "notes": list(self.notes),
        }

    def summary(self) -> str:
        """A few human-readable lines (:func:`bnconvert.render.export_text`)."""
        from .render import export_text

        return export_text(self)


def export_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    nchw: bool = False,
    fold: bool = True,
    keep: Sequence[str] = (),
    precision: Precision = "float32",
    fp16_io: bool = False,
    fp16_risky: Literal["keep", "refuse"] = "keep",
    calibration: str | os.PathLike[str] | None = None,
    int8_activations: Literal["int8", "uint8"] = "int8",
    load_options: LoadOptionsLike = None,
    force: bool = False,
    check: bool = True,
    external_data_above: int | None = None,
    replacements: ReplacementsLike = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 1,
    batch: int = 2,
    require_check: bool = False,
) -> ExportReport:
    """Read ``in_path``, fold its BN (unless ``fold=False``; BN matching a glob of ``keep``
    stay), export ONNX to ``out_path`` (opset ``opset``, default
    :data:`bnconvert.onnx.DEFAULT_OPSET`).

    ``external_data_above`` is the initializer size in bytes above which weights go to
    ``OUT.onnx.data`` (default: just under the 2 GiB protobuf limit). Raises OutputError when
    ``out_path`` exists (without ``force``) or is the input, EquivalenceError (the report as
    ``.report``) when the numerical check fails, or when ``require_check`` and no check ran
    (``check=False``); nothing is written in either case. The check runs the written file in
    onnxruntime against the source (Keras, else bnconvert's float64 reference) on inputs uniform
    in [0, 1) from ``seed`` with batch ``batch``, and passes when every output satisfies
    ``|reference - onnx| <= atol + rtol * max|reference|`` (:mod:`bnconvert.check.compare`).
    ``replacements`` replace Lambda and custom layers of the model as read
    (:func:`bnconvert.replace.apply_replacements`); the check's reference is then the replaced
    model in bnconvert's float64 reference.

    ``precision`` ``"float16"``: the folded float64 weights are rounded once to float16 and the
    model computes in float16 (:func:`bnconvert.deploy.fp16.to_float16`; inputs and outputs stay
    float32 unless ``fp16_io``); a layer whose weights float16 cannot hold stays float32
    (``fp16_risky="keep"``, listed in the report) or the export is refused (``"refuse"``). It is
    checked against the reference with at least float16's tolerance
    (:data:`~bnconvert.deploy.fp16.FP16_ATOL`, :data:`~bnconvert.deploy.fp16.FP16_RTOL`).
    ``"int8"``: the float32 export is checked as usual, then quantised (static QDQ, per-channel
    weights, :func:`bnconvert.deploy.int8.quantize_int8`) on the samples of ``calibration`` (a
    ``.npz`` or a folder of ``.npy``, named after the inputs); the report gives the int8 model's
    error and top-class agreement against the float model on those samples. ``int8_activations``
    ``"uint8"`` quantises activations to uint8 (faster on x86 CPUs, see
    :func:`~bnconvert.deploy.int8.quantize_int8`).
    """
    from .check import start_reference
    from .onnx import DEFAULT_OPSET
    from .onnx.export import require_exportable, to_onnx_parts
    from .onnx.save import EXTERNAL_DATA_ABOVE, constants_bytes, stamp_onnx, validate_parts, write_onnx

    start = time.perf_counter()
    opset = DEFAULT_OPSET if opset is None else opset
    limit = EXTERNAL_DATA_ABOVE if external_data_above is None else external_data_above
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "float16":
        from .deploy.fp16 import FP16_ATOL, FP16_RTOL

        atol, rtol = max(atol, FP16_ATOL), max(rtol, FP16_RTOL)  # float16 rounds by 4.9e-4 per step
    checks = CheckOptions(check, atol, rtol, seed, batch, require_check)
    options = LoadOptions.of(load_options)
    src, dst = Path(in_path), Path(out_path)
    inputs = [src, options.config, calibration]  # the model, its --config, the samples: never the output
    check_output(dst, force=force, inputs=inputs)
    if precision == "int8" and calibration is None:
        from .deploy.int8 import refuse_without_calibration

        raise refuse_without_calibration()
    model = _read(src, options, replacements, "export", lazy=True)
    refuse_unencodable(model, src, "export")  # before anything is written
    require_exportable(model, opset=opset)
    if checks.require and not checks.run:
        raise EquivalenceError(f"{src}: --require-check and --no-check: the export would not be checked; nothing written")
    # the check's TensorFlow-free reference (float64, numpy) is prepared now from the model as read;
    # it runs in a second thread once the file is written, beside onnxruntime
    reference = start_reference(src, model, seed=seed, batch=batch) if checks.run else None
    handed = [model] if checks.run and reference is None else []
    with contextlib.ExitStack() as stack:
        if reference is not None:
            stack.enter_context(reference)  # an error below still waits for the thread
        fold_report = None
        if fold:
            model, fold_report = fold_model(model, keep=keep)
        source = model.source
        proto, constants = to_onnx_parts(model, opset=opset, nchw=nchw)
        fp16 = None
        if precision == "float16":
            from .deploy.fp16 import to_float16

            proto, constants, fp16 = to_float16(proto, constants, io_float16=fp16_io, on_risk=fp16_risky,
                                                layers=[path for path, _, _ in model.walk()])
        del model  # the folded weights now live on in ``constants`` only (and the original in ``handed``)
        samples = _calibration(calibration, proto) if precision == "int8" else None
        external = constants_bytes(constants) > limit
        validate_parts(proto, constants)
        report = ExportReport(source=str(src), output=str(dst), opset=opset, layout="nchw" if nchw else "keras",
                              nodes=len(proto.graph.node), op_types=dict(Counter(n.op_type for n in proto.graph.node)),
                              parameters=int(sum(a.size for a in constants.values())), size_bytes=0, fold=fold_report,
                              precision=precision, fp16=fp16)
        data_name = dst.name + ".data" if external else None
        companions = [data_name] if data_name and samples is None else []
        with atomic_output(dst, force=force, inputs=inputs, companions=companions) as tmp:
            # an int8 export is quantised from the checked float32 file, written beside it and not kept
            written = tmp if samples is None else tmp.with_name(f"float32-{tmp.name}")
            write_onnx(proto, constants, written, external_data=None if data_name is None else f"{written.name}.data")
            del proto, constants
            result = _check_export(src, written, options, handed, reference, checks) if checks.run else \
                checks.skipped("export", str(src), "--no-check")
            checks.settle(result, report, str(src), "the ONNX model does not match the original")
            if samples is not None:
                _quantize(report, written, tmp, samples, int8_activations, src)
                data_name = None
            facts: dict[str, Any] = {"opset": opset, "layout": report.layout, "precision": precision}
            if report.int8 is not None:  # the check was of the float32 export; the int8 model's agreement with it
                facts["check_of"] = "the float32 export the int8 model was quantised from"
                facts["int8"] = report.int8.to_dict()
            stamp_onnx(tmp, onnx_props(make_provenance(source, made="export", fold=fold_report, check=result, extra=facts)))
    if data_name:
        report.external_data = str(dst.parent / data_name)
    report.size_bytes = dst.stat().st_size + (Path(report.external_data).stat().st_size if report.external_data else 0)
    report.seconds = time.perf_counter() - start
    return report


def _quantize(report: ExportReport, written: Path, tmp: Path, samples: dict[str, Any], activations: Literal["int8", "uint8"],
              src: Path) -> None:
    """The int8 model of the checked float32 file ``written``, into ``tmp``; its agreement with the
    float model goes into ``report``, and an int8 model that computes NaN/Inf where the float one
    does not is refused (:class:`EquivalenceError`, nothing written)."""
    import onnx

    from .deploy.int8 import quantize_int8

    report.int8 = quantize_int8(written, tmp, samples, activations=activations, force=True, label=str(src))
    report.int8.output = report.output
    broken = [o.name for o in report.int8.outputs if not math.isfinite(o.max_abs)]
    if broken:  # an int8 step too coarse for some arithmetic (a variance quantised to 0 ...)
        raise EquivalenceError(f"{src}: the int8 model computes NaN or Inf where the float model does not "
                               f"(output {', '.join(repr(b) for b in broken)}); nothing written", report=report)
    graph = onnx.load(str(tmp), load_external_data=False).graph  # what is written: the int8 graph
    report.nodes, report.op_types = len(graph.node), dict(Counter(n.op_type for n in graph.node))
    report.notes.append("the check is of the float32 export the int8 model was quantised from (not kept); "
                        "the int8 model's agreement with it is above")


def _calibration(path: str | os.PathLike[str] | None, proto: Any) -> dict[str, Any]:
    """The calibration samples of ``path`` for the graph inputs of ``proto``, validated before the
    export is written (:func:`bnconvert.deploy.int8.load_calibration`)."""
    import numpy as np
    from onnx import helper

    from .deploy.int8 import load_calibration, refuse_without_calibration

    if path is None:
        raise refuse_without_calibration()
    names, shapes, dtypes = [], [], []
    for vi in proto.graph.input:
        t = vi.type.tensor_type
        names.append(vi.name)
        shapes.append(tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim))
        dtypes.append(np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)))
    return load_calibration(path, names, shapes, input_dtypes=dtypes)


def _check_export(src: Path, onnx_path: Path, options: LoadOptions, handed: list[Model], reference: Any,
                  checks: CheckOptions) -> CheckResult:
    """``check_export`` on the written file: with ``reference`` when it was prepared ahead (the
    TensorFlow-free float64 reference of the model as read), else from ``handed``, the model as
    read (not folded) and the only reference left to it."""
    from .check import OnnxLoadError, check_export

    try:
        return check_export(str(src), str(onnx_path), load_options=options, atol=checks.atol, rtol=checks.rtol,
                            seed=checks.seed, batch=checks.batch, original_model=handed.pop() if handed else None,
                            reference=reference)
    except OnnxLoadError as exc:  # the file bnconvert just wrote: its own bug, not the input's
        raise InternalError(f"{src}: onnxruntime cannot load the ONNX bnconvert wrote, nothing written "
                            f"({str(exc).split('(', 1)[-1].rstrip(')')})") from None


# -------------------------------------------------------------------------------------- verify
def verify(
    a_path: str | os.PathLike[str],
    b_path: str | os.PathLike[str],
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 1,
    batch: int = 1,
    batches: Sequence[int] | None = None,
    regimes: bool = False,
    value_range: tuple[float, float] = (0.0, 1.0),
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: str | os.PathLike[str] | None = None,
    locate: bool = False,
    load_options: LoadOptionsLike = None,
    ort_optimize: bool = False,
    reference: str = "auto",
    replacements: ReplacementsLike = None,
) -> VerifyResult:
    """Run A (the reference) and B on the same inputs and compare every output.

    Passes when every output satisfies ``|a-b| <= atol + rtol * max|a|`` (the one rule of fold,
    export and verify, :mod:`bnconvert.check.compare`) in every run; NaN or an unmatched Inf
    fails. Inputs are uniform in ``value_range`` from ``seed`` with batch ``batch`` (dynamic
    dimensions from ``input_shapes``), or read from ``inputs`` (``.npz``, ``.npy`` or a folder of
    ``.npy`` files). When both models declare a dynamic batch, random inputs run at a second
    batch too (3, or 1 after a batch above 1); ``batches`` gives the sizes instead. ``regimes``
    adds runs on normal and constant inputs (:mod:`bnconvert.check.runs`). Each run reports the
    top-class agreement of classifier-shaped outputs (information). With ``locate``, a failure is
    traced to the first layer whose output diverges (BN folded on one side is matched with the
    layer it went into). ``ort_optimize`` turns onnxruntime's graph optimisations on for ONNX
    files. ``reference`` says what runs a Keras file: ``"auto"`` (Keras when it can, else
    bnconvert's float64 reference), ``"keras"`` or ``"float64"``. ``replacements``
    (:mod:`bnconvert.replace`) apply to A, the reference (B is normally what bnconvert made of A,
    with the replacements built in); A then runs in the float64 reference.
    """
    from .check.verify import compare_files
    from .fold.plan import plan_folds

    return compare_files(
        a_path, b_path, atol=atol, rtol=rtol, seed=seed, batch=batch, batches=batches, regimes=regimes,
        value_range=value_range,
        input_shapes=input_shapes, inputs=inputs, locate=locate, load_options=LoadOptions.of(load_options),
        ort_optimize=ort_optimize, reference=reference, replacements=replacements, fold_plan=plan_folds,
    )
