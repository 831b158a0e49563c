"""Putting two models side by side: which input of B is which input of A, in which layout.

Inputs are matched by name, else by position. When B holds a tensor NCHW where A holds it
channels_last (a ``--nchw`` export), A's data is transposed for B and B's outputs are transposed
back before the comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import BnconvertError
from .compare import CompareResult, compare_outputs, pair_names
from .inputs import InputSpec
from .layout import inverse, layout_options, permutation, transpose
from .runners import Runner

__all__ = ["Binding", "bind_inputs", "run_pair", "fill_dynamic", "CHECK_DYNAMIC_SIZE"]

#: the size given to dynamic non-batch dimensions in the built-in checks (verify asks instead)
CHECK_DYNAMIC_SIZE = 32


@dataclass
class Binding:
    """A's input specs (completed with what B knows), and for each: B's name and layout."""

    specs: list[InputSpec]
    names_b: list[str]
    #: per input: None, or the transpose that turns A's tensor into B's layout
    layouts: list[str | None]
    notes: list[str] = field(default_factory=list)

    def feeds_b(self, feeds_a: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A's data, renamed and transposed for B."""
        return {
            nb: np.ascontiguousarray(transpose(feeds_a[s.name], k)) for s, nb, k in zip(self.specs, self.names_b, self.layouts)
        }

    def rows(self, feeds_a: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        """One report row per input: name, B's name, shape and dtype fed, B's layout."""
        return [
            {
                "name": s.name, "name_b": nb, "shape": list(feeds_a[s.name].shape),
                "dtype": str(feeds_a[s.name].dtype), "layout_b": k,
            }
            for s, nb, k in zip(self.specs, self.names_b, self.layouts)
        ]


def bind_inputs(specs_a: Sequence[InputSpec], specs_b: Sequence[InputSpec]) -> Binding:
    """Match B's inputs to A's; a BnconvertError when counts or shapes cannot agree."""
    if len(specs_a) != len(specs_b):
        raise BnconvertError(
            f"the models take different inputs: A {[s.describe() for s in specs_a]}, B {[s.describe() for s in specs_b]}"
        )
    notes = []
    by_name = {s.name: s for s in specs_b}
    if all(s.name in by_name for s in specs_a):
        ordered_b = [by_name[s.name] for s in specs_a]
    else:
        ordered_b = list(specs_b)
        notes.append(f"input names differ (A {[s.name for s in specs_a]}, B {[s.name for s in specs_b]}): matched by position")
    merged, layouts = [], []
    for sa, sb in zip(specs_a, ordered_b):
        options = layout_options(sa.shape, sb.shape)
        if not options:
            raise BnconvertError(f"input {sa.describe()} of A does not fit input {sb.describe()} of B")
        kind = None if None in options else options[0]
        back = inverse(kind)
        other = tuple(sb.shape) if back is None else tuple(sb.shape[i] for i in permutation(back, len(sb.shape)))
        merged.append(replace(sa, shape=tuple(x if x is not None else y for x, y in zip(sa.shape, other))))
        layouts.append(kind)
        if kind:
            notes.append(f"input '{sa.name}': B holds it {kind.split('->')[1]}; A's data is transposed for B")
    return Binding(merged, [s.name for s in ordered_b], layouts, notes)


def _align_outputs(
    out_a: Mapping[str, np.ndarray], out_b: Mapping[str, np.ndarray], b_transposed: bool
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]], list[str]]:
    """B's outputs in A's layout, the name pairs, and notes."""
    pairs, notes = pair_names(out_a, out_b)
    aligned = dict(out_b)
    for na, nb in pairs:
        options = layout_options(out_a[na].shape, out_b[nb].shape)
        kinds = [k for k in options if k is not None]
        if kinds and (b_transposed or None not in options):
            aligned[nb] = np.ascontiguousarray(transpose(out_b[nb], inverse(kinds[0])))
            notes.append(f"output '{nb}': B holds it {kinds[0].split('->')[1]}; transposed back for the comparison")
    return aligned, pairs, notes


def run_pair(
    ra: Runner, rb: Runner, binding: Binding, feeds_a: Mapping[str, np.ndarray], *, atol: float, rtol: float,
    out_a: Mapping[str, np.ndarray] | None = None, out_b: Mapping[str, np.ndarray] | None = None,
) -> tuple[CompareResult, dict[str, np.ndarray]]:
    """Run both sides on the same data and compare; returns the comparison and B's feeds.
    ``out_a`` / ``out_b``: a side's outputs for these inputs, when it already ran on them."""
    feeds_b = binding.feeds_b(feeds_a)
    out_a = ra.infer(feeds_a) if out_a is None else out_a
    out_b = rb.infer(feeds_b) if out_b is None else out_b
    aligned, pairs, notes = _align_outputs(out_a, out_b, any(binding.layouts))
    result = compare_outputs(out_a, aligned, atol=atol, rtol=rtol, pairs=pairs)
    result.messages = notes + result.messages
    return result, feeds_b


def fill_dynamic(specs: Sequence[InputSpec], batch: int) -> tuple[list[InputSpec], list[str]]:
    """Specs with the batch set and other dynamic dimensions set to :data:`CHECK_DYNAMIC_SIZE`."""
    filled, notes = [], []
    for s in specs:
        shape = list(s.shape)
        if shape and shape[0] is None:
            shape[0] = batch
        open_axes = [i for i, d in enumerate(shape) if d is None]
        if open_axes:
            shape = [CHECK_DYNAMIC_SIZE if d is None else d for d in shape]
            notes.append(f"input '{s.name}': dynamic axes {open_axes} set to {CHECK_DYNAMIC_SIZE} for the check")
        filled.append(replace(s, shape=tuple(shape)))
    return filled, notes
