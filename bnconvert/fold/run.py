"""Fold a file: read, fold, write in the input's format, check, keep — or leave nothing behind.

This is everything ``bnconvert fold`` does; the command only parses options and prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..bn import unsafe_values
from ..check.compare import DEFAULT_ATOL, DEFAULT_RTOL
from ..check.results import CheckResult
from ..errors import EquivalenceError, FoldError, OutputError, UnsupportedLayerError
from ..io import atomic_output, check_output
from ..model import Model
from ..readers import load
from ..replace import ReplacementsLike, apply_replacements, src_replaced
from ..text import refuse_unencodable
from ..writers import describe_format, output_format, write_model
from .apply import FoldReport, fold_model

__all__ = ["fold_file", "default_output"]

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


def _check(original: str, written: Path, load_options: dict[str, Any], handed: list[Model], *,
           atol: float, rtol: float, seed: int, batch: int) -> CheckResult:
    """The numerical check of a written file against its original. ``handed`` holds the original
    model as already read, the only reference left to it: the TensorFlow-free reference is built
    from it (not from a second read) and the check lets it go once onnxruntime has the weights."""
    from ..check import check_written

    try:
        return check_written(original, written, load_options=load_options, original_model=handed.pop(),
                             atol=atol, rtol=rtol, seed=seed, batch=batch)
    except UnsupportedLayerError as exc:
        reason = f"no runtime can run the model without executing code from the file ({exc})"
        return CheckResult.not_run("fold", original, reason, atol=atol, rtol=rtol)


def _check_data(result: CheckResult) -> dict[str, Any]:
    """The check as the report holds it: its fields, and its text for the human report."""
    return {**result.to_dict(), "summary": result.summary()}


def fold_file(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
    check: bool = True,
    load_options: dict[str, Any] | None = None,
    replacements: ReplacementsLike = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 1,
    batch: int = 2,
    require_check: bool = False,
) -> FoldReport:
    """Fold every BN of ``path`` that can go and write the result in the input's own Keras format.

    ``output`` defaults to ``<stem>.folded<ext>`` beside the input. The file is written to a
    temporary path, checked against the original (``check``: Keras when TensorFlow is installed,
    else bnconvert's float64 reference; inputs uniform [0, 1) from ``seed``, batch ``batch``;
    passes when every output satisfies ``|original - folded| <= atol + rtol * max|original|``),
    and only then renamed into place. A check that cannot run (``check=False``, a Lambda no
    runtime may execute) leaves ``report.check["checked"]`` False with the reason, and the file is
    written, unless ``require_check``. Raises :class:`~bnconvert.errors.EquivalenceError` (the
    report as ``.report``) when the check fails or, with ``require_check``, did not run, and
    :class:`~bnconvert.errors.BnconvertError` subclasses on bad input; either way nothing is
    written. ``dry_run`` plans and reports without writing. ``replacements`` replace Lambda and
    custom layers of the model as read (:func:`bnconvert.replace.apply_replacements`): the file
    written is the replaced model, and the check's reference is the replaced model too.
    """
    options = dict(load_options or {})
    original = apply_replacements(load(path, **options), replacements)
    unsafe = unsafe_values(original)
    if unsafe:
        raise FoldError(f"{path}: refusing to fold: " + "; ".join(unsafe[:5]) + (f" (and {len(unsafe) - 5} more)" if len(unsafe) > 5 else ""))
    if not dry_run:
        refuse_unencodable(original, path, "fold", hdf5=True)  # before anything is written
    fmt = output_format(original)
    out = Path(output) if output is not None else default_output(path, fmt)
    if not dry_run:
        check_output(out, force=force, inputs=[path, options.get("config")])  # no input is ever the output
        _check_suffix(out, fmt, Path(path))
        if not original.has_graph:
            raise OutputError(f"{path}: weights only, no architecture: pass the model JSON with --config to fold it")
    folded, report = fold_model(original)
    report.output_format = fmt
    report.notes.append(f"output: {describe_format(fmt, original)}")
    report.notes += [f"replaced {what}: the file written is the replaced model" for what in src_replaced(original)]
    src = original.source
    if src is not None and src.generation != 1 and not src.format.endswith("weights"):
        report.notes.append("optimizer state is not copied (the folded model is for inference)")
    if dry_run:
        return report
    with atomic_output(out, force=force, inputs=[path, options.get("config")]) as tmp:
        write_model(folded, tmp, original=original)
        if check:
            handed = [original]
            del folded, original  # so that the check never holds the weights more than twice
            result = _check(str(path), tmp, options, handed, atol=atol, rtol=rtol, seed=seed, batch=batch)
        else:
            result = CheckResult.not_run("fold", str(path), "--no-check", atol=atol, rtol=rtol)
        report.check = _check_data(result)
        if result.checked and not result.passed:
            raise EquivalenceError(f"{path}: the folded model differs from the original; nothing written", report=report)
        if not result.checked and require_check:
            raise EquivalenceError(f"{path}: NOT CHECKED and --require-check was given: nothing written "
                                   "(the report says why no check could run)", report=report)
    report.output = str(out)
    return report
