"""Models called on a dict of inputs and returning a dict of outputs (tf.keras 2.3+, Keras 3):
their configs hold ``input_layers``/``output_layers`` as dicts, and Keras orders the model's
inputs and outputs by sorted key. The keys here sort opposite to the layer names and the
inputs have different widths, so a wrong order cannot go unnoticed."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import bnconvert
from bnconvert.fold import fold_model
from bnconvert.model import TensorRef
from bnconvert.readers.graph import build_model
from bnconvert.writers.config_edit import edit_config

from ..check.subproc import run_json


def _keyed(k: Any) -> Any:  # k: keras or tf_keras
    L = k.layers
    rng = np.random.default_rng(3)
    a, b = k.Input((4,), name="alpha"), k.Input((3,), name="beta")
    h = L.Concatenate(name="cat")([L.Dense(5, name="da")(a), L.Dense(6, name="db")(b)])
    h = L.Dense(7, name="d")(h)
    h = L.BatchNormalization(name="bn")(h)
    m = k.Model(inputs={"z_in": a, "a_in": b},
                outputs={"y_out": L.Dense(2, name="first")(h), "b_out": L.Dense(3, name="second")(h)})
    bn = m.get_layer("bn")
    n = bn.get_weights()[0].shape
    bn.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(size=n), rng.normal(size=n), rng.uniform(0.5, 2, n)])
    return m


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"z_in": rng.normal(size=(2, 4)).astype("float32"), "a_in": rng.normal(size=(2, 3)).astype("float32")}


def _check(path: Path, want: dict[str, Any], tmp: Path) -> None:
    model = bnconvert.load(path)
    assert [r.layer for r in model.inputs] == ["beta", "alpha"]  # a_in, z_in
    assert [r.layer for r in model.outputs] == ["second", "first"]  # b_out, y_out
    folded, _ = fold_model(model)
    assert "bn" not in folded
    out = tmp / (path.name + ".onnx")
    bnconvert.export_file(path, out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = dict(zip([i.name for i in session.get_inputs()], [_inputs()["a_in"], _inputs()["z_in"]]))
    got = session.run(None, feeds)
    for key, value in zip(["b_out", "y_out"], got):
        expected = np.asarray(want[key])
        assert np.max(np.abs(value - expected)) / np.max(np.abs(expected)) < 1e-5, key


def test_keras3_keyed_inputs_outputs(tmp_path: Path) -> None:
    import keras

    m = _keyed(keras)
    want = m.predict(_inputs(), verbose=0)
    for suffix in (".keras", ".h5"):
        m.save(tmp_path / f"keyed{suffix}")
        _check(tmp_path / f"keyed{suffix}", want, tmp_path)


_TF_KERAS = """
import json, sys
import tf_keras as k
m = _keyed(k)
m.save(sys.argv[1] + "/keyed.h5")
want = m.predict(_inputs(), verbose=0)
print(json.dumps({key: value.tolist() for key, value in want.items()}))
"""


def test_tfkeras_keyed_inputs_outputs(tmp_path: Path) -> None:
    code = "from typing import Any\nimport numpy as np\n" + inspect.getsource(_keyed) + inspect.getsource(_inputs)
    want = run_json(code + _TF_KERAS, str(tmp_path))
    _check(tmp_path / "keyed.h5", want, tmp_path)


@pytest.mark.parametrize("form", ["dict", "list"])
def test_config_edit_rewires_keyed_outputs(form: str) -> None:
    """A BN that is itself an output: the fold rewires the dict entry to the layer before it."""
    ref = ["bn", 0, 0]
    outputs = {"y": ref} if form == "dict" else [ref]
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_shape": [None, 3]}, "inbound_nodes": []},
        {"class_name": "Dense", "name": "d", "config": {"name": "d", "units": 3}, "inbound_nodes": [[["x", 0, 0, {}]]]},
        {"class_name": "BatchNormalization", "name": "bn", "config": {"name": "bn"}, "inbound_nodes": [[["d", 0, 0, {}]]]},
    ], "input_layers": {"x": ["x", 0, 0]} if form == "dict" else [["x", 0, 0]], "output_layers": outputs}}
    model = build_model(config)
    folded = model.with_layers([layer for layer in model.layers if layer.name != "bn"], outputs=[TensorRef("d", 0, 0)])
    edited = edit_config(config, folded)
    got = edited["config"]["output_layers"]
    assert (got["y"] if form == "dict" else got[0])[0] == "d"
