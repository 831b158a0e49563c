"""Top-class agreement of the outputs a comparison paired (:mod:`bnconvert.topclass` says what
agreement is)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..topclass import TOP5_CLASSES, TopAgreement, classifier_shaped, top_agreement
from .compare import CompareResult

__all__ = ["TOP5_CLASSES", "TopAgreement", "classifier_shaped", "top_agreement", "top_agreements"]


def top_agreements(out_a: Mapping[str, np.ndarray], out_b: Mapping[str, np.ndarray], comparison: CompareResult
                   ) -> list[TopAgreement]:
    """The agreement of every classifier-shaped output the comparison paired (B's outputs as B
    returned them: a rank-2 output is never transposed for the comparison)."""
    found = []
    for o in comparison.outputs:
        if o.name in out_a and o.name_b in out_b:
            agreement = top_agreement(np.asarray(out_a[o.name]), np.asarray(out_b[o.name_b]), output=o.name,
                                      name_b=o.name_b)
            if agreement is not None:
                found.append(agreement)
    return found
