"""The runs of ``verify``: A and B on one set of inputs each, and which sets to run.

By default ``verify`` runs the inputs once, at ``--batch`` (1). When both models declare a
dynamic batch, it runs again at a second size (:func:`companion_batch`): a model whose batch was
baked in somewhere (a Reshape to ``[1, -1]``, a shape computed at export time) declares a dynamic
batch and still fails at another size, and only running another size shows it. ``--regimes``
adds the same comparison on normal and constant inputs (:data:`~.inputs.REGIMES`): uniform
``[0, 1)`` inputs never go negative (a ReLU/abs/leaky-slope difference hides), and constant
inputs have no variance (LayerNorm/InstanceNorm, softmax and epsilon handling at their edge).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import BnconvertError
from .agreement import top_agreements
from .inputs import InputSpec
from .pairing import Binding, run_pair
from .results import VerifyRun
from .runners import Runner

__all__ = ["batch_of", "companion_batch", "compare_run", "dynamic_batch", "with_batch"]


def companion_batch(batch: int) -> int:
    """The second batch ``verify`` runs when the batch is dynamic: 3 after batch 1, else 1.

    The pair always holds batch 1 (what deployments run most, and where a broadcast over the
    batch axis goes unnoticed) and a batch above 1 that is not 2, the batch of bnconvert's own
    fold and export checks (a batch baked in by such a run would pass at 2). Cheap: one small
    batch more, never a second large one (``--batch 32`` adds a run at 1, not at 34).
    """
    return 3 if batch == 1 else 1


def dynamic_batch(specs_a: Sequence[InputSpec], specs_b: Sequence[InputSpec]) -> tuple[bool, str | None]:
    """Whether every input's batch (axis 0) is dynamic in both models, and a note when one model
    fixes it while the other leaves it open (an export with a batch baked into its inputs)."""
    def open_(specs: Sequence[InputSpec]) -> bool:
        return bool(specs) and all(s.shape and s.shape[0] is None for s in specs)

    def fixed(specs: Sequence[InputSpec]) -> str:
        return ", ".join(f"'{s.name}' at {s.shape[0]}" for s in specs if s.shape and s.shape[0] is not None)

    a, b = open_(specs_a), open_(specs_b)
    if a and b:
        return True, None
    if a:
        return False, f"B fixes the batch of {fixed(specs_b)} where A leaves it dynamic: checked at that batch only"
    if b:
        return False, f"A fixes the batch of {fixed(specs_a)}: B's dynamic batch is checked at that batch only"
    return False, None


def batch_of(feeds: Mapping[str, np.ndarray], specs: Sequence[InputSpec]) -> int | None:
    """The batch of the inputs drawn for ``specs`` (their first input with a batch axis)."""
    for s in specs:
        value = feeds.get(s.name)
        if value is not None and value.ndim:
            return int(value.shape[0])
    return None


def with_batch(input_shapes: Mapping[str, Sequence[int]] | None, specs: Sequence[InputSpec], batch: int
               ) -> dict[str, tuple[int, ...]] | None:
    """``--input-shape``'s shapes with axis 0 set to ``batch`` for the inputs whose batch is dynamic."""
    if not input_shapes:
        return None
    open_batch = {s.name for s in specs if s.shape and s.shape[0] is None}
    return {name: ((batch, *tuple(shape)[1:]) if name in open_batch and len(shape) else tuple(shape))
            for name, shape in input_shapes.items()}


def compare_run(
    ra: Runner, rb: Runner, binding: Binding, feeds_a: Mapping[str, np.ndarray], *, label: str, source: str,
    atol: float, rtol: float, regime: str | None = None, extra_batch: bool = False,
) -> tuple[VerifyRun, dict[str, np.ndarray]]:
    """Run A and B on ``feeds_a`` and compare every output (:func:`~.pairing.run_pair`), with the
    top-class agreement of the classifier-shaped outputs; returns the run and B's feeds.

    ``extra_batch``: a run at a batch other than the first. A side that fails to run there is a
    failed run saying so in one line (the batch it declares dynamic is not), not an error; B's
    outputs changing shape with the batch are said so too. Elsewhere a side that fails raises."""
    batch = batch_of(feeds_a, binding.specs)
    feeds_b = binding.feeds_b(feeds_a)
    rows = binding.rows(feeds_a)

    def failed(side: str, exc: BnconvertError) -> VerifyRun:
        declared = "it declares the batch dynamic" if side == "B" else "the batch is declared dynamic"
        return VerifyRun(label=label, inputs=rows, input_source=source, comparison=None, batch=batch, regime=regime,
                         message=f"{side} fails to run at batch {batch}, although {declared}: {exc}")

    outputs = []
    for side, runner, feeds in (("A", ra, feeds_a), ("B", rb, feeds_b)):
        try:
            outputs.append(runner.infer(feeds))
        except BnconvertError as exc:
            if not extra_batch:
                raise
            return failed(side, exc), feeds_b
    out_a, out_b = outputs
    comparison, _ = run_pair(ra, rb, binding, feeds_a, atol=atol, rtol=rtol, out_a=out_a, out_b=out_b)
    message = ""
    if extra_batch and any(o.message.startswith("shapes differ") for o in comparison.outputs):
        message = (f"at batch {batch} B's outputs do not have A's shapes: B's batch is fixed inside its graph "
                   "(e.g. a Reshape with the batch written in), although its inputs declare it dynamic")
    run = VerifyRun(label=label, inputs=rows, input_source=source, comparison=comparison, batch=batch, regime=regime,
                    message=message, agreement=top_agreements(out_a, out_b, comparison))
    return run, feeds_b
