"""The exceptions bnconvert raises: one family, so callers and the CLI catch one base class."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BnconvertError",
    "EquivalenceError",
    "FoldError",
    "FormatError",
    "InternalError",
    "InvalidWeightsError",
    "OutputError",
    "UnsupportedLayerError",
]


class BnconvertError(Exception):
    """Base class: anything bnconvert reports to the user as one clear line.

    ``exit_code`` is what the CLI exits with: 2 for bad input or usage, 1 for a failed check,
    3 for a bug in bnconvert itself (:class:`InternalError`).
    """

    exit_code = 2


class FormatError(BnconvertError):
    """The file is not a Keras model bnconvert can read, or it is damaged or inconsistent."""


class UnsupportedLayerError(BnconvertError):
    """A layer bnconvert cannot convert (Lambda, custom classes, ...)."""


class FoldError(BnconvertError):
    """Folding was refused: NaN/Inf weights, non-positive variance plus epsilon, ..."""


class InvalidWeightsError(FoldError):
    """The model's numbers cannot be computed with: NaN/Inf in a weight, or a BatchNormalization
    that breaks the BN invariant (finite parameters, variance + epsilon > 0). Raised only by
    :func:`bnconvert.bn.check_bn` and :func:`bnconvert.bn.require_usable`, which every stage asks."""


class EquivalenceError(BnconvertError):
    """Two models that should agree numerically do not (or, with ``require_check``, no check could
    say whether they do). ``report`` is what the run that raised it had done: a fold or export
    report, or the check's own result; the CLI prints it once, the message stays short."""

    exit_code = 1

    def __init__(self, message: str, *, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class OutputError(BnconvertError):
    """The output could not be written (exists, is the input, read-only folder, full disk)."""


class InternalError(BnconvertError):
    """A bug in bnconvert, not a problem with the user's input: reported as "internal error, please
    report" with exit code 3, never disguised as bad input. Raised where bnconvert notices its own
    inconsistency (an isolated reader that died for a reason other than the file's content, ...)."""

    exit_code = 3
