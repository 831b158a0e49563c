"""Every model file of the real-world corpus reads, with its BN layers counted right.

Expected counts and formats come from the corpus README (the specification of each file).
"""

from __future__ import annotations

import pytest

from bnconvert import audit, load
from bnconvert.bn import bn_params, is_bn

from ..conftest import corpus_file

# name prefix -> (format, keras_version, BN count, BN that must fold)
CORPUS = {
    "titu1994__Fast-Neural-Style__models_starry_night": ("keras1-h5", "1.1.2", 15, 0),
    "titu1994__Fast-Neural-Style__models_water-lilies": ("keras1-h5", "1.1.0", 15, 0),
    "titu1994__Fast-Neural-Style__weights_fastnet": ("keras1-weights", None, 15, 0),
    "KonduitAI__dl4j-test-resources__src_main_resources_modelimport_keras_weights_batch_to_conv2d_theano_1": ("keras1-h5", "1.2.2", 1, 1),
    "KonduitAI__dl4j-test-resources__src_main_resources_modelimport_keras_weights_batch_to_conv2d_theano_2": ("keras2-h5", "2.1.3", 1, 1),
    "KonduitAI__dl4j-test-resources__src_main_resources_modelimport_keras_tfkeras_batchNormError": ("keras2-h5", "2.2.4-tf", 1, 1),
    "ken107__CarND-Behavioral-Cloning-P3": ("keras1-h5", "1.2.1", 0, 0),
    "iamfaisalkhan__CarND-Behavioral-Cloning": ("keras1-h5", "1.1.1", 0, 0),
    "datlife__behavioral-cloning__model_best_cnn.h5": ("keras1-weights", None, 13, 0),
    "VincentCheungM__carnd-p3__model.h5": ("keras1-weights", None, 1, 0),
    "titu1994__DenseNet": ("keras1-weights", None, 3, 0),
    "mvirgo__MLND-Capstone__model.h5": ("keras1-weights", None, 1, 0),
    "mvirgo__MLND-Capstone__full_CNN_model": ("keras2-h5", "2.0.8", 1, 1),
    "oarriaga__face_classification": ("keras2-h5", "2.0.5", 14, 14),
    "Hyperparticle__one-pixel-attack-keras": ("keras2-h5", "2.1.4", 31, 15),
    "svh2811__Driving-Behavior-Cloning": ("keras2-h5", "2.2.2", 6, 6),
    "titu1994__Image-Super-Resolution": ("keras2-weights", "2.0.9", 12, 0),
    "dventimiglia__CarND-Behavioral-Cloning": ("keras2-weights", "2.3.1", 1, 0),
    "ALbaghdadi__Eye_State_detection": ("keras2-h5", "2.10.0", 3, 1),
    "Alessio1599__single-ECG-classification": ("keras3-zip", "3.4.1", 3, 3),
    "AliElgamel9__FastNeuralStyleTransfer": ("tfkeras-zip", "2.13.1", 0, 0),
    "AKSHATV25__Handwritten-Digit-Recognizer": ("keras3-zip", "3.15.1", 0, 0),
}
COMPANION = {"datlife__behavioral-cloning__model_best_cnn.h5": "datlife__behavioral-cloning__model_best_cnn.json",
             "VincentCheungM__carnd-p3__model.h5": "VincentCheungM__carnd-p3__model.json"}


def _load(prefix: str):
    path = corpus_file(prefix)
    config = corpus_file(COMPANION[prefix]) if prefix in COMPANION else None
    return load(path, config=config)


@pytest.mark.corpus
@pytest.mark.parametrize("prefix", sorted(CORPUS))
def test_corpus_file_reads_with_right_bn_count(prefix: str) -> None:
    fmt, version, n_bn, n_fold = CORPUS[prefix]
    model = _load(prefix)
    assert model.source.format == fmt
    if version is not None:
        assert model.source.keras_version == version
    bns = [layer for _, layer, _ in model.walk() if is_bn(layer)]
    assert len(bns) == n_bn
    for layer in bns:
        p = bn_params(layer)
        assert p.gamma.shape == p.beta.shape == p.mean.shape == p.variance.shape == (p.channels,)
    report = audit(model)
    assert len(report.batch_norms) == n_bn
    assert sum(bn.fold.folds for bn in report.batch_norms) == n_fold


@pytest.mark.corpus
def test_every_corpus_model_file_is_covered() -> None:
    from ..conftest import require_corpus

    files = [p.name for p in require_corpus().iterdir() if not p.name.endswith(".json") and p.name != "README.md"]
    uncovered = [f for f in files if not any(f.startswith(prefix) for prefix in CORPUS)]
    assert uncovered == []
    assert len(files) == len(CORPUS)


@pytest.mark.corpus
def test_theano_keras1_file_is_detected_and_flipped() -> None:
    model = _load("titu1994__Fast-Neural-Style__models_starry_night")
    assert model.source.backend == "theano" and "':0'" in model.source.backend_origin
    assert model.source.kernels_flipped
    conv1 = model["conv1"]
    assert conv1.class_name == "Conv2D" and conv1.source_class == "Convolution2D"
    assert conv1.config["data_format"] == "channels_first"
    import h5py

    with h5py.File(corpus_file("titu1994__Fast-Neural-Style__models_starry_night"), "r") as f:
        raw = f["model_weights/conv1/conv1_W"][()]  # (out, in, rows, cols), true convolution
    expected = raw.transpose(2, 3, 1, 0)[::-1, ::-1]
    assert conv1.weights["kernel"].shape == (9, 9, 3, 32)
    assert (conv1.weights["kernel"] == expected).all()


@pytest.mark.corpus
def test_keras1_modes_and_running_std_are_recorded() -> None:
    model = _load("titu1994__Fast-Neural-Style__models_water-lilies")
    assert model.source.running_std == "variance"
    report = audit(model).to_dict()
    for bn in report["batch_norms"]:
        assert bn["mode"] == 2
        assert bn["epsilon"] == pytest.approx(1e-5)
        kinds = {f["kind"] for f in bn["findings"]}
        assert "keras1-mode-2" in kinds
        assert bn["fold"]["action"] == "stays" and "mode 2" in bn["fold"]["reason"]


@pytest.mark.corpus
def test_bn_on_non_channel_axis_is_found() -> None:
    report = audit(_load("VincentCheungM__carnd-p3__model.h5")).to_dict()
    (bn,) = report["batch_norms"]
    assert bn["channels"] == 64 and bn["axis"] == [1]
    assert "non-channel-axis" in {f["kind"] for f in bn["findings"]}


@pytest.mark.corpus
def test_bn_after_add_stays_with_reason() -> None:
    report = audit(_load("Hyperparticle__one-pixel-attack-keras")).to_dict()
    after_add = [bn for bn in report["batch_norms"] if bn["input_from"]["class"] == "Add"]
    assert len(after_add) == 15
    assert all(bn["fold"]["action"] == "stays" for bn in after_add)
    assert all("add_" in bn["fold"]["reason"] for bn in after_add)


@pytest.mark.corpus
def test_bias_less_separable_convs_fold_backward() -> None:
    report = audit(_load("oarriaga__face_classification")).to_dict()
    targets = {bn["fold"]["target"] for bn in report["batch_norms"]}
    assert sum(t.startswith("separable_conv2d") for t in targets) == 8
    assert all(bn["fold"]["action"] == "backward" for bn in report["batch_norms"])
