"""``bnconvert verify A B``: run two models on the same inputs and compare every output.

Exit 0 when equivalent, 1 when not, 2 for bad input or usage.
"""

from __future__ import annotations

import json
import os

import click

from ..errors import BnconvertError
from ..text import safe_lines
from .common import FileArg, architecture_for, common_options, is_quiet
from .options import (
    load_options,
    reading_options,
    replace_options,
    replacements_from,
    tolerance_options,
)

__all__ = ["verify"]


@click.command("verify", short_help="Check that two models (Keras or ONNX) compute the same thing.")
@common_options
@click.argument("a", type=FileArg("a model file"))  # bnconvert checks them: one line
@click.argument("b", type=FileArg("a model file"))
@tolerance_options
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the random inputs.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size of the random inputs. When both models declare a dynamic batch, verify also runs "
                   "batch 3 (1 when --batch is above 1) to prove it.")
@click.option("--batches", "batches", default=None, metavar="N[,M...]",
              help="Exactly these batch sizes, one run each (e.g. 4 for one run at 4, or 1,8); replaces --batch.")
@click.option("--regimes", is_flag=True,
              help="Also run normal (mean 0, std 1) and constant (the middle of --range) inputs, each compared "
                   "and reported: negative inputs and inputs without variance.")
@click.option("--range", "value_range", default="0,1", show_default=True, metavar="LOW,HIGH",
              help="Random inputs are uniform in [LOW, HIGH).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:DIMS",
              help="Whole shape of an input with dynamic dimensions, e.g. input_1:1x224x224x3 (repeatable).")
@click.option("--inputs", "inputs_file", type=click.Path(readable=False), default=None,
              help="Real inputs instead of random ones: .npz (arrays named like the inputs), .npy (one input), "
                   "or a folder of .npy files named like the inputs (<input name>.npy).")
@click.option("--locate", is_flag=True, help="When the outputs differ, name the first layer whose output diverges.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--reference", type=click.Choice(["auto", "keras", "float64"]), default="auto", show_default=True,
              help="What runs a Keras file: Keras (needs TensorFlow), bnconvert's float64 reference (numpy, "
                   "independent of the ONNX export), or auto: Keras when it can load the file, else float64.")
@click.option("--ort-optimize", is_flag=True,
              help="Turn onnxruntime's graph optimisations on for ONNX files (off by default: ORT would fold BN itself).")
@load_options
@replace_options
@click.pass_context
def verify(
    ctx: click.Context,
    a: str,
    b: str,
    atol: float,
    rtol: float,
    seed: int,
    batch: int,
    batches: str | None,
    regimes: bool,
    value_range: str,
    input_shapes: tuple[str, ...],
    inputs_file: str | None,
    locate: bool,
    as_json: bool,
    ort_optimize: bool,
    reference: str,
    config: str | None,
    running_std: str,
    flip_kernels: bool | None,
    replace: tuple[str, ...],
    replacements_file: str | None,
    plugins: tuple[str, ...],
) -> None:
    """Check that models A and B compute the same thing.

    A and B are any two of: a Keras file (any generation bnconvert reads), a folded Keras file, an
    ONNX file. A is the reference. Keras files run in Keras when TensorFlow is installed, else in
    bnconvert's float64 reference (numpy, independent of the ONNX export; --reference chooses);
    ONNX files run in onnxruntime on CPU.

    --replace applies to A (the reference), which then runs in the float64 reference: B is
    normally what bnconvert made of A with the same replacements.

    A weights-only A (or B) uses the .json of the same name beside it as its architecture, unless
    --config names one. With --quiet nothing is printed when A and B are equivalent.

    When both models declare a dynamic batch, random inputs run at two batch sizes (--batch and
    3, or 1 when --batch is above 1; --batches chooses), each compared: a batch fixed inside B
    fails at the second size. --regimes adds normal and constant inputs. For classifier-shaped
    outputs (samples x classes) the report gives the share of samples whose top class agrees
    (and top 5 for 1000 classes or more): information beside the pass rule.

    Exit codes: 0 equivalent, 1 not equivalent, 2 bad input or usage.
    """
    from ..check import parse_input_shapes, parse_range
    from ..pipeline import verify as run_verify

    config, companion = _architecture(a, b, config)
    result = run_verify(
        a, b,
        atol=atol, rtol=rtol, seed=seed, batch=batch, batches=_batches(batches), regimes=regimes,
        value_range=parse_range(value_range),
        input_shapes=parse_input_shapes(input_shapes), inputs=inputs_file, locate=locate,
        load_options=reading_options(config, running_std, flip_kernels), ort_optimize=ort_optimize,
        reference=reference, replacements=replacements_from(replace, replacements_file, plugins),
    )
    result.notes[:0] = [companion] if companion else []  # which JSON was read, first
    if result and is_quiet():
        ctx.exit(0)
    # the report's names are escaped where it is made; safe_lines catches anything else
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else safe_lines(result.summary()))
    ctx.exit(0 if result else 1)


def _architecture(a: str, b: str, config: str | None) -> tuple[str | None, str | None]:
    """The one architecture JSON A and B are read with (``--config`` applies to both, and only to
    a weights-only file), and the note naming it: ``--config``, else the JSON beside a
    weights-only A, else beside B. Two weights-only files with different JSONs beside them are
    refused: one ``--config`` cannot serve both."""
    if config is not None:
        return config, None
    (config_a, note_a), (config_b, note_b) = architecture_for(a, None), architecture_for(b, None)
    if config_a is not None and config_b is not None and os.path.realpath(config_a) != os.path.realpath(config_b):
        raise BnconvertError(f"{a} and {b} are both weights-only, with different architecture JSONs beside them "
                             f"({config_a}, {config_b}); give the one that fits both with --config")
    return (config_a, note_a) if config_a is not None else (config_b, note_b)


def _batches(text: str | None) -> tuple[int, ...] | None:
    """``--batches 1,8`` -> ``(1, 8)``: positive integers, comma-separated."""
    if text is None:
        return None
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise BnconvertError(f"--batches {text!r}: expected batch sizes separated by commas, e.g. 1,8") from None
    if any(n < 1 for n in sizes):
        raise BnconvertError(f"--batches {text!r}: batch sizes must be at least 1")
    return tuple(dict.fromkeys(sizes))
