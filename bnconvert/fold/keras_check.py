"""The fold's built-in numerical check: run the original and the folded file in real Keras.

Keras runs in a child process (``_keras_child``): tf-keras for Keras 2 / tf.keras files, Keras 3
for Keras 3 files. The reference is the original file; when Keras cannot load it (Keras 1 files,
tf.keras 2.13 archives) it is the *unfolded* model written by bnconvert's own writer, which checks
the fold but not the reading of the original. Files with Lambda layers are never loaded (their
Python bytecode would run), so their check is skipped and the report says why.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Model

__all__ = ["FoldCheck", "check_fold", "TOLERANCE"]

log = logging.getLogger(__name__)

#: max |difference| / max |output| allowed between the original and the folded model
TOLERANCE = 1e-5


@dataclass
class FoldCheck:
    """Outcome of the check: truthy unless the outputs differed beyond tolerance."""

    status: str  # passed, failed, skipped
    reason: str = ""
    reference: str | None = None
    runtime: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    tolerance: float = TOLERANCE

    def __bool__(self) -> bool:
        return self.status != "failed"

    def summary(self) -> str:
        if self.status == "skipped":
            return f"check skipped: {self.reason}"
        verdict = "passed" if self.status == "passed" else "FAILED"
        if self.max_abs is None or self.max_rel is None:
            return f"check {verdict}: {self.reason}"
        return (f"check {verdict} with {self.runtime} against {self.reference}: max abs diff {self.max_abs:.3g}, "
                f"relative {self.max_rel:.3g} (tolerance {self.tolerance:g})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "reason": self.reason, "reference": self.reference, "runtime": self.runtime,
            "max_abs": self.max_abs, "max_rel": self.max_rel, "tolerance": self.tolerance,
        }


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _runtime_for(fmt: str) -> str | None:
    order = ["keras"] if fmt.startswith("keras3") else ["tf_keras", "keras"] if fmt == "keras2-h5" else ["tf_keras"]
    return next((lib for lib in order if _available(lib)), None)


def _unrunnable(model: Model) -> str:
    """Why Keras must not load this model (a Lambda's bytecode would run), or ''. Other classes
    Keras cannot build without their code simply fail to load, and the check says so."""
    from ..readers.code import code_in_model

    code = code_in_model(model)  # the whole raw config: a Lambda can hide inside a wrapper
    if code:
        return f"{code[0]} holds Python code, which is never executed, so Keras cannot load the model here"
    return ""


def check_fold(
    original: Model, written: str | Path, *, fmt: str, seed: int = 1, batch: int = 2, tolerance: float = TOLERANCE,
) -> FoldCheck:
    """Compare ``written`` (the folded file, format ``fmt``) with ``original`` in real Keras."""
    if not _available("tensorflow"):
        return FoldCheck("skipped", "TensorFlow is not installed", tolerance=tolerance)
    lib = _runtime_for(fmt)
    if lib is None:
        return FoldCheck("skipped", f"no Keras that loads {fmt} files is installed", tolerance=tolerance)
    why = _unrunnable(original)
    if why:
        return FoldCheck("skipped", why, tolerance=tolerance)
    source = original.source
    with tempfile.TemporaryDirectory(prefix="bnconvert-check-") as tmp:
        reason = ""
        if source is not None and source.format.endswith("weights"):
            reason = "the input holds weights only; "
        elif source is not None and source.generation == 1:
            reason = "Keras 1 files cannot be loaded by current Keras; "
        elif source is not None and source.kernels_flipped:
            reason = "Keras would run the original's Theano kernels unflipped; "
        elif source is not None:
            result = _run(lib, Path(source.path), Path(written), Path(tmp), seed, batch)
            if result.get("ok"):
                return _compare(result, "the original file", tolerance)
            if result.get("stage") == "process":
                return FoldCheck("skipped", str(result.get("error")), tolerance=tolerance)
            if result.get("stage") != "reference":
                return FoldCheck("failed", f"{lib} could not run the folded file: {result.get('error')}", tolerance=tolerance)
            reason = f"{lib} cannot load the original ({result.get('error')}); "
        ref_path = Path(tmp) / f"unfolded{Path(written).suffix}"
        from ..writers import write_model  # only this fallback needs the writers

        write_model(original, ref_path, original=original)
        result = _run(lib, ref_path, Path(written), Path(tmp), seed, batch)
        if not result.get("ok") and result.get("stage") in ("reference", "process"):
            return FoldCheck("skipped", f"{lib} cannot run this model here ({result.get('error')})", tolerance=tolerance)
        if not result.get("ok"):
            return FoldCheck("failed", f"{lib} could not run the folded file: {result.get('error')}", tolerance=tolerance)
        return _compare(result, f"the unfolded model as written by bnconvert ({reason.rstrip('; ')})", tolerance)


def _run(lib: str, reference: Path, candidate: Path, tmp: Path, seed: int, batch: int) -> dict[str, Any]:
    out = tmp / "outputs.npz"
    cmd = [sys.executable, "-m", "bnconvert.fold._keras_child", lib, str(reference), str(candidate), str(out), str(seed), str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    if line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "stage": "process", "error": f"the Keras process failed ({tail[:300]})"}
    result = json.loads(line)
    if result.get("ok"):
        with np.load(out) as data:
            result["arrays"] = {k: data[k] for k in data.files}
    return result


def _compare(result: dict[str, Any], reference: str, tolerance: float) -> FoldCheck:
    arrays = result["arrays"]
    n = result["outputs"]
    worst_abs, worst_rel = 0.0, 0.0
    for i in range(n):
        ref, new = arrays[f"ref_{i}"], arrays.get(f"new_{i}")
        if new is None or new.shape != ref.shape:
            return FoldCheck("failed", f"output {i} has shape {None if new is None else new.shape}, expected {ref.shape}",
                             reference=reference, runtime=result["runtime"], tolerance=tolerance)
        diff = float(np.max(np.abs(new - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        rel = diff / scale if scale > 0 else diff
        if not np.isfinite(diff):
            rel = diff = float("inf")
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, rel)
    status = "passed" if worst_rel <= tolerance else "failed"
    return FoldCheck(status, "" if status == "passed" else "outputs differ beyond tolerance", reference=reference,
                     runtime=result["runtime"], max_abs=worst_abs, max_rel=worst_rel, tolerance=tolerance)
