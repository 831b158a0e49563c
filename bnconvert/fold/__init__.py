"""Folding BatchNormalization into neighbouring layers: the plan (predicate), the pure kernels
(arithmetic) and the graph pass that applies them."""

from __future__ import annotations

from .apply import BNOutcome, FoldReport, fold_log, fold_model
from .plan import FoldDecision, plan_folds

__all__ = ["FoldDecision", "plan_folds", "fold_model", "fold_log", "FoldReport", "BNOutcome"]
