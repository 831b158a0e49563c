"""``verify`` (any two models) and the checks fold and export run on what they wrote.

A side is a Keras file (run by Keras when TensorFlow is installed and a current Keras loads the
file, else by bnconvert's float64 reference: the model executed in numpy from the layer catalog,
independent of the ONNX export) or an ONNX file (onnxruntime, optimisations off). Both sides get
the same inputs; B's inputs and outputs are transposed when it holds NCHW where A holds
channels_last (``--nchw`` exports). ``verify`` compares them in one or more runs (two batch
sizes when the batch is dynamic, the regimes of ``--regimes``: :mod:`.runs`).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import BnconvertError, FormatError
from ..io import shown_path
from ..model import Model
from ..readers.options import LoadOptions, LoadOptionsLike
from ..replace import ReplacementsLike
from .compare import DEFAULT_ATOL, DEFAULT_RTOL
from .inputs import (
    MAX_ELEMENTS,
    REGIMES,
    InputSpec,
    check_inputs_file,
    check_random_size,
    load_inputs,
    padded_batch,
    random_inputs,
    regime_text,
    value_notes,
)
from .keras_runner import (
    INSTALL_HINT,
    KerasLoadError,
    KerasRunner,
    keras_available,
    keras_module_for,
)
from .locate import FoldPlan, LocateResult
from .pairing import CHECK_DYNAMIC_SIZE, bind_inputs, fill_dynamic, run_pair
from .reference import ReferenceRunner, blas_threads, declared_input_specs
from .results import CheckResult, VerifyResult, VerifyRun
from .runners import OnnxRunner, Runner, RunnerUnavailable
from .runs import batch_of, companion_batch, compare_run, dynamic_batch, with_batch

__all__ = [
    "REFERENCES",
    "ReferenceAhead",
    "check_export",
    "check_written",
    "file_kind",
    "open_runner",
    "start_reference",
    "compare_files",
]

#: what ``verify --reference`` accepts: Keras only, the float64 reference only, or Keras when it
#: can run the file and the float64 reference otherwise
REFERENCES = ("auto", "keras", "float64")
_FLOAT64 = "bnconvert's float64 reference"


log = logging.getLogger(__name__)


def file_kind(path: str | os.PathLike[str]) -> str:
    """``'keras'`` (HDF5 or zip) or ``'onnx'`` (protobuf); FormatError for anything else."""
    from ..readers import sniff

    try:
        kind = sniff(path)
    except FormatError:
        if not _readable_file(path):  # missing, a folder, empty, unreadable: the reader's words
            raise
        if _is_onnx(path):
            return "onnx"
        raise FormatError(f"{path}: neither a Keras model file (HDF5 or .keras zip) nor an ONNX model") from None
    if kind == "json":
        raise FormatError(f"{path}: a JSON architecture; pass the weights .h5 and --config {path}")
    return "keras"


def _readable_file(path: str | os.PathLike[str]) -> bool:
    """A regular, non-empty file this process can open."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return False
        with open(path, "rb"):
            return True
    except (OSError, ValueError):
        return False


def _is_onnx(path: str | os.PathLike[str]) -> bool:
    import onnx

    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: not ONNX
        return False
    return proto.ir_version > 0 and len(proto.graph.output) > 0


def _keras_choice(path: str | os.PathLike[str], model: Model, use_keras: bool) -> tuple[bool, list[str]]:
    """Whether a Keras file should run in Keras, and notes saying why not."""
    from ..replace import refuse_in_keras

    module = keras_module_for(model.source)
    replaced = refuse_in_keras(model)  # Keras would run the file as written: its Lambda, its custom classes
    if replaced is not None:
        return False, [f"{Path(path).name}: {replaced}; it runs in {_FLOAT64}"]
    if not use_keras:
        return False, []
    if module is None:
        return False, [f"{Path(path).name}: a Keras 1 file loads in no current Keras; it runs in {_FLOAT64}"]
    if not keras_available(module):
        return False, [f"{Path(path).name}: TensorFlow/{module} not installed ({INSTALL_HINT}); it runs in {_FLOAT64}"]
    return True, []


def open_runner(
    path: str | os.PathLike[str],
    *,
    load_options: LoadOptionsLike = None,
    ort_optimize: bool = False,
    use_keras: bool = True,
    model: Model | None = None,
    reference: str = "auto",
    replacements: ReplacementsLike = None,
) -> tuple[Runner, list[str]]:
    """The runner for one side, and notes on how it was chosen.

    ONNX files run in onnxruntime. Keras files run in Keras when ``use_keras``, TensorFlow is
    installed and a current Keras loads them; otherwise in bnconvert's float64 reference.
    ``reference``: ``"auto"`` (that choice), ``"keras"`` (Keras or a RunnerUnavailable error),
    ``"float64"`` (the float64 reference even when Keras could run the file).
    ``model`` is the Keras file already read with ``load_options`` (it is not read again).
    ``replacements`` (:mod:`bnconvert.replace`) apply to the Keras file read here; a model with
    replacements runs in the float64 reference (Keras would run the file as written).
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, not {reference!r}")
    if model is None and file_kind(path) == "onnx":
        if replacements:
            raise BnconvertError(f"{path}: an ONNX file; replacements apply to a Keras file (give it as A)")
        return OnnxRunner(path, optimize=ort_optimize), []
    given = LoadOptions.of(load_options)
    options = given.for_file(path)
    if model is None:
        model = options.read(path)
        if replacements:
            from ..replace import apply_replacements

            model = apply_replacements(model, replacements)
    elif given.config is not None:  # ``model`` was read with this architecture: Keras gets the same one
        options = replace(options, config=given.config)
    in_keras, notes = _keras_choice(path, model, use_keras and reference != "float64")
    if reference == "keras" and not in_keras:
        raise RunnerUnavailable(f"{path}: --reference keras, but " + (notes[0].split("; it runs")[0] if notes else "Keras is not used"))
    if in_keras:
        try:
            return KerasRunner(path, model=model, load_options=options), notes
        except RunnerUnavailable as exc:
            if reference == "keras":
                raise
            notes.append(f"{exc}; it runs in {_FLOAT64} instead")
    return ReferenceRunner(path, model=model), notes


# ------------------------------------------------------------------------------------- verify
def _fill_open_axes(specs: Sequence[InputSpec], given: Mapping[str, Sequence[int]] | None
                    ) -> tuple[list[InputSpec], list[str]]:
    """Specs whose only dynamic axis after the batch is axis 1 (a sequence's length) get
    :data:`CHECK_DYNAMIC_SIZE` steps, as the built-in checks do, unless ``--input-shape`` gives
    them; other dynamic axes (an image's height and width) are left for ``--input-shape``."""
    filled, notes = [], []
    for s in specs:
        open_axes = [i for i, d in enumerate(s.shape) if d is None and i > 0]
        if open_axes == [1] and s.name not in (given or {}):
            s = replace(s, shape=tuple(CHECK_DYNAMIC_SIZE if d is None and i > 0 else d for i, d in enumerate(s.shape)))
            notes.append(f"input '{s.name}': dynamic axes {open_axes} set to {CHECK_DYNAMIC_SIZE} "
                         "(--input-shape sets them)")
        filled.append(s)
    return filled, notes


def compare_files(
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
    fold_plan: FoldPlan | None = None,
) -> VerifyResult:
    """Run A (the reference) and B on the same inputs and compare every output.

    Passes when every output satisfies ``|a-b| <= atol + rtol * max|a|`` (the one rule of fold,
    export and verify, :mod:`bnconvert.check.compare`) in every run; NaN or an unmatched Inf
    fails. Inputs are uniform in ``value_range`` from ``seed`` with batch ``batch`` (dynamic
    dimensions from ``input_shapes``, which set the whole shape of the first run), or read from
    ``inputs`` (``.npz``, ``.npy``, or a folder of ``.npy`` files, :func:`~.inputs.load_inputs`).

    Runs (:mod:`.runs`): random inputs run at ``batch`` and, when both models declare a dynamic
    batch, again at :func:`~.runs.companion_batch` (``batch``) to prove it; ``batches`` replaces
    both (the sizes to run, in order; one size: one run). ``regimes`` adds runs on normal and
    constant inputs at the first batch. ``inputs`` runs once, at the file's batch. Each run
    reports the top-class agreement of the classifier-shaped outputs (:mod:`.agreement`), which
    is information, not part of the verdict.

    With ``locate``, the first failed run is traced to the first layer whose output diverges.
    ``ort_optimize`` turns onnxruntime's graph optimisations on for ONNX files.
    ``reference`` says what runs a Keras file: ``"auto"`` (Keras when it can, else bnconvert's
    float64 reference), ``"keras"`` or ``"float64"`` (see :func:`open_runner`).
    ``replacements`` (:mod:`bnconvert.replace`) apply to A, the reference (B is normally what
    bnconvert made of A, with the replacements built in); A then runs in the float64 reference.
    """
    start = time.perf_counter()
    # what can be refused without the models is refused before any runtime is loaded
    for path in (a_path, b_path):
        file_kind(path)  # missing, unreadable, neither Keras nor ONNX: B too, before A's runtime starts
    sizes = list(batches) if batches is not None else [batch]
    if inputs is not None:
        if regimes:
            raise BnconvertError("--regimes draws random inputs of each kind; it cannot be combined with --inputs")
        if batches is not None:
            raise BnconvertError("--batches sets the batch of random inputs; with --inputs the file sets it")
        check_inputs_file(inputs)  # the headers: a lying or huge one allocates nothing
    else:
        if not sizes:
            raise BnconvertError("--batches: give at least one batch size")
        for size in sizes:
            if size < 1:
                raise BnconvertError(f"--batch {size}: must be at least 1")
            if size > MAX_ELEMENTS:
                raise BnconvertError(f"{a_path}: --batch {size} is too large for the check's random inputs (the limit "
                                     f"is {MAX_ELEMENTS:,} elements); give --inputs or a smaller --batch")
    ra, notes_a = open_runner(a_path, load_options=load_options, ort_optimize=ort_optimize, reference=reference,
                              replacements=replacements)
    rb, notes_b = open_runner(b_path, load_options=load_options, ort_optimize=ort_optimize, reference=reference)
    loaded = time.perf_counter()
    declared_a, declared_b = ra.input_specs(), rb.input_specs()
    try:
        binding = bind_inputs(declared_a, declared_b)
    except BnconvertError as exc:  # B does not take A's inputs: named by its file, A's given too
        raise type(exc)(f"{b_path}: {exc} (A is {a_path})") from None
    notes = notes_a + notes_b + binding.notes
    runs: list[tuple[VerifyRun, dict[str, np.ndarray], dict[str, np.ndarray]]] = []  # run, A's feeds, B's
    if inputs is not None:
        feeds_a = load_inputs(inputs, binding.specs)
        source = f"{'folder' if Path(inputs).is_dir() else 'file'} {Path(inputs).name}"
        run, feeds_b = compare_run(ra, rb, binding, feeds_a, label="file", source=source, atol=atol, rtol=rtol)
        runs.append((run, feeds_a, feeds_b))
    else:
        specs, open_notes = _fill_open_axes(binding.specs, input_shapes)
        dynamic, batch_note = dynamic_batch(declared_a, declared_b)

        def draw(size: int, shapes: Mapping[str, Sequence[int]] | None, regime: str = "uniform") -> dict[str, np.ndarray]:
            return random_inputs(specs, seed=seed, batch=size, value_range=value_range, input_shapes=shapes,
                                 source=a_path, advice="give --inputs, or a smaller --batch or --input-shape",
                                 regime=regime)

        def add(label: str, feeds: dict[str, np.ndarray], regime: str, *, extra_batch: bool = False) -> None:
            text = regime_text(regime, value_range=value_range, seed=seed)
            run, feeds_b = compare_run(ra, rb, binding, feeds, label=label, source=text, atol=atol, rtol=rtol,
                                       regime=regime, extra_batch=extra_batch)
            runs.append((run, feeds, feeds_b))

        first = draw(sizes[0], input_shapes)
        first_batch = batch_of(first, specs)
        add(f"batch {first_batch}", first, "uniform")
        if batches is None and dynamic and first_batch is not None:
            sizes.append(companion_batch(first_batch))
        for size in sizes[1:] if dynamic else []:
            add(f"batch {size}", draw(size, with_batch(input_shapes, specs, size)), "uniform", extra_batch=True)
        if len(sizes) > 1 and not dynamic:
            notes.append(f"the batch is not dynamic in both models: compared at batch {first_batch} only")
        if regimes:
            for regime in REGIMES[1:]:
                add(regime, draw(sizes[0], input_shapes, regime), regime)
            same = [s.name for s in specs if np.dtype(s.dtype).kind != "f" or (s.values and s.values.tokens)]
            if same:
                notes.append(f"inputs {same}: token ids, integers and booleans are drawn as in the uniform regime "
                             "in every regime")
        notes.extend(open_notes)
        if batch_note:
            notes.append(batch_note)
        elif dynamic and len(runs) > 1:
            shown = " and ".join(str(r.batch) for r, _, _ in runs if r.regime == "uniform")
            notes.append(f"the batch is dynamic in both models: compared at batch {shown}")
        notes.extend(value_notes(binding.specs))
    located, located_run = _locate(ra, rb, runs, locate=locate, atol=atol, rtol=rtol, fold_plan=fold_plan)
    return VerifyResult(
        a=str(a_path), b=str(b_path), runner_a=ra.describe(), runner_b=rb.describe(), kind_a=ra.kind, kind_b=rb.kind,
        runs=[r for r, _, _ in runs], notes=notes, located=located, located_run=located_run,
        seconds={
            "load": loaded - start, "run_a": ra.infer_seconds, "run_b": rb.infer_seconds,
            "total": time.perf_counter() - start,
        },
    )


def _locate(
    ra: Runner, rb: Runner, runs: Sequence[tuple[VerifyRun, dict[str, np.ndarray], dict[str, np.ndarray]]], *,
    locate: bool, atol: float, rtol: float, fold_plan: FoldPlan | None,
) -> tuple[LocateResult | None, str]:
    """With ``locate``: the first diverging layer on the inputs of the first failed run that has a
    comparison, and that run's label."""
    if not locate:
        return None, ""
    from .locate import locate_divergence

    failed = [(r, fa, fb) for r, fa, fb in runs if not r.passed]
    if not failed:
        return LocateResult(first=None, message="the outputs agree: nothing to locate"), ""
    compared = [(r, fa, fb) for r, fa, fb in failed if r.comparison is not None]
    if not compared:
        return LocateResult(first=None, message=f"{failed[0][0].message.split(':')[0]}: no layer to locate"), ""
    run, feeds_a, feeds_b = compared[0]
    return locate_divergence(ra, rb, feeds_a, feeds_b, atol=atol, rtol=rtol, fold_plan=fold_plan), run.label


# ------------------------------------------------------------------------------ built-in checks
def _check(
    what: str, original: str, written: str, ref: Runner, cand: Runner, notes: list[str],
    *, atol: float, rtol: float, seed: int, batch: int, ahead: ReferenceAhead | None = None,
) -> CheckResult:
    """Run reference and candidate on seeded inputs; pass by the rule of :mod:`.compare`.
    ``ahead``: the reference already running in another thread, used when its inputs are the ones
    drawn here: the candidate then runs while it finishes."""
    binding = bind_inputs(ref.input_specs(), cand.input_specs())
    batch = padded_batch(binding.specs, batch)  # pre-, post- and unpadded rows of a masked sequence
    specs, fill_notes = fill_dynamic(binding.specs, batch)
    binding.specs = specs
    feeds = random_inputs(specs, seed=seed, batch=batch, source=original)
    outputs = out_b = None
    if ahead is not None and ahead.feeds.keys() == feeds.keys() and all(
        np.array_equal(ahead.feeds[k], feeds[k]) for k in feeds
    ):
        out_b = cand.infer(binding.feeds_b(feeds))  # while the reference runs on exactly these inputs
        outputs = ahead.result().outputs
    comparison, _ = run_pair(ref, cand, binding, feeds, atol=atol, rtol=rtol, out_a=outputs, out_b=out_b)
    return CheckResult(
        what=what, original=original, written=shown_path(written), reference=ref.describe(), reference_kind=ref.kind,
        candidate=cand.describe(), candidate_kind=cand.kind, atol=atol, rtol=rtol, comparison=comparison,
        passed=comparison.passed,
        notes=notes + binding.notes + fill_notes + value_notes(specs), seed=seed, batch=batch, inputs=binding.rows(feeds),
    )


def _bounded(path: str, model: Model | None, batch: int) -> None:
    """The check's random inputs for ``model`` (as declared by its input layers) refused at once
    when too large: before a runtime is loaded, not after Keras took seconds to start."""
    if model is None or not model.has_graph:
        return
    try:
        specs = declared_input_specs(model, path)
    except BnconvertError:
        return  # said by the runner that needs the shapes, in its own words
    check_random_size(fill_dynamic(specs, batch)[0], batch=batch, source=path)


def check_written(
    original_path: str | os.PathLike[str],
    written_path: str | os.PathLike[str],
    *,
    load_options: LoadOptionsLike = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 1,
    batch: int = 2,
    original_model: Model | None = None,
) -> CheckResult:
    """Compare a folded Keras file with the original it came from (the check ``fold`` runs).

    Reference: the original in Keras when TensorFlow is installed and a current Keras loads it,
    else bnconvert's float64 reference of it. Checked: the written file in Keras when
    TensorFlow is installed (a written file Keras cannot load fails the check), else the
    written file as read back, run by the float64 reference. Passes when every output satisfies
    ``|ref - folded| <= atol + rtol * max|ref|`` (:mod:`bnconvert.check.compare`).
    ``load_options`` apply to reading the original (``running_std`` ...); ``original_model`` is
    the original already read with them (used instead of reading the file again).
    """
    _bounded(str(original_path), original_model, batch)
    ref, notes = open_runner(str(original_path), load_options=load_options, model=original_model)
    del original_model  # onnxruntime or Keras now holds the weights: never keep them twice
    original, written = str(original_path), str(written_path)
    options = LoadOptions.of(load_options).for_file(written)
    model = options.read(written)
    module = keras_module_for(model.source)
    cand: Runner
    if module is not None and keras_available(module):
        try:
            cand = KerasRunner(written, model=model, load_options=options)
        except KerasLoadError as exc:
            return CheckResult(
                what="fold", original=original, written=shown_path(written), reference=ref.describe(), reference_kind=ref.kind,
                candidate=f"{module}: {shown_path(written)}", candidate_kind="keras", atol=atol, rtol=rtol, comparison=None,
                passed=False, message=f"the folded file does not load in Keras: {exc}", notes=notes, seed=seed, batch=batch,
            )
        except RunnerUnavailable as exc:
            notes.append(f"{exc}; the folded file runs in {_FLOAT64}")
            cand = ReferenceRunner(written, model=model)
    else:
        cand = ReferenceRunner(written, model=model)
    del model
    return _check("fold", original, written, ref, cand, notes, atol=atol, rtol=rtol, seed=seed, batch=batch)


def check_export(
    source_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    *,
    load_options: LoadOptionsLike = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 1,
    batch: int = 2,
    original_model: Model | None = None,
    reference: ReferenceAhead | None = None,
) -> CheckResult:
    """Compare an exported ONNX file with the Keras file it came from (the check ``export`` runs).

    Reference: the source in Keras when TensorFlow is installed and a current Keras loads it
    (not Keras 1 files), else bnconvert's float64 reference of it. Passes when every output
    satisfies ``|ref - onnx| <= atol + rtol * max|ref|``, the rule and defaults of ``fold``'s
    check and ``verify`` (:mod:`bnconvert.check.compare`). ``original_model`` is the
    source already read with ``load_options`` (not read again); ``reference`` is that reference
    prepared by :func:`start_reference` (same ``seed`` and ``batch``): it runs in a second thread
    while onnxruntime loads and runs the written file.
    """
    source, written = str(source_path), str(onnx_path)
    ahead = reference
    ref: Runner
    if reference is not None:
        reference.start()
        ref, notes = reference.runner, list(reference.notes)
    else:
        _bounded(source, original_model, batch)
        ref, notes = open_runner(source, load_options=load_options, model=original_model)
        del original_model  # onnxruntime or Keras now holds the weights: never keep them twice
    cand = OnnxRunner(written)
    return _check("export", source, written, ref, cand, notes, atol=atol, rtol=rtol, seed=seed, batch=batch,
                  ahead=ahead)


# ------------------------------------------------------------------------ the reference, ahead
#: :func:`start_reference` runs ahead only for models whose weights take at most this many bytes:
#: while it runs, the caller's folded copy and onnxruntime's copy of the weights coexist with the
#: model as read, and past this size the two-copies bound matters more than a second core
AHEAD_MAX_BYTES = 1 << 30


@dataclass
class _Done:
    runner: Runner
    notes: list[str]
    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


class ReferenceAhead:
    """The TensorFlow-free reference of :func:`check_export`, run in a background thread.

    What ``export`` prepares right after reading (the model as read, the check's inputs); the
    float64 reference (:class:`~bnconvert.check.reference.ReferenceRunner`) runs in a second
    thread from :meth:`start` on, which the check calls once the file is written, so that it
    overlaps onnxruntime loading and running that file. Not earlier: beside the main thread's
    folding and graph building (Python, holding the GIL), the reference's numpy calls queue for
    the GIL and both sides ran 1.5 to 4 times slower (ResNet50: 1.9 s against 1.5 s in all).
    Its BLAS is held to one thread (:class:`~bnconvert.check.reference.blas_threads`): the other
    core is onnxruntime's. :meth:`result` starts it if needed, waits, and re-raises whatever it
    raised; leaving a ``with`` block waits too, so no work outlives the call that started it.
    """

    def __init__(self, path: str, model: Model, notes: list[str], *, seed: int, batch: int) -> None:
        self.path, self.notes, self.seed, self.batch = path, notes, seed, batch
        self.runner = ReferenceRunner(path, model=model)
        self.runner.threads = 2  # the batch's two halves in two threads, beside onnxruntime
        declared = self.runner.input_specs()
        specs, _ = fill_dynamic(declared, padded_batch(declared, batch))
        self.feeds = random_inputs(specs, seed=seed, batch=batch, source=path)
        self._done: _Done | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the reference on :attr:`feeds` in a background thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="bnconvert-reference", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        try:
            with blas_threads(1):  # the other core is onnxruntime's
                self._done = _Done(self.runner, self.notes, self.feeds, self.runner.infer(self.feeds))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc

    def result(self) -> _Done:
        """The reference runner with its inputs and outputs (starts it if needed, waits for it)."""
        self.start()
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._done is not None
        return self._done

    def __enter__(self) -> ReferenceAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.join()


def start_reference(
    source_path: str | os.PathLike[str], model: Model, *, seed: int = 1, batch: int = 2
) -> ReferenceAhead | None:
    """:func:`check_export`'s reference for ``model`` (the source as read), prepared to run in a
    background thread (see :class:`ReferenceAhead`), when it is the TensorFlow-free one (Keras is
    never run off the main thread) and the weights are at most :data:`AHEAD_MAX_BYTES`; None
    otherwise (the check then runs it itself)."""
    in_keras, notes = _keras_choice(source_path, model, True)
    if in_keras or model.weight_bytes() > AHEAD_MAX_BYTES:
        return None
    return ReferenceAhead(str(source_path), model, notes, seed=seed, batch=batch)
