"""Every Keras activation name, in ``Activation`` layers and in a layer's ``activation`` argument,
float64 catalog against Keras 3 and tf-keras.

The names come from Keras itself (Keras 3's ``keras.activations`` table, tf-keras' public
functions), so a name a later Keras adds fails here until the catalog has it. One functional model
per Keras holds every name twice (``Activation(name)`` on the input, ``Dense(5, activation=name)``
beside it); Keras 3 runs in this process, tf-keras in one subprocess. The ONNX tests
(``tests/onnx/test_activations_k3.py``) reuse the same files and Keras outputs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.catalog.activations import (
    ACTIVATIONS,
    SHAPE_CHANGING,
    UNCALLABLE,
    activation_problem,
)
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError
from bnconvert.model import Layer
from bnconvert.onnx import to_onnx

from ..onnx.helpers import chain_model
from .tfkeras_cases import ACTIVATION_SCALE as SCALE
from .tfkeras_cases import activation_files, session_folder

#: max |keras - reference| / max |keras|: float32 rounding of one function (about 1e-7)
TOLERANCE = 1e-5

Files = tuple[Path, list[np.ndarray], list[np.ndarray], list[str]]


def keras3_names() -> list[str]:
    """Every activation name Keras 3 resolves, less ``threshold`` (not callable from a config)."""
    from keras.src.activations import ALL_OBJECTS_DICT

    return sorted(set(ALL_OBJECTS_DICT) - set(UNCALLABLE))


#: activations also applied to the input scaled down, where a wide spread would hide them:
#: sparsemax is one-hot unless the largest logits lie within 1 of each other
NARROW = ("sparsemax",)
#: (class, activation, recurrent_activation) of recurrent layers using the newer names inside their cells
RECURRENT = (("SimpleRNN", "soft_shrink", None), ("LSTM", "sparse_plus", "sparse_sigmoid"), ("GRU", "squareplus", "hard_silu"))


def _outputs_of(names: list[str]) -> list[str]:
    """The activation name behind each model output, in order (glu only as a layer)."""
    wide = [n for name in names for n in ([name] if name in SHAPE_CHANGING else [name, name])]
    return wide + list(NARROW) + [act for _, act, _ in RECURRENT]


@functools.cache
def keras3_files() -> Files:
    """The Keras 3 model (saved once per session), its inputs, Keras' outputs and each output's name."""
    import keras

    from ..onnx.helpers import keras_predict, randomize

    keras.utils.set_random_seed(0)
    names = keras3_names()
    x = keras.Input((4, 6), name="x")
    outs = []
    for name in names:
        outs.append(keras.layers.Activation(name, name=f"act_{name}")(x))
        if name not in SHAPE_CHANGING:
            outs.append(keras.layers.Dense(5, activation=name, name=f"dense_{name}")(x))
    narrow = keras.layers.Rescaling(0.15, name="narrow")(x)
    outs += [keras.layers.Activation(name, name=f"narrow_{name}")(narrow) for name in NARROW]
    for cls, act, rec in RECURRENT:
        extra = {"recurrent_activation": rec} if rec else {}
        outs.append(getattr(keras.layers, cls)(3, activation=act, **extra, name=f"{cls.lower()}_{act}")(narrow))
    model = keras.Model(x, outs, name="activations")
    randomize(model)
    xs = [(np.random.default_rng(3).normal(0.0, 1.0, (3, 4, 6)) * SCALE).astype(np.float32)]
    expected = keras_predict(model, xs)
    path = session_folder("bnc_act_k3_") / "activations.keras"
    model.save(path)
    return path, xs, expected, _outputs_of(names)


def tf_keras_files() -> Files:
    """The same for tf-keras (built, run and saved as ``.h5`` in the tf-keras subprocess)."""
    return activation_files()


def rel_err(want: np.ndarray, got: np.ndarray) -> float:
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    assert want.shape == got.shape, (want.shape, got.shape)
    scale = np.abs(want).max()
    return float(np.abs(want - got).max() / (scale if scale > 0 else 1.0))


def errors_by_name(expected: list[np.ndarray], got: list[np.ndarray], names: list[str]) -> dict[str, float]:
    """The largest error of each activation name over its outputs."""
    assert len(got) == len(expected) == len(names)
    errors: dict[str, float] = {}
    for name, want, out in zip(names, expected, got):
        errors[name] = max(errors.get(name, 0.0), rel_err(want, out))
    return errors


def _reference_errors(files: Files) -> dict[str, float]:
    path, xs, expected, names = files
    runner = ReferenceRunner(path, model=bnconvert.load(path))
    (spec,) = runner.input_specs()
    return errors_by_name(expected, list(runner.infer({spec.name: xs[0]}).values()), names)


@pytest.fixture(scope="module")
def keras3_errors() -> dict[str, float]:
    return _reference_errors(keras3_files())


@pytest.fixture(scope="module")
def tf_keras_errors() -> dict[str, float]:
    return _reference_errors(tf_keras_files())


def test_every_keras3_activation_has_float64_semantics() -> None:
    missing = [n for n in keras3_names() if n not in ACTIVATIONS and n not in SHAPE_CHANGING]
    assert not missing, f"Keras 3 activations the catalog lacks: {missing}"


def test_float64_activations_equal_keras3(keras3_errors: dict[str, float]) -> None:
    assert set(keras3_errors) == set(keras3_names())
    bad = {n: f"{e:.2e}" for n, e in keras3_errors.items() if e > TOLERANCE}
    assert not bad, f"max |keras 3 - reference| / max |keras 3|: {bad}"


def test_float64_activations_equal_tf_keras(tf_keras_errors: dict[str, float]) -> None:
    assert {"gelu", "hard_sigmoid", "mish", "swish", "selu"} <= set(tf_keras_errors)
    bad = {n: f"{e:.2e}" for n, e in tf_keras_errors.items() if e > TOLERANCE}
    assert not bad, f"max |tf-keras - reference| / max |tf-keras|: {bad}"


def test_sparsemax_is_keras_formula_not_the_papers() -> None:
    """Keras' tau sums the running sums over the support. With one entry in the support both
    agree: (2, 1, 0) gives (1, 0, 0). With two they differ: (1, 0.8, -1) has running sums
    (1, 1.8), Keras' tau is (1 + 1.8 - 1)/2 = 0.9 and its output (0.1, 0, 0), where the paper's
    tau (1.8 - 1)/2 = 0.4 would give (0.6, 0.4, 0)."""
    from bnconvert.catalog.activations import sparsemax

    out = sparsemax(np.array([[2.0, 1.0, 0.0], [1.0, 0.8, -1.0]]))
    np.testing.assert_allclose(out, [[1.0, 0.0, 0.0], [0.1, 0.0, 0.0]], atol=1e-12)


def _dense(activation: Any, class_name: str = "Dense") -> Layer:
    config: dict[str, Any] = {"name": "d", "activation": activation}
    weights: dict[str, np.ndarray] = {}
    if class_name == "Dense":
        config.update(units=4, use_bias=False)
        weights = {"kernel": np.eye(4, dtype=np.float32)}
    return Layer(name="d", class_name=class_name, config=config, weights=weights)


@pytest.mark.parametrize(("activation", "class_name", "words"), [
    ("threshold", "Activation", "'threshold' and 'default_value'"),
    ("glu", "Dense", "halves the last axis"),
    ({"module": "builtins", "class_name": "function", "config": "my>scaled_tanh", "registered_name": "function"},
     "Dense", "custom function (module 'builtins')"),
    ("no_such_activation", "Activation", "not a Keras activation"),
])
def test_activation_refused_with_its_reason(activation: Any, class_name: str, words: str) -> None:
    """A name bnconvert cannot compute is refused, by the reference and the export, with the reason."""
    assert words in (activation_problem(activation, shape_changing=class_name == "Activation") or "")
    model = chain_model([_dense(activation, class_name)], [None, 4])
    with pytest.raises(UnsupportedLayerError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ReferenceRunner(Path("hand_built.h5"), model=model).infer({"input": np.ones((2, 4), np.float32)})
    with pytest.raises(UnsupportedLayerError, match=words.replace("(", r"\(").replace(")", r"\)")):
        to_onnx(model)


def test_glu_on_an_odd_axis_is_refused() -> None:
    layer = _dense("glu", "Activation")
    model = chain_model([layer], [None, 5])
    with pytest.raises(UnsupportedLayerError, match="glu needs an even last axis"):
        ReferenceRunner(Path("hand_built.h5"), model=model).infer({"input": np.ones((2, 5), np.float32)})
    with pytest.raises(UnsupportedLayerError, match="glu needs an even last axis"):
        to_onnx(model)


def test_gelu_approximate_equals_keras3() -> None:
    """``{"name": "gelu", "approximate": true}`` (the one parameter a serialized function can
    carry): the tanh approximation, as Keras 3 computes it."""
    import keras

    from bnconvert.catalog.activations import activation_name

    spec = {"module": "keras.activations", "class_name": "function", "config": {"name": "gelu", "approximate": True}}
    assert activation_name(spec) == "gelu_approximate"
    x = np.linspace(-6.0, 6.0, 97, dtype=np.float32)
    want = np.asarray(keras.activations.gelu(x, approximate=True))
    assert rel_err(want, ACTIVATIONS["gelu_approximate"](x.astype(np.float64), 3)) <= TOLERANCE
