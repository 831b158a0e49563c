"""Folding BatchNormalization into neighbouring layers: the plan (predicate) and its application."""

from __future__ import annotations

from .plan import FoldDecision, plan_folds

__all__ = ["FoldDecision", "plan_folds"]
