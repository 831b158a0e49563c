"""``bnconvert inspect``: every BN layer of a model, its statistics, its fold and its findings."""

from __future__ import annotations

import json
from typing import Any

import click

from ..audit import audit_file
from .options import load_kwargs, load_options

__all__ = ["inspect", "render_table"]


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
    """The human-readable form of one file's audit."""
    lines = [f"{report['file']}"]
    version = report["keras_version"] or "unknown version"
    backend = report["backend"] or "backend not recorded"
    lines.append(f"  format   {report['format']} (Keras {version}); backend {backend} [{report['backend_origin']}]")
    extra = []
    if report.get("running_std"):
        extra.append(f"running_std read as {report['running_std']}")
    if report.get("kernels_flipped"):
        extra.append("Theano kernels flipped to cross-correlation")
    if extra:
        lines.append("  keras 1  " + "; ".join(extra))
    lines.append(f"  model    {report['model_kind']}, {report['layers']} layers, {report['parameters']:,} parameters")
    for note in report.get("notes", []):
        lines.append(f"  note     {note}")
    bns = report["batch_norms"]
    summary = report["summary"]
    lines.append(f"  BN       {summary['batch_norms']} layers, {summary['foldable']} can fold")
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
    return "\n".join(lines)


def has_findings(report: dict[str, Any]) -> bool:
    """True when a report has a finding of severity warning or error (what ``--strict`` fails on)."""
    return any(f["severity"] in ("warning", "error") for bn in report["batch_norms"] for f in bn["findings"])


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file (a list for several files).")
@click.option("--strict", is_flag=True, help="Exit 1 when any warning or error finding exists.")
@load_options
def inspect(paths: tuple[str, ...], as_json: bool, strict: bool, config: str | None, running_std: str,
            flip_kernels: bool | None) -> None:
    """Report every BatchNormalization layer of PATHS: parameters, fold, findings."""
    options = load_kwargs(config, running_std, flip_kernels)
    reports = [audit_file(path, **options) for path in paths]
    if as_json:
        click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        click.echo("\n\n".join(render_table(r) for r in reports))
    if strict and any(has_findings(r) for r in reports):
        raise SystemExit(1)
