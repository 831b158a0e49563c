"""``bnconvert fold``: fold every BatchNormalization that can go, write a Keras file in the input's format.

The output is written to a temporary file beside the target, checked against the original in
real Keras when TensorFlow is installed (unless ``--no-check``), and only then renamed into
place: a failed check (exit 1) or any error (exit 2) leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import EquivalenceError, OutputError
from ..fold import FoldReport, fold_model
from ..model import Model
from ..readers import load
from ..writers import atomic_output, check_target, describe_format, output_format, write_model
from .options import load_kwargs, load_options

__all__ = ["fold", "default_output", "render_report"]

_SUFFIXES = {"keras3-zip": (".keras",), "tfkeras-zip": (".keras",), "keras2-h5": (".h5", ".hdf5"), "keras3-h5": (".h5", ".hdf5")}


def default_output(path: str | Path) -> Path:
    """``<stem>.folded<ext>`` beside the input."""
    p = Path(path)
    return p.with_name(f"{p.stem}.folded{p.suffix}")


def _check_suffix(out: Path, fmt: str, source: Path) -> None:
    allowed = _SUFFIXES.get(fmt, ())
    if out.suffix.lower() in allowed or out.suffix.lower() == source.suffix.lower():
        return
    raise OutputError(f"{out}: a {fmt} file needs the extension {' or '.join(allowed)} (Keras picks the reader by it)")


def _verify(original_path: str, written: Path, *, load_options: dict[str, Any], original: Model, fmt: str) -> dict[str, Any]:
    """The fold's numerical check, original file vs written file (the only call site).

    The result is truthy when it passed and has ``summary()`` and ``to_dict()``.
    """
    from ..fold.keras_check import check_fold

    result = check_fold(original, written, fmt=fmt)
    outcome = result.to_dict()
    outcome["summary"] = result.summary()
    outcome["passed"] = bool(result)
    return outcome


def render_report(report: FoldReport, *, dry_run: bool = False) -> str:
    """The human-readable fold report."""
    t = report.totals
    lines = [report.source]
    fmt = report.output_format or "-"
    lines.append(f"  format   {report.input_format} -> {fmt}")
    lines.append(
        f"  BN       {t['batch_norms']} layers: {t['folded']} folded ({t['backward']} backward, {t['forward']} forward, "
        f"{t['merged']} merged), {t['stays']} stay"
    )
    if report.dropped:
        lines.append(f"  dropped  {len(report.dropped)} inference identities: {', '.join(report.dropped)}")
    if report.created_bias:
        lines.append(f"  bias     created in {len(report.created_bias)} layers: {', '.join(report.created_bias)}")
    largest = report.largest_scale
    if largest is not None:
        lines.append(f"  scale    largest |gamma/sqrt(var+eps)| folded: {largest[0]:.4g} ({largest[1]})")
    if report.batch_norms:
        lines.append("")
        width = max(len(bn.path) for bn in report.batch_norms)
        for bn in report.batch_norms:
            arrow = {"backward": "<- ", "forward": "-> ", "merge": "=> "}.get(bn.action, "")
            what = bn.reason if bn.action == "stays" else f"{arrow}{bn.target}"
            extra = f" (carries {', '.join(bn.absorbed)})" if bn.absorbed else ""
            lines.append(f"  {bn.path.ljust(width)}  {bn.action:<8}  {what}{extra}")
    for note in report.notes:
        lines.append(f"  note     {note}")
    if report.check:
        lines.append(f"  check    {report.check.get('summary') or report.check.get('reason')}")
    if dry_run:
        lines.append("  dry run: nothing written")
    else:
        lines.append(f"  wrote    {report.output}" if report.output else "  nothing written")
    return "\n".join(lines)


def _emit(report: FoldReport, as_json: bool, dry_run: bool) -> None:
    if as_json:
        data = report.to_dict()
        data["dry_run"] = dry_run
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(render_report(report, dry_run=dry_run))


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write (default: <stem>.folded<ext> beside the input).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--dry-run", is_flag=True, help="Plan only: report what would fold, write nothing.")
@click.option("--no-check", is_flag=True, help="Do not compare the folded file with the original in Keras.")
@load_options
def fold(path: str, output: str | None, force: bool, as_json: bool, dry_run: bool, no_check: bool,
         config: str | None, running_std: str, flip_kernels: bool | None) -> None:
    """Fold every BatchNormalization of PATH that can go into its neighbours and write the
    folded model as a Keras file in PATH's own format (a Keras 1 file becomes a Keras 2 .h5)."""
    options = load_kwargs(config, running_std, flip_kernels)
    original = load(path, **options)
    out = Path(output) if output is not None else default_output(path)
    fmt = output_format(original)
    if not dry_run:
        check_target(out, source=path, force=force)
        _check_suffix(out, fmt, Path(path))
        if not original.has_graph:
            raise OutputError(f"{path}: weights only, no architecture: pass the model JSON with --config to fold it")
    folded, report = fold_model(original)
    report.output_format = fmt
    report.notes.append(f"output: {describe_format(fmt, original)}")
    if original.source is not None and original.source.generation != 1 and not original.source.format.endswith("weights"):
        report.notes.append("optimizer state is not copied (the folded model is for inference)")
    if dry_run:
        _emit(report, as_json, True)
        return
    try:
        with atomic_output(out, source=path, force=force) as tmp:
            write_model(folded, tmp, original=original)
            if no_check:
                report.check = {"status": "skipped", "reason": "--no-check", "summary": "not run (--no-check)"}
            else:
                report.check = _verify(path, tmp, load_options=options, original=original, fmt=fmt)
                if not report.check["passed"]:
                    raise EquivalenceError(f"{path}: the folded model differs from the original ({report.check['summary']}); nothing written")
    except EquivalenceError:
        _emit(report, as_json, False)
        raise
    report.output = str(out)
    _emit(report, as_json, False)
