"""Preprocessing layers and adaptive pooling: the float64 reference against Keras 3 and tf-keras.

A few functional models, each with many outputs (one per configuration), are built, run by
Keras on seeded inputs and saved, once per session: Keras 3 in this process, tf-keras in one
subprocess (the two never share a process). :func:`keras3_cases` and :func:`tfkeras_cases`
hand the saved files and Keras' outputs to this module and to ``tests/onnx/test_preprocessing.py``
(the ONNX export against the same Keras outputs). The error is ``max |keras - ours| / max |keras|``
per output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.catalog import catalog
from bnconvert.catalog.pooling import adaptive_bins
from bnconvert.catalog.preprocessing import INFERENCE_IDENTITIES, REFUSED
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError

#: float32 rounding of Keras' resize weights and sums, relative to the largest output
TOLERANCE = 1e-5

#: every catalog class these tests compare with Keras (refused ones: their refusal is tested)
PREPROCESSING_CLASSES = frozenset({"Resizing", "CenterCrop", "RandomCrop", "AutoContrast", "Normalization", "Rescaling", "Pipeline",
                                   "STFTSpectrogram", "MelSpectrogram", "Discretization", "CategoryEncoding", "IntegerLookup",
                                   *INFERENCE_IDENTITIES, *REFUSED,
                                   *(f"Adaptive{k}Pooling{n}D" for k in ("Average", "Max") for n in (1, 2, 3))})

#: Keras 3.15's Equalization returns its input tensor itself when called on a symbolic tensor, so
#: no functional model holds it (the model graph sees a cycle); its identity record serves other versions
UNBUILDABLE = frozenset({"Equalization"})

#: Keras 3 (this file runs it in-process) and tf-keras (in a subprocess): name -> model, inputs
_BUILD = r'''
import numpy as np

def build(K, generation):
    L, rng, cases = K.layers, np.random.default_rng(7), {}

    def add(name, inputs, outputs, xs):
        cases[name] = (K.Model(inputs, outputs), xs)

    i = K.Input((7, 9, 3))
    x = rng.normal(0.0, 1.0, (2, 7, 9, 3)).astype("float32")
    methods = ["bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5"]
    if generation == 2:
        methods += ["gaussian", "mitchellcubic"]
    outs = []
    for m in methods:
        outs += [L.Resizing(4, 5, interpolation=m)(i), L.Resizing(10, 13, interpolation=m)(i),
                 L.Resizing(6, 4, interpolation=m, crop_to_aspect_ratio=True)(i)]
        if generation == 3:
            outs += [L.Resizing(4, 3, interpolation=m, antialias=True)(i),
                     L.Resizing(5, 9, interpolation=m, pad_to_aspect_ratio=True, fill_value=0.25)(i)]
    outs += [L.Resizing(7, 9, interpolation="bilinear")(i)]
    if generation == 2:
        outs += [L.Resizing(7, 9, interpolation="gaussian")(i), L.Resizing(7, 9, interpolation="mitchellcubic")(i)]
    add("resizing", i, outs, [x])

    crops = [L.CenterCrop(4, 5)(i), L.CenterCrop(8, 5)(i), L.CenterCrop(9, 12)(i)]
    if generation == 2:
        crops += [L.RandomCrop(4, 5)(i), L.RandomCrop(9, 6)(i)]
    else:
        crops += [L.Pipeline([L.Rescaling(0.5, offset=0.1), L.Resizing(4, 5, interpolation="bicubic"), L.RandomFlip(),
                              L.CenterCrop(3, 3), L.Rescaling(2.0)])(i)]
    add("crops", i, crops, [x])

    args = {"RandomRotation": (0.2,), "RandomZoom": (0.2,), "RandomTranslation": (0.2, 0.2), "RandomContrast": (0.3,),
            "RandomBrightness": (0.3,), "RandomHeight": (0.2,), "RandomWidth": (0.2,), "RandomHue": (0.3,),
            "RandomSaturation": (0.3,), "RandomSharpness": (0.3,), "RandomPosterization": (4,), "RandomShear": (0.2, 0.2),
            "RandomColorDegeneration": (0.3,), "RandomGaussianBlur": (0.5,), "MaxNumBoundingBoxes": (3,)}
    y = i
    for name in IDENTITIES:
        cls = getattr(L, name, None) if name not in UNBUILDABLE else None
        if cls is not None:
            y = cls(*args.get(name, ()))(y)
    outs = [L.Conv2D(2, 1)(y)]
    if generation == 3:
        outs += [L.AutoContrast()(i), L.AutoContrast(value_range=(-1, 1))(L.Cropping2D(((0, 0), (0, 8)))(i))]
    add("identities", i, outs, [x * 40.0 + 100.0])

    if generation == 3:
        cf = K.Input((3, 7, 9))
        add("channels_first", cf, [L.Resizing(5, 4, interpolation="nearest", data_format="channels_first")(cf),
                                   L.Resizing(9, 12, interpolation="bicubic", crop_to_aspect_ratio=True,
                                              data_format="channels_first")(cf),
                                   L.CenterCrop(4, 5, data_format="channels_first")(cf),
                                   L.AdaptiveMaxPooling2D((4, 2), data_format="channels_first")(cf),
                                   L.AdaptiveAveragePooling2D(3, data_format="channels_first")(cf)],
            [np.moveaxis(x, -1, 1)])
        s, t = K.Input((40, 2)), K.Input((2, 40))
        spectra = [L.STFTSpectrogram(mode=m, frame_length=8, frame_step=3, fft_length=8, padding=p, expand_dims=e)(s)
                   for m, p, e in (("log", "valid", False), ("magnitude", "same", True), ("psd", "valid", False),
                                   ("real", "same", False), ("imag", "valid", True), ("stft", "same", False))]
        spectra += [L.STFTSpectrogram(mode=m, frame_length=7, fft_length=16, data_format="channels_first", expand_dims=e,
                                      window="hamming", scaling="spectrum", periodic=True)(t) for m, e in (("log", False),
                                                                                                         ("stft", True))]
        signals = [rng.normal(0.0, 1.0, (2, 40, 2)).astype("float32"), rng.normal(0.0, 1.0, (2, 2, 40)).astype("float32")]
        add("audio", [s, t], spectra, signals)
        add("audio_angle", s, [L.STFTSpectrogram(mode="angle", frame_length=8, frame_step=3)(s)], signals[:1])
        # a mel bin narrower than a frequency bin has so little energy that Keras' float32 FFT
        # misses the dB value by 1e-5 relative: 6 bins or fewer on 17 frequencies stay clear of that
        m = K.Input((100,))
        add("mel", m, [L.MelSpectrogram(fft_length=32, sequence_stride=8, num_mel_bins=6, sampling_rate=8000)(m),
                       L.MelSpectrogram(fft_length=32, sequence_stride=5, sequence_length=24, window="hamming", num_mel_bins=6,
                                        sampling_rate=4000, min_freq=100.0, max_freq=1500.0, mag_exp=1.0, power_to_db=False)(m),
                       L.MelSpectrogram(fft_length=16, sequence_stride=7, num_mel_bins=5, sampling_rate=8000, top_db=20.0,
                                        ref_power=2.0)(m)],
            [rng.normal(0.0, 1.0, (3, 100)).astype("float32")])
        a, b = K.Input((7, 3)), K.Input((5, 6, 7, 2))
        add("adaptive", [a, i, b], [L.AdaptiveAveragePooling1D(3)(a), L.AdaptiveMaxPooling1D(10)(a),
                                    L.AdaptiveAveragePooling2D((3, 4))(i), L.AdaptiveMaxPooling2D((5, 2))(i),
                                    L.AdaptiveAveragePooling3D((2, 3, 4))(b), L.AdaptiveMaxPooling3D((3, 4, 2))(b)],
            [rng.normal(0.0, 1.0, (2, 7, 3)).astype("float32"), x, rng.normal(0.0, 1.0, (2, 5, 6, 7, 2)).astype("float32")])

    v, ids, one = K.Input((4,)), K.Input((3,), dtype="int32"), K.Input((1,), dtype="int32")
    edges = [-1.0, -0.25, 0.0, 0.5, 1.2]
    outs = [L.Discretization(bin_boundaries=edges)(v)]
    modes = ("one_hot", "multi_hot", "count") if generation == 3 else ("multi_hot", "count")  # tf.keras: rank 2 at most
    outs += [L.Discretization(bin_boundaries=edges, output_mode=m)(v) for m in modes]
    outs += [L.CategoryEncoding(num_tokens=6, output_mode=m)(ids) for m in modes]
    outs += [L.CategoryEncoding(num_tokens=5, output_mode="one_hot")(one)]
    outs += [L.IntegerLookup(vocabulary=[5, 2, 0, 9])(ids), L.IntegerLookup(vocabulary=[4, 2], output_mode="one_hot")(one)]
    outs += [L.IntegerLookup(vocabulary=[5, 2, 7], output_mode=m)(ids) for m in modes[1:]]
    outs += [L.IntegerLookup(vocabulary=[5, 2], output_mode="count", pad_to_max_tokens=True, max_tokens=6)(ids)]
    add("categorical", [v, ids, one], outs, [rng.normal(0.0, 1.0, (3, 4)).astype("float32"),
                                             np.array([[0, 5, 5], [2, 3, 2], [1, 1, 1]], "int32"),
                                             np.array([[4], [0], [2]], "int32")])

    j = K.Input((4, 5, 3))

    def adapted(layer):  # what adapt() leaves, without adapt's tf.data pass: statistics in the weights
        layer.build((None, 4, 5, 3))
        shape = tuple(layer.adapt_mean.shape)
        layer.adapt_mean.assign(rng.normal(1.0, 2.0, shape).astype("float32"))
        layer.adapt_variance.assign(rng.uniform(0.2, 3.0, shape).astype("float32"))
        layer.finalize_state()
        return layer

    adapted, inverted, whole = (adapted(L.Normalization(axis=(1, 3))), adapted(L.Normalization(axis=-1, invert=True)),
                                adapted(L.Normalization(axis=None)))
    outs = [adapted(j), inverted(j), whole(j), L.Normalization(axis=None, mean=2.0, variance=3.0)(j),
            L.Normalization(axis=(1, 3), mean=[0.1, 0.5, -0.2], variance=[2.0, 0.5, 1.5])(j),
            L.Normalization(axis=(2, 3), mean=[[0.5], [0.1], [-0.2], [0.3], [1.0]], variance=[[1.5], [0.2], [1.0], [2.0], [0.7]], invert=True)(j),
            L.Rescaling([0.5, 2.0, -1.0], offset=[0.1, 0.2, 0.3])(j), L.Rescaling(1 / 255.0, offset=-0.5)(j)]
    add("normalization", j, outs, [rng.normal(0.0, 1.0, (2, 4, 5, 3)).astype("float32")])
    return cases


def run(K, generation, folder, ext):
    done = {}
    for name, (model, xs) in build(K, generation).items():
        ys = model(xs if len(xs) > 1 else xs[0], training=False)
        ys = [np.asarray(y) for y in ys] if isinstance(ys, (list, tuple)) else [np.asarray(ys)]
        for fmt in ([ext, "h5"] if ext != "h5" and name == "normalization" else [ext]):
            model.save(f"{folder}/{name}.{fmt}")
        np.savez(f"{folder}/{name}.npz", **{f"x{i}": x for i, x in enumerate(xs)}, **{f"y{i}": y for i, y in enumerate(ys)})
        done[name] = [len(xs), len(ys)]
    return done
'''

_TFK_MAIN = r'''
import json, sys
import tf_keras
tf_keras.utils.set_random_seed(0)
print(json.dumps(run(tf_keras, 2, sys.argv[1], "h5")))
'''

_CACHE: dict[str, Any] = {}


def _namespace() -> dict[str, Any]:
    space: dict[str, Any] = {"IDENTITIES": INFERENCE_IDENTITIES, "UNBUILDABLE": UNBUILDABLE}
    exec(_BUILD, space)  # noqa: S102 - the test's own model builders, shared with the tf-keras subprocess
    return space


def _collect(folder: Path, counts: dict[str, list[int]], ext: str) -> dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]:
    out = {}
    for name, (n_in, n_out) in counts.items():
        data = np.load(folder / f"{name}.npz")
        xs, ys = [data[f"x{i}"] for i in range(n_in)], [data[f"y{i}"] for i in range(n_out)]
        out[f"{name}.{ext}"] = (folder / f"{name}.{ext}", xs, ys)
        if (folder / f"{name}.h5").exists() and ext != "h5":
            out[f"{name}.h5"] = (folder / f"{name}.h5", xs, ys)
    return out


def keras3_cases(factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]:
    """name -> (saved Keras 3 file, inputs, Keras' outputs); built once per session."""
    if "keras3" not in _CACHE:
        import keras

        keras.utils.set_random_seed(0)
        folder = factory.mktemp("preprocessing_k3")
        _CACHE["keras3"] = _collect(folder, _namespace()["run"](keras, 3, str(folder), "keras"), "keras")
    return _CACHE["keras3"]


def tfkeras_cases(factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]:
    """name -> (saved tf-keras .h5 file, inputs, tf-keras' outputs), from one subprocess."""
    if "tfkeras" not in _CACHE:
        folder = factory.mktemp("preprocessing_tfk")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        code = f"IDENTITIES = {INFERENCE_IDENTITIES!r}\nUNBUILDABLE = {sorted(UNBUILDABLE)!r}\n" + _BUILD + _TFK_MAIN
        done = subprocess.run([sys.executable, "-c", code, str(folder)], check=False, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        _CACHE["tfkeras"] = _collect(folder, json.loads(done.stdout.strip().splitlines()[-1]), "h5")
    return _CACHE["tfkeras"]


def rel_error(want: np.ndarray, got: np.ndarray) -> float:
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    assert want.shape == got.shape, (want.shape, got.shape)
    scale = np.abs(want).max()
    return float(np.abs(want - got).max() / (scale if scale > 0 else 1.0))


def _reference_errors(cases: dict[str, tuple[Path, list[np.ndarray], list[np.ndarray]]]) -> dict[str, Any]:
    """Per case: the error of each output, the classes run."""
    results = {}
    for name, (path, xs, ys) in cases.items():
        runner = ReferenceRunner(path, model=bnconvert.load(path))
        outs = list(runner.infer({s.name: x for s, x in zip(runner.input_specs(), xs)}).values())
        assert len(outs) == len(ys), name
        classes = {layer.class_name for _, layer, _ in runner.model.walk() if layer.model is None}
        results[name] = ([rel_error(y, o) for y, o in zip(ys, outs)], classes)
    return results


@pytest.fixture(scope="module")
def keras3_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _reference_errors(keras3_cases(tmp_path_factory))


@pytest.fixture(scope="module")
def tfkeras_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _reference_errors(tfkeras_cases(tmp_path_factory))


def _bad(results: dict[str, Any]) -> dict[str, str]:
    return {f"{name}[{i}]": f"{e:.2e}" for name, (errors, _) in results.items() for i, e in enumerate(errors) if e > TOLERANCE}


def test_float64_reference_equals_keras3(keras3_reference: dict[str, Any]) -> None:
    assert not _bad(keras3_reference), f"Keras 3 and the float64 reference differ (output index: error): {_bad(keras3_reference)}"


def test_float64_reference_equals_tf_keras(tfkeras_reference: dict[str, Any]) -> None:
    assert not _bad(tfkeras_reference), f"tf-keras and the float64 reference differ: {_bad(tfkeras_reference)}"


def test_every_preprocessing_class_is_compared(keras3_reference: dict[str, Any], tfkeras_reference: dict[str, Any]) -> None:
    """Each runnable class of this family (and adaptive pooling) ran in some Keras comparison."""
    seen = set().union(*(c for _, c in keras3_reference.values()), *(c for _, c in tfkeras_reference.values()))
    mine = {name for name, r in catalog().items() if r.family in ("preprocessing", "audio", "categorical") or name.startswith("Adaptive")}
    assert mine - set(REFUSED) - UNBUILDABLE - seen == set(), sorted(mine - set(REFUSED) - UNBUILDABLE - seen)
    assert mine <= PREPROCESSING_CLASSES


def test_adaptive_bins_are_pytorchs() -> None:
    """``[floor(i*n/out), ceil((i+1)*n/out))``: overlapping when n does not divide evenly."""
    assert adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]
    assert adaptive_bins(3, 5) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    assert adaptive_bins(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]


@pytest.fixture(scope="module")
def refused_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keras 3 models whose first layer bnconvert refuses: a StringLookup, a RandomCrop, a tf_idf
    IntegerLookup."""
    import keras

    L = keras.layers
    folder = tmp_path_factory.mktemp("refused")
    i = keras.Input((3,), dtype="string")
    j = keras.Input((6, 6, 3))
    k = keras.Input((3,), dtype="int64")
    models = {"StringLookup": keras.Model(i, L.StringLookup(vocabulary=["a", "b", "c"], name="string_lookup")(i)),
              "RandomCrop": keras.Model(j, L.Dense(2)(L.RandomCrop(4, 4, name="random_crop")(j))),
              # tf_idf saves its weights by name (vars/idf_weights), which the reader must take
              "IntegerLookup": keras.Model(k, L.IntegerLookup(vocabulary=[1, 2, 3], output_mode="tf_idf",
                                                              idf_weights=[0.5, 1.0, 1.5], name="integer_lookup")(k))}
    for name, model in models.items():
        model.save(folder / f"{name}.keras")
    return {name: folder / f"{name}.keras" for name in models}


@pytest.mark.parametrize(("cls", "words"), [("StringLookup", r"'string_lookup' \(StringLookup\): .*run it before the model"),
                                            ("RandomCrop", r"'random_crop' \(RandomCrop\): .*unchanged at inference.*CenterCrop"),
                                            ("IntegerLookup", r"'integer_lookup' \(IntegerLookup\): config 'output_mode' 'tf_idf'")])
def test_float64_reference_refuses_with_what_to_do(refused_files: dict[str, Path], cls: str, words: str) -> None:
    from bnconvert.catalog.record import CallContext

    model = bnconvert.load(refused_files[cls])
    layer = next(layer for layer in model.layers if layer.class_name == cls)
    with pytest.raises(UnsupportedLayerError, match=words):
        catalog()[cls].call(layer, [np.zeros((1, 6, 6, 3))], CallContext(source=model.source))
