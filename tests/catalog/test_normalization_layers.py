"""The per-sample normalisations' float64 semantics against Keras 3, tf-keras and the published
formulas of keras-contrib and TensorFlow Addons; Keras 3's SpectralNormalization (its layer);
SyncBatchNormalization read, audited and folded as the BatchNormalization it is at inference.

Keras 3 runs in this process (every case built, saved and run once per session, for this module
and the ONNX tests); tf-keras runs in
``fixtures/make_norm_fixtures.py``, which stored its inputs and outputs beside its files
(``norm_tfk_*.expected.npz``), as it did for the keras-contrib and TensorFlow Addons files
(neither package is installed: their expected outputs are tf-keras' GroupNormalization with a
group per channel, and keras-contrib's formula in numpy). The error measure is
``max |keras - reference| / max |keras|``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.catalog import catalog, fold_role
from bnconvert.catalog.facts import ConfigProblem
from bnconvert.catalog.normalization import (
    ADDONS,
    CONTRIB,
    instance_norm_origin,
    unit_norm,
)
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError

from ..conftest import fixture_file

#: Keras 3 warns that LayerNormalization's rms_scaling is deprecated: the cases build it on purpose
pytestmark = pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`:UserWarning")
#: the issue's bar: 1e-5 relative (float32 rounding of these small models is a few 1e-7)
TOLERANCE = 1e-5
#: every class this file compares with Keras or a published formula (tests/catalog/test_semantics.py
#: leaves them to it)
NORMALIZATION_CLASSES = frozenset({"GroupNormalization", "UnitNormalization", "RMSNormalization", "InstanceNormalization",
                                   "Addons>InstanceNormalization", "Addons>GroupNormalization", "SpectralNormalization"})
#: the tf-keras fixtures and the files made as keras-contrib and TensorFlow Addons write them
FILES = ("norm_tfk_group.h5", "norm_tfk_unit.h5", "norm_tfk_layernorm.h5", "norm_tfk_syncbn.h5", "norm_tfk_syncbn.keras",
         "norm_tfa_instance.h5", "norm_tfa_instance.keras", "norm_contrib_instance.h5")


def expected(file: str) -> Any:
    """The inputs ``x`` and outputs ``y`` stored beside a fixture file (one per model)."""
    return np.load(fixture_file(f"{file.rsplit('.', 1)[0]}.expected.npz"))


def _error(want: np.ndarray, got: np.ndarray) -> float:
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    assert want.shape == got.shape, (want.shape, got.shape)
    return float(np.abs(want - got).max() / np.abs(want).max())


def keras3_cases() -> dict[str, Any]:
    """name -> builder of a small Keras 3 model (the ONNX tests export the same ones)."""
    import keras

    L = keras.layers

    def seq(shape: tuple[int, ...], *layers: Any) -> Any:
        return keras.Sequential([keras.Input(shape), *layers])

    return {
        "group": lambda: seq((5, 6), L.GroupNormalization(3, epsilon=1e-4)),
        "group_axis1": lambda: seq((6, 4, 5), L.Conv2D(6, 1, data_format="channels_first"),
                                   L.GroupNormalization(2, axis=1, center=False)),
        "group_conv_last": lambda: seq((5, 5, 3), L.Conv2D(8, 3), L.GroupNormalization(4, scale=False)),
        "group_instance": lambda: seq((4, 5, 6), L.GroupNormalization(-1)),
        "group_negative_axis": lambda: seq((4, 6, 5), L.GroupNormalization(3, axis=-2)),
        "group_one": lambda: seq((4, 5, 6), L.GroupNormalization(1, epsilon=1e-2)),
        "unit": lambda: seq((4, 5), L.UnitNormalization()),
        "unit_axes": lambda: seq((4, 5, 3), L.UnitNormalization(axis=[1, 2])),
        "rms": lambda: seq((4, 6), L.RMSNormalization()),
        "rms_axes": lambda: seq((4, 5, 3), L.RMSNormalization(axis=[-2, -1], epsilon=1e-3)),
        "layernorm_all_axes": lambda: seq((4, 5, 3), L.LayerNormalization(axis=[1, 2, 3], center=False, scale=False)),
        "layernorm_rms_axes": lambda: seq((4, 5, 3), L.LayerNormalization(axis=[-2, -1], rms_scaling=True)),
        "layernorm_middle": lambda: seq((4, 5, 3), L.LayerNormalization(axis=1, epsilon=1e-2, scale=False)),
        "batchnorm_synchronized": lambda: seq((5, 5, 3), L.Conv2D(4, 3), L.BatchNormalization(synchronized=True)),
        "spectral": lambda: seq((6, 6, 3), L.Conv2D(4, 1), L.BatchNormalization(),
                                L.SpectralNormalization(L.Conv2D(4, 3, activation="relu")), L.Flatten(),
                                L.SpectralNormalization(L.Dense(3))),
    }


#: cases also saved as Keras 3's legacy .h5 (weights by name rather than ``vars/<i>``)
H5_CASES = ("group_axis1", "rms_axes", "unit_axes", "spectral")


#: the Keras 3 cases, built once per test session (the ONNX tests use the same files and outputs)
_BUILT: dict[str, tuple[Path, list[np.ndarray], np.ndarray]] = {}


def keras3_outputs(folder: Path) -> dict[str, tuple[Path, list[np.ndarray], np.ndarray]]:
    """Every Keras 3 case built with non-trivial weights, saved into ``folder`` (``.keras``; some
    ``.h5`` too) and run by Keras: name -> (path, inputs, output). Built on the first call only."""
    if not _BUILT:
        _BUILT.update(_build_keras3(folder))
    return _BUILT


def _build_keras3(folder: Path) -> dict[str, tuple[Path, list[np.ndarray], np.ndarray]]:
    import keras

    from ..onnx.helpers import inputs_for, keras_predict, randomize

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(7)
    out = {}
    for name, build in keras3_cases().items():
        model = build()
        randomize(model)  # gamma, beta, BN statistics
        for v in model.weights:
            if v.path.endswith("/scale"):  # RMSNormalization's
                v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype(np.float32))
        xs = inputs_for(model, batch=3)
        xs = [x * np.float32(2.0) + np.float32(0.5) for x in xs]  # a mean and a spread that are not 0 and 1
        if name.startswith("unit"):  # a sample of norm ~1e-8: over Keras 3's floor (1e-12), under tf-keras' (1e-6)
            xs[0][1] *= np.float32(1e-8)
        (y,) = keras_predict(model, xs)
        for fmt in ("keras", "h5") if name in H5_CASES else ("keras",):
            path = folder / f"{name}.{fmt}"
            model.save(path)
            out[f"{name}_{fmt}"] = (path, xs, y)
    return out


def reference(path: Path, xs: list[np.ndarray]) -> tuple[np.ndarray, set[str]]:
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    feeds = {s.name: x for s, x in zip(runner.input_specs(), xs)}
    (y,) = runner.infer(feeds).values()
    return y, {layer.source_class or layer.class_name for _, layer, _ in runner.model.walk()}


@pytest.fixture(scope="module")
def keras3_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[float, set[str]]]:
    results = {}
    for name, (path, xs, y) in keras3_outputs(tmp_path_factory.mktemp("norm_k3")).items():
        got, classes = reference(path, xs)
        results[name] = (_error(y, got), classes)
    return results


def _keras3_names() -> list[str]:
    return sorted(f"{name}_{fmt}" for name in keras3_cases() for fmt in (("keras", "h5") if name in H5_CASES else ("keras",)))


@pytest.mark.parametrize("case", _keras3_names())
def test_float64_reference_equals_keras3(case: str, keras3_results: dict[str, tuple[float, set[str]]]) -> None:
    error, classes = keras3_results[case]
    assert error <= TOLERANCE, f"{case} ({', '.join(sorted(classes))}): max |keras - reference| / max = {error:.2e}"


@pytest.fixture(scope="module")
def file_results() -> dict[str, tuple[float, set[str]]]:
    """The fixture files against their stored outputs: file -> (error, classes as the file names them)."""
    results = {}
    for file in FILES:
        data = expected(file)
        got, classes = reference(fixture_file(file), [data["x"]])
        results[file] = (_error(data["y"], got), classes)
    return results


@pytest.mark.parametrize("file", FILES)
def test_float64_reference_equals_tf_keras_and_the_published_formulas(
        file: str, file_results: dict[str, tuple[float, set[str]]]) -> None:
    """tf-keras' outputs (GroupNormalization, UnitNormalization, LayerNormalization's fused and
    unfused paths, SyncBatchNormalization; TensorFlow Addons' InstanceNormalization as tf-keras'
    GroupNormalization with a group per channel, in an .h5 and in a .keras) and keras-contrib's
    formula in numpy."""
    error, classes = file_results[file]
    assert error <= TOLERANCE, f"{file} ({', '.join(sorted(classes))}): {error:.2e}"


def test_every_normalization_class_is_compared(keras3_results: dict[str, tuple[float, set[str]]],
                                               file_results: dict[str, tuple[float, set[str]]]) -> None:
    """Each class this file answers for runs in a comparison above; TensorFlow Addons' own
    GroupNormalization shares Keras' record (same formula, same config) and so its comparisons."""
    seen = set().union(*(classes for _, classes in [*keras3_results.values(), *file_results.values()]))
    assert catalog()["Addons>GroupNormalization"].call is catalog()["GroupNormalization"].call
    missing = NORMALIZATION_CLASSES - seen - {"Addons>GroupNormalization"}
    assert not missing, missing
    assert {"SyncBatchNormalization", "LayerNormalization"} <= seen


def test_tf_keras_unit_normalization_floor_is_exercised() -> None:
    """The fixture's second sample (norm ~1e-8) sits under tf-keras' floor and over Keras 3's: the
    two generations' rules disagree on it, so the tf-keras comparison above tells them apart."""
    x = expected("norm_tfk_unit.h5")["x"].astype(np.float64)
    tfk, k3 = unit_norm(x, [2], generation=2), unit_norm(x, [2], generation=3)
    assert np.allclose(tfk[0], k3[0]) and not np.allclose(tfk[1], k3[1], rtol=0.1)


# -- InstanceNormalization: which published layer -----------------------------------------------------
@pytest.mark.parametrize(("class_name", "config", "origin"), [
    ("Addons>InstanceNormalization", {"groups": 6, "axis": -1, "epsilon": 1e-3}, ADDONS),  # tf.keras .h5
    ("InstanceNormalization", {"groups": 6, "axis": -1, "epsilon": 1e-3}, ADDONS),  # a .keras: registered_name beside it
    ("InstanceNormalization", {"axis": None, "epsilon": 1e-3, "center": True, "scale": True}, CONTRIB),
    ("InstanceNormalization", {"axis": 3, "epsilon": 1e-5}, CONTRIB),
])
def test_instance_normalization_origin(class_name: str, config: dict[str, Any], origin: str) -> None:
    assert instance_norm_origin(class_name, config) == origin


def test_instance_normalization_of_unknown_origin_is_refused(tmp_path: Path) -> None:
    """A custom InstanceNormalization (TensorFlow's pix2pix example writes no ``axis`` and no
    ``groups``; its weights are ``scale``/``offset``): the reference refuses it naming the layer."""
    import json
    import shutil

    import h5py

    with pytest.raises(ConfigProblem, match="formula is unknown"):
        instance_norm_origin("InstanceNormalization", {"epsilon": 1e-5})
    path = tmp_path / "custom.h5"
    shutil.copy(fixture_file("norm_contrib_instance.h5"), path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][2]["config"].pop("axis")
        f.attrs["model_config"] = json.dumps(config).encode()
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    (spec,) = runner.input_specs()
    with pytest.raises(UnsupportedLayerError, match=r"instance_normalization.*formula is unknown"):
        runner.infer({spec.name: expected("norm_contrib_instance.h5")["x"]})


# -- fold roles, SyncBatchNormalization ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NORMALIZATION_CLASSES | {"LayerNormalization"}))
def test_normalizations_are_fold_barriers_with_a_reason(name: str) -> None:
    role = fold_role(name)
    reason = "renormalises its kernel" if name == "SpectralNormalization" else "own statistics"
    assert role.kind == "barrier" and reason in role.why


@pytest.mark.parametrize("file", ["norm_tfk_syncbn.h5", "norm_tfk_syncbn.keras"])
def test_sync_batch_normalization_reads_audits_and_folds_as_batch_normalization(file: str, tmp_path: Path) -> None:
    """tf-keras' SyncBatchNormalization: read as a BatchNormalization (its class kept for messages;
    a .keras keeps its weights under ``sync_batch_normalization``), folded into the Conv2D before
    it; the one that stays (a negative gamma before max pooling) is written back where tf-keras
    looks for it, and the folded file computes tf-keras' output."""
    model = bnconvert.load(fixture_file(file))
    for name in ("sync_bn", "sync_bn_kept"):
        bn = model[name]
        assert (bn.class_name, bn.source_class) == ("BatchNormalization", "SyncBatchNormalization")
        assert sorted(bn.weights) == ["beta", "gamma", "moving_mean", "moving_variance"]
    decisions = {d.bn: (d.action, d.target) for d in bnconvert.plan_folds(model)}
    assert decisions["sync_bn"] == ("backward", "conv") and decisions["sync_bn_kept"][0] == "stays"
    out = tmp_path / f"folded.{file.rsplit('.', 1)[1]}"
    bnconvert.fold_file(fixture_file(file), out, check=False)
    folded = bnconvert.load(out)
    assert [layer.name for layer in folded.layers if layer.class_name == "BatchNormalization"] == ["sync_bn_kept"]
    assert np.array_equal(folded["sync_bn_kept"].weights["gamma"], model["sync_bn_kept"].weights["gamma"])
    data = expected(file)
    got, _ = reference(out, [data["x"]])
    assert _error(data["y"], got) <= TOLERANCE


def test_tf_keras_group_normalization_with_a_mask_is_refused() -> None:
    """tf-keras weighs GroupNormalization's statistics by the input mask (Keras 3 ignores it):
    the reference does not compute masked statistics and says so instead of ignoring the mask."""
    from bnconvert.catalog.normalization import group_normalization_layer
    from bnconvert.catalog.record import CallContext
    from bnconvert.model import Layer, Source

    layer = Layer("gn", "GroupNormalization", {"groups": 2, "axis": -1})
    ctx = CallContext(source=Source(path="m.h5", format="keras2-h5", keras_version="2.15.0"),
                      masks=[np.ones((2, 3), bool)])
    with pytest.raises(UnsupportedLayerError, match="mask"):
        group_normalization_layer(layer, [np.zeros((2, 3, 4))], ctx)
    keras3 = CallContext(source=Source(path="m.keras", format="keras3-zip", keras_version="3.15.1"),
                         masks=[np.ones((2, 3), bool)])
    assert group_normalization_layer(layer, [np.arange(24.0).reshape(2, 3, 4)], keras3)[0].shape == (2, 3, 4)


def test_rms_normalization_epsilon_defaults_are_keras3s() -> None:
    """A config without ``epsilon`` gets the layer's default; ``null`` gets the op's (``backend.epsilon()``)."""
    import keras

    from bnconvert.catalog.normalization import rms_epsilon

    assert rms_epsilon({}) == keras.layers.RMSNormalization().epsilon
    assert rms_epsilon({"epsilon": None}) == keras.backend.epsilon()
    assert rms_epsilon({"epsilon": 0.5}) == 0.5


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_spectral_normalization_is_its_layer_and_survives_a_fold(fmt: str, tmp_path: Path,
                                                                 keras3_results: dict[str, tuple[float, set[str]]]) -> None:
    """Keras 3's SpectralNormalization at inference is its layer with the stored kernel (vector_u
    serves training). Folding the file's other BN writes its weights back where Keras 3 reads
    them (a .keras stores the kernel twice: the wrapper's vars/0 and its layer's)."""
    import keras

    path, xs, y = keras3_outputs(tmp_path)[f"spectral_{fmt}"]
    model = bnconvert.load(path)
    assert {"vector_u", "kernel", "bias"} == set(model["spectral_normalization"].weights)
    out = tmp_path / f"folded.{fmt}"
    report = bnconvert.fold_file(path, out, check=False)
    assert [bn.action for bn in report.batch_norms] == ["backward"]
    got, classes = reference(out, xs)
    assert "SpectralNormalization" in classes and "BatchNormalization" not in classes
    assert _error(y, got) <= TOLERANCE
    loaded = keras.saving.load_model(out, compile=False)
    assert _error(y, np.asarray(loaded(xs[0], training=False))) <= TOLERANCE
