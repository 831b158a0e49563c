"""Top-class agreement: does B pick the class A picks, sample by sample? (``verify`` of two
models, and the int8 export against its float model.)

Information beside the pass rule of :mod:`bnconvert.check.compare`, never part of it: a person judging a model
asks "does the top class change?", and the error statistics do not say. The rule stays the
verdict because it is the stricter one where it matters: B can agree on every top class while a
folding mistake shifts every logit (the rule fails it), and a near-tie can flip a top class by
one float32 rounding (the rule passes it: the classes were tied).

An output qualifies when it is classifier-shaped: rank 2 (samples x classes) with at least 2
classes, the same shape on both sides. Per sample, A's top classes are the ones equal to its
row's maximum (a tie in the reference keeps every tied class: which one a rounding favours is no
disagreement), and B's choice is what argmax, and so a deployed model, picks: its first largest
class (a quantised model's outputs tie often, and argmax then takes the first). The sample agrees
when B's choice is one of A's top classes. A row holding NaN, on either side, never agrees. With
at least :data:`TOP5_CLASSES` classes (an ImageNet head) the top-5 agreement is given too: the
share of samples where one of A's top classes is among B's first five by value (stable order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TOP5_CLASSES", "TopAgreement", "classifier_shaped", "top_agreement"]

#: classes from which the top-5 agreement is reported too (ImageNet heads have 1000)
TOP5_CLASSES = 1000


@dataclass(frozen=True)
class TopAgreement:
    """How often B's top class is A's on one classifier-shaped output."""

    #: the output's name in A and in B
    output: str
    name_b: str
    samples: int
    classes: int
    #: samples whose top classes agree
    top1: int
    #: samples where A's top class is in B's top 5 (None below :data:`TOP5_CLASSES` classes)
    top5: int | None = None

    @property
    def top1_share(self) -> float:
        return self.top1 / self.samples if self.samples else 1.0

    @property
    def top5_share(self) -> float | None:
        if self.top5 is None:
            return None
        return self.top5 / self.samples if self.samples else 1.0

    def summary(self) -> str:
        """One line (:func:`bnconvert.render.agreement_text`)."""
        from .render import agreement_text

        return agreement_text(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output, "name_b": self.name_b, "samples": self.samples, "classes": self.classes,
            "top1": self.top1, "top1_agreement": self.top1_share, "top5": self.top5, "top5_agreement": self.top5_share,
        }


def classifier_shaped(shape: Sequence[int]) -> bool:
    """Rank 2 (samples x classes) with at least 2 classes."""
    return len(shape) == 2 and shape[1] >= 2


def _tops(x: np.ndarray) -> np.ndarray:
    """Per row, the classes equal to the row's maximum (none for a row holding NaN)."""
    with np.errstate(invalid="ignore"):
        return x == x.max(axis=1, keepdims=True)


def top_agreement(a: np.ndarray, b: np.ndarray, *, output: str = "output", name_b: str | None = None
                  ) -> TopAgreement | None:
    """The top-class agreement of reference ``a`` and ``b`` (None when not classifier-shaped or
    the shapes differ); see the module docstring for ties, NaN and the top 5."""
    if a.shape != b.shape or not classifier_shaped(a.shape):
        return None
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    top_a = _tops(a64)
    usable = ~np.isnan(b64).any(axis=1)
    order = np.argsort(-np.where(np.isnan(b64), -np.inf, b64), axis=1, kind="stable")  # B's classes, largest first
    top1 = int(np.count_nonzero(np.take_along_axis(top_a, order[:, :1], axis=1)[:, 0] & usable))
    top5 = None
    samples, classes = a64.shape
    if classes >= TOP5_CLASSES:
        top5 = int(np.count_nonzero(np.take_along_axis(top_a, order[:, :5], axis=1).any(axis=1) & usable))
    return TopAgreement(output=output, name_b=name_b or output, samples=samples, classes=classes, top1=top1, top5=top5)
