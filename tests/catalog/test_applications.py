"""The float64 reference on whole Keras Applications, against the same model run by Keras in float64.

Keras in float64 (``keras.config.set_dtype_policy("float64")``, the float32 model's weights) is
the truth the reference should reproduce to float64 rounding: it must be at least ten times
closer to it than Keras' own float32 model is (in practice 1e-15 against 1e-6; a few Keras
preprocessing layers keep float32 steps in a float64 model, hence the relative bound).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnconvert.check.reference import ReferenceRunner

from ..onnx.helpers import inputs_for, randomize

keras = pytest.importorskip("keras")

from ..onnx.test_applications import APPS  # noqa: E402 - after the importorskip

FAST = ["MobileNetV2", "MobileNetV3Small"]


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def _compare(name: str, formats: tuple[str, ...], tmp_path: Path) -> None:
    shape, top = APPS[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=shape)
    randomize(model)
    (x,) = [x * np.float32(top) for x in inputs_for(model, low=0.0)]
    y32 = np.asarray(model(x, training=False))
    try:
        keras.config.set_dtype_policy("float64")
        model64 = getattr(keras.applications, name)(weights=None, input_shape=shape)
    finally:
        keras.config.set_dtype_policy("float32")
    model64.set_weights([w.astype(np.float64) for w in model.get_weights()])
    y64 = np.asarray(model64(x.astype(np.float64), training=False))
    keras_error = _relative(y32, y64)
    for fmt in formats:
        path = tmp_path / f"{name}.{fmt}"
        model.save(path)
        runner = ReferenceRunner(path)
        (y,) = runner.infer({runner.input_specs()[0].name: x}).values()
        error = _relative(y, y64)
        assert error <= max(1e-12, 0.1 * keras_error), f"{name} {fmt}: {error:.2e} (Keras float32: {keras_error:.2e})"


@pytest.mark.parametrize("name", FAST)
def test_application_in_float64(name: str, tmp_path: Path) -> None:
    _compare(name, ("keras",), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in APPS if n not in FAST])
def test_application_in_float64_slow(name: str, tmp_path: Path) -> None:
    _compare(name, ("keras", "h5"), tmp_path)
