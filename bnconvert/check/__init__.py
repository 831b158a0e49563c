"""Numerical equivalence: run two models on the same inputs and compare every output.

- :func:`compare_files`: any two of a Keras file, a folded Keras file and an ONNX file
  (``bnconvert verify A B``, through :func:`bnconvert.pipeline.verify`), with ``locate`` to name
  the first diverging layer.
- :func:`check_written` / :func:`check_export`: the checks ``fold`` and ``export`` run on what
  they wrote, against Keras when TensorFlow is installed, else bnconvert's float64 reference
  (:class:`ReferenceRunner`: the model in numpy from the layer catalog, no ONNX involved).

All three pass by one rule, ``|A-B| <= atol + rtol * max|A|`` for every output, with the same
defaults (:data:`DEFAULT_ATOL`, :data:`DEFAULT_RTOL`; :mod:`.compare` says why this rule).

Runners (``runners``, ``keras_runner``) share one call, ``infer(feeds) -> outputs``; the
comparison (``compare``) knows nothing about them. TensorFlow is imported only by the Keras runner.
"""

from __future__ import annotations

from .compare import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    CompareResult,
    DiffStats,
    OutputComparison,
    compare_arrays,
    compare_outputs,
    diff_stats,
)
from .inputs import (
    InputSpec,
    load_inputs,
    parse_input_shapes,
    parse_range,
    random_inputs,
)
from .keras_runner import KerasRunner
from .locate import LayerDiff, LocateResult, locate_divergence
from .reference import ReferenceRunner
from .results import CheckResult, VerifyResult
from .runners import OnnxLoadError, OnnxRunner, Runner, RunnerUnavailable
from .verify import check_export, check_written, compare_files, file_kind, open_runner, start_reference

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "CheckResult",
    "CompareResult",
    "DiffStats",
    "InputSpec",
    "KerasRunner",
    "LayerDiff",
    "LocateResult",
    "OnnxLoadError",
    "OnnxRunner",
    "OutputComparison",
    "ReferenceRunner",
    "Runner",
    "RunnerUnavailable",
    "VerifyResult",
    "check_export",
    "check_written",
    "compare_files",
    "compare_arrays",
    "compare_outputs",
    "diff_stats",
    "file_kind",
    "load_inputs",
    "locate_divergence",
    "open_runner",
    "parse_input_shapes",
    "parse_range",
    "random_inputs",
    "start_reference",
]

