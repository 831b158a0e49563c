"""Writing ONNX straight from the exporter's arrays: the file must be the model ``to_onnx`` builds.

``write_onnx`` encodes each initializer by hand after the serialised graph (protobuf merges the
repeated ``graph`` field); these tests hold it to ``onnx.load``/the checker/onnxruntime, inline and
with external data, and check the in-memory validation and the onnxruntime hand-over of arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bnconvert.errors import BnconvertError
from bnconvert.onnx.export import to_onnx, to_onnx_parts
from bnconvert.onnx.save import (
    add_initializers,
    validate_file,
    validate_parts,
    write_onnx,
)
from bnconvert.readers import load

from ..conftest import fixture_file


def _values(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def _same_values(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _run(path_or_bytes, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path_or_bytes, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def conv_model():
    """A Keras 3 conv model with BN (non-trivial statistics), read by bnconvert."""
    return load(fixture_file("k3_chain.h5"))


def test_inline_file_is_the_model_to_onnx_builds(conv_model, tmp_path: Path) -> None:
    expected = to_onnx(conv_model)
    proto, constants = to_onnx_parts(conv_model)
    assert len(proto.graph.initializer) == 0 and constants  # the arrays stay outside the proto
    write_onnx(proto, constants, tmp_path / "m.onnx")
    got = onnx.load(tmp_path / "m.onnx")
    _same_values(_values(expected), _values(got))
    assert [n.SerializeToString() for n in got.graph.node] == [n.SerializeToString() for n in expected.graph.node]
    assert got.graph.input == expected.graph.input and got.graph.output == expected.graph.output
    assert got.metadata_props == expected.metadata_props and got.opset_import == expected.opset_import
    validate_file(tmp_path / "m.onnx")
    shape = [d.dim_value or 2 for d in got.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    np.testing.assert_array_equal(_run(str(tmp_path / "m.onnx"), x), _run(expected.SerializeToString(), x))


def test_external_data_file_holds_aligned_float_weights(conv_model, tmp_path: Path) -> None:
    expected = _values(to_onnx(conv_model))
    proto, constants = to_onnx_parts(conv_model)
    write_onnx(proto, constants, tmp_path / "m.onnx", external_data="m.onnx.data")
    stubs = onnx.load(tmp_path / "m.onnx", load_external_data=False).graph.initializer
    external = [t for t in stubs if t.data_location == TensorProto.EXTERNAL]
    assert external, "the conv kernels are >= 1 KiB and go to the data file"
    for t in stubs:
        arr = constants[t.name]
        big_float = arr.dtype.kind == "f" and arr.nbytes >= 1024
        assert (t.data_location == TensorProto.EXTERNAL) == big_float, t.name
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        assert info["location"] == "m.onnx.data" and int(info["offset"]) % 4096 == 0
        assert int(info["length"]) == constants[t.name].nbytes
    _same_values(expected, _values(onnx.load(tmp_path / "m.onnx")))
    validate_file(tmp_path / "m.onnx")


C = 100  # output channels: a (C, 3, 1, 1) float32 kernel is over 1 KiB, so it is "external"


def _tiny(weight: np.ndarray, out_channels: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Reshape", ["y", "shape"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, out_channels * 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, {"w": weight, "shape": np.array([1, -1], dtype=np.int64)}


def test_validate_parts_checks_types_and_shapes_without_the_weights() -> None:
    rng = np.random.default_rng(1)
    model, constants = _tiny(rng.normal(size=(C, 3, 1, 1)).astype(np.float32), C)
    validate_parts(model, constants)
    wrong_out, constants = _tiny(rng.normal(size=(C, 3, 1, 1)).astype(np.float32), C + 1)  # declared output too big
    with pytest.raises(BnconvertError, match="fails validation"):
        validate_parts(wrong_out, constants)
    wrong_type, constants = _tiny(rng.normal(size=(C, 3, 1, 1)), C)  # a float64 kernel for a float32 input
    with pytest.raises(BnconvertError, match="fails validation"):
        validate_parts(wrong_type, constants)


def test_big_endian_and_transposed_arrays_are_written_as_onnx_raw_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(1, 1, 3, C)).astype(">f4")  # a Keras-layout kernel, big-endian
    weight = np.transpose(base, (3, 2, 0, 1))  # ONNX layout, a non-contiguous view
    model, constants = _tiny(weight, C)
    write_onnx(model, constants, tmp_path / "m.onnx")
    got = _values(onnx.load(tmp_path / "m.onnx"))
    assert got["w"].dtype == np.float32
    np.testing.assert_array_equal(got["w"], weight.astype(np.float32))
    full = add_initializers(onnx.ModelProto.FromString(model.SerializeToString()), constants)
    np.testing.assert_array_equal(_values(full)["w"], weight.astype(np.float32))


def test_scalar_initializers_keep_rank_zero(tmp_path: Path) -> None:
    """A Gather's scalar index must stay 0-d (a 1-d index keeps the axis it should remove)."""
    model, constants = _tiny(np.ones((C, C, 1, 1), np.float32), C)
    constants = {**constants, "index": np.asarray(np.int64(1)), "big_endian": np.asarray(2.5, ">f4")}
    write_onnx(model, constants, tmp_path / "m.onnx")
    got = {t.name: list(t.dims) for t in onnx.load(tmp_path / "m.onnx").graph.initializer}
    assert got["index"] == [] and got["big_endian"] == []
    assert _values(onnx.load(tmp_path / "m.onnx"))["big_endian"] == np.float32(2.5)
