"""What bnconvert reads from each fixture equals what Keras itself holds for the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnconvert import load
from bnconvert.bn import bn_params
from bnconvert.layerspec import weight_spec

from ..conftest import FIXTURES

K3 = sorted(p.name for p in FIXTURES.glob("k3_*") if p.suffix in (".keras", ".h5"))
# tf-keras 2.21 saves a virtual-batch BN with its internally shifted axis and cannot load that
# file back: it is checked against its recorded output instead (test_virtual_batch_bn).
TFK = sorted(p.name for p in FIXTURES.glob("tfk_*") if p.suffix in (".keras", ".h5") and "virtual_batch" not in p.name)


def _keras_layers(kmodel, prefix=""):
    for layer in kmodel.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Functional", "Sequential"):
            yield from _keras_layers(layer, f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer


def _compare(path: Path, kmodel) -> int:
    model = load(path)
    ours = {p: layer for p, layer, _ in model.walk()}
    checked = 0
    for name, klayer in _keras_layers(kmodel):
        expected = [np.asarray(w) for w in klayer.get_weights()]
        if not expected:
            continue
        layer = ours[name]
        spec = [m for m, _ in weight_spec(layer.class_name, layer.config)]
        got = [layer.weights[m] for m in spec]
        assert len(got) == len(expected), name
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
        if layer.class_name == "BatchNormalization":
            p = bn_params(layer)
            assert p.epsilon == pytest.approx(float(klayer.epsilon))
            assert p.mean.std() > 0 and not np.allclose(p.variance, 1.0)  # non-trivial statistics
        checked += 1
    return checked


@pytest.mark.parametrize("name", K3)
def test_keras3_fixture_weights_equal_keras(name: str) -> None:
    keras = pytest.importorskip("keras")
    kmodel = keras.models.load_model(FIXTURES / name, compile=False)
    assert _compare(FIXTURES / name, kmodel) > 0


@pytest.mark.parametrize("name", TFK)
def test_tf_keras_fixture_weights_equal_tf_keras(name: str) -> None:
    tf_keras = pytest.importorskip("tf_keras")
    kmodel = tf_keras.models.load_model(FIXTURES / name, compile=False)
    assert _compare(FIXTURES / name, kmodel) > 0


def test_fixture_sets_are_present() -> None:
    assert len(K3) >= 20 and len(TFK) >= 8


@pytest.mark.parametrize("ext", [".h5", ".keras"])
def test_virtual_batch_bn_axis_and_shapes(ext: str) -> None:
    model = load(FIXTURES / f"tfk_bn_virtual_batch{ext}")
    layer = model["bn_virtual_batch"]
    assert layer.config["axis"] == [4]  # as tf-keras wrote it, shifted by its batch split
    p = bn_params(layer)
    assert p.axis == (3,) and p.channels == 4 and p.gamma.shape == (4,)
