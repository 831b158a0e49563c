"""The pure folding kernels: against the closed formulas (numpy), then against Keras 3 layers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnconvert.catalog import kernel_layout
from bnconvert.errors import FoldError
from bnconvert.fold import kernels as K


def _bn(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A non-trivial BN affine (s, t): mixed-sign gamma, random statistics."""
    gamma = rng.uniform(0.5, 1.5, n) * np.where(rng.random(n) < 0.3, -1, 1)
    beta, mean, var = rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.3, 2.0, n)
    s = gamma / np.sqrt(var + 1e-3)
    return s, beta - mean * s


def _conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, groups: int = 1) -> np.ndarray:
    """Valid cross-correlation, x (L, C_in), w (k, C_in/groups, C_out)."""
    k, in_g, out = w.shape
    out_g = out // groups
    y = np.zeros((x.shape[0] - k + 1, out))
    for o in range(out):
        g = o // out_g
        xs = x[:, g * in_g:(g + 1) * in_g]
        for p in range(y.shape[0]):
            y[p, o] = np.sum(xs[p:p + k] * w[:, :, o])
    return y + b


def _depthwise1d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Valid depthwise cross-correlation, w (k, C, dm); output channel c*dm + m."""
    k, c, dm = w.shape
    y = np.zeros((x.shape[0] - k + 1, c * dm))
    for ci in range(c):
        for m in range(dm):
            for p in range(y.shape[0]):
                y[p, ci * dm + m] = np.sum(x[p:p + k, ci] * w[:, ci, m])
    return y + b


# -- closed formulas ------------------------------------------------------------------------------------
def test_scale_output_dense_matches_bn_after_layer() -> None:
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    s, t = _bn(rng, 4)
    w0, b0 = w.copy(), b.copy()
    w2, b2 = K.scale_output(w, b, s, t)
    x = rng.normal(size=(3, 5))
    np.testing.assert_allclose(x @ w2 + b2, s * (x @ w + b) + t, rtol=1e-5, atol=1e-5)
    assert w2.dtype == np.float32 and b2.dtype == np.float32
    np.testing.assert_array_equal(w, w0)  # inputs untouched
    np.testing.assert_array_equal(b, b0)


def test_missing_bias_is_created_and_float16_kept() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float16)
    s, t = _bn(rng, 4)
    w2, b2 = K.scale_output(w, None, s, t)
    np.testing.assert_allclose(b2, t.astype(np.float16))
    assert w2.dtype == np.float16 and b2.dtype == np.float16
    np.testing.assert_allclose(w2, (w.astype(np.float64) * s).astype(np.float16))


def test_transpose_scales_axis_minus_2() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=(3, 3, 6, 2))  # (*k, filters, in)
    s, t = _bn(rng, 6)
    w2, b2 = K.scale_output(w, np.zeros(6), s, t, axis=-2)
    np.testing.assert_allclose(w2, w * s[:, None], rtol=1e-6)
    np.testing.assert_allclose(b2, t, rtol=1e-6, atol=1e-7)


def test_depthwise_output_channel_is_c_times_dm_plus_m() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 4, 2))  # C=4, dm=2
    b = rng.normal(size=8)
    s, t = _bn(rng, 8)
    w2, b2 = K.scale_depthwise_output(w, b, s, t)
    x = rng.normal(size=(9, 4))
    np.testing.assert_allclose(_depthwise1d(x, w2, b2), s * _depthwise1d(x, w, b) + t, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(groups=st.sampled_from([1, 2, 3]), k=st.integers(1, 3), in_g=st.integers(1, 3), out_g=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_conv_input_fold_is_exact_for_valid_grouped_conv(groups: int, k: int, in_g: int, out_g: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c_in, c_out = in_g * groups, out_g * groups
    w, b = rng.normal(size=(k, in_g, c_out)), rng.normal(size=c_out)
    s, t = _bn(rng, c_in)
    x = rng.normal(size=(k + 4, c_in))
    w2, b2 = K.scale_conv_input(w.astype(np.float32), b.astype(np.float32), s, t, groups=groups)
    expected = _conv1d(s * x + t, w, b, groups)
    np.testing.assert_allclose(_conv1d(x, w2.astype(np.float64), b2.astype(np.float64), groups), expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(1, 6), n_out=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_dense_input_fold(n_in: int, n_out: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(n_in, n_out)), rng.normal(size=n_out)
    s, t = _bn(rng, n_in)
    x = rng.normal(size=(2, n_in))
    w2, b2 = K.scale_dense_input(w, b, s, t)
    np.testing.assert_allclose(x @ w2 + b2, (s * x + t) @ w + b, rtol=1e-10, atol=1e-10)


def test_depthwise_and_separable_input_folds() -> None:
    rng = np.random.default_rng(4)
    dw, b = rng.normal(size=(3, 4, 2)), rng.normal(size=8)
    s, t = _bn(rng, 4)
    x = rng.normal(size=(10, 4))
    dw2, b2 = K.scale_depthwise_input(dw, b, s, t)
    np.testing.assert_allclose(_depthwise1d(x, dw2, b2), _depthwise1d(s * x + t, dw, b), rtol=1e-6, atol=1e-6)
    pw, pb = rng.normal(size=(1, 8, 5)), rng.normal(size=5)
    dw3, pw3, b3 = K.scale_separable_input(dw, pw, pb, s, t)
    ref = _depthwise1d(s * x + t, dw, np.zeros(8)) @ pw[0] + pb
    np.testing.assert_allclose(_depthwise1d(x, dw3, np.zeros(8)) @ pw3[0] + b3, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(pw3, pw)


def test_kernels_round_once_from_float64_and_accept_read_only_weights() -> None:
    # a fold reads each kernel once (read-only views of a mapped file included) and rounds the
    # float64 product once: bit for bit what float64 math followed by one cast gives
    rng = np.random.default_rng(11)
    s, t = _bn(rng, 6)
    for dtype in (np.float32, np.float16):
        kernel = rng.normal(size=(3, 3, 4, 6)).astype(dtype)
        kernel.setflags(write=False)
        w, b = K.scale_output(kernel, None, s, t)
        assert w.dtype == dtype and b.dtype == dtype and w.flags.writeable
        np.testing.assert_array_equal(w, (kernel.astype(np.float64) * s).astype(dtype))
        dw = rng.normal(size=(3, 3, 6, 1)).astype(dtype)
        dw.setflags(write=False)
        w2, _ = K.scale_depthwise_input(dw, None, s, t)
        np.testing.assert_array_equal(w2, (dw.astype(np.float64) * s[:, None]).astype(dtype))
        dense = rng.normal(size=(6, 5)).astype(dtype)
        dense.setflags(write=False)
        w3, b3 = K.scale_dense_input(dense, None, s, t)
        np.testing.assert_array_equal(w3, (dense.astype(np.float64) * s[:, None]).astype(dtype))
        np.testing.assert_array_equal(b3, (t @ dense.astype(np.float64)).astype(dtype))


def test_compose_and_dispatch() -> None:
    rng = np.random.default_rng(5)
    a, b = _bn(rng, 3), _bn(rng, 3)
    x = rng.normal(size=3)
    s, t = K.compose(a, b)
    np.testing.assert_allclose(s * x + t, b[0] * (a[0] * x + a[1]) + b[1])
    w = {"kernel": rng.normal(size=(2, 3)).astype(np.float32)}
    out = K.fold_backward("Dense", w, *a, config={"use_bias": False})
    assert set(out) == {"kernel", "bias"} and "bias" not in w
    with pytest.raises(FoldError):
        K.fold_backward("LSTM", w, *a, config={})
    with pytest.raises(FoldError, match="3 channels but the layer has 4"):
        K.scale_output(np.ones((2, 4)), None, np.ones(3), np.zeros(3))


def test_flatten_mapping_and_dense_input_affine() -> None:
    s = np.array([1.0, 2.0, 3.0])
    last = K.features_of(s, (2, 2, 3), axis=2)
    np.testing.assert_array_equal(K.flatten_features(last), np.tile(s, 4))
    first = K.features_of(s, (3, 2, 2), axis=0)
    np.testing.assert_array_equal(K.flatten_features(first), np.repeat(s, 4))
    np.testing.assert_array_equal(K.flatten_features(first, "channels_first"), np.tile(s, 4))
    assert K.dense_input_affine(last, last) is not None
    varying = K.features_of(np.array([1.0, 2.0]), (2, 3), axis=0)  # per row, Dense reads columns
    assert K.dense_input_affine(varying, varying) is None


def test_stays_bn_weights_carry_the_affine() -> None:
    rng = np.random.default_rng(6)
    s, t = _bn(rng, 4)
    weights = {"moving_mean": rng.normal(size=4).astype(np.float32), "moving_variance": rng.uniform(0.3, 2, 4).astype(np.float32)}
    out = K.stays_bn_weights(weights, s, t, epsilon=1e-3)
    x = rng.normal(size=4)
    y = out["gamma"] * (x - out["moving_mean"]) / np.sqrt(out["moving_variance"] + 1e-3) + out["beta"]
    np.testing.assert_allclose(y, s * x + t, rtol=1e-5, atol=1e-6)


# -- against Keras 3 -------------------------------------------------------------------------------------
keras = pytest.importorskip("keras")


def _run(layer, x):  # noqa: ANN001, ANN202
    return np.asarray(layer(x), dtype=np.float64)


BACKWARD_CASES = [
    ("Dense", lambda: keras.layers.Dense(5), (7,)),
    ("Conv1D", lambda: keras.layers.Conv1D(6, 3), (9, 4)),
    ("Conv2D", lambda: keras.layers.Conv2D(6, 3, use_bias=False), (7, 7, 3)),
    ("Conv2D", lambda: keras.layers.Conv2D(6, 3, groups=3), (7, 7, 6)),
    ("Conv3D", lambda: keras.layers.Conv3D(4, 2), (4, 4, 4, 2)),
    ("DepthwiseConv1D", lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2), (9, 3)),
    ("DepthwiseConv2D", lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=3, use_bias=False), (6, 6, 2)),
    ("SeparableConv1D", lambda: keras.layers.SeparableConv1D(5, 3, depth_multiplier=2), (9, 3)),
    ("SeparableConv2D", lambda: keras.layers.SeparableConv2D(5, 3, use_bias=False), (6, 6, 3)),
    ("Conv1DTranspose", lambda: keras.layers.Conv1DTranspose(4, 3, strides=2), (5, 3)),
    ("Conv2DTranspose", lambda: keras.layers.Conv2DTranspose(4, 3, strides=2, use_bias=False), (4, 4, 3)),
    ("Conv3DTranspose", lambda: keras.layers.Conv3DTranspose(3, 2, strides=2), (3, 3, 3, 2)),
]


def _meaning(layer, variable) -> str:  # noqa: ANN001
    name = variable.path.split("/")[-1]
    # Keras 3 calls a depthwise layer's kernel "kernel"; bnconvert's model says depthwise_kernel
    layout = kernel_layout(type(layer).__name__)
    return "depthwise_kernel" if name == "kernel" and layout is not None and layout.kind == "depthwise" else name


def _weights_by_meaning(layer) -> dict[str, np.ndarray]:  # noqa: ANN001
    return {_meaning(layer, v): np.asarray(v.numpy()) for v in layer.weights}


def _randomize(layer, rng: np.random.Generator) -> None:  # noqa: ANN001
    for v in layer.weights:
        v.assign(rng.normal(0, 0.5, tuple(v.shape)).astype(np.float32))


def _bn_layer(rng: np.random.Generator, n: int, shape: tuple[int, ...]):  # noqa: ANN202
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    bn.build((None, *shape))
    gamma = rng.uniform(0.5, 1.5, n) * np.where(rng.random(n) < 0.3, -1, 1)
    bn.set_weights([gamma, rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.3, 2, n)])
    s = gamma / np.sqrt(bn.get_weights()[3].astype(np.float64) + 1e-3)
    t = bn.get_weights()[1] - bn.get_weights()[2] * s
    return bn, s, t


def _fresh_like(layer, weights: dict[str, np.ndarray], x_shape: tuple[int, ...]):  # noqa: ANN001, ANN202
    cfg = layer.get_config()
    cfg["use_bias"] = True
    new = type(layer).from_config(cfg)
    new.build((None, *x_shape))
    new.set_weights([weights[_meaning(new, v)] for v in new.weights])
    return new


@pytest.mark.parametrize("cls,make,shape", BACKWARD_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(BACKWARD_CASES)])
def test_backward_fold_matches_keras(cls: str, make, shape: tuple[int, ...]) -> None:  # noqa: ANN001
    rng = np.random.default_rng(len(cls) * 31 + len(shape))
    layer = make()
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    _run(layer, x)  # builds the layer
    _randomize(layer, rng)
    y = _run(layer, x)
    bn, s, t = _bn_layer(rng, y.shape[-1], y.shape[1:])
    expected = _run(bn, y.astype(np.float32))
    folded = K.fold_backward(cls, _weights_by_meaning(layer), s, t, config=layer.get_config())
    got = _run(_fresh_like(layer, folded, shape), x)
    err = np.abs(got - expected).max() / np.abs(expected).max()
    assert err < 1e-5, err


FORWARD_CASES = [
    ("Dense", lambda: keras.layers.Dense(5), (7,)),
    ("Conv1D", lambda: keras.layers.Conv1D(6, 3, strides=2, dilation_rate=1), (9, 4)),
    ("Conv2D", lambda: keras.layers.Conv2D(6, 3, dilation_rate=2, use_bias=False), (8, 8, 3)),
    ("Conv2D", lambda: keras.layers.Conv2D(4, 3, groups=2), (7, 7, 6)),
    ("DepthwiseConv2D", lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (6, 6, 3)),
    ("SeparableConv1D", lambda: keras.layers.SeparableConv1D(5, 3, depth_multiplier=2), (9, 3)),
]


@pytest.mark.parametrize("cls,make,shape", FORWARD_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FORWARD_CASES)])
def test_forward_fold_matches_keras(cls: str, make, shape: tuple[int, ...]) -> None:  # noqa: ANN001
    rng = np.random.default_rng(len(cls) * 17 + len(shape))
    layer = make()
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    _run(layer, x)
    _randomize(layer, rng)
    bn, s, t = _bn_layer(rng, shape[-1], shape)
    expected = _run(layer, np.asarray(bn(x)))
    folded = K.fold_forward(cls, _weights_by_meaning(layer), s, t, config=layer.get_config())
    got = _run(_fresh_like(layer, folded, shape), x)
    err = np.abs(got - expected).max() / np.abs(expected).max()
    assert err < 1e-5, err


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_forward_through_flatten_matches_keras(data_format: str) -> None:
    rng = np.random.default_rng(7)
    shape = (3, 2, 4) if data_format == "channels_last" else (4, 3, 2)
    axis = -1 if data_format == "channels_last" else 1
    bn = keras.layers.BatchNormalization(axis=axis, epsilon=1e-3)
    bn.build((None, *shape))
    n = 4
    gamma = rng.uniform(0.5, 1.5, n)
    bn.set_weights([gamma, rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.3, 2, n)])
    _, beta, mean, var = (w.astype(np.float64) for w in bn.get_weights())
    s = gamma / np.sqrt(var + 1e-3)
    t = beta - mean * s
    flat = keras.layers.Flatten(data_format=data_format)
    dense = keras.layers.Dense(3)
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    dense(flat(x))
    _randomize(dense, rng)
    expected = _run(dense, np.asarray(flat(np.asarray(bn(x)))))
    channel = 2 if data_format == "channels_last" else 0  # in the batchless tensor
    fs = K.flatten_features(K.features_of(s, shape, channel), data_format)
    ft = K.flatten_features(K.features_of(t, shape, channel), data_format)
    folded = K.fold_forward("Dense", _weights_by_meaning(dense), fs, ft, config=dense.get_config())
    got = _run(_fresh_like(dense, folded, (fs.size,)), np.asarray(flat(x)))
    err = np.abs(got - expected).max() / np.abs(expected).max()
    assert err < 1e-5, err
