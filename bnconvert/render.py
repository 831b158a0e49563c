"""The human-readable text of every report, in one place: one function per report.

- :func:`fold_text`: a :class:`~bnconvert.fold.FoldReport` (``bnconvert fold``);
- :func:`export_text`: an :class:`~bnconvert.pipeline.ExportReport` (``bnconvert export``);
- :func:`check_headline` and :func:`check_text`: the check fold and export run
  (:class:`~bnconvert.check.CheckResult`), one line or the whole report;
- :func:`verify_text`: a :class:`~bnconvert.check.VerifyResult` (``bnconvert verify``);
- :func:`fp16_text` and :func:`int8_text`: what ``export --fp16`` and ``export --int8`` did;
- the parts those embed: :func:`compare_text` and :func:`output_text` (a comparison and each of
  its outputs, with :func:`histogram_lines`), :func:`locate_text` (``verify --locate``) and
  :func:`agreement_text` (top-class agreement).

The reports are data (their ``to_dict()`` is the JSON the CLI prints); their ``summary()``
methods call these functions. Every line is made safe here: names are data (a layer name may hold
a newline or a terminal escape), so each line passes through :func:`~bnconvert.text.one_line`
where it is made, and a report embedded in another keeps its own line breaks only.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from .text import one_line, safe_lines

if TYPE_CHECKING:
    from .check.compare import CompareResult, OutputComparison
    from .check.locate import LocateResult
    from .check.results import CheckResult, VerifyResult
    from .deploy.fp16 import Fp16Report
    from .deploy.int8 import Int8Report
    from .fold import FoldReport
    from .pipeline import ExportReport
    from .topclass import TopAgreement

__all__ = [
    "agreement_text", "check_headline", "check_text", "compare_text", "export_text", "fold_text", "fp16_text",
    "histogram_lines", "int8_text", "locate_text", "output_text", "plural", "verify_text",
]


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 layer``, ``2 layers``, ``1,036 parameters``: the count and its noun, in agreement
    (``words``: the plural when it is not ``word`` + s)."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


# ---------------------------------------------------------------------------------------- fold
def fold_text(report: FoldReport, *, dry_run: bool = False) -> str:
    """The fold report: formats, BN counts, one line per BN (where it went, or why it stays),
    notes, the check, and what was written."""
    t = report.totals
    lines = [report.source]
    fmt = report.output_format or "-"
    lines.append(f"  format   {report.input_format} -> {fmt}")
    lines.append(
        f"  BN       {plural(t['batch_norms'], 'layer')}: {t['folded']} folded ({t['backward']} backward, {t['forward']} forward, "
        f"{t['merged']} merged), {t['stays']} stay"
    )
    if report.dropped:
        lines.append(f"  dropped  {plural(len(report.dropped), 'inference identity', 'inference identities')}: "
                     f"{', '.join(report.dropped)}")
    if report.created_bias:
        lines.append(f"  bias     created in {plural(len(report.created_bias), 'layer')}: {', '.join(report.created_bias)}")
    largest = report.largest_scale
    if largest is not None:
        lines.append(f"  scale    largest |gamma/sqrt(var+eps)| folded: {largest[0]:.4g} ({largest[1]})")
    if report.batch_norms:
        lines.append("")
        width = max(len(one_line(bn.path)) for bn in report.batch_norms)
        for bn in report.batch_norms:
            arrow = {"backward": "<- ", "forward": "-> ", "merge": "=> "}.get(bn.action, "")
            what = bn.reason if bn.action == "stays" else f"{arrow}{bn.target}"
            extra = f" (carries {', '.join(bn.absorbed)})" if bn.absorbed else ""
            lines.append(f"  {one_line(bn.path).ljust(width)}  {bn.action:<8}  {what}{extra}")
    lines += [f"  note     {note}" for note in report.notes]
    lines = [one_line(line) for line in lines]
    if report.check is not None:  # the check's own report: several lines, its names escaped where it was made
        lines.append(safe_lines(f"  check    {check_text(report.check)}"))
    if dry_run:
        lines.append("  dry run: nothing written")
    else:
        lines.append(one_line(f"  wrote    {report.output}") if report.output else "  nothing written")
    return "\n".join(lines)


def fold_line(report: FoldReport) -> str:
    """One line of fold totals: ``3 of 4 BatchNormalization folded (2 backward, 1 merged), 1 stays``."""
    t = report.totals
    line = f"{t['folded']} of {t['batch_norms']} BatchNormalization folded"
    parts = [f"{t[k]} {k}" for k in ("backward", "forward", "merged") if t[k]]
    if parts:
        line += f" ({', '.join(parts)})"
    if t["stays"]:
        line += f", {t['stays']} {'stays' if t['stays'] == 1 else 'stay'} (exported as BatchNormalization or Mul+Add)"
    return line


# -------------------------------------------------------------------------------------- export
#: the summary's words for ``ExportReport.layout`` (the JSON keeps the short name)
_LAYOUT_WORDS = {"keras": "inputs and outputs shaped as in Keras", "nchw": "image inputs and outputs NCHW"}


def export_text(report: ExportReport) -> str:
    """The export report: the file written, its size and operators, the fold, the check."""
    ops = ", ".join(f"{n} {op}" for op, n in sorted(report.op_types.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
    size = f"{report.size_bytes / 1e6:.1f} MB" + (f" (weights in {os.path.basename(report.external_data)})"
                                                   if report.external_data else "")
    layout = _LAYOUT_WORDS.get(report.layout, report.layout)
    lines = [f"{report.output}: opset {report.opset}, {layout}, {plural(report.nodes, 'node')} ({ops}), "
             f"{plural(report.parameters, 'parameter')}, {size}, {report.seconds:.1f} s"]
    lines.append(f"  fold: {fold_line(report.fold)}" if report.fold is not None else "  fold: skipped (--no-fold)")
    lines = [one_line(line) for line in lines]
    check = report.check
    if check is None:
        lines.append("  check: NOT CHECKED")
    else:  # a failed check: its whole report, its names escaped where it was made
        text = check_headline(check) if check else check_text(check)
        first, *rest = text.split("\n")
        lines.append(one_line(f"  check: {first}"))
        lines += [safe_lines(f"  {line}") for line in rest]
        if check.checked and not check.passed:
            lines.append("  nothing written")
    for part in (report.fp16, report.int8):  # the float16 conversion, the int8 model's agreement
        if part is not None:
            lines += [safe_lines(f"  {line}") for line in part.summary().split("\n")]
    lines += [one_line(f"  note: {n}") for n in report.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- check
#: how a runner kind reads in a one-line headline (reports and JSON keep the kind itself)
_KIND_WORDS = {"reference": "bnconvert's own float64 computation (NumPy, no TensorFlow)"}


def check_headline(result: CheckResult) -> str:
    """One line: the verdict, the numbers it rests on, and what ran each side."""
    if not result.checked:
        return one_line(f"{result.what} check NOT CHECKED: {result.message}")
    verdict = "passed" if result.passed else "FAILED"
    comparison = result.comparison
    worst = comparison.worst if comparison is not None else None
    if comparison is None or worst is None or worst.abs is None:
        numbers = result.message or "no output could be compared"
    else:
        numbers = (f"max |diff| {_fmt(worst.abs.max)} against a bound of {_fmt(worst.bound)} "
                   f"= {result.atol:g} + {result.rtol:g} * max |reference| {_fmt(worst.max_abs_ref)}")
        if len(comparison.outputs) > 1:
            numbers += f" (output '{worst.name}', the closest to its bound)"
    return one_line(
        f"{result.what} check {verdict}: {numbers}; reference: {_KIND_WORDS.get(result.reference_kind, result.reference_kind)}, "
        f"checked: {_KIND_WORDS.get(result.candidate_kind, result.candidate_kind)}"
    )


def check_text(result: CheckResult) -> str:
    """The check's whole report: the headline, what ran each side, the rule, the inputs, notes,
    and for a failure the comparison of every output."""
    from .check.compare import rule_text

    if not result.checked:
        return check_headline(result)
    lines = [f"  reference  {result.reference}", f"  checked    {result.candidate}",
             f"  rule       {rule_text(result.atol, result.rtol)} for every output"]
    if result.inputs:
        shapes = ", ".join(f"{i['name']} [{'x'.join(map(str, i['shape']))}]" for i in result.inputs)
        lines.append(f"  inputs     {shapes}: uniform [0, 1) from seed {result.seed}")
    if result.message and result.comparison is not None:
        lines.append(f"  {result.message}")
    lines.extend(f"  note       {n}" for n in result.notes)
    lines = [check_headline(result)] + [one_line(line) for line in lines]  # one line each: names are data
    if result.comparison is not None and not result.passed:
        lines.extend("  " + line for line in result.comparison.summary().splitlines())
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- verify
def verify_text(result: VerifyResult) -> str:
    """``bnconvert verify``'s report: what ran each side, notes, then per run (one set of inputs:
    a batch size, a regime, the user's file) the inputs, the comparison of every output and the
    top-class agreement of the classifier-shaped ones; the located divergence, and the verdict."""
    lines = [one_line(f"A  {result.runner_a}"), one_line(f"B  {result.runner_b}")]
    notes = [one_line(f"note  {n}") for n in result.notes]
    several = len(result.runs) > 1
    if several:
        lines.extend(notes)
    for k, run in enumerate(result.runs, 1):
        feeds = ", ".join(
            f"{i['name']} [{'x'.join(map(str, i['shape']))}] {i['dtype']}"
            + (f" (B: {i['layout_b']})" if i.get("layout_b") else "")
            for i in run.inputs
        )
        if several:  # one line each: names are data
            lines.append(one_line(f"run {k}/{len(result.runs)} ({run.label}): {run.input_source}"))
            lines.append(one_line(f"inputs  {feeds}"))
        else:
            lines.append(one_line(f"inputs  {feeds}: {run.input_source}"))
            lines.extend(notes)
        if run.message:
            lines.append(one_line(f"{'FAILED: ' if run.comparison is None else '=> '}{run.message}"))
        if run.comparison is not None:
            lines.append(run.comparison.summary())
        lines.extend(one_line(f"agreement  {g.summary()}") for g in run.agreement)
        if result.located is not None and run.label == result.located_run:
            lines.append(result.located.summary())
    if result.located is not None and not result.located_run:
        lines.append(result.located.summary())
    verdict = "EQUIVALENT" if result.passed else "NOT EQUIVALENT"
    if several:
        failed = [r.label for r in result.runs if not r.passed]
        labels = ", ".join(r.label for r in result.runs)
        verdict += (f" in all {len(result.runs)} runs ({labels})" if not failed else
                    f": {', '.join(failed)} failed ({len(failed)} of {len(result.runs)} runs)")
    lines.append(verdict)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- deploy
def fp16_text(report: Fp16Report) -> str:
    """The float16 conversion: what is float16, what stayed float32 and why, the check's tolerance."""
    from .check.compare import rule_text

    io = "float16" if report.io_dtype == "float16" else "float32 (--fp16-io for float16)"
    lines = [f"float16: weights and compute in float16; inputs and outputs {io}; "
             f"{report.float16_initializers} weights float16, {report.float32_initializers} float32, {report.casts} Casts"]
    if report.kept_float32:
        lines.append(f"kept in float32 ({len(report.kept_float32)} layer{'s' if len(report.kept_float32) != 1 else ''}, "
                     "float16 cannot hold their weights):")
        lines += [f"  '{layer}': {reason}" for layer, reason in report.kept_float32]
    else:
        lines.append("every weight fits float16 (no overflow, no channel flushed to zero, "
                     f"none rounded by more than {report.max_rel_error:g})")
    if report.float32_ops:
        ops = ", ".join(f"{n} {op}" for op, n in sorted(report.float32_ops.items()))
        lines.append("computed in float32 by their operator (no float16 at this opset, integer-valued, or a "
                     f"Transpose-MatMul pair onnxruntime cannot load in float16): {ops}")
    lines.append(f"check tolerance for float16: {rule_text(report.atol, report.rtol)}")
    return "\n".join(map(one_line, lines))


def int8_text(report: Int8Report) -> str:
    """The int8 quantisation, a line per fact: how, the graph and size, each output's agreement."""
    ratio = f" ({100 * report.int8_bytes / report.float_bytes:.0f}% of the float model)" if report.float_bytes else ""
    lines = [
        f"int8: static QDQ quantisation by onnxruntime, {report.weights} weights "
        f"{'per output channel' if report.per_channel else 'per tensor'}, {report.activations} activations, "
        f"{report.calibration_method} calibration on {report.samples} sample{'s' if report.samples != 1 else ''}",
        f"  {report.quantize_nodes} QuantizeLinear and {report.dequantize_nodes} DequantizeLinear nodes; "
        f"{report.float_bytes:,} bytes -> {report.int8_bytes:,} bytes{ratio}",
        "  against the float model on the calibration data:",
    ]
    for o in report.outputs:
        text = (f"  output '{one_line(o.name)}': max abs error {o.max_abs:.3g} ({100 * o.rel:.2f}% of the float output's "
                f"largest magnitude), mean abs error {o.mean_abs:.3g}")
        if o.top1 is not None:
            text += f"; top class agrees on {100 * o.top1:.1f}% of samples"
        if o.top5 is not None:
            text += f", float top class within int8 top 5 on {100 * o.top5:.1f}%"
        lines.append(text)
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)

# ----------------------------------------------------------------------------------- comparisons
def histogram_lines(bins: list[tuple[float, float, int]], *, width: int = 30) -> list[str]:
    """Text bars, one per bin."""
    if not bins:
        return []
    top = max(n for _, _, n in bins) or 1
    lines = ["abs diff histogram:"]
    for lo, hi, n in bins:
        label = "        == 0       " if hi == 0 else f"[{lo:8.0e}, {hi:8.0e})"
        lines.append(f"  {label} {n:>9} {'#' * max(1 if n else 0, round(width * n / top))}")
    return lines


def output_text(o: OutputComparison) -> str:
    """One output's comparison: verdict, statistics, worst element, histogram."""
    label = o.name if o.name == o.name_b else f"{o.name} / {o.name_b}"
    head = f"output '{label}' {o.shape_a}: {'PASSED' if o.passed else 'FAILED'}"
    lines = [head]
    if o.message:
        lines.append(f"  {o.message}")
    if o.abs is None or o.rel is None:
        return "\n".join(map(one_line, lines))
    lines.append(
        f"  mismatches {o.mismatches}/{o.total} (|diff| > {o.atol:g} + {o.rtol:g} * max|A| {o.max_abs_ref:.4g}"
        f" = {o.bound:.4g})"
    )
    for title, s in (("abs diff", o.abs), ("rel diff", o.rel)):
        lines.append(
            f"  {title}  max {s.max:.4g}  mean {s.mean:.4g}  median {s.median:.4g}  "
            f"p90 {s.p90:.4g}  p95 {s.p95:.4g}  p99 {s.p99:.4g}"
        )
    if o.worst_index is not None:
        lines.append(
            f"  worst abs at {list(o.worst_index)}: A={o.worst_a:.8g} B={o.worst_b:.8g}; "
            f"max |A| {o.max_abs_ref:.4g}, normalized error {o.normalized_error:.3g}"
        )
    for side, counts in (("A", o.nonfinite_a), ("B", o.nonfinite_b)):
        if any(counts.values()):
            lines.append(f"  {side} holds {counts.get('nan', 0)} NaN and {counts.get('inf', 0)} Inf")
    lines.extend("  " + line for line in histogram_lines(o.histogram))
    lines = [one_line(line) for line in lines]  # one line each: output names are data
    return "\n".join(lines)


def compare_text(result: CompareResult) -> str:
    """The verdict of a comparison, then each output's comparison."""
    from .check.compare import rule_text

    verdict = "PASSED" if result.passed else "FAILED"
    ok = sum(map(bool, result.outputs))
    lines = [f"{verdict}: {ok}/{len(result.outputs)} outputs within {rule_text(result.atol, result.rtol)}"]
    lines.extend(map(one_line, result.messages))  # names are data
    lines.extend(output_text(o) for o in result.outputs)
    return "\n".join(lines)


def locate_text(result: LocateResult) -> str:
    """``verify --locate``: the layers compared, up to the first that differs, and those skipped."""
    lines = [f"locate: {result.message}"]
    for d in result.layers:
        mark = "ok  " if d.passed else "FAIL"
        pair = d.name if d.name == d.name_b else f"{d.name} ~ {d.name_b}"
        extra = f"  ({d.note})" if d.note else ""
        lines.append(f"  {mark} {pair}: max |diff| {d.max_abs:.3g}, {d.mismatches}/{d.total} elements off{extra}")
        if not d.passed:
            break
    if result.skipped:
        shown = ", ".join(f"{n} ({why})" for n, why in result.skipped[:8])
        more = f" and {len(result.skipped) - 8} more" if len(result.skipped) > 8 else ""
        lines.append(f"  not compared: {shown}{more}")
    return "\n".join(map(one_line, lines))  # one line each: layer names are data


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%".replace(".0%", "%")


def agreement_text(agreement: TopAgreement) -> str:
    """One line: ``output 'probs' (4 x 10 classes): top class agrees on 4/4 samples (100%)``."""
    label = agreement.output if agreement.output == agreement.name_b else f"{agreement.output} / {agreement.name_b}"
    text = (f"output '{label}' ({agreement.samples} x {agreement.classes} classes): top class agrees on "
            f"{agreement.top1}/{agreement.samples} {'sample' if agreement.samples == 1 else 'samples'} ({_pct(agreement.top1_share)})")
    if agreement.top5 is not None and agreement.top5_share is not None:
        text += f"; A's top class in B's top 5 on {agreement.top5}/{agreement.samples} ({_pct(agreement.top5_share)})"
    return text
