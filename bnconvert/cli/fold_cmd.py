"""``bnconvert fold``: fold every BatchNormalization that can go, write a Keras file in the input's format.

All the work is :func:`bnconvert.pipeline.fold_file`; this module parses options and prints
(:func:`bnconvert.render.fold_text`).
"""

from __future__ import annotations

import json

import click

from ..errors import EquivalenceError
from ..fold import FoldReport
from ..pipeline import fold_file
from ..render import fold_text
from .common import FileArg, OutputArg, architecture_for, common_options, say
from .options import (
    keep_option,
    load_options,
    reading_options,
    replace_options,
    replacements_from,
    require_check_option,
    tolerance_options,
)

__all__ = ["fold"]


def _emit(report: FoldReport, as_json: bool, dry_run: bool, *, failed: bool = False) -> None:
    """The report on stdout: not with ``--quiet`` on success, always when the check failed."""
    echo = click.echo if failed else say
    if as_json:
        data = report.to_dict()
        data["dry_run"] = dry_run
        echo(json.dumps(data, indent=2))
    else:
        echo(fold_text(report, dry_run=dry_run))


@click.command(short_help="Fold BatchNormalization away; write a checked Keras file.")
@common_options
@click.argument("path", type=FileArg("a model file"))  # bnconvert checks it: one line
@click.option("-o", "--output", type=OutputArg(), default=None,
              help="Where to write (default: <stem>.folded<ext> beside the input; .h5 for an HDF5 file named .keras).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--dry-run", is_flag=True, help="Plan only: report what would fold, write nothing.")
@click.option("--no-check", is_flag=True, help="Do not compare the folded file with the original (it is marked NOT CHECKED).")
@keep_option
@tolerance_options
@require_check_option
@load_options
@replace_options
def fold(path: str, output: str | None, force: bool, as_json: bool, dry_run: bool, no_check: bool, keep: tuple[str, ...],
         atol: float, rtol: float, require_check: bool, config: str | None, running_std: str, flip_kernels: bool | None, replace: tuple[str, ...],
         replacements_file: str | None, plugins: tuple[str, ...]) -> None:
    """Fold every BatchNormalization of PATH that can go into its neighbours and write the
    folded model as a Keras file in PATH's own format (a Keras 1 file becomes a Keras 2 .h5).

    The file is kept only when it computes what PATH computes: |A-B| <= atol + rtol * max|A| for
    every output on random inputs (exit 1 otherwise, nothing written). When no check can run
    (--no-check, a Lambda no runtime may execute) the file is written and marked NOT CHECKED;
    --require-check makes that exit 1 instead.

    With --replace, the file written is the replaced model (it loads in Keras without the Lambda
    or custom class), and the check compares it with the replaced model.

    A weights-only PATH uses the .json of the same name beside it as its architecture, unless
    --config names one."""
    config, companion = architecture_for(path, config)
    options = reading_options(config, running_std, flip_kernels)
    replacements = replacements_from(replace, replacements_file, plugins)
    try:
        report = fold_file(path, output, force=force, dry_run=dry_run, check=not no_check, load_options=options,
                           replacements=replacements, keep=keep, atol=atol, rtol=rtol, require_check=require_check)
    except EquivalenceError as exc:  # the report (with the check's numbers) once on stdout, the error on stderr
        if isinstance(exc.report, FoldReport):
            exc.report.notes[:0] = [companion] if companion else []
            _emit(exc.report, as_json, False, failed=True)
        raise
    report.notes[:0] = [companion] if companion else []  # which JSON was read, first
    _emit(report, as_json, dry_run)
