"""Keras' outputs for the Lambda and custom-layer fixtures, shared by tests/test_replace.py and
tests/test_custom_layers.py.

fixtures/make_replace_fixtures.py ran Keras on the ORIGINAL files (the CarND Lambda loaded with
``safe_mode=False``, the custom classes as ``custom_objects``: only the fixture maker does that,
bnconvert never runs a file's code) and kept its seeded inputs ``x`` and outputs ``y`` in
``<file stem>.expected.npz``; the tests compare bnconvert's float64 reference and its ONNX export
with those.
"""

from __future__ import annotations

import numpy as np

from .conftest import FIXTURES

__all__ = ["CARND", "CUSTOM", "LAMBDA_SPEC", "expected", "rel_error"]

#: the CarND Lambda ``x / 255.0 - 0.5`` as the Keras layer computing it
LAMBDA_SPEC = {"class_name": "Rescaling", "config": {"scale": 0.00392156862745098, "offset": -0.5}}
CARND = {"k3": FIXTURES / "replace_carnd_k3.keras", "tfk": FIXTURES / "replace_carnd_tfk.h5"}
CUSTOM = {"k3": FIXTURES / "replace_custom_k3.keras", "tfk": FIXTURES / "replace_custom_tfk.h5"}


def expected(path) -> tuple[np.ndarray, np.ndarray]:
    """The fixture's seeded inputs and Keras' outputs on the original file."""
    with np.load(path.with_name(path.stem + ".expected.npz")) as data:
        return data["x"], data["y"]


def rel_error(reference: np.ndarray, other: np.ndarray) -> float:
    """max |diff| / max |reference|, the issue's measure."""
    reference = np.asarray(reference, np.float64)
    return float(np.max(np.abs(reference - np.asarray(other, np.float64))) / np.max(np.abs(reference)))
