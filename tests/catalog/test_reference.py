"""The float64 reference runner itself: the batch split over threads changes nothing, and a
model that mixes the samples of a batch (Keras 1 BN mode 2) is never split."""

from __future__ import annotations

import numpy as np
import pytest

from bnconvert.check.inputs import random_inputs
from bnconvert.check.pairing import fill_dynamic
from bnconvert.check.reference import ReferenceRunner

from ..conftest import fixture_file


def _feeds(runner: ReferenceRunner, batch: int) -> dict[str, np.ndarray]:
    specs, _ = fill_dynamic(runner.input_specs(), batch)
    return random_inputs(specs, seed=1, batch=batch)


@pytest.mark.parametrize("name", ["k3_functional.keras", "k3_chain.h5", "tfk_bn_virtual_batch.h5", "k1_th_model.h5"])
def test_batch_split_over_threads_gives_the_same_outputs(name: str) -> None:
    runner = ReferenceRunner(fixture_file(name))
    feeds = _feeds(runner, 3)
    whole = runner.infer(feeds)
    runner.threads = 2
    split = runner.infer(feeds)
    assert list(whole) == list(split)
    for key, value in whole.items():
        assert split[key].shape == value.shape
        np.testing.assert_allclose(split[key], value, rtol=0, atol=1e-13 * np.abs(value).max())


def test_a_model_that_mixes_samples_is_not_split() -> None:
    runner = ReferenceRunner(fixture_file("k1_mode2.h5"))  # BN with the batch's statistics
    assert runner._mixes_samples()
    feeds = _feeds(runner, 4)
    whole = runner.infer(feeds)
    runner.threads = 2
    for key, value in runner.infer(feeds).items():
        np.testing.assert_array_equal(value, whole[key])
    first = runner.infer({k: v[:2] for k, v in feeds.items()})
    assert any(not np.allclose(first[k], whole[k][:2]) for k in whole)  # the batch does matter


def test_layer_outputs_are_the_layers_values() -> None:
    runner = ReferenceRunner(fixture_file("k3_chain.keras"))
    feeds = _feeds(runner, 2)
    names = runner.layer_names()
    assert names[0] == "conv2d" and names[-1] == "dense_1"
    inner = runner.layer_outputs(feeds, ["batch_normalization", "dense_1"])
    assert set(inner) == {"batch_normalization", "dense_1"}
    np.testing.assert_array_equal(inner["dense_1"], runner.infer(feeds)["dense_1"])
