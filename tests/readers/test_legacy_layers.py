"""Keras 1 files of the legacy classes (``fixtures/make_legacy_layers.py``: written as Keras 1.2.2's
``save_model`` wrote them, expected outputs from a numpy transcription of the 1.2.2 source).

No installed Keras reads these files, so each is checked against its hand-computed Keras 1
outputs: what the reader makes of it (classes, configs, weights), the float64 reference, and the
checked ONNX export (``export_file`` with its built-in check against the float64 reference) run
by onnxruntime with a dynamic batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import bnconvert
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError

from ..catalog.test_legacy_layers import FOLDED_KERAS1, tf_keras_files
from ..conftest import fixture_file
from ..onnx.helpers import rel_err, run_onnx

STEMS = ["k1_legacy_dense", "k1_legacy_local1d", "k1_legacy_local2d", "k1_legacy_merge_seq", "k1_legacy_cos", "k1_legacy_dot",
         "k1_legacy_conv", "k1_legacy_conv3d"]


def _data(stem: str) -> tuple[list[np.ndarray], np.ndarray]:
    data = np.load(fixture_file(f"{stem}.expected.npz"))
    return [data[k] for k in sorted(data.files) if k.startswith("x")], data["y"]


@pytest.mark.parametrize("stem", STEMS)
def test_float64_reference_matches_keras1(stem: str) -> None:
    xs, want = _data(stem)
    runner = ReferenceRunner(fixture_file(f"{stem}.h5"))
    (got,) = runner.infer({s.name: x for s, x in zip(runner.input_specs(), xs)}).values()
    assert rel_err(want, got) < 1e-6


@pytest.mark.parametrize("stem", STEMS)
def test_checked_export_matches_keras1(stem: str, tmp_path: Path) -> None:
    """``export_file`` folds, exports and checks against the float64 reference (it raises when the
    check fails); onnxruntime on the written file then matches Keras 1's own arithmetic."""
    xs, want = _data(stem)
    bnconvert.export_file(fixture_file(f"{stem}.h5"), tmp_path / "model.onnx")
    import onnx

    proto = onnx.load(tmp_path / "model.onnx")
    for n in (3, 1):  # the batch is dynamic
        (got,) = run_onnx(proto, [x[:n] for x in xs])
        assert rel_err(want[:n], got) < 1e-5


def _layers(stem: str) -> dict[str, bnconvert.Layer]:
    return {layer.name: layer for layer in bnconvert.load(fixture_file(f"{stem}.h5")).layers}


def test_keras1_names_are_upgraded() -> None:
    """AtrousConvolution1D is a dilated Conv1D, TimeDistributedDense a Dense on the last axis,
    LocallyConnected's Keras 1 arguments and kernels are implementation 1's."""
    layers = _layers("k1_legacy_local1d")
    atrous = layers["atrousconvolution1d_1"]
    assert (atrous.class_name, atrous.source_class) == ("Conv1D", "AtrousConvolution1D")
    assert atrous.config["dilation_rate"] == [2] and atrous.weights["kernel"].shape == (3, 3, 4)
    assert layers["timedistributeddense_1"].class_name == "Dense"
    local = layers["locallyconnected1d_1"]
    assert local.config["kernel_size"] == [2] and local.config["strides"] == [2] and local.config["implementation"] == 1
    assert local.weights["kernel"].shape == (2, 8, 4) and local.weights["bias"].shape == (2, 4)
    local2d = _layers("k1_legacy_local2d")["locallyconnected2d_1"]
    assert local2d.config["data_format"] == "channels_first" and local2d.config["kernel_size"] == [3, 2]
    highway = _layers("k1_legacy_dense")["highway_1"]
    assert list(highway.weights) == ["kernel", "carry_kernel", "bias", "carry_bias"]


def test_a_sequential_merging_models_reads_as_a_two_input_model() -> None:
    """Keras 1's Sequential with a first Merge of Sequentials: two inputs, one per branch, in order."""
    model = bnconvert.load(fixture_file("k1_legacy_merge_seq.h5"))
    assert [model[ref.layer].config["batch_shape"] for ref in model.inputs] == [[None, 5], [None, 2]]
    assert model["merge_1"].class_name == "Concatenate"
    assert model["dense_1"].weights["kernel"].shape == (5, 4)


def _keras1_lambda_merge(path: Path) -> None:
    """A functional Keras 1 model whose merge mode is a lambda (``func_dump``: marshalled code)."""
    layers = [
        {"name": "input_1", "class_name": "InputLayer", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 3], "input_dtype": "float32", "sparse": False, "name": "input_1"}},
        {"name": "input_2", "class_name": "InputLayer", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 3], "input_dtype": "float32", "sparse": False, "name": "input_2"}},
        {"name": "merge_1", "class_name": "Merge", "inbound_nodes": [[["input_1", 0, 0], ["input_2", 0, 0]]],
         "config": {"name": "merge_1", "mode": ["4wEAAAAAAAAAAQAAAAIAAABTAAAAcwQAAAB8AFMAKQFOqQApAdoBeHIBAAAAcgEAAAD6AHoIPGxhbWJkYT4BAAAA8wAAAAA=",
                                                  None, None], "mode_type": "lambda", "concat_axis": -1, "dot_axes": -1,
                    "output_shape": [3], "output_shape_type": "raw", "output_mask": None, "output_mask_type": "raw",
                    "arguments": {}}}]
    config = {"class_name": "Model", "config": {"name": "model_1", "layers": layers,
                                                "input_layers": [["input_1", 0, 0], ["input_2", 0, 0]],
                                                "output_layers": [["merge_1", 0, 0]]}}
    with h5py.File(path, "w") as f:
        f.attrs.create("keras_version", b"1.2.2", dtype=h5py.string_dtype("ascii"))
        f.attrs.create("model_config", json.dumps(config).encode(), dtype=h5py.string_dtype("ascii"))
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([b"input_1", b"input_2", b"merge_1"])
        for name in ("input_1", "input_2", "merge_1"):
            weights.create_group(name).attrs["weight_names"] = np.array([])


def test_a_merge_whose_mode_is_a_lambda_is_read_and_refused_never_run(tmp_path: Path) -> None:
    path = tmp_path / "lambda_merge.h5"
    _keras1_lambda_merge(path)
    model = bnconvert.load(path)
    merge = model["merge_1"]
    assert merge.class_name == "Merge" and merge.config["keras1_merge_mode"] == "<python function>"
    with pytest.raises(UnsupportedLayerError, match=r"merge_1.*Python code, which bnconvert never runs"):
        bnconvert.to_onnx(model)
    from bnconvert.replace import opaque_layers

    (listed,) = opaque_layers(model)  # inspect lists it with a --replace line, like a Lambda
    assert listed["name"] == "merge_1" and listed["replace"].startswith("--replace 'merge_1=")
    runner = ReferenceRunner(path, model=model)
    with pytest.raises(UnsupportedLayerError, match="never runs"):
        runner.infer({s.name: np.ones((2, 3), np.float32) for s in runner.input_specs()})


@pytest.mark.parametrize("stem", FOLDED_KERAS1)
def test_folded_keras1_file_loads_in_tf_keras_and_matches_keras1(stem: str) -> None:
    """``fold_file`` writes a Keras 1 model (LocallyConnected, Atrous, merged Sequentials, dot) as a
    Keras 2 ``.h5``: tf_keras loads it, and its outputs are Keras 1's."""
    folder, _ = tf_keras_files()
    _, want = _data(stem)
    assert rel_err(want, np.load(folder / f"folded_{stem}.npy")) < 1e-5
