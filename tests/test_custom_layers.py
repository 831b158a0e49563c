"""A user's own class registered with bnconvert.register_layer (catalog record + ONNX handler).

The registration is the README's worked example, run as it is written there (README and test stay
in step); the model is fixtures/make_replace_fixtures.py's custom one (``ScaleShift`` and
``MyDense``, written by tf-keras and Keras 3): ScaleShift registered, MyDense replaced by a Dense.
The ONNX export and the float64 reference match Keras run on the original file with the classes
defined (the fixture's expected outputs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import bnconvert
from bnconvert.catalog import catalog
from bnconvert.cli import main
from bnconvert.custom import RegistrationError
from bnconvert.errors import BnconvertError
from bnconvert.onnx.registry import handlers

from .conftest import ROOT
from .replace_keras import CUSTOM, expected, rel_error

DENSE = {"MyDense": {"class_name": "Dense", "config": {"units": 2}}}


def readme_example() -> str:
    """The Python block of the README's register_layer example."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- register-layer-example -->\s*```python\n(.*?)```\s*<!-- /register-layer-example -->", text, re.DOTALL)
    assert match, "README.md lost its register-layer example"
    return match.group(1)


@pytest.fixture
def registered() -> Iterator[None]:
    exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102 - our README
    try:
        yield
    finally:
        bnconvert.unregister_layer("ScaleShift")


@pytest.mark.parametrize("which", ["k3", "tfk"])
def test_registered_class_exports_and_matches_keras(registered, which: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    from bnconvert.check.reference import ReferenceRunner

    path = CUSTOM[which]
    x, y = expected(path)
    model = bnconvert.apply_replacements(bnconvert.load(path), DENSE)
    assert set(model["scale_shift"].weights) == {"scale", "shift"}  # the file's weights, by the record's meaning
    runner = ReferenceRunner(path, model=model)
    assert rel_error(y, next(iter(runner.infer({runner.input_specs()[0].name: x}).values()))) <= 1e-6
    report = bnconvert.export_file(path, tmp_path / "m.onnx", replacements=DENSE)
    assert report.check.passed, report.check
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert rel_error(y, session.run(None, {session.get_inputs()[0].name: x})[0]) <= 1e-5


def test_fold_keeps_a_registered_class_and_says_keras_cannot_run_it(registered, tmp_path: Path) -> None:
    """The folded file still holds ScaleShift: Keras cannot load it without the user's class, so
    the check runs the written file in the float64 reference and says why."""
    report = bnconvert.fold_file(CUSTOM["tfk"], tmp_path / "f.h5", replacements=DENSE)
    assert report.check.passed and report.check.candidate_kind == "reference"
    assert any("registered with bnconvert.register_layer" in note for note in report.check.notes)


def test_unregistered_class_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(BnconvertError, match=r"'scale_shift' \(ScaleShift\)"):
        bnconvert.export_file(CUSTOM["tfk"], tmp_path / "m.onnx", replacements=DENSE)


def test_registration_rules() -> None:
    dense_record, dense_handler = catalog()["Dense"], handlers()["Dense"]
    with pytest.raises(RegistrationError, match="built-in class"):
        bnconvert.register_layer("Dense", call=lambda layer, xs, ctx: xs)
    bnconvert.register_layer("Dense", call=lambda layer, xs, ctx: xs, override=True)
    try:
        assert catalog()["Dense"].family == "custom" and "Dense" not in handlers()  # no handler for other semantics
    finally:
        bnconvert.unregister_layer("Dense")
    assert catalog()["Dense"] is dense_record and handlers()["Dense"] is dense_handler
    for bad, words in [({"class_name": "not a name"}, "not a Keras class name"),
                       ({"masking": "sometimes"}, "masking 'sometimes'"),
                       ({"shape": 3}, "shape is not callable")]:
        kwargs = {"class_name": "Thing", "call": lambda layer, xs, ctx: xs, **bad}
        with pytest.raises(RegistrationError, match=words):
            bnconvert.register_layer(**kwargs)
    assert "Thing" not in catalog() and bnconvert.registered_layers() == []


def test_cli_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "scale_shift.py"
    plugin.write_text(readme_example(), encoding="utf-8")
    runner = CliRunner()
    try:
        result = runner.invoke(main, ["export", str(CUSTOM["k3"]), "-o", str(tmp_path / "m.onnx"), "--plugin", str(plugin),
                                      "--replace", "MyDense=" + json.dumps(DENSE["MyDense"])])
        assert result.exit_code == 0, result.output
        result = runner.invoke(main, ["inspect", "--plugin", str(plugin), str(CUSTOM["k3"])])
        assert "registered with bnconvert.register_layer" in result.output
    finally:
        bnconvert.unregister_layer("ScaleShift")
    broken = tmp_path / "broken.py"
    broken.write_text("raise ValueError('my mistake')\n", encoding="utf-8")
    result = runner.invoke(main, ["inspect", "--plugin", str(broken), str(CUSTOM["k3"])])
    assert result.exit_code == 2 and "plugin" in result.output and "my mistake" in result.output
