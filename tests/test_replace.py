"""Lambda and custom layers replaced by Keras layers the user names (bnconvert.replace, --replace).

The CarND-style model (``Lambda(lambda x: x / 255.0 - 0.5)``, Conv2D, BatchNormalization ...),
written by tf-keras (.h5) and Keras 3 (.keras), exports with one ``--replace`` and matches Keras
run on the ORIGINAL file (the fixture's expected outputs: the Lambda ran in Keras when the fixture
was made, never in bnconvert); the folded file bnconvert writes with the replacement loads in
Keras (the fold check runs it there) without the Lambda and computes the same. Then what is
refused, in one line each.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import bnconvert
from bnconvert.cli import main
from bnconvert.errors import BnconvertError
from bnconvert.replace import (
    Replacement,
    apply_replacements,
    as_replacements,
    parse_replace_option,
)

from .conftest import FIXTURES
from .replace_keras import CARND, CUSTOM, LAMBDA_SPEC, expected, rel_error

LAMBDA = "lambda=" + json.dumps(LAMBDA_SPEC)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, object]]:
    """Each CarND file exported with the Lambda replaced (its check: the float64 reference of the
    replaced model), and the ONNX file's outputs on the seeded images."""
    import onnxruntime as ort

    out = {}
    folder = tmp_path_factory.mktemp("replace")
    for which, path in CARND.items():
        onnx_path = folder / f"{which}.onnx"
        report = bnconvert.export_file(path, onnx_path, replacements=[LAMBDA])
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out[which] = (report, session.run(None, {name: expected(path)[0]})[0])
    return out


@pytest.mark.parametrize("which", ["k3", "tfk"])
def test_carnd_export_matches_keras_on_the_original(exported, which: str) -> None:
    report, onnx_out = exported[which]
    assert rel_error(expected(CARND[which])[1], onnx_out) <= TOLERANCE
    assert report.check.passed
    # the check's reference is said to be the replaced model, never the file as written
    assert any("the reference is the model with the replacements" in note for note in report.check.notes)
    assert report.check.reference_kind == "reference"


@pytest.mark.parametrize("which", ["k3", "tfk"])
def test_carnd_float64_reference_matches_keras(which: str) -> None:
    from bnconvert.check.reference import ReferenceRunner

    model = apply_replacements(bnconvert.load(CARND[which]), {"lambda": LAMBDA_SPEC})
    runner = ReferenceRunner(CARND[which], model=model)
    x, y = expected(CARND[which])
    got = runner.infer({runner.input_specs()[0].name: x})
    assert rel_error(y, next(iter(got.values()))) <= 1e-6


@pytest.mark.parametrize("which", ["k3", "tfk"])
def test_carnd_fold_writes_a_file_keras_loads(which: str, tmp_path) -> None:
    """The fold check loads the written file in Keras (its safe mode: no Lambda left) and compares
    it with the replaced model; the folded file's ONNX export then matches Keras on the original."""
    import onnxruntime as ort

    folded = tmp_path / f"folded{CARND[which].suffix}"
    report = bnconvert.fold_file(CARND[which], folded, replacements=[LAMBDA])
    assert report.check.passed and report.check.candidate_kind == "keras", report.check
    assert report.check.error <= TOLERANCE
    bnconvert.export_file(folded, tmp_path / "folded.onnx", check=False)  # no Lambda, no --replace needed
    session = ort.InferenceSession(str(tmp_path / "folded.onnx"), providers=["CPUExecutionProvider"])
    x, y = expected(CARND[which])
    assert rel_error(y, session.run(None, {session.get_inputs()[0].name: x})[0]) <= TOLERANCE


def test_replaced_model_and_config(tmp_path) -> None:
    model = bnconvert.load(CARND["tfk"])
    chain = [{"class_name": "Rescaling", "config": {"scale": 1 / 255}},
             {"class_name": "Rescaling", "config": {"scale": 1.0, "offset": -0.5}}]
    new = apply_replacements(model, {"Lambda": chain})  # by class
    names = [layer.name for layer in new.layers]
    assert names[:3] == ["input_1", "lambda_rescaling", "lambda_rescaling_2"] and "lambda" not in new
    assert new["conv"].calls == [[bnconvert.TensorRef("lambda_rescaling_2")]]
    assert new.source.replaced and "Lambda" not in json.dumps(new.source.config)
    assert model["lambda"].class_name == "Lambda" and model.source.replaced == []  # the original is untouched
    report = bnconvert.fold_file(CARND["tfk"], tmp_path / "f.h5", check=False, replacements={"Lambda": chain})
    assert any("replaced 'lambda' (Lambda)" in note for note in report.notes)


def test_name_wins_over_class_and_keras3_functional_rewire() -> None:
    model = bnconvert.load(CUSTOM["k3"])
    new = apply_replacements(model, {
        "MyDense": {"class_name": "Dense", "config": {"units": 2}},
        "scale_shift": [{"class_name": "LayerNormalization", "config": {"axis": -1}},
                        {"class_name": "Identity", "config": {}}],
    })
    assert new["my_dense"].class_name == "Dense" and set(new["my_dense"].weights) == {"kernel", "bias"}
    np.testing.assert_array_equal(new["my_dense"].weights["kernel"], model["my_dense"].weights["0"])
    # the chain's layer that takes the weights keeps the name (a legacy .h5 keeps weights by layer name)
    assert [new[n].class_name for n in ("scale_shift", "scale_shift_identity")] == ["LayerNormalization", "Identity"]
    np.testing.assert_array_equal(new["scale_shift"].weights["beta"], model["scale_shift"].weights["1"])
    layers = {e["name"]: e for e in new.source.config["config"]["layers"]}
    flatten_in = layers["flatten"]["inbound_nodes"][0]["args"][0]["config"]["keras_history"]
    assert flatten_in == ["scale_shift_identity", 0, 0]


@pytest.mark.parametrize(("replacements", "words"), [
    ({"lamda": LAMBDA_SPEC}, "'lamda' names no layer or class"),
    ({"lambda": {"class_name": "Lambda", "config": {}}}, "'Lambda' runs code"),
    ({"lambda": {"class_name": "NoSuchLayer", "config": {}}}, "'NoSuchLayer' is not a class bnconvert runs"),
    ({"lambda": {"class_name": "Dense", "config": {"units": -3}}}, "config 'units' is -3"),
    ({"lambda": {"class_name": "Dense", "config": {"units": 3}}}, "the replacement takes 2 weights"),
    ({"lambda": {"class_name": "Cropping2D", "config": {"cropping": 1}}}, "weights disagree"),
    ({"lambda": {"class_name": "Rescaling", "config": {}, "code": "x"}}, "unknown keys 'code'"),
    ({"lambda": []}, "holds 0 layers"),
    ({"input_1": LAMBDA_SPEC}, "an input cannot be replaced"),
])
def test_refused_in_one_line(replacements, words: str) -> None:
    model = bnconvert.load(CARND["tfk"])
    with pytest.raises(BnconvertError, match=None) as info:
        apply_replacements(model, replacements)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_declared_shapes_hold_the_replacement() -> None:
    """A Lambda's own output_shape, and the shape a Keras 3 config records for a consumer's input."""
    model = bnconvert.load(CARND["tfk"])
    model["lambda"].config["output_shape"] = [8, 8, 3]
    with pytest.raises(BnconvertError, match=r"gives \(\?, 16, 32, 3\), the file declares \(\?, 8, 8, 3\)"):
        apply_replacements(model, {"lambda": LAMBDA_SPEC})
    weights = {"0": np.ones(4), "1": np.zeros(4)}
    custom = bnconvert.load(CUSTOM["k3"])
    assert custom["scale_shift"].weights.keys() == weights.keys()
    crop = {"class_name": "Cropping2D", "config": {"cropping": 1}}
    with pytest.raises(BnconvertError, match=r"gives \(\?, 2, 2, 4\), the file declares \(\?, 4, 4, 4\)"):
        apply_replacements(custom, {"scale_shift": crop})


def test_parsing(tmp_path) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"lambda": LAMBDA_SPEC}))
    (tmp_path / "r.yaml").write_text("lambda:\n  class_name: Rescaling\n  config: {scale: 0.5}\n")
    assert parse_replace_option(f"@{tmp_path / 'r.json'}") == [Replacement("lambda", (LAMBDA_SPEC,), f"replacements file {tmp_path / 'r.json'}")]
    assert as_replacements(tmp_path / "r.yaml")[0].layers == ({"class_name": "Rescaling", "config": {"scale": 0.5}},)
    for bad, words in [("lambda", "expected NAME_OR_CLASS=SPEC"), ("lambda={nope", "is not JSON"),
                       ("=" + json.dumps(LAMBDA_SPEC), "needs a layer name")]:
        with pytest.raises(BnconvertError, match=words):
            parse_replace_option(bad)
    with pytest.raises(BnconvertError, match="replaced twice"):
        as_replacements([LAMBDA, LAMBDA])


def test_cli_inspect_lists_code_layers_and_export_replaces(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["inspect", str(CARND["tfk"])])
    assert result.exit_code == 0, result.output
    line = next(li.strip() for li in result.output.splitlines() if li.strip().startswith("--replace"))
    assert line == "--replace 'lambda={\"class_name\": \"Identity\", \"config\": {}}'"
    assert "function <lambda>" in result.output and "module __main__" in result.output
    data = json.loads(runner.invoke(main, ["inspect", "--json", str(CUSTOM["tfk"])]).output)
    by_name = {item["name"]: item for item in data["opaque_layers"]}
    assert by_name["my_dense"]["weights"] == [{"name": "kernel", "shape": [64, 2]}, {"name": "bias", "shape": [2]}]
    assert by_name["scale_shift"]["kind"] == "custom"
    out = tmp_path / "carnd.onnx"
    result = runner.invoke(main, ["export", str(CARND["k3"]), "-o", str(out), "--replace", LAMBDA])
    assert result.exit_code == 0, result.output
    assert "replaced: 'lambda' by Rescaling" in result.output and "check passed" in result.output
    result = runner.invoke(main, ["verify", str(CARND["k3"]), str(out), "--replace", LAMBDA])
    assert result.exit_code == 0, result.output
    assert "the reference is the model with the replacements" in result.output
    result = runner.invoke(main, ["export", str(CARND["tfk"]), "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "with --replace" in result.output  # the way through is named
    result = runner.invoke(main, ["export", str(CARND["k3"]), "-o", str(tmp_path / "x.onnx"), "--replace", "lamda={}"])
    assert result.exit_code == 2 and "bnconvert: error:" in result.output


@pytest.mark.parametrize("which", ["k3", "tfk"])
def test_fold_with_a_chain_holding_weights_writes_a_file_keras_loads(which: str, tmp_path) -> None:
    """Both custom classes replaced (one by a two-layer chain whose Dense takes MyDense's weights):
    the written file holds no custom class, loads in Keras and computes the replaced model."""
    replacements = {"MyDense": [{"class_name": "Dense", "config": {"units": 2}},
                                {"class_name": "Activation", "config": {"activation": "linear"}}],
                    "ScaleShift": {"class_name": "LayerNormalization", "config": {"axis": -1}}}
    report = bnconvert.fold_file(CUSTOM[which], tmp_path / f"f{CUSTOM[which].suffix}", replacements=replacements)
    assert report.check.passed and report.check.candidate_kind == "keras", report.check


@pytest.mark.parametrize("name", ["k3_functional.keras", "tfk_functional.h5"])
def test_nested_paths(name: str, tmp_path) -> None:
    """A layer of a nested model named by its path, replaced by a chain; a replacement of a known
    class must keep its output shape (a Conv2D 'same' replaced by a 'valid' one is refused)."""
    path = FIXTURES / name
    chain = [{"class_name": "Activation", "config": {"activation": "relu"}},
             {"class_name": "Rescaling", "config": {"scale": 2.0}}]
    report = bnconvert.fold_file(path, tmp_path / f"f{path.suffix}", replacements={"inner_fn/inner_relu": chain})
    assert report.check.passed and report.check.candidate_kind == "keras", report.check
    inner = bnconvert.load(tmp_path / f"f{path.suffix}")["inner_fn"].model
    assert [layer.class_name for layer in inner.layers][-2:] == ["Activation", "Rescaling"]
    conv = {"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": 3}}
    with pytest.raises(BnconvertError, match=r"'inner_seq/inner_conv' \(Conv2D\): the replacement gives"):
        apply_replacements(bnconvert.load(path), {"inner_seq/inner_conv": conv})
