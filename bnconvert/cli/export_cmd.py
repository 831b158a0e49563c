"""``bnconvert export``: Keras file -> ONNX, BN folded first, checked against the original."""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import click

from ..errors import BnconvertError, OutputError
from ..io import check_output
from ..text import one_line, safe_lines
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

__all__ = ["export"]


class UsageError(BnconvertError):
    """Options that contradict each other (exit 2, one line)."""


@click.command(short_help="Export a Keras model to checked ONNX (BN folded first).")
@common_options
@click.argument("path", type=FileArg("a model file"))  # bnconvert checks it: one line
@click.option("-o", "--output", "output", required=True, type=OutputArg(), help="The ONNX file to write (.onnx).")
@click.option("--force-extension", is_flag=True,
              help="Write OUTPUT even when its name does not end in .onnx.")
@click.option("--no-fold", is_flag=True, help="Export BatchNormalization as it is instead of folding it first.")
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True, help="ONNX opset (13 to 21).")
@click.option("--nchw", is_flag=True, help="Make image inputs and outputs NCHW (default: the Keras layout).")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--no-check", is_flag=True, help="Skip the numerical check against the original model.")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON.")
@click.option("--fp16", is_flag=True,
              help="Weights and compute in float16 (folded in float64 first); inputs and outputs stay float32. "
                   "Checked with float16's tolerance, stated in the report.")
@click.option("--fp16-io", is_flag=True, help="With --fp16: float16 inputs and outputs too.")
@click.option("--fp16-risky", type=click.Choice(["keep", "refuse"]), default="keep", show_default=True,
              help="With --fp16, a layer whose weights float16 cannot hold (overflow past 65504, a channel "
                   "flushed to zero, rounding beyond 1%): keep it in float32 (listed), or refuse the export.")
@click.option("--int8", is_flag=True,
              help="Static int8 quantisation (QDQ, per-channel weights) of the checked float32 export, calibrated "
                   "on --calibration; the report gives its error and top-class agreement on those samples.")
@click.option("--calibration", type=click.Path(), default=None, metavar="DATA",
              help="With --int8: representative inputs, a .npz with arrays named like the inputs (samples first) "
                   "or a folder of NAME.npy files; 32 or more samples.")
@click.option("--int8-activations", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True,
              help="With --int8: the activations' type. uint8 runs more of the graph in integer kernels on x86 CPUs "
                   "(ResNet50 here: 0.39 of float32's time, against 0.72) at a risk of saturation on CPUs without VNNI.")
@keep_option
@tolerance_options
@require_check_option
@load_options
@replace_options
def export(path: str, output: str, force_extension: bool, no_fold: bool, opset: int, nchw: bool, force: bool, no_check: bool, as_json: bool,
           fp16: bool, fp16_io: bool, fp16_risky: Literal["keep", "refuse"], int8: bool, calibration: str | None,
           int8_activations: Literal["int8", "uint8"], keep: tuple[str, ...],
           atol: float, rtol: float, require_check: bool, config: str | None, running_std: str, flip_kernels: bool | None, replace: tuple[str, ...],
           replacements_file: str | None, plugins: tuple[str, ...]) -> None:
    """Export the Keras model PATH to ONNX.

    The ONNX model takes and returns tensors like the Keras model (same names and layout, dynamic
    batch size) unless --nchw. It is written only when it passes onnx.checker, shape inference and
    the numerical check, |A-B| <= atol + rtol * max|A| for every output (exit 1 when that check
    fails; with --no-check the report says NOT CHECKED, and --require-check makes that exit 1); an
    unsupported layer stops the export (exit 2) with every such layer named.

    OUTPUT must end in .onnx (--force-extension to write another name). A weights-only PATH uses
    the .json of the same name beside it as its architecture, unless --config names one.
    """
    from ..errors import EquivalenceError
    from ..pipeline import export_file

    config, companion = architecture_for(path, config)
    check_output(output, force=force, inputs=[path, config, calibration])  # an input named as the output is said first
    _onnx_name(output, force_extension)
    precision = _precision(fp16, fp16_io, int8, calibration, int8_activations, no_fold, keep)
    replacements = replacements_from(replace, replacements_file, plugins)
    try:
        report = export_file(
            path, output, opset=opset, nchw=nchw, fold=not no_fold, keep=keep, precision=precision, fp16_io=fp16_io,
            fp16_risky=fp16_risky, calibration=calibration, int8_activations=int8_activations, force=force,
            check=not no_check,
            load_options=reading_options(config, running_std, flip_kernels), replacements=replacements,
            atol=atol, rtol=rtol, require_check=require_check,
        )
    except EquivalenceError as exc:  # the report (with the check's numbers) once on stdout, the error on stderr
        if exc.report is not None:
            exc.report.notes[:0] = [companion] if companion else []
            _emit(exc.report, as_json, replacements, failed=True)
        raise
    report.notes[:0] = [companion] if companion else []  # which JSON was read, first
    _emit(report, as_json, replacements)


def _precision(fp16: bool, fp16_io: bool, int8: bool, calibration: str | None, int8_activations: str, no_fold: bool,
               keep: tuple[str, ...]) -> Literal["float32", "float16", "int8"]:
    """The precision the options ask for, their contradictions refused in one line."""
    from ..deploy.int8 import refuse_without_calibration

    if fp16 and int8:
        raise UsageError("--fp16 and --int8 exclude each other")
    if fp16_io and not fp16:
        raise UsageError("--fp16-io needs --fp16")
    if calibration is not None and not int8:
        raise UsageError("--calibration is for --int8")
    if int8_activations != "int8" and not int8:
        raise UsageError("--int8-activations is for --int8")
    if int8 and calibration is None:
        raise refuse_without_calibration()
    if no_fold and keep:
        raise UsageError("--keep and --no-fold: with --no-fold every BatchNormalization stays already")
    return "float16" if fp16 else "int8" if int8 else "float32"


def _onnx_name(output: str, force_extension: bool) -> None:
    """An ONNX file is named ``.onnx``: under a Keras extension (``-o out.h5``) it would pass for a
    Keras file, as ``fold`` refuses the reverse; with no extension nothing tells what it holds."""
    suffix = os.path.splitext(output)[1]
    if suffix.lower() == ".onnx" or force_extension:
        return
    what = f"not {suffix}" if suffix else "this name has no extension"
    raise OutputError(f"{output}: an ONNX file is named .onnx ({what}); rename it or pass --force-extension")


def _emit(report: Any, as_json: bool, replacements: list[Any], *, failed: bool = False) -> None:
    """The report on stdout: not with ``--quiet`` on success, always when the check failed."""
    echo = click.echo if failed else say
    replaced = [f"'{r.target}' by {r.describe()}" for r in replacements]
    if as_json:
        echo(json.dumps({**report.to_dict(), "replaced": replaced}, indent=2, default=str))
    else:
        echo(safe_lines(report.summary()))  # names escaped where the summary is made
        for line in replaced:  # the ONNX computes the replaced model, and was checked against it
            echo(one_line(f"  replaced: {line} (the check's reference is the replaced model, not the file as written)"))
