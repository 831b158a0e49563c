"""Every layer handler against Keras 3 on tiny models (channels_first variants included).

Each case builds a small Keras 3 model with random BN statistics and biases, saves it, reads it
back with bnconvert, exports it (no folding: the handlers themselves are under test), checks the
graph (onnx.checker full check, strict shape inference) and compares onnxruntime with Keras:
max |keras - onnx| / max |keras| <= 1e-4 on seeded inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnconvert.model import Layer
from bnconvert.onnx import to_onnx

from .helpers import chain_model, check_model, inputs_for, randomize, rel_err, roundtrip, run_onnx

keras = pytest.importorskip("keras")
L = keras.layers


def seq(shape, *layers, name="m"):
    return keras.Sequential([keras.Input(shape), *layers], name=name)


CF = "channels_first"
# Channels_first shapes avoid channels == last spatial size: Keras 3's TensorFlow ``add`` turns the
# bias add into ``bias_add(data_format="NHWC")`` in that case and Keras itself computes garbage.

CASES = {
    # dense
    "dense": lambda: seq((5,), L.Dense(4, activation="relu")),
    "dense_no_bias_rank3": lambda: seq((3, 5), L.Dense(4, use_bias=False)),
    "dense_rank3": lambda: seq((3, 5), L.Dense(4, activation="tanh")),
    "dense_after_conv": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.Dense(5), L.Flatten()),
    # convolutions
    "conv1d_valid": lambda: seq((9, 3), L.Conv1D(4, 3)),
    "conv1d_same_stride": lambda: seq((9, 3), L.Conv1D(4, 4, strides=2, padding="same")),
    "conv1d_causal_dilated": lambda: seq((9, 3), L.Conv1D(4, 3, padding="causal", dilation_rate=2)),
    "conv1d_groups": lambda: seq((9, 4), L.Conv1D(6, 3, groups=2, padding="same")),
    "conv1d_cf": lambda: seq((3, 9), L.Conv1D(4, 3, padding="same", data_format=CF)),
    "conv2d_same_stride_odd": lambda: seq((7, 9, 3), L.Conv2D(4, 3, strides=2, padding="same", activation="relu")),
    "conv2d_same_even_kernel": lambda: seq((8, 8, 3), L.Conv2D(4, (2, 4), strides=(1, 3), padding="same")),
    "conv2d_dilated_groups": lambda: seq((9, 9, 4), L.Conv2D(6, 3, dilation_rate=2, groups=2, padding="same")),
    "conv2d_cf": lambda: seq((3, 7, 7), L.Conv2D(5, 3, strides=2, padding="same", data_format=CF)),
    "conv3d_same_stride": lambda: seq((5, 6, 7, 2), L.Conv3D(3, 3, strides=2, padding="same")),
    "conv3d_cf": lambda: seq((2, 5, 6, 7), L.Conv3D(3, 2, data_format=CF)),
    "depthwise1d": lambda: seq((9, 3), L.DepthwiseConv1D(3, depth_multiplier=2, padding="same")),
    "depthwise2d_stride": lambda: seq((7, 7, 3), L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same")),
    "depthwise2d_cf": lambda: seq((3, 7, 7), L.DepthwiseConv2D(3, depth_multiplier=2, data_format=CF)),
    "separable1d": lambda: seq((9, 3), L.SeparableConv1D(4, 3, depth_multiplier=2, padding="same")),
    "separable2d": lambda: seq((8, 8, 3), L.SeparableConv2D(5, 3, strides=2, depth_multiplier=2, padding="same",
                                                             activation="relu")),
    "separable2d_cf": lambda: seq((3, 8, 8), L.SeparableConv2D(5, 3, data_format=CF)),
    "conv1d_transpose": lambda: seq((5, 3), L.Conv1DTranspose(4, 3, strides=2, padding="same")),
    "conv2d_transpose_valid": lambda: seq((4, 5, 3), L.Conv2DTranspose(4, 3, strides=2)),
    "conv2d_transpose_same_even": lambda: seq((4, 5, 3), L.Conv2DTranspose(4, 4, strides=2, padding="same")),
    "conv2d_transpose_output_padding": lambda: seq((4, 5, 3), L.Conv2DTranspose(4, 3, strides=2, padding="same",
                                                                                output_padding=0)),
    "conv2d_transpose_output_padding_valid": lambda: seq((4, 5, 3), L.Conv2DTranspose(4, 3, strides=3, output_padding=2)),
    "conv2d_transpose_small_kernel": lambda: seq((4, 5, 3), L.Conv2DTranspose(4, 1, strides=3)),
    "conv2d_transpose_cf": lambda: seq((3, 4, 5), L.Conv2DTranspose(4, 3, strides=2, padding="same", data_format=CF)),
    "conv3d_transpose": lambda: seq((3, 4, 5, 2), L.Conv3DTranspose(3, 2, strides=2, padding="same")),
    # convolutional LSTMs (tests/onnx/test_conv_lstm.py has the rest: masks, tf_keras, a real file)
    "conv_lstm1d": lambda: seq((3, 6, 2), L.ConvLSTM1D(3, 3, padding="same", return_sequences=True)),
    "conv_lstm2d_cf": lambda: seq((3, 2, 5, 4), L.ConvLSTM2D(2, 3, data_format=CF, go_backwards=True)),
    "conv_lstm3d": lambda: seq((3, 3, 4, 4, 1), L.ConvLSTM3D(2, 2, strides=2, padding="same")),
    # normalisation
    "bn_dense": lambda: seq((5,), L.Dense(4), L.BatchNormalization()),
    "bn_conv": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.BatchNormalization(epsilon=1e-5)),
    "bn_rank3_last": lambda: seq((4, 5), L.BatchNormalization()),
    "bn_row_axis": lambda: seq((6, 5, 3), L.BatchNormalization(axis=1), L.Conv2D(2, 3)),
    "bn_no_center_scale": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.BatchNormalization(center=False, scale=False)),
    "bn_cf": lambda: seq((3, 6, 6), L.Conv2D(5, 3, data_format=CF), L.BatchNormalization(axis=1)),
    "layernorm_last": lambda: seq((4, 6), L.LayerNormalization(epsilon=1e-5)),
    "layernorm_after_conv": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.LayerNormalization()),
    "layernorm_multi_axis": lambda: seq((4, 5, 3), L.LayerNormalization(axis=[1, 2])),
    "layernorm_no_center": lambda: seq((4, 6), L.LayerNormalization(center=False)),
    "layernorm_rms": lambda: seq((4, 6), L.LayerNormalization(rms_scaling=True)),
    "rescaling": lambda: seq((4, 4, 3), L.Rescaling(1 / 127.5, offset=-1.0), L.Conv2D(2, 1)),
    "rescaling_per_channel": lambda: seq((4, 4, 3), L.Conv2D(3, 1), L.Rescaling([0.5, 2.0, -1.0], offset=[0.1, 0.2, 0.3])),
    "normalization_config": lambda: seq((4, 4, 3), L.Normalization(mean=[0.1, 0.5, -0.2], variance=[2.0, 0.5, 1.5])),
    "normalization_invert": lambda: seq((4, 3), L.Normalization(mean=[0.1, 0.5, -0.2], variance=[2.0, 0.5, 1.5], invert=True)),
    # activation layers
    "relu6": lambda: seq((5,), L.Dense(6), L.ReLU(max_value=6.0)),
    "relu_slope": lambda: seq((5,), L.Dense(6), L.ReLU(negative_slope=0.1)),
    "relu_threshold": lambda: seq((5,), L.Dense(6), L.ReLU(threshold=0.5)),
    "relu_all": lambda: seq((5,), L.Dense(6), L.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.3)),
    "relu_max_slope": lambda: seq((5,), L.Dense(6), L.ReLU(max_value=1.0, negative_slope=0.2)),
    "leaky_relu": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.LeakyReLU(negative_slope=0.2)),
    "prelu_shared": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.PReLU(shared_axes=[1, 2])),
    "prelu_full": lambda: seq((3, 4), L.PReLU()),
    "elu": lambda: seq((5,), L.Dense(6), L.ELU(alpha=0.7)),
    "softmax_axis1": lambda: seq((4, 5), L.Softmax(axis=1)),
    "softmax_conv": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.Softmax()),
    "softmax_two_axes": lambda: seq((4, 5, 3), L.Softmax(axis=(1, 2))),
    # pooling
    "maxpool2d_same": lambda: seq((7, 9, 3), L.MaxPooling2D(3, strides=2, padding="same")),
    "avgpool2d_same": lambda: seq((7, 9, 3), L.AveragePooling2D(3, strides=2, padding="same")),
    "avgpool2d_valid": lambda: seq((7, 9, 3), L.AveragePooling2D(2)),
    "pool1d": lambda: seq((9, 3), L.MaxPooling1D(2), L.AveragePooling1D(2, padding="same")),
    "pool3d": lambda: seq((5, 6, 7, 2), L.MaxPooling3D(2, padding="same"), L.AveragePooling3D(2, padding="same")),
    "pool2d_cf": lambda: seq((3, 7, 7), L.MaxPooling2D(2, data_format=CF), L.AveragePooling2D(2, padding="same", data_format=CF)),
    "global_pools": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.GlobalAveragePooling2D()),
    "global_max_keepdims": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.GlobalMaxPooling2D(keepdims=True), L.Conv2D(2, 1)),
    "global_1d_3d": lambda: seq((4, 5, 6, 3), L.GlobalAveragePooling3D(keepdims=True), L.Reshape((3,)), L.Dense(2)),
    "global_max_1d": lambda: seq((9, 3), L.Conv1D(4, 3), L.GlobalMaxPooling1D()),
    "global_cf": lambda: seq((3, 6, 6), L.GlobalAveragePooling2D(data_format=CF)),
    # reshaping
    "flatten_after_conv": lambda: seq((5, 6, 3), L.Conv2D(4, 3), L.Flatten(), L.Dense(3)),
    "flatten_cf": lambda: seq((3, 5, 6), L.Conv2D(5, 3, data_format=CF), L.Flatten(), L.Dense(3)),
    "reshape_after_conv": lambda: seq((5, 6, 3), L.Conv2D(4, 3), L.Reshape((12, 4)), L.Dense(2)),
    "reshape_squeeze_excite": lambda: seq((6, 6, 4), L.GlobalAveragePooling2D(), L.Reshape((1, 1, 4)), L.Conv2D(4, 1)),
    "reshape_minus_one": lambda: seq((4, 6), L.Reshape((-1, 3)), L.Dense(2)),
    "permute": lambda: seq((4, 5, 3), L.Conv2D(3, 1), L.Permute((3, 1, 2)), L.Conv2D(2, 1)),
    "permute_rank3": lambda: seq((4, 5), L.Permute((2, 1)), L.Dense(3)),
    "repeat_vector": lambda: seq((5,), L.Dense(3), L.RepeatVector(4), L.Dense(2)),
    "zero_padding_into_conv": lambda: seq((6, 6, 3), L.ZeroPadding2D(((1, 2), (0, 3))), L.Conv2D(4, 3, strides=2)),
    "zero_padding_into_pool": lambda: seq((6, 6, 3), L.Conv2D(4, 3), L.ZeroPadding2D(1), L.MaxPooling2D(3, strides=2)),
    "zero_padding_1d_3d": lambda: seq((4, 5, 6, 2), L.ZeroPadding3D((1, 0, 2)), L.Conv3D(2, 2), L.Reshape((-1, 2)),
                                      L.ZeroPadding1D((2, 1))),
    "zero_padding_cf": lambda: seq((3, 6, 6), L.ZeroPadding2D(1, data_format=CF), L.Conv2D(2, 3, data_format=CF)),
    "cropping": lambda: seq((7, 8, 3), L.Cropping2D(((1, 2), (0, 3))), L.Conv2D(2, 1)),
    "cropping_1d_3d": lambda: seq((5, 6, 7, 2), L.Cropping3D(((1, 1), (0, 2), (2, 0))), L.Reshape((-1, 2)), L.Cropping1D((1, 2))),
    "cropping_cf": lambda: seq((3, 7, 8), L.Cropping2D(((1, 2), (0, 3)), data_format=CF)),
    "upsampling_nearest": lambda: seq((4, 5, 3), L.Conv2D(3, 1), L.UpSampling2D((2, 3))),
    "upsampling_bilinear": lambda: seq((4, 5, 3), L.Conv2D(3, 1), L.UpSampling2D(2, interpolation="bilinear")),
    "upsampling_1d_3d": lambda: seq((3, 4, 5, 2), L.UpSampling3D((1, 2, 3)), L.Reshape((-1, 2)), L.UpSampling1D(2)),
    "upsampling_cf": lambda: seq((3, 4, 5), L.UpSampling2D(2, interpolation="bilinear", data_format=CF)),
    # identities
    "dropouts": lambda: seq((6, 6, 3), L.Dropout(0.5), L.SpatialDropout2D(0.3), L.GaussianNoise(1.0),
                            L.GaussianDropout(0.3), L.AlphaDropout(0.2), L.ActivityRegularization(0.1), L.Conv2D(2, 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_keras(case, tmp_path):
    model = CASES[case]()
    randomize(model)
    roundtrip(model, tmp_path)


ACTIVATIONS = ["relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "softmax", "log_softmax", "silu", "swish",
               "hard_silu", "hard_swish", "gelu", "elu", "selu", "celu", "softplus", "softsign", "exponential",
               "linear", "leaky_relu", "mish", "hard_tanh", "log_sigmoid", "tanh_shrink"]
#: activations whose spelling depends on the opset
OPSET_SENSITIVE = {"gelu": (13, 17, 20, 21), "hard_silu": (13, 14, 21), "mish": (13, 18, 21)}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation(name, tmp_path):
    model = seq((3, 5), L.Dense(6, activation=name), L.Activation(name))
    randomize(model)
    scale = 0.5 if name == "exponential" else 3.0  # spread the inputs over every branch
    xs = [x * scale for x in inputs_for(model)]
    roundtrip(model, tmp_path, opsets=OPSET_SENSITIVE.get(name, (17,)), xs=xs)


def _functional_merges():
    a, b, c = keras.Input((5, 5, 3), name="a"), keras.Input((5, 5, 3), name="b"), keras.Input((5, 5, 3), name="c")
    x = L.Conv2D(3, 1, name="conv_a")(a)
    y = L.Conv2D(3, 1, name="conv_b")(b)
    outs = [
        L.Add(name="add3")([x, y, c]), L.Subtract(name="sub")([x, y]), L.Multiply(name="mul")([x, y, c]),
        L.Average(name="avg")([x, y]), L.Maximum(name="max")([x, y, c]), L.Minimum(name="min")([x, y]),
        L.Concatenate(name="cat")([x, y, c]), L.Concatenate(axis=1, name="cat_rows")([x, c]),
    ]
    return keras.Model([a, b, c], outs, name="merges")


def _operation_layers():
    inp = keras.Input((4, 4, 3), name="inp")
    x = L.Conv2D(4, 1, name="conv")(inp)
    y = L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    z = 2.0 - x
    w = x / 4.0
    return keras.Model(inp, [y, z, w, x + z], name="ops")


def _nested():
    inner = keras.Sequential([keras.Input((6, 6, 3)), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(), L.ReLU()],
                             name="block")
    t = keras.Input((6, 6, 3), name="trunk_in")
    trunk = keras.Model(t, L.MaxPooling2D()(L.Conv2D(2, 1)(t)), name="trunk")
    a, b = keras.Input((6, 6, 3), name="left"), keras.Input((6, 6, 3), name="right")
    return keras.Model([a, b], [L.Add()([inner(a), inner(b)]), trunk(b)], name="outer")


def _helpers():
    from keras.src.applications.convnext import LayerScale
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    inp = keras.Input((4, 4, 3), name="inp")
    x = L.Conv2D(3, 1)(inp)
    y = LayerScale(0.5, 3, name="scale")(x)
    return keras.Model(inp, CustomScaleLayer(0.17, name="custom")([x, y]), name="helpers")


def _shared_layer():
    a, b = keras.Input((5, 5, 3), name="a"), keras.Input((5, 5, 3), name="b")
    conv, dense = L.Conv2D(4, 3, name="shared_conv"), L.Dense(2, name="shared_dense")
    return keras.Model([a, b], [dense(L.Flatten()(conv(a))), dense(L.Flatten()(conv(b)))], name="shared")


GRAPHS = {"merges": _functional_merges, "operation_layers": _operation_layers, "nested": _nested, "helpers": _helpers,
          "shared_layer": _shared_layer}


@pytest.mark.parametrize("case", sorted(GRAPHS))
@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_graph_matches_keras(case, fmt, tmp_path):
    model = GRAPHS[case]()
    randomize(model)
    if case == "helpers":
        for v in model.weights:
            if v.path.endswith("gamma"):
                v.assign(np.linspace(-1.0, 2.0, v.shape[0]).astype(np.float32))
    roundtrip(model, tmp_path, fmt=fmt)


def test_normalization_adapted(tmp_path):
    norm = L.Normalization(axis=-1)
    norm.adapt(np.random.default_rng(0).normal(2.0, 3.0, (64, 4, 3)).astype(np.float32))
    model = seq((4, 3), norm, L.Dense(2))
    roundtrip(model, tmp_path)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_opsets_on_mixed_model(opset, tmp_path):
    model = seq((8, 8, 3), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
                L.LayerNormalization(), L.GlobalAveragePooling2D(keepdims=True), L.UpSampling2D(2),
                L.Conv2D(4, 1, activation="hard_swish"), L.GlobalMaxPooling2D(), L.Dense(3, activation="gelu"))
    randomize(model)
    roundtrip(model, tmp_path, opsets=(opset,))


# -- handlers Keras 3 cannot produce, against their numpy formula ------------------------------
def _run_chain(layers, batch_shape, x, fmt="keras3-zip"):
    proto = to_onnx(chain_model(layers, batch_shape, fmt=fmt))
    check_model(proto)
    return run_onnx(proto, [x])[0]


X = np.random.default_rng(3).normal(0.0, 2.0, (2, 4, 5)).astype(np.float32)


def test_thresholded_relu():
    y = _run_chain([Layer("t", "ThresholdedReLU", {"theta": 0.7})], [None, 4, 5], X)
    assert rel_err(np.where(X > 0.7, X, 0), y) < 1e-6


@pytest.mark.parametrize("fmt, alpha", [("keras3-zip", 1 / 6), ("keras2-h5", 0.2), ("keras1-h5", 0.2)])
def test_hard_sigmoid_follows_the_generation(fmt, alpha):
    y = _run_chain([Layer("h", "Activation", {"activation": "hard_sigmoid"})], [None, 4, 5], X, fmt=fmt)
    assert rel_err(np.clip(alpha * X + 0.5, 0, 1), y) < 1e-6


@pytest.mark.parametrize("opset", [13, 20])
def test_gelu_tanh_approximation(opset):
    spec = {"activation": {"class_name": "function", "config": {"name": "gelu", "approximate": True}}}
    proto = to_onnx(chain_model([Layer("g", "Activation", spec)], [None, 4, 5]), opset=opset)
    check_model(proto)
    y = run_onnx(proto, [X])[0]
    x = X.astype(np.float64)
    ref = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert rel_err(ref, y) < 1e-5


def _bn_layer(mode, axis, n, eps=1e-3, seed=0):
    rng = np.random.default_rng(seed)
    weights = {"gamma": rng.uniform(0.5, 1.5, n), "beta": rng.normal(0, 0.5, n),
               "moving_mean": rng.normal(0, 0.5, n), "moving_variance": rng.uniform(0.3, 2, n)}
    return Layer("bn", "BatchNormalization", {"axis": axis, "epsilon": eps, "keras1_mode": mode},
                 weights={k: v.astype(np.float32) for k, v in weights.items()}, source_class="BatchNormalization")


def test_keras1_mode1_per_sample():
    layer = _bn_layer(1, -1, 5, eps=1e-2)
    y = _run_chain([layer], [None, 4, 5], X, fmt="keras1-h5")
    x = X.astype(np.float64)
    m = x.mean(-1, keepdims=True)
    std = np.sqrt(x.var(-1, keepdims=True) + 1e-2)
    ref = layer.weights["gamma"] * (x - m) / (std + 1e-2) + layer.weights["beta"]
    assert rel_err(ref, y) < 1e-5


def test_keras1_mode2_uses_batch_statistics():
    layer = _bn_layer(2, 1, 4)
    y = _run_chain([layer], [None, 4, 5], X, fmt="keras1-h5")
    x = X.astype(np.float64)
    m, v = x.mean((0, 2), keepdims=True), x.var((0, 2), keepdims=True)
    g, b = (layer.weights[k].reshape(1, 4, 1) for k in ("gamma", "beta"))
    assert rel_err(g * (x - m) / np.sqrt(v + 1e-3) + b, y) < 1e-5
    # each sample's output depends on the rest of the batch, as in Keras 1
    alone = _run_chain([_bn_layer(2, 1, 4)], [None, 4, 5], X[:1], fmt="keras1-h5")
    assert rel_err(y[:1], alone) > 1e-3
