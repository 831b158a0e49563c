"""The float64 semantics of the sequence layers and of Keras' masks, against Keras itself.

The same model builders (:data:`_BUILD`, one source for both) run in Keras 3 (this process,
saved as ``.keras``) and in tf-keras (a subprocess, saved as ``.h5``): SimpleRNN, LSTM, GRU and
the generic RNN with cells and stacks, every option Keras has at inference (return_sequences,
return_state, go_backwards, use_bias, unroll, stateful, dropouts, reset_after both ways, the
generation's hard_sigmoid, other activations, initial states as call inputs), Bidirectional in
every merge mode with states and with a backward layer of its own, TimeDistributed around Dense
and around a Conv2D / pooling / Flatten chain, and masks: Embedding ``mask_zero`` with ids
padded in front (``pad_sequences``' default), behind, with holes and entirely, float ids,
Masking with two mask values, masks through Dense, TimeDistributed, merges (Keras 3 ORs the
masks of an Add, tf.keras ANDs them; Concatenate: ``any`` against ``all``), into masked
GlobalAveragePooling1D, go_backwards and Bidirectional over masked steps.

Each file is read with :func:`bnconvert.load` and run by the float64 reference; every output
must match Keras' within ``max |keras - reference| / max |keras| <= 1e-5`` (measured: a few
1e-7, float32 rounding). A fully masked row averages nothing: both give NaN there.

Keras 3 records the masks a layer was handed as operations (``NotEqual``, ``Any``) nothing
else reads; the reference runner drops them (its own masks give the same values) and runs the
file as read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.catalog import catalog
from bnconvert.check.reference import ReferenceRunner

TOLERANCE = 1e-5

#: the classes this file compares with both Keras (the run asserts it saw each)
SEQUENCE_CLASSES = frozenset({"SimpleRNN", "LSTM", "GRU", "RNN", "Bidirectional", "TimeDistributed", "Embedding",
                              "Masking"})

# One source for both Keras: ``build(K, rng)`` -> {name: (model, inputs)}; ``K`` is keras or tf_keras.
_BUILD = r'''
import numpy as np

B, T, F = 5, 6, 3
#: token ids: padded in front, behind, not at all, with holes, entirely
IDS = np.array([[0, 0, 3, 1, 4, 2], [5, 2, 6, 1, 0, 0], [1, 2, 3, 4, 5, 6], [2, 0, 4, 0, 0, 3], [0, 0, 0, 0, 0, 0]],
               "int32")
IDS2 = np.array([[1, 2, 3, 0, 0, 0], [0, 0, 0, 4, 5, 6], [0, 1, 0, 2, 0, 3], [3, 3, 3, 3, 3, 3], [0, 0, 0, 0, 0, 4]],
                "int32")


def build(K, rng):
    L = K.layers
    x = rng.normal(0.0, 1.0, (B, T, F)).astype("float32")
    padded = x.copy()
    padded[0, :2] = 0.0   # pre-padding
    padded[1, 4:] = 0.0   # post-padding
    padded[3, 1::2] = 0.0  # holes
    padded[4] = 0.0       # nothing left
    halves = padded.copy()
    halves[2, :3] = 0.5   # Masking(0.5): three steps in front
    cases = {}

    def add(name, inputs, outputs, xs):
        cases[name] = (K.Model(inputs, outputs), xs)

    i = K.Input((T, F))
    outs = [L.SimpleRNN(4, activation="relu", return_sequences=True)(i),
            *L.SimpleRNN(3, go_backwards=True, return_state=True, use_bias=False)(i),
            L.LSTM(3, return_sequences=True, go_backwards=True, recurrent_activation="hard_sigmoid")(i),
            *L.LSTM(4, return_state=True, activation="softsign", unroll=True, dropout=0.3, recurrent_dropout=0.2)(i),
            L.LSTM(2, use_bias=False, activation="relu", recurrent_activation="hard_sigmoid")(i),
            L.GRU(3, return_sequences=True, reset_after=False, recurrent_activation="hard_sigmoid")(i),
            *L.GRU(3, return_state=True, go_backwards=True, use_bias=False)(i),
            L.GRU(2, activation="elu", recurrent_activation="sigmoid", reset_after=False, use_bias=False)(i),
            L.RNN([L.LSTMCell(3), L.GRUCell(2, reset_after=False), L.SimpleRNNCell(2)], return_sequences=True)(i),
            L.RNN(L.StackedRNNCells([L.SimpleRNNCell(3), L.LSTMCell(2)]), go_backwards=True)(i),
            *L.RNN(L.GRUCell(3), return_state=True)(i)]
    add("recurrent", i, outs, [x])

    i = K.Input((None, F))
    outs = [L.Bidirectional(L.LSTM(3, return_sequences=True))(i),
            L.Bidirectional(L.GRU(3), merge_mode="sum")(i),
            L.Bidirectional(L.SimpleRNN(2, return_sequences=True), merge_mode="mul")(i),
            *L.Bidirectional(L.LSTM(2, return_sequences=True, return_state=True), merge_mode="ave")(i),
            *L.Bidirectional(L.GRU(2, return_state=True), merge_mode=None)(i),
            L.Bidirectional(L.LSTM(2, return_sequences=True),
                            backward_layer=L.GRU(2, return_sequences=True, go_backwards=True))(i)]
    add("bidirectional", i, outs, [x])

    i = K.Input((T, 5, 5, 2))
    y = L.TimeDistributed(L.Conv2D(3, 3, padding="same", activation="relu"))(i)
    y = L.TimeDistributed(L.MaxPooling2D(2))(y)
    y = L.TimeDistributed(L.Flatten())(y)
    td = L.TimeDistributed(L.Dense(4))(y)
    add("time_distributed", i, [td, L.LSTM(3)(td)], [rng.normal(0.0, 1.0, (3, T, 5, 5, 2)).astype("float32")])

    i = K.Input((None,), dtype="int32")
    e = L.Embedding(7, 3, mask_zero=True)(i)
    outs = [L.LSTM(3, return_sequences=True)(e),
            L.GRU(3)(e),
            L.GRU(2, go_backwards=True, return_sequences=True, reset_after=False)(e),
            *L.SimpleRNN(2, return_state=True)(e),
            L.LSTM(2, go_backwards=True)(e),
            L.Bidirectional(L.LSTM(2, return_sequences=True))(e),
            L.Bidirectional(L.GRU(2), merge_mode="sum")(e),
            L.RNN([L.LSTMCell(2), L.GRUCell(2)], return_sequences=True)(e),
            L.GlobalAveragePooling1D()(L.LSTM(3, return_sequences=True)(e)),
            L.LSTM(2)(L.Dense(3, activation="tanh")(e)),
            L.GRU(2)(L.TimeDistributed(L.Dense(3))(e)),
            L.LSTM(2, return_sequences=True)(L.Bidirectional(L.GRU(2, return_sequences=True))(e))]
    add("masked_ids", i, outs, [IDS])

    a, b, c = K.Input((T,), dtype="int32"), K.Input((T, 2)), K.Input((T,), dtype="int32")
    ea, ec = L.Embedding(7, 2, mask_zero=True)(a), L.Embedding(7, 2, mask_zero=True)(c)
    outs = [L.LSTM(2, return_sequences=True)(L.Add()([ea, ec])),
            L.GRU(2, return_sequences=True)(L.Concatenate()([ea, ec])),
            L.SimpleRNN(2, return_sequences=True)(L.Concatenate()([ea, b]))]
    add("masked_merges", [a, b, c], outs, [IDS, rng.normal(0.0, 1.0, (B, T, 2)).astype("float32"), IDS2])

    i = K.Input((None, F))
    m = L.Masking(0.0)(i)
    outs = [m,
            L.LSTM(3, return_sequences=True, go_backwards=True)(m),
            L.Bidirectional(L.GRU(2, return_sequences=True))(m),
            L.SimpleRNN(2)(L.Dense(3)(m)),
            L.GRU(2, return_sequences=True)(L.Masking(0.5)(i))]
    add("masking", i, outs, [halves])

    enc, dec = K.Input((None, F)), K.Input((None, 2))
    _, h, c = L.LSTM(3, return_state=True)(enc)
    outs = [L.LSTM(3, return_sequences=True)(dec, initial_state=[h, c]),
            L.GRU(3, go_backwards=True)(dec, initial_state=[h]),
            L.Bidirectional(L.LSTM(3, return_sequences=True))(dec, initial_state=[h, c, c, h])]
    add("initial_state", [enc, dec], outs, [x, rng.normal(0.0, 1.0, (B, 4, 2)).astype("float32")])

    i = K.Input((T,), dtype="float32")
    fids = IDS.astype("float32")
    fids[2, 0] = 0.5   # id 0 after the cast, yet not masked
    fids[2, 1] = 2.9   # id 2
    outs = [L.LSTM(3, return_sequences=True)(L.Embedding(7, 3, mask_zero=True)(i))]
    add("float_ids", i, outs, [fids])

    i = K.Input((3, T), dtype="int32")
    e = L.TimeDistributed(L.Embedding(7, 2, mask_zero=True))(i)  # tf.keras: a (N, 3, T) mask; Keras 3: none
    add("nested_masks", i, [L.TimeDistributed(L.LSTM(2))(e), L.TimeDistributed(L.GRU(2, return_sequences=True))(e)],
        [np.stack([IDS, IDS2, IDS[::-1]], axis=1)])

    i = K.Input(batch_shape=(B, T, F))
    add("stateful", i, [L.LSTM(3, stateful=True, return_sequences=True)(i), L.GRU(2, stateful=True)(i)], [x])
    return cases


#: constructor arguments of the catalog classes that need some (the others take none)
ARGS = {"Dense": (1,), "Reshape": ((1,),), "Permute": ((1,),), "RepeatVector": (1,),
        "MultiHeadAttention": (2, 3), "GroupQueryAttention": (3, 4, 2), "EinsumDense": ("ab,bc->ac", 3),
        "Rescaling": (1.0,), "SimpleRNN": (1,), "LSTM": (1,), "GRU": (1,), "ConvLSTM1D": (1, 1), "ConvLSTM2D": (1, 1),
        "ConvLSTM3D": (1, 1), "ActivityRegularization": (), **{f"Conv{n}": (1, 1) for n in ("1D", "2D", "3D", "1DTranspose",
        "2DTranspose", "3DTranspose")}, "SeparableConv1D": (1, 1), "SeparableConv2D": (1, 1), "DepthwiseConv1D": (1,),
        "DepthwiseConv2D": (1,), "Dropout": (0.1,), "SpatialDropout1D": (0.1,), "SpatialDropout2D": (0.1,),
        "SpatialDropout3D": (0.1,), "GaussianNoise": (0.1,), "GaussianDropout": (0.1,), "AlphaDropout": (0.1,),
        "Activation": ("relu",), "AveragePooling1D": (2,), "AveragePooling2D": (2,), "AveragePooling3D": (2,),
        "LocallyConnected1D": (1, 1), "LocallyConnected2D": (1, 1), "Dot": (1,),
        # preprocessing and adaptive pooling (tests/catalog/test_preprocessing.py)
        "Resizing": (2, 2), "CenterCrop": (2, 2), "RandomCrop": (2, 2), "RandomRotation": (0.1,), "RandomZoom": (0.1,),
        "RandomTranslation": (0.1, 0.1), "RandomContrast": (0.1,), "RandomBrightness": (0.1,), "RandomHeight": (0.1,),
        "RandomWidth": (0.1,), "RandomHue": (0.1,), "RandomSaturation": (0.1,), "RandomSharpness": (0.1,),
        "RandomPosterization": (4,), "RandomColorDegeneration": (0.1,), "MaxNumBoundingBoxes": (2,), "Hashing": (2,),
        "HashedCrossing": (2,), "CategoryEncoding": (2,), "Discretization": ([0.0],), "Pipeline": ([],),
        "DenseFeatures": ([__import__("tensorflow").feature_column.numeric_column("x")],),
        **{f"Adaptive{k}Pooling{n}D": (2,) for k in ("Average", "Max") for n in (1, 2, 3)}}


def supports_masking(K, names):
    """Per class Keras has: its ``supports_masking`` (what its ``__init__`` or its default
    ``compute_mask`` says), for the catalog's class names."""
    L, out = K.layers, {}
    for name in names:
        cls = getattr(L, name, None)
        if cls is None or name == "InputLayer":
            continue
        if name in ("RNN", "Bidirectional", "TimeDistributed", "Embedding", "ReversibleEmbedding",
                    "SpectralNormalization"):  # wrappers need a layer; Embedding masks only with mask_zero
            layer = {"RNN": lambda: L.RNN(L.LSTMCell(1)), "Bidirectional": lambda: L.Bidirectional(L.LSTM(1)),
                     "TimeDistributed": lambda: L.TimeDistributed(L.Dense(1)),
                     "Embedding": lambda: L.Embedding(2, 2, mask_zero=True),
                     "ReversibleEmbedding": lambda: L.ReversibleEmbedding(2, 2, mask_zero=True),
                     "SpectralNormalization": lambda: L.SpectralNormalization(L.Dense(1))}[name]()
        else:
            layer = cls(*ARGS.get(name, ()))
        out[name] = bool(layer.supports_masking)
    return out


def randomize(model, rng):
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.6, tuple(v.shape)).astype("float32"))


def run(K, rng, folder, ext, names):
    done = {"supports_masking": supports_masking(K, names)}
    for name, (model, xs) in build(K, rng).items():
        randomize(model, rng)
        ys = model(xs if len(xs) > 1 else xs[0], training=False)  # eager: no graph to trace
        ys = [np.asarray(y) for y in ys] if isinstance(ys, (list, tuple)) else [np.asarray(ys)]
        model.save(f"{folder}/{name}.{ext}")
        np.savez(f"{folder}/{name}.npz", **{f"x{i}": x for i, x in enumerate(xs)},
                 **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
        done[name] = [len(xs), len(ys)]
    # Softmax handed a mask (here as an argument): a whole softmax masked in its first row
    x = rng.normal(0.0, 1.0, (2, 3, 4)).astype("float32")
    mask = rng.random((2, 3, 4)) < 0.6
    mask[0, 0] = False
    np.savez(f"{folder}/masked_softmax.npz", x=x, mask=mask, y=np.asarray(K.layers.Softmax()(x, mask=mask)))
    return done
'''

_TFK_MAIN = r'''
import json, sys
import numpy as np
import tf_keras
tf_keras.utils.set_random_seed(0)
print(json.dumps(run(tf_keras, np.random.default_rng(1), sys.argv[1], "h5", sys.argv[2:])))
'''


def _error(want: np.ndarray, got: np.ndarray) -> float:
    """``max |want - got| / max |want|`` over the finite entries; NaN must sit at the same places."""
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    assert want.shape == got.shape, (want.shape, got.shape)
    assert np.array_equal(np.isnan(want), np.isnan(got)), "NaN at different places"
    ok = ~np.isnan(want)
    scale = np.abs(want[ok]).max() if ok.any() else 0.0
    return float(np.abs(want[ok] - got[ok]).max() / (scale if scale > 0 else 1.0)) if ok.any() else 0.0


#: the catalog classes the reference runs
_RUNNABLE = sorted(name for name, record in catalog().items() if record.call is not None)


def _compare(folder: Path, ext: str, counts: dict[str, Any]) -> dict[str, Any]:
    """Per case: the error of each output, and the classes the reference ran; and what Keras
    says of each class's ``supports_masking``."""
    results: dict[str, Any] = {"supports_masking": counts.pop("supports_masking")}
    for name, (_n_in, n_out) in counts.items():
        data = np.load(folder / f"{name}.npz")
        path = folder / f"{name}.{ext}"
        runner = ReferenceRunner(path, model=bnconvert.load(path))
        model = runner.model
        feeds = {s.name: data[f"x{i}"] for i, s in enumerate(runner.input_specs())}
        outs = list(runner.infer(feeds).values())
        assert len(outs) == n_out, f"{name}: {len(outs)} outputs, Keras gave {n_out}"
        classes = {layer.class_name for _, layer, _ in model.walk() if layer.model is None}
        results[name] = ([_error(data[f"y{i}"], out) for i, out in enumerate(outs)], classes)
    from bnconvert.model import Layer

    data = np.load(folder / "masked_softmax.npz")
    got = _run(Layer("softmax", "Softmax", {"axis": -1}), [data["x"]], [data["mask"]], 3 if ext == "keras" else 2)[0]
    results["masked_softmax"] = ([_error(data["y"], got)], {"Softmax"})
    return results


def _namespace() -> dict[str, Any]:
    scope: dict[str, Any] = {}
    exec(compile(_BUILD, "<sequence builders>", "exec"), scope)  # noqa: S102 - our own builders, shared with the subprocess
    return scope


@pytest.fixture(scope="module")
def tfkeras_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """tf-keras builds, runs and saves its models in a subprocess, started before Keras 3 works
    so that the two share the machine's cores."""
    folder = tmp_path_factory.mktemp("seq_tfkeras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "-c", _BUILD + _TFK_MAIN, str(folder), *_RUNNABLE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    yield proc, folder
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def keras3_results(tmp_path_factory: pytest.TempPathFactory,
                   tfkeras_process: tuple[subprocess.Popen[str], Path]) -> dict[str, tuple[list[float], set[str]]]:
    import keras

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("seq_keras3")
    counts = _namespace()["run"](keras, np.random.default_rng(1), str(folder), "keras", _RUNNABLE)
    return _compare(folder, "keras", counts)


@pytest.fixture(scope="module")
def tfkeras_results(tfkeras_process: tuple[subprocess.Popen[str], Path]) -> dict[str, tuple[list[float], set[str]]]:
    proc, folder = tfkeras_process
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return _compare(folder, "h5", json.loads(out.strip().splitlines()[-1]))


CASES = ["recurrent", "bidirectional", "time_distributed", "masked_ids", "masked_merges", "masking", "initial_state",
         "float_ids", "nested_masks", "stateful", "masked_softmax"]


@pytest.mark.parametrize("case", CASES)
def test_keras3(case: str, keras3_results: dict[str, tuple[list[float], set[str]]]) -> None:
    errors, _ = keras3_results[case]
    assert max(errors) <= TOLERANCE, f"{case}: errors per output {[f'{e:.1e}' for e in errors]}"


@pytest.mark.parametrize("case", CASES)
def test_tf_keras(case: str, tfkeras_results: dict[str, tuple[list[float], set[str]]]) -> None:
    errors, _ = tfkeras_results[case]
    assert max(errors) <= TOLERANCE, f"{case}: errors per output {[f'{e:.1e}' for e in errors]}"


def test_both_keras_exercise_every_sequence_class(keras3_results: dict[str, Any], tfkeras_results: dict[str, Any]) -> None:
    for results in (keras3_results, tfkeras_results):
        seen = set().union(*(result[1] for name, result in results.items() if name != "supports_masking"))
        assert seen >= SEQUENCE_CLASSES, sorted(SEQUENCE_CLASSES - seen)
    assert all(catalog()[name].call is not None for name in SEQUENCE_CLASSES)


# -- refusals and edge cases, without Keras ------------------------------------------------------------
def _run(layer: Any, xs: list[np.ndarray], masks: list[Any] | None = None, generation: int = 3,
         version: str | None = None) -> list[np.ndarray]:
    from bnconvert.catalog import CallContext
    from bnconvert.model import Source

    source = Source("x", {1: "keras1-h5", 2: "keras2-h5", 3: "keras3-zip"}[generation], keras_version=version)
    return catalog()[layer.class_name].call(layer, xs, CallContext(source=source, masks=masks))


def _lstm(units: int = 2, features: int = 3, **config: Any) -> Any:
    from bnconvert.model import Layer

    rng = np.random.default_rng(0)
    weights = {"kernel": rng.normal(size=(features, 4 * units)), "recurrent_kernel": rng.normal(size=(units, 4 * units)),
               "bias": rng.normal(size=(4 * units,))}
    return Layer("lstm", "LSTM", {"units": units, **config}, weights)


def test_a_fully_masked_row_keeps_the_initial_state_and_outputs_zeros() -> None:
    x = np.random.default_rng(1).normal(size=(2, 4, 3))
    mask = np.array([[True, False, True, True], [False] * 4])
    seq, h, c = _run(_lstm(return_sequences=True, return_state=True), [x], [mask])
    assert not seq[1].any() and not h[1].any() and not c[1].any()
    assert np.array_equal(seq[0, 1], seq[0, 0])  # a masked step repeats the previous output


def test_hard_sigmoid_follows_the_generation() -> None:
    layer = _lstm(recurrent_activation="hard_sigmoid")
    x = np.random.default_rng(2).normal(size=(2, 3, 3)) * 4.0
    assert np.abs(_run(layer, [x], generation=3)[0] - _run(layer, [x], generation=2)[0]).max() > 1e-3


def test_time_major_and_a_two_row_bias_without_reset_after_are_refused() -> None:
    from bnconvert.errors import UnsupportedLayerError
    from bnconvert.model import Layer

    with pytest.raises(UnsupportedLayerError, match="time_major"):
        _run(_lstm(time_major=True), [np.zeros((2, 3, 3))])
    gru = Layer("gru", "GRU", {"units": 2, "reset_after": False},
                {"kernel": np.ones((3, 6)), "recurrent_kernel": np.ones((2, 6)), "bias": np.ones((2, 6))})
    with pytest.raises(UnsupportedLayerError, match="reset_after=False"):
        _run(gru, [np.zeros((2, 3, 3))])


def test_a_time_mask_reaching_a_wrapped_masked_layer_is_refused() -> None:
    from bnconvert.errors import UnsupportedLayerError
    from bnconvert.model import Layer

    td = Layer("td", "TimeDistributed", {"layer": {"class_name": "GlobalAveragePooling1D", "config": {}}})
    x = np.ones((2, 3, 4, 5))
    assert _run(td, [x])[0].shape == (2, 3, 5)
    with pytest.raises(UnsupportedLayerError, match="'td'"):
        _run(td, [x], [np.ones((2, 3), bool)])


def test_embedding_ids_outside_the_table_are_refused() -> None:
    from bnconvert.errors import BnconvertError
    from bnconvert.model import Layer

    emb = Layer("emb", "Embedding", {"input_dim": 4, "output_dim": 2}, {"embeddings": np.arange(8.0).reshape(4, 2)})
    assert np.array_equal(_run(emb, [np.array([[3.7, 0.2]], np.float32)])[0], [[[6.0, 7.0], [0.0, 1.0]]])
    with pytest.raises(BnconvertError, match="id 4"):
        _run(emb, [np.array([[4]])])



def test_bidirectional_zeroes_masked_steps_only_where_keras_forced_it() -> None:
    """Keras 3 and tf.keras force zero_output_for_mask on a Bidirectional's returned sequences;
    Keras 1 and standalone Keras 2 never had it: their masked steps repeat the previous output."""
    from bnconvert.model import Layer

    inner = _lstm(return_sequences=True)
    weights = {f"{side}/{k}": v for side in ("forward", "backward") for k, v in inner.weights.items()}
    bi = Layer("bi", "Bidirectional", {"layer": {"class_name": "LSTM", "config": inner.config}, "merge_mode": None}, weights)
    x = np.random.default_rng(4).normal(size=(1, 4, 3))
    mask = np.array([[False, True, True, False]])  # padded at both ends
    for generation, version, zeroed in ((3, "3.9.0", True), (2, "2.2.4-tf", True), (2, "2.15.0", True),
                                        (2, "2.1.5", False), (2, "2.3.1", False), (1, "1.2.2", False)):
        y, y_rev = _run(bi, [x], [mask], generation, version)
        assert (not y[0, 3].any()) == zeroed and (not y_rev[0, 0].any()) == zeroed, (generation, version)
        if not zeroed:  # the previous output of each direction, in its own time order
            assert np.array_equal(y[0, 3], y[0, 2]) and np.array_equal(y_rev[0, 0], y_rev[0, 1])


def test_mask_policies_follow_keras_supports_masking(keras3_results: dict[str, Any], tfkeras_results: dict[str, Any]) -> None:
    """A class passes or computes masks (``keep``/``own``) exactly when Keras 3 says it supports
    masking; tf.keras supports no class the catalog drops masks of (tf.keras refuses a masked
    input into a class that does not: the catalog may keep masks tf.keras never hands it)."""
    table = catalog()
    k3 = keras3_results["supports_masking"]
    wrong = {name: (table[name].masking, k3[name]) for name in k3 if (table[name].masking != "drop") != k3[name]}
    assert len(k3) > 60 and not wrong, wrong
    tfk = tfkeras_results["supports_masking"]
    dropped = sorted(name for name, yes in tfk.items() if yes and table[name].masking == "drop")
    assert len(tfk) > 60 and not dropped, dropped
