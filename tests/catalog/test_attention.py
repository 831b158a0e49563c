"""MultiHeadAttention, GroupQueryAttention and EinsumDense: the float64 reference against Keras 3
and tf_keras, on files each Keras wrote.

One script (:data:`CASES_SCRIPT`) builds the models with either Keras: Keras 3 runs it in this
process, tf_keras in a child process started first so both build at once (they must not share a
process). Each model gets seeded non-trivial biases, runs once in Keras (float32) and is saved in
both of its generation's formats; :func:`attention_cases` leaves the files, the inputs and Keras'
outputs in one folder per session, which the ONNX export tests (``tests/onnx/test_attention.py``)
read too. The error is ``max |keras - reference| / max |keras|``.
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
from bnconvert.catalog.attention import attention_equations, einsum_shapes
from bnconvert.check.reference import ReferenceRunner
from bnconvert.errors import BnconvertError

#: the issue's bar; the measured errors are float32 rounding, a few 1e-7
TOLERANCE = 1e-5
#: the classes this module compares with Keras (``test_semantics`` leaves them to it)
ATTENTION_CLASSES = frozenset({"MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention", "EinsumDense"})

CASES_SCRIPT = r'''
import json
import numpy as np

def build_all(K, k3, folder):
    L = K.layers
    rng = np.random.default_rng(0)

    def mha_cross_key():
        q, v, k = K.Input((5, 6), name="q"), K.Input((4, 6), name="v"), K.Input((4, 5), name="k")
        am = K.Input((5, 4), name="am")
        y = L.MultiHeadAttention(2, 3, value_dim=4, output_shape=7, name="mha")(q, v, key=k)
        z = L.MultiHeadAttention(3, 2, use_bias=False, output_shape=(2, 3), name="mha_nobias")(q, value=v)
        self_attention = L.MultiHeadAttention(2, 3, name="mha_self")(q, q)
        given = L.MultiHeadAttention(2, 3, name="mha_given_mask")(q, v, attention_mask=am)
        return K.Model([q, v, k, am], [y, z, self_attention, given])

    def mha_masks():
        ids, am = K.Input((5,), dtype="int32", name="ids"), K.Input((5, 5), name="am")
        # one embedded tensor per attention: Keras 3's MultiHeadAttention removes the masks of the
        # tensors it is given, so a second one reading the same tensor would see none
        emb = L.Embedding(9, 6, mask_zero=True, name="emb")
        x, x2, x3 = emb(ids), emb(ids), emb(ids)
        a = L.MultiHeadAttention(2, 3, name="mha_keras_mask")(x, x)
        b, s = L.MultiHeadAttention(2, 3, name="mha_scores")(x2, value=x2, attention_mask=am, use_causal_mask=True,
                                                             return_attention_scores=True)
        c = L.MultiHeadAttention(2, 3, dropout=0.2, name="mha_dropout")(x3, x3, use_causal_mask=True)
        pooled = L.GlobalAveragePooling1D(name="pool")(a)  # reads the mask MultiHeadAttention passes on
        outs = [a, b, s, c, pooled]
        if not k3:  # tf_keras' robust masking: where(mask, scores, -1e9)
            outs.append(L.MultiHeadAttention(2, 3, softmax_robust_masking=True, name="mha_robust")(emb(ids), emb(ids)))
        return K.Model([ids, am], outs)

    def mha_axes():
        x = K.Input((4, 5, 3), name="x")
        y = L.MultiHeadAttention(2, 3, attention_axes=(1, 2), name="mha_2d")(x, x)
        z = L.MultiHeadAttention(2, 3, attention_axes=2, name="mha_axis2")(x, x)
        return K.Model(x, [y, z])

    def mha_dynamic():
        x = K.Input((None, 6), name="x")
        return K.Model(x, L.MultiHeadAttention(2, 3, name="mha")(x, x, use_causal_mask=True))

    def einsum():
        x, flat = K.Input((4, 5), name="x"), K.Input((5,), name="flat")
        x4 = K.Input((4, 5, 3), name="x4")
        outs = [L.EinsumDense("ab,bc->ac", 3, bias_axes="c", name="ed_ab")(flat),
                L.EinsumDense("abc,cd->abd", (4, 6), name="ed_abc")(x),
                L.EinsumDense("abc,cde->abde", (4, 2, 3), bias_axes="de", name="ed_abde")(x),
                L.EinsumDense("...b,bc->...c", 3, activation="relu", bias_axes="c", name="ed_left")(x),
                L.EinsumDense("abc...,cd->abd...", (4, 2), bias_axes="d", name="ed_right")(x4),
                L.EinsumDense("abc,cd->abd", (4, 2), bias_axes="bd", activation="tanh", name="ed_bias_bd")(x)]
        if k3:  # LoRA (saved merged into the kernel) and upper-case axis letters
            outs.append(L.EinsumDense("aBc,cD->aBD", (4, 3), bias_axes="D", lora_rank=2, name="ed_lora")(x))
        return K.Model([x, flat, x4], outs)

    cases = {"mha_cross_key": mha_cross_key, "mha_masks": mha_masks, "mha_axes": mha_axes, "mha_dynamic": mha_dynamic,
             "einsum": einsum}

    if k3:
        def keras3_only():  # sliding_window, use_gate, GroupQueryAttention
            x, q, v = K.Input((6, 4), name="x"), K.Input((5, 6), name="q"), K.Input((4, 6), name="v")
            ids = K.Input((5,), dtype="int32", name="ids")
            e = L.Embedding(9, 6, mask_zero=True, name="emb")(ids)
            window = L.MultiHeadAttention(2, 3, sliding_window=2, name="mha_window")(x, x, use_causal_mask=True)
            gate = L.MultiHeadAttention(2, 3, use_gate=True, name="mha_gate")(x, x)
            a = L.GroupQueryAttention(3, 4, 2, name="gqa")(q, v)
            b, s = L.GroupQueryAttention(2, 4, 1, use_bias=False, name="gqa_scores")(q, q, use_causal_mask=True,
                                                                                     return_attention_scores=True)
            c = L.GroupQueryAttention(3, 2, 2, use_gate=True, sliding_window=3, name="gqa_masked")(e, e)
            return K.Model([x, q, v, ids], [window, gate, a, b, s, c])

        cases.update(keras3_only=keras3_only)

    done = {}
    for name, build in cases.items():
        model = build()
        for v in model.weights:
            if v.name.split("/")[-1].split(":")[0] in ("bias", "lora_kernel_b"):  # lora_kernel_b starts at 0
                v.assign(rng.normal(0.0, 0.5, tuple(v.shape)).astype("float32"))
        xs = []
        for t in model.inputs:
            shape = (2, *[d or 5 for d in t.shape[1:]])
            if "int" in str(t.dtype):
                x = rng.integers(1, 9, shape).astype("int32")
                x[0, 3:] = 0  # padding: masked steps, and fully masked query rows
                x[1, 4:] = 0
            elif t.name.startswith("am"):
                x = (rng.random(shape) > 0.3).astype("float32")
            else:
                x = rng.normal(0.0, 1.0, shape).astype("float32")
            xs.append(x)
        ys = model(xs if len(xs) > 1 else xs[0], training=False)
        ys = ys if isinstance(ys, (list, tuple)) else [ys]
        # each generation's own format for every case, the other one where its layout differs
        # (tf_keras' .keras archives nest the projections as _query_dense; Keras 3's .h5 spells
        # GroupQueryAttention GroupedQueryAttention)
        formats = ["keras", "h5"] if name in ("mha_cross_key", "keras3_only") else ["keras" if k3 else "h5"]
        for fmt in formats:
            model.save(f"{folder}/{name}.{fmt}")
        np.savez(f"{folder}/{name}.npz", **{f"x{i}": x for i, x in enumerate(xs)},
                 **{f"y{i}": np.asarray(y) for i, y in enumerate(ys)})
        done[name] = {"inputs": len(xs), "outputs": len(ys), "formats": formats}
    if k3:  # a quantized EinsumDense: its file holds int8 kernels and scales
        x = K.Input((4, 5))
        layer = L.EinsumDense("abc,cd->abd", (4, 3), bias_axes="d")
        model = K.Model(x, layer(x))
        layer.quantize("int8")
        model.save(f"{folder}/quantized.keras")
    return done
'''


def _run_keras3(folder: Path) -> dict[str, Any]:
    import keras

    keras.utils.set_random_seed(0)
    space: dict[str, Any] = {}
    exec(CASES_SCRIPT, space)  # noqa: S102 - this file's own builders, the ones tf_keras runs in its own process
    return space["build_all"](keras, True, str(folder))


_TFK_MAIN = CASES_SCRIPT + r'''
import sys
import tf_keras
tf_keras.utils.set_random_seed(0)
print(json.dumps(build_all(tf_keras, False, sys.argv[1])))
'''


def attention_cases(factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """``{"k3": {case: info}, "tfk": {case: info}}``, the files and ``<case>.npz`` (inputs
    ``x<i>``, Keras' outputs ``y<i>``) in ``info["folder"]``; built once per session."""
    base = factory.getbasetemp() / "attention_cases"
    index = base / "index.json"
    if index.exists():
        return json.loads(index.read_text())
    k3, tfk = base / "keras3", base / "tf_keras"
    k3.mkdir(parents=True)
    tfk.mkdir()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    child = subprocess.Popen([sys.executable, "-c", _TFK_MAIN, str(tfk)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        done3 = _run_keras3(k3)
    finally:
        out, err = child.communicate(timeout=600)
    assert child.returncode == 0, err[-3000:]
    done = {"k3": {n: {**i, "folder": str(k3)} for n, i in done3.items()},
            "tfk": {n: {**i, "folder": str(tfk)} for n, i in json.loads(out.strip().splitlines()[-1]).items()}}
    index.write_text(json.dumps(done))
    return done


def case_data(info: dict[str, Any], name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The inputs and Keras' outputs of a case."""
    data = np.load(Path(info["folder"]) / f"{name}.npz")
    return [data[f"x{i}"] for i in range(info["inputs"])], [data[f"y{i}"] for i in range(info["outputs"])]


def rel_error(keras_out: np.ndarray, other: np.ndarray) -> float:
    ref, out = np.asarray(keras_out, np.float64), np.asarray(other, np.float64)
    assert ref.shape == out.shape, (ref.shape, out.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ref - out).max() / (scale if scale > 0 else 1.0))


def all_cases(cases: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, Path]]:
    """``(generation, case, format, path)`` of every saved file."""
    return [(gen, name, fmt, Path(info["folder"]) / f"{name}.{fmt}")
            for gen, table in sorted(cases.items()) for name, info in sorted(table.items()) for fmt in info["formats"]]


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return attention_cases(tmp_path_factory)


def test_float64_reference_equals_keras(cases: dict[str, dict[str, Any]]) -> None:
    """Every case, both Keras generations, both formats: the reference within 1e-5 of Keras."""
    errors, classes = {}, set()
    for gen, name, fmt, path in all_cases(cases):
        xs, expected = case_data(cases[gen][name], name)
        runner = ReferenceRunner(path, model=bnconvert.load(path))
        outs = list(runner.infer({s.name: x for s, x in zip(runner.input_specs(), xs)}).values())
        assert len(outs) == len(expected), (gen, name, fmt)
        errors[f"{gen}/{name}.{fmt}"] = max(rel_error(k, r) for k, r in zip(expected, outs))
        classes |= {layer.class_name for _, layer, _ in runner.model.walk()}
    bad = {case: f"{e:.2e}" for case, e in errors.items() if e > TOLERANCE}
    assert not bad, f"float64 reference vs Keras (max |diff| / max): {bad}"
    assert len(errors) >= 12 and classes >= ATTENTION_CLASSES, sorted(classes)
    assert max(errors.values()) < 1e-6, max(errors.values())  # float32 rounding, nothing more


def test_weights_read_by_meaning_in_every_format(cases: dict[str, dict[str, Any]]) -> None:
    """The projections' weights land under the same meanings whichever Keras wrote the file and
    however it nests them (``query/kernel:0`` in an .h5, ``query_dense/vars/0`` in a .keras zip)."""
    want = ["query/kernel", "query/bias", "key/kernel", "key/bias", "value/kernel", "value/bias",
            "attention_output/kernel", "attention_output/bias"]
    for gen in ("k3", "tfk"):
        for fmt in ("keras", "h5"):
            layer = bnconvert.load(Path(cases[gen]["mha_cross_key"]["folder"]) / f"mha_cross_key.{fmt}")["mha"]
            assert list(layer.weights) == want, (gen, fmt, list(layer.weights))
            shapes = [layer.weights[w].shape for w in want]
            assert shapes == [(6, 2, 3), (2, 3), (5, 2, 3), (2, 3), (6, 2, 4), (2, 4), (2, 4, 7), (7,)], (gen, fmt)


def test_quantized_einsum_dense_is_refused_with_its_reason(cases: dict[str, dict[str, Any]]) -> None:
    path = Path(cases["k3"]["einsum"]["folder"]) / "quantized.keras"
    with pytest.raises(BnconvertError, match=r"quantized \(int8"):
        model = bnconvert.load(path)
        runner = ReferenceRunner(path, model=model)
        runner.infer({s.name: np.zeros([d or 2 for d in s.shape], np.float32) for s in runner.input_specs()})


def test_einsum_shapes_are_keras_own() -> None:
    """Kernel, bias and output shapes for equations with and without ellipses (Keras'
    ``_analyze_einsum_string``; the values are the ones Keras 3 documents and builds)."""
    from keras.src.layers.core.einsum_dense import _analyze_einsum_string

    for eq, bias, shape, out in [("ab,bc->ac", "c", (None, 5), (3,)), ("abc,cde->abde", "de", (None, 4, 5), (4, 2, 3)),
                                 ("...b,bc->...c", "c", (None, 4, 5), (3,)), ("abc...,cd->abd...", "d", (None, 4, 5, 3), (4, 2)),
                                 ("abc,cd->abd", "bd", (None, 4, 5), (4, 2))]:
        kernel, b, full, _, _ = _analyze_einsum_string(eq, bias, shape, out)
        assert einsum_shapes(eq, bias, shape, out) == (list(kernel), list(b), list(full)), eq


def test_attention_equations_are_keras_own() -> None:
    from keras.src.layers.attention.multi_head_attention import (
        _build_attention_equation,
    )

    for rank, axes in [(4, (1,)), (5, (1, 2)), (5, (2,)), (6, (1, 3))]:
        dot, combine, _ = _build_attention_equation(rank, axes)
        assert attention_equations(rank, axes) == (dot, combine)


def test_records() -> None:
    table = catalog()
    for name in ("MultiHeadAttention", "GroupQueryAttention", "GroupedQueryAttention"):
        assert table[name].masking == "own" and table[name].fold.kind == "barrier" and table[name].fold.why
    assert table["EinsumDense"].masking == "drop" and "equation" in table["EinsumDense"].fold.why
