"""A one-page picture of an audit: BN scale and variance ranges per layer, and findings per file.

matplotlib is an optional extra (``pip install 'bnconvert[plot]'``), imported only when a plot is
drawn, and used through its object API on an Agg canvas: no pyplot, no global backend switch.

:class:`PlotData` keeps only what the figure needs (six numbers per BN layer and the findings
counts per file), so it can be fed record by record while a long run streams.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BnconvertError, OutputError
from .io import InputSet, atomic_output, check_output

__all__ = ["LayerPoint", "PlotData", "check_target", "plot_records", "render", "require_matplotlib"]

#: colours by the worst finding of a layer
_COLOURS = {"clean": "#4C72B0", "info": "#DD8452", "warning": "#C44E52"}
_LABELS = {"clean": "no finding", "info": "info finding only", "warning": "warning or error finding"}
#: above this many layers, ticks name the files (numbered) instead of the layers
_MAX_NAMED_LAYERS = 40


def require_matplotlib() -> None:
    """Raise a clear :class:`BnconvertError` when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BnconvertError("--plot needs matplotlib, an optional extra: pip install 'bnconvert[plot]'") from None


@dataclass
class LayerPoint:
    """One BN layer as drawn: min/median/max of its fold scale and of its moving variance."""

    file_index: int
    name: str
    scale: tuple[float, float, float] | None
    variance: tuple[float, float, float] | None
    level: str  # clean | info | warning


@dataclass
class PlotData:
    """The compact content of a figure, accumulated one audit record at a time."""

    files: list[str] = field(default_factory=list)
    failed: list[bool] = field(default_factory=list)
    bn_counts: list[int] = field(default_factory=list)
    findings: list[Counter[str]] = field(default_factory=list)
    layers: list[LayerPoint] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        """Take what the figure needs from one record (an audit dict or an error record)."""
        index = len(self.files)
        self.files.append(str(record.get("file", f"file {index + 1}")))
        self.failed.append("error" in record)
        kinds: Counter[str] = Counter()
        bns = record.get("batch_norms", []) if "error" not in record else []
        for bn in bns:
            severities = {f["severity"] for f in bn["findings"]}
            kinds.update(f["kind"] for f in bn["findings"])
            level = "warning" if severities & {"warning", "error"} else "info" if severities else "clean"
            stats = bn.get("statistics") or {}
            self.layers.append(LayerPoint(index, bn["name"], _triple(stats.get("fold_scale_abs")),
                                          _triple(stats.get("moving_variance")), level))
        self.bn_counts.append(len(bns))
        self.findings.append(kinds)


def _triple(stats: dict[str, Any] | None) -> tuple[float, float, float] | None:
    if not stats or any(stats.get(k) is None for k in ("min", "median", "max")):
        return None
    values = tuple(float(stats[k]) for k in ("min", "median", "max"))
    return None if not all(math.isfinite(v) for v in values) else values  # type: ignore[return-value]


def _short(path: str, limit: int = 48) -> str:
    name = Path(path).name or path
    return name if len(name) <= limit else name[: limit // 2 - 1] + "…" + name[-(limit // 2):]


def _axis_floor(points: list[tuple[int, tuple[float, float, float] | None, str]]) -> tuple[float, float] | None:
    """(floor, top) of a log axis: a few stray tiny minima must not squash every other layer."""
    positive = sorted(t[0] for _, t, _ in points if t and t[0] > 0)
    tops = [v for _, t, _ in points if t for v in t if v > 0]
    if not tops:
        return None
    robust = positive[len(positive) // 20] if positive else min(tops)
    return 10 ** (math.floor(math.log10(robust)) - 1), max(tops)


def _range_panel(ax: Any, data: PlotData, attr: str, ylabel: str, reference: float | None) -> None:
    """Vertical min-max bars with a median dot, on a log axis; minima below the axis marked and printed."""
    points = [(i, getattr(p, attr), p.level) for i, p in enumerate(data.layers)]
    bounds = _axis_floor(points)
    ax.set_ylabel(ylabel)
    if bounds is None:
        ax.text(0.5, 0.5, "no values to draw", transform=ax.transAxes, ha="center", va="center", color="grey")
        return
    floor, high = bounds
    ax.set_yscale("log")
    dense = len(points) > 60
    for level in ("clean", "info", "warning"):
        drawn = [(i, t) for i, t, lv in points if t and lv == level]
        if not drawn:
            continue
        xs = [i for i, _ in drawn]
        ax.vlines(xs, [max(t[0], floor) for _, t in drawn], [max(t[2], floor) for _, t in drawn],
                  colors=_COLOURS[level], linewidth=1.5 if dense else 3.0, alpha=0.85)
        ax.scatter(xs, [max(t[1], floor) for _, t in drawn], s=6 if dense else 14, color=_COLOURS[level],
                   edgecolors="black", linewidths=0.4, zorder=3)
    below = [(i, t[0]) for i, t, _ in points if t and t[0] < floor]
    if below:
        ax.scatter([i for i, _ in below], [floor] * len(below), marker="v", s=30, color="black", zorder=4,
                   label="minimum below the axis (value printed)")
        for i, value in below[:12]:
            ax.annotate(f"{value:.1g}", (i, floor), xytext=(4, 2), textcoords="offset points", fontsize=7)
    if reference is not None and floor <= reference <= high * 2:
        ax.axhline(reference, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(floor / 1.5, high * 2)
    ax.grid(True, which="major", axis="y", alpha=0.3)


def _file_bands(ax: Any, data: PlotData) -> list[tuple[float, str]]:
    """Shade every other file's layers; returns (centre, "#k") tick positions that do not collide."""
    ticks: list[tuple[float, str]] = []
    gap = max(1.0, len(data.layers) / 45)  # about 45 labels fit across the figure
    start = 0
    for index, count in enumerate(data.bn_counts):
        if count:
            if index % 2:
                ax.axvspan(start - 0.5, start + count - 0.5, color="#EEEEEE", zorder=0)
            centre = start + (count - 1) / 2
            if not ticks or centre - ticks[-1][0] >= gap:
                ticks.append((centre, f"#{index + 1}"))
        start += count
    return ticks


def _findings_panel(ax: Any, data: PlotData) -> None:
    """Horizontal stacked bars: findings by kind, one bar per file."""
    from matplotlib.ticker import MaxNLocator

    totals: Counter[str] = Counter()
    for counts in data.findings:
        totals.update(counts)
    kinds = [k for k, _ in totals.most_common()]
    rows = list(range(len(data.files)))
    left = [0] * len(rows)
    palette = ["#C44E52", "#DD8452", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD",
               "#55A868", "#4C72B0"]
    for n, kind in enumerate(kinds):
        widths = [data.findings[r][kind] for r in rows]
        ax.barh(rows, widths, left=left, color=palette[n % len(palette)], label=kind, edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, widths)]
    for r in rows:
        note = "FAILED to read" if data.failed[r] else ("no BN layer" if not data.bn_counts[r] else
                                                         ("" if left[r] else "no finding"))
        if note:
            ax.text(left[r] + 0.1, r, note, va="center", fontsize=7,
                    color="#C44E52" if data.failed[r] else "grey")
    ax.set_yticks(rows)
    ax.set_yticklabels([f"#{r + 1} {_short(f)} ({data.bn_counts[r]} BN)" for r, f in enumerate(data.files)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("findings (BN layers × kind)")
    ax.set_title("Findings per file", fontsize=10, loc="left")
    ax.set_xlim(0, max([*left, 1]) * 1.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if kinds:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="kind", title_fontsize=8, frameon=False)
    ax.grid(True, axis="x", alpha=0.3)


def render(data: PlotData, *, title: str | None = None) -> Any:
    """Draw the figure (a ``matplotlib.figure.Figure`` on an Agg canvas) from accumulated data."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    several = len(data.files) > 1
    n = len(data.layers)
    width = min(max(10.0, 0.16 * n + 4), 26.0)
    heights = [3.0, 3.0] + ([max(2.0, 0.24 * len(data.files) + 0.8)] if several else [])
    fig = Figure(figsize=(width, sum(heights) + 1.6), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    ax_scale = fig.add_subplot(grid[0])
    ax_var = fig.add_subplot(grid[1], sharex=ax_scale)

    _range_panel(ax_scale, data, "scale", "fold scale\n|γ| / √(var + ε)", 1.0)
    _range_panel(ax_var, data, "variance", "moving variance", None)
    ax_scale.set_title("Fold scale per BN layer (bar: min–max over channels, dot: median)", fontsize=10, loc="left")
    ax_var.set_title("Moving variance per BN layer (min–max, median)", fontsize=10, loc="left")
    ticks: list[tuple[float, str]] = []
    for ax in (ax_scale, ax_var):
        ticks = _file_bands(ax, data) if several else []
        ax.set_xlim(-0.8, max(n, 1) - 0.2)
    ax_scale.tick_params(labelbottom=False)
    if n and n <= _MAX_NAMED_LAYERS:
        ax_var.set_xticks(range(n))
        prefix = several and len({p.file_index for p in data.layers}) > 1
        ax_var.set_xticklabels([f"#{p.file_index + 1} {p.name}" if prefix else p.name for p in data.layers],
                               rotation=60, ha="right", fontsize=7)
        ax_var.set_xlabel("BN layer, in model order")
    elif ticks:
        ax_var.set_xticks([c for c, _ in ticks])
        ax_var.set_xticklabels([label for _, label in ticks], fontsize=7)
        ax_var.set_xlabel("BN layers in model order, grouped by file (shaded bands; #k as in the findings panel)")
    else:
        ax_var.set_xlabel("BN layer index, in model order")

    handles: list[Any] = [Line2D([0], [0], color=_COLOURS[k], linewidth=3, label=_LABELS[k]) for k in _COLOURS
                          if any(p.level == k for p in data.layers)]
    handles += ax_scale.get_legend_handles_labels()[0]
    if handles:
        ax_scale.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if several:
        _findings_panel(fig.add_subplot(grid[2]), data)

    flagged = sum(1 for p in data.layers if p.level != "clean")
    failed = sum(data.failed)
    if title is None:
        subject = _short(data.files[0], 70) if len(data.files) == 1 else f"{len(data.files)} files"
        title = f"BatchNormalization audit: {subject}"
    detail = f"{n} BN layers, {flagged} with findings"
    if failed:
        detail += f", {failed} {'file' if failed == 1 else 'files'} failed to read"
    fig.suptitle(f"{title}\n{detail}", fontsize=12)
    return fig


_FORMATS = ("png", "svg", "pdf")


def check_target(path: str | os.PathLike[str], *, force: bool = False,
                 inputs: InputSet | Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """The image path if it can be written (known suffix, existing folder, not an existing file
    unless ``force``, never one of ``inputs``); OutputError otherwise.

    Cheap and without matplotlib, so a long run can refuse a bad ``--plot`` before reading anything.
    """
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower()
    if fmt not in _FORMATS:
        raise OutputError(f"{target}: cannot draw a '{target.suffix or '(no suffix)'}' file; use .png, .svg or .pdf")
    return check_output(target, force=force, inputs=inputs)


def plot_records(records: Iterable[dict[str, Any]] | PlotData, path: str | os.PathLike[str], *,
                 title: str | None = None, dpi: int = 110, force: bool = False,
                 inputs: InputSet | Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """Draw audit records (or accumulated :class:`PlotData`) into an image file, written atomically.

    The format follows the suffix (``.png``, ``.svg``, ``.pdf``...); the file appears complete or
    not at all.
    """
    if isinstance(records, PlotData):
        data = records
    else:
        data = PlotData()
        for record in records:
            data.add(record)
    target = check_target(path, force=force, inputs=inputs)
    fig = render(data, title=title)
    fmt = target.suffix.lstrip(".").lower()
    with atomic_output(target, force=force, inputs=inputs) as tmp, open(tmp, "wb") as fh:  # complete or not at all
        fig.savefig(fh, format=fmt, dpi=dpi)
    return target
