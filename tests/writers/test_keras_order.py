"""Folded functional models list their layers in the order Keras recomputes from the graph.

Keras loads an ``.h5``'s weights by zipping ``model.layers`` (ordered by depth, then by a
depth-first walk from the outputs) with the file's ``layer_names``, and names a ``.keras``
archive's weight groups by that order. Removing a BatchNormalization from one branch of a
Concatenate changes the depths, so a writer that kept the input's order put the kernels of one
branch into the layers of the other (a tf.keras 2.10 DenseNet-like file: "variable shape
(7, 7, 8, 8), assigned value shape (64, 88, 3, 3)").
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bnconvert
from bnconvert.fold import fold_model
from bnconvert.writers import write_model
from bnconvert.writers.order import in_keras_order, keras_order

from ..check.subproc import run_json


def _graph(k: Any, with_bn: bool, seed: int = 0) -> Any:  # k: keras or tf_keras
    """A Concatenate of a branch with two BNs and one without; a shared layer called twice; two
    outputs. ``with_bn`` False builds the graph folding leaves."""
    L = k.layers
    rng = np.random.default_rng(seed)
    x = k.Input((9, 9, 3), name="x")
    a = L.Conv2D(8, 3, padding="same", name="a1")(x)
    if with_bn:
        a = L.BatchNormalization(name="bn_a")(a)
    a = L.Conv2D(8, 3, padding="same", name="a2")(a)
    if with_bn:
        a = L.BatchNormalization(name="bn_a2")(a)
    b = L.Conv2D(3, 1, name="b1")(x)
    shared = L.Conv2D(4, 1, name="shared")
    c = L.Concatenate(name="cat")([shared(b), a, shared(x)])
    c = L.Conv2D(5, 3, name="c1")(c)
    if with_bn:
        c = L.BatchNormalization(name="bn_c")(c)
    p = L.GlobalAveragePooling2D(name="gap")(b)
    m = k.Model(x, [c, p])
    for layer in m.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(size=n), rng.normal(size=n), rng.uniform(0.5, 2, n)])
    return m


def test_keras3_order_and_folded_files_load(tmp_path: Path) -> None:
    import keras

    original, plain = _graph(keras, True), _graph(keras, False)
    x = np.random.default_rng(1).uniform(size=(2, 9, 9, 3)).astype("float32")
    want = original.predict(x, verbose=0)
    for suffix in (".keras", ".h5"):
        src, out = tmp_path / f"m{suffix}", tmp_path / f"folded{suffix}"
        original.save(src)
        model = bnconvert.load(src)
        folded, _ = fold_model(model)
        assert keras_order(in_keras_order(folded)) == [layer.name for layer in plain.layers]
        write_model(folded, out, original=model)
        got = keras.models.load_model(out).predict(x, verbose=0)
        for w, g in zip(want, got):
            assert np.max(np.abs(w - g)) / np.max(np.abs(w)) < 1e-5, suffix


def test_keras_order_shuffled_config(tfkeras: dict) -> None:
    """The order depends on the graph only, not on the order the layers come in."""
    model = bnconvert.load(tfkeras["plain"])
    shuffled = model.with_layers(list(reversed(model.layers)))
    assert keras_order(shuffled) == keras_order(model) == tfkeras["order"]


_TF_KERAS = """
import json, sys
import tf_keras as k
import bnconvert
from bnconvert.fold import fold_model
from bnconvert.writers import write_model
out = sys.argv[1]
original, plain = _graph(k, True), _graph(k, False)
original.save(out + "/m.h5"); plain.save(out + "/plain.h5")
model = bnconvert.load(out + "/m.h5")
folded, _ = fold_model(model)
write_model(folded, out + "/folded.h5", original=model)
x = np.random.default_rng(1).uniform(size=(2, 9, 9, 3)).astype("float32")
want, got = original.predict(x, verbose=0), k.models.load_model(out + "/folded.h5").predict(x, verbose=0)
print(json.dumps({"order": [l.name for l in plain.layers],
                  "errors": [float(np.max(np.abs(w - g)) / np.max(np.abs(w))) for w, g in zip(want, got)]}))
"""


@pytest.fixture(scope="module")
def tfkeras(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tf_keras (one process): the files, Keras' own order of the BN-free graph, and the errors
    of the folded file loaded back into tf_keras."""
    out = tmp_path_factory.mktemp("order")
    result = run_json("from typing import Any\nimport numpy as np\n" + inspect.getsource(_graph) + _TF_KERAS, str(out))
    return dict(result, plain=out / "plain.h5")


def test_tfkeras_h5_concatenate_fold_loads(tfkeras: dict) -> None:
    errors = tfkeras["errors"]
    assert len(errors) == 2 and max(errors) < 1e-5, json.dumps(errors)
