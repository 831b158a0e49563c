"""Keras Applications (weights=None, random BN statistics) exported from ``.keras`` and ``.h5``.

ResNet50 and MobileNetV2 run in the normal suite; the other architectures are ``slow``. Each is
folded and exported by :func:`bnconvert.onnx.export_file` and compared with Keras 3 on seeded
inputs (max |keras - onnx| / max |keras| <= 1e-4); the graph holds one Transpose (the image input).
"""

from __future__ import annotations

import onnx
import pytest

from bnconvert.pipeline import export_file

from .helpers import TOLERANCE, check_model, inputs_for, keras_predict, randomize, rel_err, run_onnx

keras = pytest.importorskip("keras")

#: name -> (input shape, input range top): models with their own Rescaling take pixels in [0, 255)
APPS = {
    "ResNet50": ((32, 32, 3), 1.0),
    "MobileNetV2": ((32, 32, 3), 1.0),
    "ResNet50V2": ((32, 32, 3), 1.0),
    "MobileNet": ((32, 32, 3), 1.0),
    "MobileNetV3Small": ((32, 32, 3), 255.0),
    "EfficientNetB0": ((32, 32, 3), 255.0),
    "EfficientNetV2B0": ((32, 32, 3), 255.0),
    "DenseNet121": ((32, 32, 3), 1.0),
    "InceptionV3": ((75, 75, 3), 1.0),
    "InceptionResNetV2": ((75, 75, 3), 1.0),
    "Xception": ((71, 71, 3), 1.0),
    "NASNetMobile": ((32, 32, 3), 1.0),
    "ConvNeXtTiny": ((32, 32, 3), 255.0),
    "VGG16": ((32, 32, 3), 1.0),
    "ResNet101": ((32, 32, 3), 1.0),
    "DenseNet169": ((32, 32, 3), 1.0),
    "EfficientNetB1": ((32, 32, 3), 255.0),
    "MobileNetV3Large": ((32, 32, 3), 255.0),
    "VGG19": ((32, 32, 3), 1.0),
}
FAST = ["ResNet50", "MobileNetV2"]
#: tf2onnx 1.17's node count for ResNet50 (docs/keras-formats.md section 5)
TF2ONNX_RESNET50_NODES = 125


def _export_and_compare(name, fmt, tmp_path):
    shape, top = APPS[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=shape)
    randomize(model)
    path = tmp_path / f"{name}.{fmt}"
    model.save(path)
    xs = [x * top for x in inputs_for(model, low=0.0)]
    ref = keras_predict(model, xs)[0]
    report = export_file(path, tmp_path / f"{name}.onnx", check=False)
    proto = onnx.load(tmp_path / f"{name}.onnx")
    check_model(proto)
    assert rel_err(ref, run_onnx(proto, xs)[0]) <= TOLERANCE
    assert sum(n.op_type == "Transpose" for n in proto.graph.node) == 1
    return proto, report


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("name", FAST)
def test_application(name, fmt, tmp_path):
    proto, report = _export_and_compare(name, fmt, tmp_path)
    totals = report.fold.totals
    assert totals["folded"] == totals["batch_norms"] > 0
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    if name == "ResNet50":
        assert len(proto.graph.node) <= TF2ONNX_RESNET50_NODES


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("name", [n for n in APPS if n not in FAST])
def test_application_slow(name, fmt, tmp_path):
    _export_and_compare(name, fmt, tmp_path)
