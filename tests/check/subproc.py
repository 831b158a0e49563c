"""Run a snippet in a fresh interpreter: for tf-keras (which should not share a process with
Keras 3) and for "TensorFlow is not installed" (``sys.modules['tensorflow'] = None``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from ..conftest import ROOT

__all__ = ["NO_TF", "run_python", "run_json"]

#: makes TensorFlow and both Kerases unimportable, as if they were not installed
NO_TF = "import sys; sys.modules.update(dict.fromkeys(['tensorflow', 'keras', 'tf_keras'], None))\n"


def run_python(code: str, *args: str, no_tf: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    prefix = NO_TF if no_tf else "import sys\n"
    return subprocess.run(
        [sys.executable, "-c", prefix + code, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900
    )


def run_json(code: str, *args: str, no_tf: bool = False) -> Any:
    """Run ``code`` (which prints one JSON document as its last line) and parse that line."""
    proc = run_python(code, *args, no_tf=no_tf)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
