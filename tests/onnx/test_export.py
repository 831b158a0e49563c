"""The exported model as a whole: interface, layout, metadata, files, Keras 1/2 files, the corpus.

References: Keras 3 in process, tf-keras in one subprocess per module (``reference.tfk_predict``),
the ``k1_*.expected.npz`` fixtures for Keras 1, and for the Keras 1 corpus files the equivalent
Keras 3 model rebuilt with the Keras 1 semantics (``reference.keras1_equivalent``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import bnconvert
from bnconvert.errors import BnconvertError, EquivalenceError, FormatError, OutputError, UnsupportedLayerError
from bnconvert.model import Layer
from bnconvert.onnx import to_onnx
from bnconvert.pipeline import export_file

from ..conftest import FIXTURES, corpus_file, fixture_file
from .helpers import TOLERANCE, chain_model, check_model, keras_predict, randomize, rel_err, run_onnx
from .reference import keras1_equivalent, tfk_predict, tfk_semantics_file

keras = pytest.importorskip("keras")
L = keras.layers


def uniform_inputs(shapes, seed=1, batch=2):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.0, 1.0, (batch, *s)).astype(np.float32) for s in shapes]


def export(path, tmp_path, name="out.onnx", **kwargs):
    out = tmp_path / name
    report = export_file(path, out, check=kwargs.pop("check", False), **kwargs)
    proto = onnx.load(out)
    check_model(proto)
    return proto, report


def input_shapes(proto):
    return [tuple(d.dim_value for d in i.type.tensor_type.shape.dim[1:]) for i in proto.graph.input]


def count(proto, op):
    return sum(n.op_type == op for n in proto.graph.node)


# -- interface --------------------------------------------------------------------------------
def _image_model():
    a, b = keras.Input((9, 8, 3), name="image"), keras.Input((5,), name="extra")
    x = L.Conv2D(6, 3, padding="same", name="conv_a")(a)
    x = L.BatchNormalization(name="bn_a")(x)
    x = L.ReLU(name="relu_a")(x)
    y = L.Conv2D(4, 3, strides=2, name="conv_b")(x)
    v = L.Dense(3, name="dense")(L.Concatenate(name="cat")([L.GlobalAveragePooling2D(name="gap")(x), b]))
    return keras.Model([a, b], [y, v], name="two_heads")


def test_interface_is_keras_names_layout_and_dynamic_batch(tmp_path):
    model = _image_model()
    randomize(model)
    model.save(tmp_path / "m.keras")
    proto, _ = export(tmp_path / "m.keras", tmp_path, fold=False)
    assert [i.name for i in proto.graph.input] == ["image", "extra"]
    assert [o.name for o in proto.graph.output] == ["conv_b", "dense"]
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert input_shapes(proto)[0] == (9, 8, 3)
    # one Transpose after the image input, one before the image output, none elsewhere
    assert count(proto, "Transpose") == 2
    layer_names = {layer.name for layer in model.layers}
    assert {n.name for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "Concat")} <= layer_names
    for batch in (1, 3):
        xs = uniform_inputs([(9, 8, 3), (5,)], batch=batch)
        for ref, out in zip(keras_predict(model, xs), run_onnx(proto, xs)):
            assert rel_err(ref, out) <= TOLERANCE


def test_outputs_that_repeat_or_feed_other_layers(tmp_path):
    inp = keras.Input((6, 6, 3), name="inp")
    a = L.Conv2D(4, 3, name="conv_a")(inp)
    b = L.Conv2D(2, 1, name="conv_b")(a)
    model = keras.Model(inp, [a, b, a, inp], name="repeats")
    randomize(model)
    model.save(tmp_path / "m.keras")
    proto, _ = export(tmp_path / "m.keras", tmp_path, fold=False)
    names = [o.name for o in proto.graph.output]
    assert names[:3] == ["conv_a", "conv_b", "conv_a_1"] and len(set(names)) == 4
    xs = uniform_inputs([(6, 6, 3)])
    for ref, out in zip(keras_predict(model, xs), run_onnx(proto, xs)):
        assert rel_err(ref, out) <= TOLERANCE


def test_nchw_inputs_and_outputs(tmp_path):
    model = _image_model()
    randomize(model)
    model.save(tmp_path / "m.keras")
    proto, report = export(tmp_path / "m.keras", tmp_path, nchw=True)
    assert report.layout == "nchw"
    assert input_shapes(proto) == [(3, 9, 8), (5,)]
    assert count(proto, "Transpose") == 0
    xs = uniform_inputs([(9, 8, 3), (5,)])
    ref = keras_predict(model, xs)
    out = run_onnx(proto, [xs[0].transpose(0, 3, 1, 2), xs[1]])
    assert rel_err(ref[0].transpose(0, 3, 1, 2), out[0]) <= TOLERANCE
    assert rel_err(ref[1], out[1]) <= TOLERANCE


def test_integer_input_and_dynamic_image_size(tmp_path):
    inp = keras.Input((None, None, 3), dtype="uint8", name="pixels")
    x = L.Rescaling(1 / 255)(inp)
    x = L.ZeroPadding2D(1)(x)
    x = L.Conv2D(4, 3, strides=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    model = keras.Model(inp, L.MaxPooling2D(padding="same")(x), name="dynamic")
    randomize(model)
    model.save(tmp_path / "m.keras")
    proto, _ = export(tmp_path / "m.keras", tmp_path, fold=False)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    for size in ((7, 9), (12, 5)):
        x = np.random.default_rng(0).integers(0, 256, (2, *size, 3)).astype(np.uint8)
        ref = keras_predict(model, [x])[0]
        assert rel_err(ref, run_onnx(proto, [x])[0]) <= TOLERANCE


def test_metadata_records_producer_source_and_fold(tmp_path):
    path = fixture_file("k3_educba.keras")
    proto, report = export(path, tmp_path)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["producer"] == f"bnconvert {bnconvert.__version__}"
    assert props["source_file"] == "k3_educba.keras"
    stamp = json.loads(props["bnconvert_provenance"])  # written once the check passed
    assert stamp["fold"]["totals"]["batch_norms"] == report.fold.totals["batch_norms"] > 0
    assert stamp["check"]["status"] == "not checked" and stamp["check"]["reason"] == "--no-check"  # check=False here
    assert stamp["options"]["precision"] == "float32"
    assert proto.producer_name == "bnconvert"


def test_fold_first_then_export(tmp_path):
    path = fixture_file("k3_educba_neg_gamma.keras")
    folded, report = export(path, tmp_path, name="folded.onnx")
    plain, _ = export(path, tmp_path, name="plain.onnx", fold=False)
    stays = report.fold.totals["stays"]
    assert report.fold.totals["folded"] > 0
    assert count(plain, "BatchNormalization") + count(plain, "Mul") > count(folded, "BatchNormalization") + count(folded, "Mul")
    assert count(folded, "BatchNormalization") <= stays
    model = keras.saving.load_model(path, compile=False)
    xs = uniform_inputs([tuple(model.inputs[0].shape[1:])])
    ref = keras_predict(model, xs)[0]
    assert rel_err(ref, run_onnx(folded, xs)[0]) <= TOLERANCE
    assert rel_err(ref, run_onnx(plain, xs)[0]) <= TOLERANCE


def test_bn_on_the_held_axis_1_is_batchnormalization_else_mul_add(tmp_path):
    # rows BN on the input (held as Keras lays it out: axis 1 is ONNX axis 1) -> BatchNormalization;
    # rows BN after a convolution (held NCHW: the rows axis is ONNX axis 2) -> Mul + Add
    model = keras.Sequential([keras.Input((6, 5, 3)), L.BatchNormalization(axis=1), L.Conv2D(4, 1),
                              L.BatchNormalization(axis=1), L.Conv2D(2, 3, padding="same")])
    randomize(model)
    model.save(tmp_path / "m.keras")
    proto, _ = export(tmp_path / "m.keras", tmp_path, fold=False)
    assert count(proto, "BatchNormalization") == 1 and count(proto, "Mul") == 1 and count(proto, "Add") == 1
    xs = uniform_inputs([(6, 5, 3)])
    assert rel_err(keras_predict(model, xs)[0], run_onnx(proto, xs)[0]) <= TOLERANCE


def test_nested_concatenations_become_one_concat_unless_read_elsewhere(tmp_path):
    # Inception's pattern: concat([a, concat([b, c])]) on one axis is one Concat; an inner concat
    # that is also an output, or joins along another axis, stays
    inp = keras.Input((4, 4, 3), name="inp")
    a, b, c, d = (L.Conv2D(2, 1, name=f"conv_{k}")(inp) for k in "abcd")
    inner = L.Concatenate(name="inner")([b, c])
    deeper = L.Concatenate(name="deeper")([L.Concatenate(name="innermost")([c, d]), a])
    kept = L.Concatenate(axis=1, name="rows")([a, b])
    outs = [L.Concatenate(name="outer")([a, inner, deeper]),
            L.Concatenate(name="shared_outer")([kept, kept]), L.Concatenate(name="cat_out")([c, d])]
    shared = L.Concatenate(name="shared")([d, a])
    model = keras.Model(inp, [*outs, L.Concatenate(name="uses_shared")([shared, b]), shared], name="cats")
    randomize(model)
    model.save(tmp_path / "m.keras")
    proto, _ = export(tmp_path / "m.keras", tmp_path)
    cats = {n.name: list(n.input) for n in proto.graph.node if n.op_type == "Concat"}
    assert set(cats) == {"outer", "rows", "shared_outer", "cat_out", "shared", "uses_shared"}
    assert len(cats["outer"]) == 6  # a, b, c, c, d, a
    xs = uniform_inputs([(4, 4, 3)])
    for ref, out in zip(keras_predict(model, xs), run_onnx(proto, xs)):
        assert rel_err(ref, out) <= TOLERANCE


def test_builtin_numerical_check_runs(tmp_path):
    _, report = export(fixture_file("k3_conv1d.keras"), tmp_path, check=True)
    assert report.check is not None and "passed" in report.check.headline()


# -- Keras 1 and tf-keras files -----------------------------------------------------------------
KERAS1 = ["k1_conv1d", "k1_mode2", "k1_tf_seq", "k1_th_model", "k1_weights"]


@pytest.mark.parametrize("fold", [True, False], ids=["fold", "no-fold"])
@pytest.mark.parametrize("stem", KERAS1)
def test_keras1_fixtures_match_their_expected_outputs(stem, fold, tmp_path):
    expected = np.load(fixture_file(f"{stem}.expected.npz"))
    config = FIXTURES / f"{stem}.json"  # weights-only files come with their architecture
    options = {"config": config} if config.exists() else None
    proto, _ = export(fixture_file(f"{stem}.h5"), tmp_path, fold=fold, load_options=options)
    assert rel_err(expected["y"], run_onnx(proto, [expected["x"]])[0]) <= TOLERANCE


@pytest.mark.parametrize("opset", [13, 21])
def test_keras1_theano_model_at_other_opsets(opset, tmp_path):
    expected = np.load(fixture_file("k1_th_model.expected.npz"))
    proto, _ = export(fixture_file("k1_th_model.h5"), tmp_path, opset=opset)
    assert proto.opset_import[0].version == opset
    assert rel_err(expected["y"], run_onnx(proto, [expected["x"]])[0]) <= TOLERANCE


TFK = ["tfk_bn_variants.h5", "tfk_chain.h5", "tfk_conv1d.h5", "tfk_educba.h5", "tfk_functional.h5",
       "tfk_chain.keras", "tfk_functional.keras"]
CORPUS_TFK = [
    "ALbaghdadi__Eye_State_detection__model.keras",
    "Hyperparticle__one-pixel-attack-keras__networks_models_resnet.h5",
    "KonduitAI__dl4j-test-resources__src_main_resources_modelimport_keras_tfkeras_batchNormError.h5",
    "mvirgo__MLND-Capstone__full_CNN_model.h5",
    "oarriaga__face_classification__trained_models_emotion_models_fer2013_mini_XCEPTION",
]
#: rebuilt in tf-keras from the file's config with the weights bnconvert read: tf-keras 2.21 cannot
#: load the tf.keras 2.13 zip, and loads the Keras 2.1.3 Theano file without the kernel flip
#: Keras 2 applied between backends (``convert_kernel``), which bnconvert's reader does apply
CORPUS_TFK_REBUILD = [
    "AliElgamel9__FastNeuralStyleTransfer__model.keras",
    "KonduitAI__dl4j-test-resources__src_main_resources_modelimport_keras_weights_batch_to_conv2d_theano_2.h5",
]


def _inputs_of(path, load_options=None):
    model = bnconvert.load(path, **(load_options or {}))
    shapes = [tuple(model[r.layer].config.get("batch_shape") or model[r.layer].config["batch_input_shape"])[1:]
              for r in model.inputs]
    return model, uniform_inputs(shapes)


@pytest.fixture(scope="module")
def tfk_references():
    """tf-keras outputs for every tf-keras fixture and corpus file (one subprocess)."""
    jobs, keys = [], []
    for name in TFK:
        path = fixture_file(name)
        jobs.append((path, _inputs_of(path)[1], None))
        keys.append(name)
    try:
        folder = corpus_file(CORPUS_TFK[0]).parent
    except pytest.skip.Exception:
        folder = None
    if folder is not None:
        for prefix in CORPUS_TFK + CORPUS_TFK_REBUILD:
            path = corpus_file(prefix)
            model, xs = _inputs_of(path)
            jobs.append((path, xs, model if prefix in CORPUS_TFK_REBUILD else None))
            keys.append(prefix)
    outs = tfk_predict(jobs)
    return {key: (job[1], out) for key, job, out in zip(keys, jobs, outs)}


@pytest.mark.parametrize("name", TFK)
def test_tf_keras_fixtures_match_tf_keras(name, tfk_references, tmp_path):
    xs, ref = tfk_references[name]
    proto, _ = export(fixture_file(name), tmp_path)
    for r, o in zip(ref, run_onnx(proto, xs)):
        assert rel_err(r, o) <= TOLERANCE


def test_tf_keras_semantics(tmp_path):
    path, x, y = tfk_semantics_file(tmp_path)
    proto, _ = export(path, tmp_path, fold=False)
    assert rel_err(y, run_onnx(proto, [x])[0]) <= TOLERANCE
    assert any(n.op_type == "HardSigmoid" and n.attribute[0].f == pytest.approx(0.2) for n in proto.graph.node)


def test_tf_keras_virtual_batch_fixture(tmp_path):
    expected = np.load(fixture_file("tfk_bn_virtual_batch.expected.npz"))
    proto, _ = export(fixture_file("tfk_bn_virtual_batch.h5"), tmp_path, fold=False)
    assert rel_err(expected["y"], run_onnx(proto, [expected["x"]])[0]) <= TOLERANCE


# -- corpus ---------------------------------------------------------------------------------
@pytest.mark.corpus
@pytest.mark.parametrize("prefix", CORPUS_TFK + CORPUS_TFK_REBUILD)
def test_corpus_keras2_files_match_tf_keras(prefix, tfk_references, tmp_path):
    path = corpus_file(prefix)
    xs, ref = tfk_references[prefix]
    for fold in (True, False):
        proto, _ = export(path, tmp_path, name=f"{fold}.onnx", fold=fold)
        for r, o in zip(ref, run_onnx(proto, xs)):
            assert rel_err(r, o) <= TOLERANCE, (prefix, fold)


@pytest.mark.corpus
@pytest.mark.parametrize("prefix", ["AKSHATV25__", "Alessio1599__"])
def test_corpus_keras3_files_match_keras3(prefix, tmp_path):
    path = corpus_file(prefix)
    model = keras.saving.load_model(path, compile=False)
    xs = uniform_inputs([tuple(model.inputs[0].shape[1:])])
    proto, _ = export(path, tmp_path)
    assert rel_err(keras_predict(model, xs)[0], run_onnx(proto, xs)[0]) <= TOLERANCE


@pytest.mark.corpus
@pytest.mark.parametrize("prefix, config", [
    ("KonduitAI__dl4j-test-resources__src_main_resources_modelimport_keras_weights_batch_to_conv2d_theano_1", None),
    ("VincentCheungM__carnd-p3__model.h5", "VincentCheungM__carnd-p3__model.json"),
])
def test_corpus_keras1_files_match_their_keras3_equivalent(prefix, config, tmp_path):
    path = corpus_file(prefix)
    options = {"config": corpus_file(config)} if config else None
    model, xs = _inputs_of(path, options)
    reference = keras1_equivalent(model)
    proto, _ = export(path, tmp_path, load_options=options)
    if any(layer.config.get("keras1_mode") == 2 for layer in model.layers):
        assert count(proto, "ReduceMean") == 2  # batch statistics, computed in the graph
    assert rel_err(np.asarray(reference(xs[0])), run_onnx(proto, xs)[0]) <= TOLERANCE


# -- refusals -----------------------------------------------------------------------------------
def test_every_unsupported_layer_is_named_in_one_line():
    layers = [Layer("lambda_1", "Lambda", {}), Layer("dense", "Dense", {"units": 4}, weights={"kernel": np.ones((5, 4))}),
              Layer("refl", "ReflectionPadding2D", {}), Layer("odd", "Activation", {"activation": "my_custom_fn"})]
    with pytest.raises(UnsupportedLayerError) as info:
        to_onnx(chain_model(layers, [None, 5]))
    message = str(info.value)
    assert "\n" not in message and "3 unsupported layers" in message
    for part in ("'lambda_1' (Lambda)", "'refl' (ReflectionPadding2D)", "'odd' (Activation: activation 'my_custom_fn'"):
        assert part in message
    assert "'dense'" not in message


def test_weights_only_and_bad_opset_are_refused(tmp_path):
    with pytest.raises(FormatError, match="--config"):
        export_file(fixture_file("k1_weights.h5"), tmp_path / "w.onnx")
    with pytest.raises(BnconvertError, match="opset 12"):
        export_file(fixture_file("k3_conv1d.keras"), tmp_path / "o.onnx", opset=12)
    assert list(tmp_path.iterdir()) == []


# -- files --------------------------------------------------------------------------------------
def test_output_rules(tmp_path):
    src = tmp_path / "model.keras"
    src.write_bytes(fixture_file("k3_conv1d.keras").read_bytes())
    out = tmp_path / "model.onnx"
    out.write_text("old")
    with pytest.raises(OutputError, match="--force"):
        export_file(src, out, check=False)
    assert out.read_text() == "old"
    with pytest.raises(OutputError, match="input"):
        export_file(src, src, check=False, force=True)
    with pytest.raises(OutputError, match="does not exist"):
        export_file(src, tmp_path / "missing" / "m.onnx", check=False)
    export_file(src, out, check=False, force=True)
    check_model(onnx.load(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "model.onnx"]  # no temporary left


def test_failed_check_writes_nothing(tmp_path, monkeypatch):
    from bnconvert.check import CheckResult

    failed = CheckResult(what="export", original="m", written="m.onnx", reference="keras", reference_kind="keras",
                         candidate="onnxruntime", candidate_kind="onnxruntime", comparison=None, passed=False,
                         message="the outputs differ")
    monkeypatch.setattr("bnconvert.pipeline._check_export", lambda *a, **k: failed)
    with pytest.raises(EquivalenceError, match="does not match the original; nothing written") as info:
        export_file(fixture_file("k3_conv1d.keras"), tmp_path / "m.onnx")
    assert info.value.exit_code == 1 and "export check FAILED: the outputs differ" in info.value.report.check.summary()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.corpus
def test_unsupported_file_writes_nothing(tmp_path):
    path = corpus_file("ken107__")
    with pytest.raises(UnsupportedLayerError, match="'lambda_1' \\(Lambda\\)"):
        export_file(path, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_external_data_above_a_threshold(tmp_path):
    path = fixture_file("k3_educba.keras")
    out = tmp_path / "big.onnx"
    report = export_file(path, out, check=False, external_data_above=1000)
    data = tmp_path / "big.onnx.data"
    assert report.external_data == str(data) and data.exists()
    assert out.stat().st_size < data.stat().st_size
    onnx.checker.check_model(str(out), full_check=True)
    model = keras.saving.load_model(path, compile=False)
    xs = uniform_inputs([tuple(model.inputs[0].shape[1:])])
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    out_y = session.run(None, {session.get_inputs()[0].name: xs[0]})[0]
    assert rel_err(keras_predict(model, xs)[0], out_y) <= TOLERANCE
    small = export_file(path, tmp_path / "small.onnx", check=False)
    assert small.external_data is None and not Path(str(tmp_path / "small.onnx") + ".data").exists()
    assert os.path.getsize(tmp_path / "small.onnx") > data.stat().st_size
