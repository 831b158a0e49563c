"""``bnconvert inspect``: every BN layer of one or many models, its statistics, its fold and its findings.

Files and folders in, one record per model file out (table, JSON, JSONL or CSV on stdout), a
progress line and a closing summary on stderr, optionally a PNG. The work is in
:mod:`bnconvert.batch` (finding, parallel reading, totals) and :mod:`bnconvert.plot`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sys
import time
from typing import Any, TextIO

import click

from ..batch import AuditOptions, Summary, audit_records, collect, is_error
from ..errors import BnconvertError
from ..io import InputSet
from ..provenance import provenance_line
from ..text import one_line
from .common import OutputArg, common_options, is_quiet, plural
from .options import load_options, reading_options, replace_options, replacements_from

__all__ = ["CSV_COLUMNS", "csv_rows", "has_findings", "inspect", "render_table"]


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}"


def _triple(stats: dict[str, Any], key: str) -> str:
    s = stats.get(key) or {}
    return "/".join(_num(s.get(k)) for k in ("min", "median", "max"))


def _fold_cell(fold: dict[str, Any]) -> str:
    action = fold["action"]
    if action == "stays":
        return "stays"
    arrow = {"backward": "<-", "forward": "->", "merge": "=>"}[action]
    return f"{arrow} {fold['target']}"


def render_table(report: dict[str, Any]) -> str:
    """The human-readable form of one file's audit. Names are data: every control character in
    them is escaped (:func:`bnconvert.text.one_line`), so no name can start a line of its own or
    send the terminal an escape sequence."""
    if report.get("format") == "onnx":
        return _onnx_table(report)
    lines = [f"{report['file']}"]
    version = report["keras_version"] or "unknown version"
    origin = report["backend_origin"]
    backend = f"backend {report['backend']} [{origin}]" if report["backend"] else f"backend {origin}"
    lines.append(f"  format   {report['format']} (Keras {version}); {backend}")
    if report.get("provenance"):  # a file bnconvert made: how, from what, with which check
        lines.append(f"  made     {provenance_line(report['provenance']).removeprefix('made ')}")
    if report.get("running_std"):  # Keras 1 only
        lines.append(f"  keras 1  running_std read as {report['running_std']}")
    if report.get("kernels_flipped"):  # Theano wrote the kernels: Keras 1 or Keras 2 (2.0-2.1.x Theano backend)
        lines.append("  theano   conv kernels flipped to cross-correlation")
    lines.append(f"  model    {report['model_kind']}, {plural(report['layers'], 'layer')}, "
                 f"{plural(report['parameters'], 'parameter')}")
    for note in report.get("notes", []):
        lines.append(f"  note     {note}")
    lines += _opaque_lines(report)
    bns = report["batch_norms"]
    summary = report["summary"]
    lines.append(f"  BN       {plural(summary['batch_norms'], 'layer')}, {summary['foldable']} can fold")
    if not bns:
        return "\n".join(lines)
    header = ["name", "ch", "axis", "eps", "input from", "gamma min/med/max", "beta", "mean", "variance", "fold"]
    rows = []
    for bn in bns:
        st = bn["statistics"]
        src = bn["input_from"]
        rows.append([
            bn["name"], str(bn["channels"]), ",".join(str(a) for a in bn["axis"]) or "?",
            _num(bn["epsilon"]) if bn["epsilon"] is not None else "?",
            f"{src['layer']} ({src['class']})" if src else "-",
            _triple(st, "gamma"), _triple(st, "beta"), _triple(st, "moving_mean"), _triple(st, "moving_variance"),
            _fold_cell(bn["fold"]),
        ])
    rows = [[one_line(c) for c in row] for row in rows]  # escaped before measuring: columns stay aligned
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("")
    lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    stays = [bn for bn in bns if bn["fold"]["action"] == "stays"]
    if stays:
        lines.append("")
        lines.append("  Why these BN stay:")
        for bn in stays:
            lines.append(f"    {bn['name']}: {bn['fold']['reason']}")
    found = [(bn["name"], f) for bn in bns for f in bn["findings"]]
    if found:
        lines.append("")
        lines.append("  Findings:")
        for name, f in found:
            lines.append(f"    [{f['severity']}] {name}: {f['kind']}: {f['message']}")
    return "\n".join(map(one_line, lines))


def _onnx_table(report: dict[str, Any]) -> str:
    """An ONNX file bnconvert wrote: how it was made, and its fold log (where each BN went, why
    each remaining one stays), from the stamp in its metadata."""
    lines = [f"{report['file']}", "  format   ONNX"]
    stamp = report.get("provenance")
    if stamp:
        lines.append(f"  made     {provenance_line(stamp).removeprefix('made ')}")
        options = stamp.get("options") or {}
        facts = ", ".join(f"{k} {options[k]}" for k in ("opset", "layout", "precision") if k in options)
        if facts:
            lines.append(f"  options  {facts}")
        if options.get("check_of"):  # an int8 export: the check was of the float32 model it came from
            lines.append(f"  checked  {options['check_of']}")
        int8: dict[str, Any] = options["int8"] if isinstance(options.get("int8"), dict) else {}
        for out in int8.get("outputs") or []:
            if isinstance(out, dict) and isinstance(out.get("rel"), (int, float)):
                top = f", top class agrees on {100 * out['top1']:.1f}% of samples" if isinstance(out.get("top1"), (int, float)) else ""
                lines.append(f"  int8     output '{out.get('name')}' against the float model on {int8.get('samples')} calibration "
                             f"samples: max |diff| / max |float| {out['rel']:.2g}{top}")
    lines += [f"  note     {note}" for note in report.get("notes", [])]
    log = [entry for entry in report.get("fold_log", []) if isinstance(entry, dict)]
    if log:
        lines.append("")
        width = max(len(one_line(entry.get("name"))) for entry in log)
        for entry in log:
            arrow = {"backward": "<- ", "forward": "-> ", "merge": "=> "}.get(str(entry.get("action")), "")
            what = entry.get("reason") if entry.get("action") == "stays" else f"{arrow}{entry.get('target')}"
            lines.append(f"  {one_line(entry.get('name')).ljust(width)}  {entry.get('action')!s:<8}  {what}")
    return "\n".join(map(one_line, lines))


def _shape(shape: Any) -> str:
    return "?" if shape is None else "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _opaque_lines(report: dict[str, Any]) -> list[str]:
    """The Lambda and custom layers (:func:`bnconvert.replace.opaque_layers`), each with a
    ``--replace`` line to edit, and what was replaced."""
    lines = [f"  replaced {what}" for what in report.get("replaced", [])]
    layers = report.get("opaque_layers") or []
    if not layers:
        return lines
    lines.append(f"  code     {len(layers)} Lambda/custom layer{'s' if len(layers) > 1 else ''}: bnconvert never runs "
                 "them; replace each with what it computes (edit the line: Identity is a placeholder)")
    for item in layers:
        where = [f"module {item['module']}" if item.get("module") else "",
                 f"registered as {item['registered_name']}" if item.get("registered_name") else "",
                 f"function {item['function']}" if item.get("function") else "",
                 "registered with bnconvert.register_layer" if item.get("registered") else ""]
        ins = ", ".join(_shape(s) for s in item.get("input_shapes") or []) or "?"
        weights = ", ".join(f"{w['name']} {_shape(w['shape'])}" for w in item.get("weights") or []) or "none"
        lines.append(f"    {item['name']} ({item['class']}): " + "; ".join(w for w in where if w)
                     + ("; " if any(where) else "") + f"input {ins} -> output {_shape(item.get('output_shape'))}; "
                     f"weights {weights}")
        lines.append(f"      {item['replace']}")
    return lines


def has_findings(report: dict[str, Any]) -> bool:
    """True when a report has a finding of severity warning or error (what ``--strict`` fails on)."""
    return any(f["severity"] in ("warning", "error") for bn in report["batch_norms"] for f in bn["findings"])


CSV_COLUMNS = [
    "file", "format", "keras_version", "bn", "channels", "axis", "epsilon", "input_from",
    "fold_action", "fold_target", "fold_reason",
    "gamma_min", "gamma_median", "gamma_max", "beta_min", "beta_median", "beta_max",
    "mean_min", "mean_median", "mean_max", "variance_min", "variance_median", "variance_max",
    "findings", "error",
]

_STATS = (("gamma", "gamma"), ("beta", "beta"), ("mean", "moving_mean"), ("variance", "moving_variance"))


def _cell(value: Any) -> Any:
    return "" if value is None else value


def csv_rows(record: dict[str, Any]) -> list[list[Any]]:
    """A record flattened to rows of :data:`CSV_COLUMNS`: one per BN layer.

    A file without BN layers gets one row with empty BN columns (so every file appears), and an
    error record one row with only ``file`` and ``error``.
    """
    blank = dict.fromkeys(CSV_COLUMNS, "")
    if is_error(record):
        return [[_csv_safe(v) for v in {**blank, "file": record["file"], "error": record["error"]}.values()]]
    base = {**blank, "file": record["file"], "format": record["format"], "keras_version": _cell(record["keras_version"])}
    if record["format"] == "onnx" and record.get("fold_log"):  # what its stamp says of each BN
        return [[_csv_safe(v) for v in {**base, "bn": _cell(e.get("name")), "fold_action": _cell(e.get("action")),
                                        "fold_target": _cell(e.get("target")), "fold_reason": _cell(e.get("reason"))}.values()]
                for e in record["fold_log"] if isinstance(e, dict)]
    if not record["batch_norms"]:
        return [[_csv_safe(v) for v in base.values()]]
    rows = []
    for bn in record["batch_norms"]:
        row = dict(base)
        src = bn["input_from"]
        row.update({
            "bn": bn["name"],
            "channels": bn["channels"],
            "axis": ",".join(str(a) for a in bn["axis"]),
            "epsilon": _cell(bn["epsilon"]),
            "input_from": f"{src['layer']} ({src['class']})" if src else "",
            "fold_action": bn["fold"]["action"],
            "fold_target": _cell(bn["fold"]["target"]),
            "fold_reason": _cell(bn["fold"]["reason"]),
            "findings": ";".join(f["kind"] for f in bn["findings"]),
        })
        for column, key in _STATS:
            stats = bn["statistics"].get(key) or {}
            for part in ("min", "median", "max"):
                row[f"{column}_{part}"] = _cell(stats.get(part))
        rows.append([_csv_safe(v) for v in row.values()])
    return rows


def _csv_safe(value: Any) -> Any:
    """A CSV cell that is safe in a terminal and in a spreadsheet: control characters escaped
    (one row stays one line), and a text that a spreadsheet would run as a formula (``=``, ``+``,
    ``-``, ``@`` first) prefixed with ``'``. Numbers are left alone."""
    if not isinstance(value, str):
        return value
    value = one_line(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@") and not _NUMBERS.fullmatch(value) else value


_NUMBERS = re.compile(r"[-+]?[0-9.e+-]+(,[-+]?[0-9.e+-]+)*")  # an axis list such as -1 or 1,-1 stays as it is


class _Progress:
    """A one-line ``\\r`` progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.shown = False
        self.last = 0.0

    def update(self, done: int, failed: int, current: str) -> None:
        now = time.monotonic()
        if not self.enabled or (self.shown and now - self.last < 0.1 and done < self.total):
            return
        self.last = now
        columns = shutil.get_terminal_size((80, 20)).columns
        filled = int(20 * done / max(self.total, 1))
        text = f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total} files"
        if failed:
            text += f", {failed} failed"
        room = columns - len(text) - 3
        name = one_line(os.path.basename(current))
        if room > 10:
            text += "  " + (name if len(name) <= room else "..." + name[-(room - 3):])
        self.stream.write("\r" + text[: columns - 1].ljust(columns - 1))
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            columns = shutil.get_terminal_size((80, 20)).columns
            self.stream.write("\r" + " " * (columns - 1) + "\r")
            self.stream.flush()
            self.shown = False


class _Writer:
    """Streams records to stdout in one format, one record at a time."""

    def __init__(self, fmt: str, single: bool, quiet: bool = False) -> None:
        self.fmt, self.single, self.count, self.tables, self.quiet = fmt, single, 0, 0, quiet

    def write(self, record: dict[str, Any]) -> None:
        first = self.count == 0
        self.count += 1
        if self.quiet:
            return
        if self.fmt == "table":
            if not is_error(record):  # errors go to stderr, one line each
                click.echo(("\n" if self.tables else "") + render_table(record))
                self.tables += 1
        elif self.fmt == "json":
            text = json.dumps(record, indent=2)
            click.echo(text if self.single else ("[\n" if first else ",\n") + text, nl=self.single)
        elif self.fmt == "jsonl":
            click.echo(json.dumps(record, separators=(",", ":")))
        else:
            buffer = io.StringIO()
            out = csv.writer(buffer, lineterminator="\n")
            if first:
                out.writerow(CSV_COLUMNS)
            out.writerows(csv_rows(record))
            click.echo(buffer.getvalue(), nl=False)

    def close(self) -> None:
        if self.fmt == "json" and not self.single and not self.quiet:
            click.echo("[]" if self.count == 0 else "\n]")


def _one_line(record: dict[str, Any]) -> str:
    message = record["error"]
    return one_line(message if message.startswith(record["file"]) else f"{record['file']}: {message}")


@click.command(short_help="Report the BatchNormalization layers of model files and folders.")
@common_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(readable=False))
@click.option("--recursive", "-r", is_flag=True, help="Search folders and their subfolders.")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=1, show_default=True,
              help="Read files in this many processes (0: one per CPU).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "jsonl", "csv"]), default=None,
              help="table (default), json (an object, a list for several files), jsonl (one record "
                   "per model file) or csv (one row per BN layer).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--plot", "plot_path", type=OutputArg(), default=None,
              help="Draw the BN scales, variances and findings into this image (needs bnconvert[plot]).")
@click.option("--force", is_flag=True, help="Replace an existing --plot image.")
@click.option("--strict", is_flag=True, help="Exit 1 when any warning or error finding exists.")
@load_options
@replace_options
def inspect(paths: tuple[str, ...], recursive: bool, jobs: int, fmt: str | None, as_json: bool,
            plot_path: str | None, force: bool, strict: bool, config: str | None, running_std: str,
            flip_kernels: bool | None, replace: tuple[str, ...], replacements_file: str | None,
            plugins: tuple[str, ...]) -> None:
    """Report every BatchNormalization layer of PATHS (model files and folders), and every Lambda
    and custom layer with what the file tells of it (nothing is run) and a --replace line to edit.

    In folders, model files are recognised by content and everything else is skipped (counted in
    the summary); a weights-only model.h5 uses a model.json beside it as its architecture. A file
    that cannot be read becomes an error record and the exit code is 2 at the end; --strict exits
    1 on findings. --replace applies to every file read (one that names no layer of a file is an
    error for that file); with --plugin, files are read in this process (-j 1). A weights-only
    model.h5 named on the command line uses the model.json beside it too, unless --config is given.
    --quiet prints no records and no summary (errors only): for the exit code (--strict) or --plot.
    """
    if as_json and fmt not in (None, "json"):
        raise click.UsageError("--json is --format json; it cannot be combined with --format " + str(fmt))
    fmt = "json" if as_json else (fmt or "table")
    plot_data = None
    inputs = InputSet([*paths, config])  # the image may be none of the files read, nor in a folder run
    if plot_path is not None:
        from ..plot import PlotData, check_target, require_matplotlib

        require_matplotlib()
        check_target(plot_path, force=force, inputs=inputs)
        plot_data = PlotData()
    found = collect(paths, recursive=recursive, config=config)
    if plot_path is not None:
        for task in found.tasks:
            inputs.add(task.path, task.config, task.companion)
        check_target(plot_path, force=force, inputs=inputs)
    for problem in found.unreadable:
        click.echo(f"bnconvert: error: {one_line(problem)}", err=True)
    many = found.folders or len(found.tasks) > 1
    if not found.tasks:
        others = f"{found.skipped} other {'file' if found.skipped == 1 else 'files'} skipped"
        hint = "; add --recursive to search subfolders" if found.unsearched else ""
        raise BnconvertError(f"no model file found in {', '.join(paths)} ({others}{hint})")
    jobs = min(jobs or os.cpu_count() or 1, len(found.tasks))
    stderr = sys.stderr  # click.get_text_stream is deprecated from click 8.5
    progress = _Progress(len(found.tasks), stderr, enabled=many and stderr.isatty() and not is_quiet())
    shared_terminal = progress.enabled and sys.stdout.isatty()
    quiet = is_quiet()
    writer = _Writer(fmt, single=not many, quiet=quiet)
    summary = Summary()
    flagged = False
    replacements = replacements_from(replace, replacements_file, plugins)
    options = AuditOptions(reading_options(None, running_std, flip_kernels), tuple(replacements))
    if plugins:  # the registrations live in this process only
        jobs = 1
    records = audit_records(found.tasks, jobs=jobs, options=options)
    for record in records:
        summary.add(record)
        if shared_terminal or is_error(record):
            progress.clear()
        if is_error(record):
            click.echo(f"bnconvert: error: {_one_line(record)}", err=True)
        else:
            flagged = flagged or has_findings(record)
        writer.write(record)
        if plot_data is not None:
            plot_data.add(record)
        progress.update(summary.files, summary.failed, record["file"])
    writer.close()
    progress.clear()
    if many and not quiet:
        for line in summary.lines(found):
            click.echo(one_line(line), err=True)
    if plot_data is not None and plot_path is not None:
        from ..plot import plot_records

        plot_records(plot_data, plot_path, force=force, inputs=inputs)
        if not quiet:
            click.echo(f"plot written to {one_line(plot_path)}", err=True)
    if summary.failed or found.unreadable:
        raise SystemExit(2)
    if strict and flagged:
        raise SystemExit(1)
