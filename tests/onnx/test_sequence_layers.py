"""Embedding, Masking, TimeDistributed and the masks they make, exported to ONNX, against Keras.

Every case is built once per session (Keras 3 in this process, tf-keras in one subprocess, as
Keras 3 and tf-keras must never share a process), run by Keras on token ids and sequences that
are pre-padded, post-padded, padded both ways and unpadded, read back by bnconvert from the
saved file, exported, run by onnxruntime and compared with Keras: ``max |diff| / max |keras|``.
Where a merge reads masks, each model returns the merged tensor itself (Keras 3's Multiply,
Maximum and Minimum compute masked values) and its masked average (what the output mask is).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import bnconvert
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import UnsupportedLayerError
from bnconvert.model import Layer
from bnconvert.onnx import to_onnx

from .helpers import chain_model, check_model, randomize, rel_err, run_onnx

TOLERANCE = 1e-5

#: token ids, rows: pre-padded, post-padded, unpadded, padded both ways (0 is the padding)
IDS = np.array([[0, 0, 3, 4, 5, 1], [2, 3, 4, 0, 0, 0], [1, 2, 3, 4, 5, 6], [0, 5, 1, 2, 6, 0]], np.int32)
#: a second input whose masks differ from IDS' at every row, but always share an unmasked step
#: (a step masked by AND everywhere makes tf-keras' masked average 0 / 0)
IDS2 = np.array([[0, 1, 3, 4, 5, 0], [0, 0, 3, 0, 2, 2], [0, 2, 0, 4, 0, 6], [7, 7, 1, 0, 0, 0]], np.int32)
MASK_VALUE = 0.25


def _sequences(seed: int = 3) -> np.ndarray:
    """(4, 6, 3) floats; steps equal to MASK_VALUE like IDS' zeros (and one lone feature that is not a padded step)."""
    x = np.random.default_rng(seed).normal(0.0, 1.0, (4, 6, 3)).astype(np.float32)
    x[IDS == 0] = MASK_VALUE
    x[2, 1, 0] = MASK_VALUE  # one feature equal to the mask value does not mask its step
    return x


MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Concatenate_time")
KERAS3_CASES = (
    "embedding_int32", "embedding_float32_mask", "embedding_int64_open_steps", "embedding_rank3", "masking_output",
    "masking_dense_average", "time_distributed_dense_mask", "time_distributed_conv2d", "time_distributed_open_steps",
    "time_distributed_recurrent_nested", "embedding_h5_mask", *(f"merge_{m}" for m in MERGES), "half_masked_Add", "half_masked_Multiply",
    "half_masked_Concatenate", "operations_drop_masks",
)


def _merge_layer(L: Any, name: str) -> Any:
    if name == "Concatenate_time":
        return L.Concatenate(axis=1)
    return getattr(L, name)()


def _keras3_models() -> dict[str, tuple[Any, list[np.ndarray], str]]:
    """name -> (Keras 3 model, its inputs, file format)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    ids, floats = keras.Input((6,), dtype="int32"), keras.Input((6,), dtype="float32")
    models: dict[str, tuple[Any, list[np.ndarray], str]] = {}
    models["embedding_int32"] = (keras.Model(ids, L.Embedding(9, 5)(ids)), [IDS], "keras")
    # float ids are truncated by Keras' cast to int32; the mask compares the float itself
    models["embedding_float32_mask"] = (
        keras.Model(floats, L.GlobalAveragePooling1D()(L.Embedding(9, 5, mask_zero=True)(floats))),
        [IDS.astype(np.float32) + np.float32(0.375) * (IDS > 0)], "keras")
    open_ids = keras.Input((None,), dtype="int64")
    models["embedding_int64_open_steps"] = (
        keras.Model(open_ids, L.GlobalAveragePooling1D()(L.Dense(3)(L.Embedding(9, 4, mask_zero=True)(open_ids)))),
        [IDS.astype(np.int64)], "keras")
    grid = keras.Input((2, 6), dtype="int32")
    models["embedding_rank3"] = (keras.Model(grid, L.Embedding(9, 3)(grid)), [np.stack([IDS, IDS2], axis=1)], "keras")
    seq = keras.Input((6, 3))
    models["masking_output"] = (keras.Model(seq, L.Masking(MASK_VALUE)(seq)), [_sequences()], "keras")
    models["masking_dense_average"] = (
        keras.Model(seq, L.GlobalAveragePooling1D()(L.Dense(4)(L.Masking(MASK_VALUE)(seq)))), [_sequences()], "keras")
    models["time_distributed_dense_mask"] = (
        keras.Model(ids, L.GlobalAveragePooling1D()(L.TimeDistributed(L.Dense(3))(L.Embedding(9, 4, mask_zero=True)(ids)))),
        [IDS], "keras")
    frames = keras.Input((4, 6, 6, 2))
    y = L.TimeDistributed(L.Conv2D(3, 3, padding="same"))(frames)
    y = L.TimeDistributed(L.BatchNormalization())(y)
    y = L.TimeDistributed(L.MaxPooling2D())(y)
    y = L.TimeDistributed(L.Flatten())(y)
    rng = np.random.default_rng(5)
    models["time_distributed_conv2d"] = (keras.Model(frames, L.TimeDistributed(L.Dense(2))(y)),
                                         [rng.normal(0, 1, (3, 4, 6, 6, 2)).astype(np.float32)], "keras")
    open_frames = keras.Input((None, 5, 5, 2))
    y = L.TimeDistributed(L.GlobalAveragePooling2D())(L.TimeDistributed(L.Conv2D(2, 3))(open_frames))
    models["time_distributed_open_steps"] = (keras.Model(open_frames, y),
                                             [rng.normal(0, 1, (2, 7, 5, 5, 2)).astype(np.float32)], "keras")
    nested = keras.Input((3, 5, 4))  # a recurrent layer per outer step, and a wrapper inside a wrapper
    y = L.TimeDistributed(L.Bidirectional(L.GRU(3, return_sequences=True)))(nested)
    models["time_distributed_recurrent_nested"] = (keras.Model(nested, L.TimeDistributed(L.TimeDistributed(L.Dense(2)))(y)),
                                                   [rng.normal(0, 1, (2, 3, 5, 4)).astype(np.float32)], "keras")
    models["embedding_h5_mask"] = (
        keras.Model(ids, L.GlobalAveragePooling1D()(L.Embedding(9, 5, mask_zero=True)(ids))), [IDS], "h5")
    a, b = keras.Input((6,), dtype="int32"), keras.Input((6,), dtype="int32")
    for name in MERGES:
        ea, eb = L.Embedding(9, 4, mask_zero=True)(a), L.Embedding(9, 4, mask_zero=True)(b)
        merged = _merge_layer(L, name)([ea, eb])
        models[f"merge_{name}"] = (keras.Model([a, b], [merged, L.GlobalAveragePooling1D()(merged)]), [IDS, IDS2], "keras")
    for name in ("Add", "Multiply", "Concatenate"):
        ea, eb = L.Embedding(9, 4, mask_zero=True)(a), L.Embedding(9, 4)(b)
        merged = _merge_layer(L, name)([ea, eb])
        models[f"half_masked_{name}"] = (keras.Model([a, b], [merged, L.GlobalAveragePooling1D()(merged)]),
                                         [IDS, IDS2], "keras")
    ea, eb = L.Embedding(9, 4, mask_zero=True)(a), L.Embedding(9, 4, mask_zero=True)(b)
    summed = ea * eb + ea  # Keras 3 operations, not the Multiply/Add layers: no masks in or out
    models["operations_drop_masks"] = (keras.Model([a, b], [summed, L.GlobalAveragePooling1D()(summed)]),
                                       [IDS, IDS2], "keras")
    assert set(models) == set(KERAS3_CASES)
    return models


def _errors(path: Path, xs: list[np.ndarray], ref: list[np.ndarray]) -> tuple[float, onnx.ModelProto]:
    proto = to_onnx(bnconvert.load(path))
    outs = run_onnx(proto, xs)
    assert len(outs) == len(ref), path.name
    return float(np.max([rel_err(r, o) for r, o in zip(ref, outs)])), proto  # np.max: a NaN fails the case


@pytest.fixture(scope="module")
def keras3_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[float, onnx.ModelProto]]:
    folder = tmp_path_factory.mktemp("sequence_keras3")
    results = {}
    for name, (model, xs, fmt) in _keras3_models().items():
        randomize(model)
        ys = model(xs if len(xs) > 1 else xs[0], training=False)
        ref = [np.asarray(y) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]
        path = folder / f"{name}.{fmt}"
        model.save(path)
        results[name] = _errors(path, xs, ref)
        reference_errors[name] = _reference_error(path, xs, ref)
    return results


#: case -> the float64 reference's error against Keras 3 on the same file (filled with keras3_results)
reference_errors: dict[str, float] = {}


def _reference_error(path: Path, xs: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """The float64 reference (bnconvert's catalog semantics, not the export) against Keras."""
    runner = ReferenceRunner(path)
    outs = list(runner.infer({s.name: x for s, x in zip(runner.input_specs(), xs)}).values())
    return float(np.max([rel_err(r, o) for r, o in zip(ref, outs)]))


@pytest.mark.parametrize("name", KERAS3_CASES)
def test_reference_matches_keras3(keras3_results: dict[str, tuple[float, onnx.ModelProto]], name: str) -> None:
    """The masked merges' values (Keras 3 Multiply/Maximum/Minimum read masks) and every other
    case, in the float64 reference that checks exports without TensorFlow."""
    assert reference_errors[name] <= TOLERANCE, (name, reference_errors[name])


@pytest.mark.parametrize("name", KERAS3_CASES)
def test_export_matches_keras3(keras3_results: dict[str, tuple[float, onnx.ModelProto]], name: str) -> None:
    error, proto = keras3_results[name]
    assert error <= TOLERANCE, f"{name}: max |keras - onnx| / max |keras| = {error:.2e}"
    check_model(proto)


def test_integer_inputs_keep_their_dtype_and_are_gathered_without_a_float_round_trip(
        keras3_results: dict[str, tuple[float, onnx.ModelProto]]) -> None:
    types = {name: keras3_results[name][1].graph.input[0].type.tensor_type.elem_type
             for name in ("embedding_int32", "embedding_float32_mask", "embedding_int64_open_steps")}
    assert types == {"embedding_int32": onnx.TensorProto.INT32, "embedding_float32_mask": onnx.TensorProto.FLOAT,
                     "embedding_int64_open_steps": onnx.TensorProto.INT64}
    graph = keras3_results["embedding_int64_open_steps"][1].graph
    readers = [n for n in graph.node if graph.input[0].name in n.input]
    # the int64 ids reach the Gather through an int64 Cast only (float32 cannot hold ids above 2**24)
    assert all(n.op_type != "Cast" or onnx.helper.get_attribute_value(n.attribute[0]) == onnx.TensorProto.INT64
               for n in readers), [(n.op_type, n.name) for n in readers]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and isinstance(dims[1], str), dims  # batch and steps both dynamic


def test_an_id_out_of_range_fails_in_onnxruntime_as_in_keras(keras3_results: dict[str, tuple[float, onnx.ModelProto]]) -> None:
    """Keras (TensorFlow's gather on CPU) raises for an id >= input_dim; so does the export."""
    proto = keras3_results["embedding_int32"][1]
    bad = IDS.copy()
    bad[0, 3] = 9
    with pytest.raises(Exception, match=r"(?i)indices|out of bounds|gather"):
        run_onnx(proto, [bad])


def test_time_distributed_of_a_class_without_handler_is_refused() -> None:
    td = Layer(name="td", class_name="TimeDistributed",
               config={"name": "td", "layer": {"class_name": "Lambda", "config": {"name": "code", "function": "x"}}})
    with pytest.raises(UnsupportedLayerError, match=r"'td' \(TimeDistributed: .*'Lambda' has no ONNX handler"):
        to_onnx(chain_model([td], [None, 4, 3]))


# -- tf-keras -------------------------------------------------------------------------------------
#: tf-keras' cases: its own mask rules (merges AND the masks and ignore them in their values,
#: Concatenate takes ``all``), a Sequential whose Embedding declares the input (a float32 input)
TF_KERAS_CASES = ("sequential_embedding_float_input", "masking_dense_average", "time_distributed_dense_mask",
                  "time_distributed_conv2d", *(f"merge_{m}" for m in ("Add", "Multiply", "Maximum", "Concatenate",
                                                                     "Concatenate_time")), "half_masked_Concatenate")

_TFK_SCRIPT = """
import json, sys
import numpy as np
import tf_keras
L = tf_keras.layers
folder = sys.argv[1]
data = np.load(f"{folder}/inputs.npz")
IDS, IDS2, SEQ, FRAMES = data["ids"], data["ids2"], data["seq"], data["frames"]
tf_keras.utils.set_random_seed(0)

def merged(name, masked_b=True):
    a, b = tf_keras.Input((6,), dtype="int32"), tf_keras.Input((6,), dtype="int32")
    layer = L.Concatenate(axis=1) if name == "Concatenate_time" else getattr(L, name)()
    m = layer([L.Embedding(9, 4, mask_zero=True)(a), L.Embedding(9, 4, mask_zero=masked_b)(b)])
    return tf_keras.Model([a, b], [m, L.GlobalAveragePooling1D()(m)]), [IDS, IDS2]

def cases():
    yield "sequential_embedding_float_input", tf_keras.Sequential([
        L.Embedding(9, 5, mask_zero=True, batch_input_shape=(None, 6)), L.Dense(3), L.GlobalAveragePooling1D()]), [IDS.astype("float32")]
    s = tf_keras.Input((6, 3))
    yield "masking_dense_average", tf_keras.Model(s, L.GlobalAveragePooling1D()(L.Dense(4)(L.Masking(MASK_VALUE)(s)))), [SEQ]
    i = tf_keras.Input((6,), dtype="int32")
    y = L.TimeDistributed(L.Dense(3))(L.Embedding(9, 4, mask_zero=True)(i))
    yield "time_distributed_dense_mask", tf_keras.Model(i, L.GlobalAveragePooling1D()(y)), [IDS]
    f = tf_keras.Input((4, 6, 6, 2))
    y = L.TimeDistributed(L.Flatten())(L.TimeDistributed(L.MaxPooling2D())(L.TimeDistributed(L.Conv2D(3, 3, padding="same"))(f)))
    yield "time_distributed_conv2d", tf_keras.Model(f, L.TimeDistributed(L.Dense(2))(y)), [FRAMES]
    for name in ("Add", "Multiply", "Maximum", "Concatenate", "Concatenate_time"):
        yield (f"merge_{name}", *merged(name))
    yield ("half_masked_Concatenate", *merged("Concatenate", False))

rng = np.random.default_rng(1)
done = {}
for name, model, xs in cases():
    for v in model.weights:
        if "bias" in v.name:
            v.assign(rng.normal(0.0, 0.5, tuple(v.shape)).astype("float32"))
    ys = model(xs if len(xs) > 1 else xs[0], training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    model.save(f"{folder}/{name}.h5")
    np.savez(f"{folder}/{name}.npz", **{f"x{i}": x for i, x in enumerate(xs)}, **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
    done[name] = [len(xs), len(ys)]
print(json.dumps(done))
""".replace("MASK_VALUE", repr(MASK_VALUE))


@pytest.fixture(scope="module")
def tf_keras_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    folder = tmp_path_factory.mktemp("sequence_tf_keras")
    frames = np.random.default_rng(5).normal(0, 1, (3, 4, 6, 6, 2)).astype(np.float32)
    np.savez(folder / "inputs.npz", ids=IDS, ids2=IDS2, seq=_sequences(), frames=frames)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _TFK_SCRIPT, str(folder)], capture_output=True, text=True, env=env,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    results = {}
    for name, (n_in, n_out) in counts.items():
        data = np.load(folder / f"{name}.npz")
        results[name], _ = _errors(folder / f"{name}.h5", [data[f"x{i}"] for i in range(n_in)],
                                   [data[f"y{i}"] for i in range(n_out)])
    return results


@pytest.mark.parametrize("name", TF_KERAS_CASES)
def test_export_matches_tf_keras(tf_keras_results: dict[str, float], name: str) -> None:
    error = tf_keras_results[name]
    assert error <= TOLERANCE, f"{name}: max |tf-keras - onnx| / max |tf-keras| = {error:.2e}"


# -- masks a TimeDistributed makes ----------------------------------------------------------------
def _td_embedding_mask(fmt: str, batch: int | None) -> np.ndarray | None:
    """The output mask the export gives TimeDistributed(Embedding(mask_zero)) on ``(N, 2, 6)`` ids,
    computed by onnxruntime (None when the export gives none)."""
    from onnx import TensorProto, helper

    from bnconvert.onnx.builder import Builder
    from bnconvert.onnx.convert import Run, run_model
    from bnconvert.onnx.layout import identity
    from bnconvert.onnx.save import add_initializers

    td = Layer(name="td", class_name="TimeDistributed", config={"name": "td", "layer": {
        "class_name": "Embedding", "config": {"name": "emb", "input_dim": 9, "output_dim": 3, "mask_zero": True}}},
        weights={"embeddings": np.arange(27, dtype=np.float32).reshape(9, 3)})
    model = chain_model([td], [batch, 2, 6], fmt=fmt)
    b = Builder(17)
    ids = b.tensor((batch, 2, 6), identity(3), b.claim("ids"))
    run = Run(builder=b, source=model.source)
    run_model(run, model, [ids])
    mask = run.out_masks[0]
    if mask is None:
        return None
    value = b.view(mask, identity(mask.rank))
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, 2, 6])],
                              [helper.make_tensor_value_info(value, TensorProto.BOOL, None)])
    proto = add_initializers(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), b.constants)
    (out,) = run_onnx(proto, [np.stack([IDS, IDS2], axis=1).astype(np.int64)])
    return out


def test_time_distributed_masks_by_generation() -> None:
    """tf.keras asks the wrapped (built-in) layer for its mask, open batch or not (here ``ids != 0``
    per step); Keras 3 passes on the input's mask, here none."""
    for batch in (None, 4):
        got = _td_embedding_mask("keras2-h5", batch)
        assert got is not None and np.array_equal(got, np.stack([IDS, IDS2], axis=1) != 0), batch
    assert _td_embedding_mask("keras3-zip", None) is None


def test_a_mask_the_file_passes_explicitly_is_refused_not_ignored(tmp_path: Path) -> None:
    """Keras 3 records the masks it propagated as ``mask=`` (bnconvert recomputes those); a mask
    from elsewhere (here a boolean input) would be silently dropped, so both the export and the
    float64 reference refuse it, naming the layer and the tensor."""
    import keras

    ids, given = keras.Input((6,), dtype="int32", name="ids"), keras.Input((6,), dtype="bool", name="given")
    out = keras.layers.LSTM(3)(keras.layers.Embedding(9, 4)(ids), mask=given)
    path = tmp_path / "explicit_mask.keras"
    keras.Model([ids, given], out).save(path)
    model = bnconvert.load(path)
    with pytest.raises(UnsupportedLayerError, match=r"'lstm\w*' \(LSTM: the file passes it a mask computed by 'given'"):
        to_onnx(model)
    runner = ReferenceRunner(path, model=model)
    with pytest.raises(UnsupportedLayerError, match="explicit masks are not supported"):
        runner.infer(dict(zip([s.name for s in runner.input_specs()], [IDS, IDS > 0])))
