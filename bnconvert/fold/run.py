"""Fold a file: read, fold, write in the input's format, check, keep — or leave nothing behind.

This is everything ``bnconvert fold`` does; the command only parses options and prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..bn import unsafe_values
from ..errors import EquivalenceError, FoldError, OutputError, UnsupportedLayerError
from ..model import Model
from ..readers import load
from ..replace import ReplacementsLike, apply_replacements, src_replaced
from ..io import atomic_output, check_output
from ..text import refuse_unencodable
from ..writers import describe_format, output_format, write_model
from .apply import FoldReport, fold_model

__all__ = ["fold_file", "default_output"]

_SUFFIXES = {"keras3-zip": (".keras",), "tfkeras-zip": (".keras",), "keras2-h5": (".h5", ".hdf5"), "keras3-h5": (".h5", ".hdf5")}


def default_output(path: str | os.PathLike[str]) -> Path:
    """``<stem>.folded<ext>`` beside the input."""
    p = Path(path)
    return p.with_name(f"{p.stem}.folded{p.suffix}")


def _check_suffix(out: Path, fmt: str, source: Path) -> None:
    allowed = _SUFFIXES.get(fmt, ())
    if out.suffix.lower() in allowed or out.suffix.lower() == source.suffix.lower():
        return
    raise OutputError(f"{out}: a {fmt} file needs the extension {' or '.join(allowed)} (Keras picks the reader by it)")


def _check(original: str, written: Path, load_options: dict[str, Any], handed: list[Model]) -> dict[str, Any]:
    """The numerical check of a written file against its original, as report data. ``handed``
    holds the original model as already read, the only reference left to it: the TensorFlow-free
    reference is built from it (not from a second read) and the check lets it go once
    onnxruntime has the weights."""
    from ..check import check_written

    try:
        result = check_written(original, written, load_options=load_options, original_model=handed.pop())
    except UnsupportedLayerError as exc:
        reason = f"no runtime can run the model without executing code from the file ({exc})"
        return {"status": "skipped", "passed": None, "reason": reason, "summary": f"not run: {reason}"}
    data = result.to_dict()
    data.update(status="passed" if result else "failed", summary=result.summary(),
                max_rel=result.error, reference_label=result.reference_kind)
    return data


def fold_file(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
    check: bool = True,
    load_options: dict[str, Any] | None = None,
    replacements: ReplacementsLike = None,
) -> FoldReport:
    """Fold every BN of ``path`` that can go and write the result in the input's own Keras format.

    ``output`` defaults to ``<stem>.folded<ext>`` beside the input. The file is written to a
    temporary path, checked against the original (``check``: Keras when TensorFlow is installed,
    else bnconvert's ONNX exports), and only then renamed into place. Raises
    :class:`~bnconvert.errors.EquivalenceError` (with the report as ``.report``) when the check
    fails, and :class:`~bnconvert.errors.BnconvertError` subclasses on bad input; either way nothing
    is written. ``dry_run`` plans and reports without writing. ``replacements`` replace Lambda and
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
    out = Path(output) if output is not None else default_output(path)
    fmt = output_format(original)
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
            report.check = _check(str(path), tmp, options, handed)
            if report.check["status"] == "failed":
                error = EquivalenceError(f"{path}: the folded model differs from the original; nothing written\n{report.check['summary']}")
                error.report = report  # type: ignore[attr-defined]
                raise error
        else:
            report.check = {"status": "skipped", "passed": None, "reason": "--no-check", "summary": "not run (--no-check)"}
    report.output = str(out)
    return report
