"""What a check returns: :class:`VerifyResult` (``bnconvert verify``, one :class:`VerifyRun` per
set of inputs) and :class:`CheckResult`
(the checks fold and export run after writing). Both are truthy when the models agreed, print a
report with ``summary()`` and serialise with ``to_dict()``; both always say what ran each side.

Both pass by the one rule of :mod:`.compare` (``|A-B| <= atol + rtol * max|A|`` for every
output): ``passed`` is the comparison's verdict, never a second one computed beside it. A check
that could not run is a :class:`CheckResult` too (``checked`` False, ``passed`` None, the
reason in ``message``), so that "not checked" is never mistaken for "checked".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import EquivalenceError, InternalError
from .agreement import TopAgreement
from .compare import DEFAULT_ATOL, DEFAULT_RTOL, CompareResult
from .locate import LocateResult

__all__ = ["VerifyResult", "VerifyRun", "CheckResult"]


@dataclass
class VerifyRun:
    """One comparison of ``verify``: A and B on one set of inputs (one batch size, one regime of
    random values, or the user's file). Passes when the comparison passed and nothing failed to run."""

    #: short name: ``"batch 1"``, ``"batch 3"``, ``"normal"``, ``"constant"``, ``"file"``
    label: str
    #: one entry per input: name (A's), name in B, shape, dtype, layout transform applied for B
    inputs: list[dict[str, Any]]
    #: where the data came from: "uniform [0, 1) from seed 1" or "file x.npz"
    input_source: str
    #: None when a side failed to run on these inputs (:attr:`message` says why)
    comparison: CompareResult | None
    #: the batch of the inputs (None when the inputs have no batch axis)
    batch: int | None = None
    #: ``"uniform"``, ``"normal"``, ``"constant"`` (random inputs), None for a file
    regime: str | None = None
    #: what the numbers cannot say, one line: why there is no comparison (a side does not run at
    #: this batch), or what a failure means (B's output shapes change with the batch); "" otherwise
    message: str = ""
    #: top-class agreement of the classifier-shaped outputs (:mod:`.agreement`): information
    agreement: list[TopAgreement] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.comparison is not None and self.comparison.passed

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        comparison = self.comparison.to_dict() if self.comparison is not None else None
        if comparison is not None:  # the agreement beside each output's error statistics
            by_name = {g.output: g for g in self.agreement}
            for entry in comparison["outputs"]:
                g = by_name.get(entry["name"])
                entry["top1_agreement"] = g.top1_share if g is not None else None
                entry["top5_agreement"] = g.top5_share if g is not None else None
        return {
            "label": self.label, "passed": self.passed, "batch": self.batch, "regime": self.regime,
            "inputs": [dict(i) for i in self.inputs], "input_source": self.input_source, "message": self.message,
            "agreement": [g.to_dict() for g in self.agreement], "comparison": comparison,
        }


@dataclass
class VerifyResult:
    """Model A (the reference) against model B on the same inputs, in one or more runs
    (:class:`VerifyRun`: two batch sizes when the batch is dynamic, each regime of ``--regimes``).
    Passes when every run passed. :attr:`comparison`, :attr:`inputs` and :attr:`input_source`
    are the first run's."""

    a: str
    b: str
    runner_a: str
    runner_b: str
    kind_a: str
    kind_b: str
    runs: list[VerifyRun]
    notes: list[str] = field(default_factory=list)
    located: LocateResult | None = None
    #: the label of the run :attr:`located` traced (the first that failed with a comparison)
    located_run: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def first(self) -> VerifyRun:
        if not self.runs:
            raise InternalError("a VerifyResult without runs")
        return self.runs[0]

    @property
    def comparison(self) -> CompareResult:
        """The first run's comparison (it always has one: a side that cannot run its first
        inputs is an error, not a result)."""
        if self.first.comparison is None:
            raise InternalError("the first run of verify has no comparison")
        return self.first.comparison

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.first.inputs

    @property
    def input_source(self) -> str:
        return self.first.input_source

    @property
    def passed(self) -> bool:
        return bool(self.runs) and all(r.passed for r in self.runs)

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        """The report as text (:func:`bnconvert.render.verify_text`)."""
        from ..render import verify_text

        return verify_text(self)

    def to_dict(self) -> dict[str, Any]:
        runs = [r.to_dict() for r in self.runs]
        return {
            "passed": self.passed,
            "a": {"path": self.a, "runner": self.runner_a, "kind": self.kind_a},
            "b": {"path": self.b, "runner": self.runner_b, "kind": self.kind_b},
            # the first run's, where they always were
            "inputs": runs[0]["inputs"] if runs else [],
            "input_source": runs[0]["input_source"] if runs else "",
            "comparison": runs[0]["comparison"] if runs else None,
            "agreement": runs[0]["agreement"] if runs else [],
            "notes": list(self.notes),
            "runs": runs,
            "locate": self.located.to_dict() if self.located is not None else None,
            "located_run": self.located_run or None,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


@dataclass
class CheckResult:
    """The check fold or export runs on what it wrote, before keeping it (or why it did not run).

    ``passed`` is the comparison's verdict (:func:`~bnconvert.check.compare.compare_outputs` with
    ``atol`` and ``rtol``); False without a comparison when the numbers cannot say (the written
    file does not load), None when the check did not run (``checked`` False).
    """

    what: str
    original: str
    written: str
    reference: str
    reference_kind: str
    candidate: str
    candidate_kind: str
    comparison: CompareResult | None
    passed: bool | None
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    #: why it failed when the numbers cannot say (the written file does not load ...), or why
    #: it did not run
    message: str = ""
    notes: list[str] = field(default_factory=list)
    seed: int = 1
    batch: int = 2
    inputs: list[dict[str, Any]] = field(default_factory=list)
    checked: bool = True

    @classmethod
    def not_run(cls, what: str, original: str, reason: str, *, atol: float = DEFAULT_ATOL,
                rtol: float = DEFAULT_RTOL) -> CheckResult:
        """The check that could not run, and why (``--no-check``, a Lambda no runtime may run ...)."""
        return cls(what=what, original=original, written="", reference="", reference_kind="", candidate="",
                   candidate_kind="", comparison=None, passed=None, atol=atol, rtol=rtol, message=reason,
                   checked=False)

    def __bool__(self) -> bool:
        return self.passed is True

    @property
    def status(self) -> str:
        """``"passed"``, ``"failed"`` or ``"not checked"``."""
        if not self.checked:
            return "not checked"
        return "passed" if self.passed else "failed"

    @property
    def error(self) -> float:
        """The largest max |ref - out| / max |ref| over the outputs (inf when not comparable): information."""
        return self.comparison.normalized_error if self.comparison is not None else math.inf

    def headline(self) -> str:
        """One line: the verdict, the numbers it rests on, and what ran each side
        (:func:`bnconvert.render.check_headline`)."""
        from ..render import check_headline

        return check_headline(self)

    def summary(self) -> str:
        """The whole report as text (:func:`bnconvert.render.check_text`)."""
        from ..render import check_text

        return check_text(self)

    def require(self) -> CheckResult:
        """Return self when passed; raise :class:`EquivalenceError` (exit code 1) with the numbers
        otherwise (the result as its ``report``)."""
        if not self.passed:
            raise EquivalenceError(self.summary(), report=self)
        return self

    def to_dict(self) -> dict[str, Any]:
        error = self.error
        return {
            "what": self.what,
            "checked": self.checked,
            "passed": self.passed,
            "status": self.status,
            "original": self.original,
            "written": self.written,
            "reference": {"kind": self.reference_kind, "runner": self.reference},
            "candidate": {"kind": self.candidate_kind, "runner": self.candidate},
            "atol": self.atol,
            "rtol": self.rtol,
            "error": error if math.isfinite(error) else str(error),
            "message": self.message,
            "reason": None if self.checked else self.message,
            "notes": list(self.notes),
            "seed": self.seed,
            "batch": self.batch,
            "inputs": [dict(i) for i in self.inputs],
            "comparison": self.comparison.to_dict() if self.comparison is not None else None,
        }
