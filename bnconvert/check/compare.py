"""Compare two sets of named outputs: the one pass rule of ``fold``, ``export`` and ``verify``.

An output passes when every element satisfies::

    |a - b| <= atol + rtol * max|a|

``a`` is the reference (the first model) and ``max|a|`` the largest magnitude of that output: the
scale float32 rounding errors follow. Not ``|a|`` element by element (Polygraphy's and numpy's
``allclose``): a float32 computation is accurate relative to the magnitudes it added up, not to
a result that happens to come out near 0 (the logit 0.003 of a model whose logits reach 20 is
off by 1e-6 in any float32 runtime, 3e-4 "relative"). ``atol`` covers outputs that are small
altogether (a sigmoid of -10 is 4.5e-5: onnxruntime's Sigmoid is 1.7e-2 off relative, 1.5e-7
absolute). :data:`DEFAULT_ATOL` and :data:`DEFAULT_RTOL` are the defaults everywhere.

NaN anywhere fails; an infinity fails unless the other side holds the same infinity at the same
place; different shapes fail. The statistics (max, mean, median, p90, p95, p99 of the absolute
differences and of the element-wise relative ones ``|a-b|/|a|``) are information, computed in
float64 over the elements finite on both sides. Nothing here knows about runners or formats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_ATOL", "DEFAULT_RTOL", "DiffStats", "OutputComparison", "CompareResult", "compare_arrays",
    "compare_outputs", "diff_stats", "rule_text",
]

#: the absolute term of the pass rule: what an output near 0 altogether may be off by
DEFAULT_ATOL = 1e-5
#: the relative term, times the output's largest magnitude: float32 rounding through a deep model
#: (onnxruntime against float64 or Keras: 1e-7 to 2e-5 on the corpus) with a margin, while a real
#: folding mistake (a wrong epsilon, a std read as a variance, a missed shift) is 1e-3 or more
DEFAULT_RTOL = 1e-4

PERCENTILES = (50, 90, 95, 99)


def rule_text(atol: float, rtol: float) -> str:
    """The pass rule with its numbers, as reports print it."""
    return f"|A-B| <= atol + rtol * max|A| (atol={atol:g}, rtol={rtol:g})"


@dataclass(frozen=True)
class DiffStats:
    """Summary statistics of one array of (absolute or relative) differences."""

    max: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float

    def to_dict(self) -> dict[str, float | str]:
        return {k: _json_float(getattr(self, k)) for k in ("max", "mean", "median", "p90", "p95", "p99")}


def diff_stats(values: np.ndarray) -> DiffStats:
    """max, mean, median and p90/p95/p99 of ``values`` (float64; zeros for an empty array).

    Percentiles use numpy's default (linear) interpolation; an infinite value makes the
    statistics that include it infinite.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return DiffStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        med, p90, p95, p99 = (float(x) for x in np.percentile(v, PERCENTILES))
        return DiffStats(float(v.max()), float(v.mean()), med, p90, p95, p99)


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


@dataclass
class OutputComparison:
    """The comparison of one output (``name``) of model A (reference) with model B."""

    name: str
    name_b: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    atol: float
    rtol: float
    passed: bool
    #: why it failed when the numbers cannot say (shape mismatch, NaN ...), else ""
    message: str = ""
    abs: DiffStats | None = None
    rel: DiffStats | None = None
    #: atol + rtol * max|a|: the largest |a - b| the output may have
    bound: float = 0.0
    #: elements beyond :attr:`bound` (NaN/unmatched Inf included) and the total
    mismatches: int = 0
    #: elements NaN or Inf on one side without the same value on the other
    nonfinite_mismatches: int = 0
    total: int = 0
    #: index, reference value and other value of the largest absolute difference
    worst_index: tuple[int, ...] | None = None
    worst_a: float | None = None
    worst_b: float | None = None
    #: index of the largest relative difference
    worst_rel_index: tuple[int, ...] | None = None
    #: largest |a| (finite elements): the scale of the rule's relative term
    max_abs_ref: float = 0.0
    nonfinite_a: dict[str, int] = field(default_factory=dict)
    nonfinite_b: dict[str, int] = field(default_factory=dict)
    #: (low, high, count) per decade of absolute difference; low 0 is the exact-match bin
    histogram: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def normalized_error(self) -> float:
        """max |a - b| / max |a|: scale-free information (inf when the shapes differ or a NaN/Inf
        is not matched on the other side)."""
        if self.abs is None or self.nonfinite_mismatches:
            return math.inf
        if self.abs.max == 0:
            return 0.0
        return self.abs.max / self.max_abs_ref if self.max_abs_ref > 0 else math.inf

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        """A few lines of text: verdict, statistics, worst element, histogram (:func:`bnconvert.render.output_text`)."""
        from ..render import output_text

        return output_text(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "name_b": self.name_b,
            "shape_a": list(self.shape_a),
            "shape_b": list(self.shape_b),
            "passed": self.passed,
            "message": self.message,
            "atol": self.atol,
            "rtol": self.rtol,
            "bound": _json_float(self.bound),
            "mismatches": self.mismatches,
            "nonfinite_mismatches": self.nonfinite_mismatches,
            "total": self.total,
            "abs": self.abs.to_dict() if self.abs else None,
            "rel": self.rel.to_dict() if self.rel else None,
            "worst_index": list(self.worst_index) if self.worst_index is not None else None,
            "worst_a": _json_float(self.worst_a) if self.worst_a is not None else None,
            "worst_b": _json_float(self.worst_b) if self.worst_b is not None else None,
            "worst_rel_index": list(self.worst_rel_index) if self.worst_rel_index is not None else None,
            "max_abs_ref": _json_float(self.max_abs_ref),
            "normalized_error": _json_float(self.normalized_error),
            "nonfinite_a": dict(self.nonfinite_a),
            "nonfinite_b": dict(self.nonfinite_b),
            "histogram": [[lo, _json_float(hi), n] for lo, hi, n in self.histogram],
        }


def histogram(absdiff: np.ndarray, *, low_decade: int = -12) -> list[tuple[float, float, int]]:
    """Counts of absolute differences per decade: [0, 0] exact, then [10^k, 10^(k+1)) bins.

    Only the decades from the smallest to the largest non-zero difference appear; anything
    below ``10^low_decade`` is counted in the lowest bin.
    """
    v = np.asarray(absdiff, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    bins: list[tuple[float, float, int]] = []
    zeros = int(np.count_nonzero(v == 0))
    if zeros:
        bins.append((0.0, 0.0, zeros))
    nz = v[v > 0]
    if nz.size == 0:
        return bins
    dec = np.maximum(np.floor(np.log10(nz)).astype(np.int64), low_decade)
    for k in range(int(dec.min()), int(dec.max()) + 1):
        bins.append((10.0**k, 10.0 ** (k + 1), int(np.count_nonzero(dec == k))))
    return bins


def _nonfinite(x: np.ndarray) -> dict[str, int]:
    if x.dtype.kind not in "fc":
        return {"nan": 0, "inf": 0}
    return {"nan": int(np.count_nonzero(np.isnan(x))), "inf": int(np.count_nonzero(np.isinf(x)))}


def compare_arrays(
    a: np.ndarray, b: np.ndarray, *, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, name: str = "output",
    name_b: str | None = None,
) -> OutputComparison:
    """Compare reference ``a`` with ``b``: passes when ``|a - b| <= atol + rtol * max|a|`` everywhere
    (see the module docstring)."""
    a, b = np.asarray(a), np.asarray(b)
    result = OutputComparison(
        name=name, name_b=name_b or name, shape_a=tuple(a.shape), shape_b=tuple(b.shape),
        atol=atol, rtol=rtol, passed=False, total=int(a.size),
        nonfinite_a=_nonfinite(a), nonfinite_b=_nonfinite(b),
    )
    if a.shape != b.shape:
        result.message = f"shapes differ: A {tuple(a.shape)}, B {tuple(b.shape)}"
        return result
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(a64) & np.isfinite(b64)
    # non-finite elements match only when both hold the same infinity
    same_inf = np.isinf(a64) & (a64 == b64)
    bad_nonfinite = ~finite & ~same_inf
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        absdiff = np.where(finite, np.abs(a64 - b64), 0.0)
        ref = np.abs(a64)
        reldiff = np.where(absdiff == 0, 0.0, absdiff / ref)  # x / 0 -> inf
    result.max_abs_ref = float(ref[finite].max()) if finite.any() else 0.0
    result.bound = atol + rtol * result.max_abs_ref
    fails = (absdiff > result.bound) | bad_nonfinite
    result.mismatches = int(np.count_nonzero(fails))
    result.nonfinite_mismatches = int(np.count_nonzero(bad_nonfinite))
    result.abs = diff_stats(absdiff[finite])
    result.rel = diff_stats(reldiff[finite])
    if finite.any():
        flat = np.where(finite, absdiff, -1.0)
        worst = np.unravel_index(int(np.argmax(flat)), a.shape)
        result.worst_index = tuple(int(i) for i in worst)
        result.worst_a, result.worst_b = float(a64[worst]), float(b64[worst])
        flat_rel = np.where(finite, reldiff, -1.0)
        result.worst_rel_index = tuple(int(i) for i in np.unravel_index(int(np.argmax(flat_rel)), a.shape))
    result.histogram = histogram(absdiff[finite])
    notes = []
    if bad_nonfinite.any():
        count = int(np.count_nonzero(bad_nonfinite))
        notes.append(f"{count} elements are NaN or Inf on one side without the same value on the other")
    elif (~finite).any():
        notes.append(f"{int(np.count_nonzero(~finite))} elements are the same infinity on both sides")
    result.message = "; ".join(notes)
    result.passed = result.mismatches == 0
    return result


@dataclass
class CompareResult:
    """All outputs compared; truthy when every output passed."""

    outputs: list[OutputComparison]
    atol: float
    rtol: float
    #: problems that are not about one output (different output names or counts)
    messages: list[str] = field(default_factory=list)
    passed: bool = False

    def __bool__(self) -> bool:
        return self.passed

    @property
    def worst(self) -> OutputComparison | None:
        """The output closest to (or furthest past) its bound: the one a one-line verdict quotes."""
        def margin(o: OutputComparison) -> float:
            if o.abs is None or o.nonfinite_mismatches:
                return math.inf
            return o.abs.max / o.bound if o.bound > 0 else (math.inf if o.abs.max > 0 else 0.0)

        return max(self.outputs, key=margin, default=None)

    @property
    def normalized_error(self) -> float:
        """The largest ``max |a-b| / max |a|`` over the outputs (inf when one could not be compared)."""
        if not self.outputs:
            return math.inf
        return max(o.normalized_error for o in self.outputs)

    def summary(self) -> str:
        """The verdict and every output's comparison (:func:`bnconvert.render.compare_text`)."""
        from ..render import compare_text

        return compare_text(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "atol": self.atol,
            "rtol": self.rtol,
            "normalized_error": _json_float(self.normalized_error),
            "messages": list(self.messages),
            "outputs": [o.to_dict() for o in self.outputs],
        }


def pair_names(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """Pairs of output names to compare, and notes: by name when the names agree, else by position."""
    names_a, names_b = list(a), list(b)
    if set(names_a) == set(names_b):
        return [(n, n) for n in names_a], []
    if len(names_a) == len(names_b):
        note = f"output names differ (A {names_a}, B {names_b}): compared by position"
        return list(zip(names_a, names_b)), [note]
    return [], [f"output counts differ: A has {len(names_a)} {names_a}, B has {len(names_b)} {names_b}"]


def compare_outputs(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> CompareResult:
    """Compare every output of ``a`` (reference) with the matching output of ``b``.

    Outputs are matched by name, else by position when the counts agree (``pairs`` overrides).
    """
    if pairs is None:
        pairs, messages = pair_names(a, b)
    else:
        messages = []
    outputs = [compare_arrays(a[na], b[nb], atol=atol, rtol=rtol, name=na, name_b=nb) for na, nb in pairs]
    passed = bool(pairs) and all(outputs)
    return CompareResult(outputs=outputs, atol=atol, rtol=rtol, messages=messages, passed=passed)
