"""The check's inputs for sequence models: token ids for Embeddings, padded rows for masks.

Models are built by hand (no Keras): what matters is which layers read each input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bnconvert.check.inputs import (
    PADDED_ROWS,
    InputSpec,
    InputValues,
    input_values,
    padded_batch,
    random_inputs,
    value_notes,
    with_values,
)
from bnconvert.check.pairing import bind_inputs, fill_dynamic
from bnconvert.model import Layer, Model, Source, TensorRef


def _input(name: str, shape: list[int | None], dtype: str = "float32") -> Layer:
    return Layer(name=name, class_name="InputLayer", config={"batch_shape": shape, "dtype": dtype}, calls=[], call_kwargs=[])


def _layer(name: str, cls: str, config: dict[str, Any], *inputs: str) -> Layer:
    return Layer(name=name, class_name=cls, config={"name": name, **config}, calls=[[TensorRef(i) for i in inputs]],
                 call_kwargs=[{}])


def _model(layers: list[Layer], inputs: list[str], outputs: list[str], name: str = "m") -> Model:
    return Model(name=name, layers=layers, inputs=[TensorRef(i) for i in inputs], outputs=[TensorRef(o) for o in outputs],
                 source=Source(path="hand_built.h5", format="keras2-h5"))


def _feeds(model: Model, batch: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    """What the built-in checks draw for ``model``: declared specs, values, padded batch, open axes filled."""
    specs = []
    for ref in model.inputs:
        c = model[ref.layer].config
        specs.append(InputSpec(ref.layer, tuple(c["batch_shape"]), c["dtype"]))
    specs = with_values(specs, model)
    filled, _ = fill_dynamic(specs, padded_batch(specs, batch))
    return random_inputs(filled, seed=seed, batch=batch)


def _embedding(name: str, source: str, dim: int, mask_zero: bool) -> Layer:
    return _layer(name, "Embedding", {"input_dim": dim, "output_dim": 3, "mask_zero": mask_zero}, source)


def _padding(row: np.ndarray, pad: float) -> tuple[int, int]:
    """How many leading and trailing steps of ``row`` (steps on axis 0) are entirely ``pad``."""
    padded = np.all(row.reshape(row.shape[0], -1) == pad, axis=1)
    lead = int(np.argmin(padded)) if not padded.all() else len(padded)
    trail = int(np.argmin(padded[::-1])) if not padded.all() else len(padded)
    return lead, trail


def test_mask_zero_embedding_gets_ids_in_range_and_pre_post_and_unpadded_rows() -> None:
    model = _model([_input("ids", [None, 7], "int32"), _embedding("emb", "ids", 11, True)], ["ids"], ["emb"])
    assert input_values(model) == {"ids": InputValues(tokens=11, pad=0.0)}
    ids = _feeds(model)["ids"]
    assert ids.dtype == np.int32 and ids.shape == (PADDED_ROWS, 7)  # batch 2 raised so every kind of row is there
    assert ids.min() >= 0 and ids.max() < 11
    (pre, after_pre), (before_post, post), _ = (_padding(r, 0) for r in ids)
    assert pre >= 1 and after_pre == 0 and np.all(ids[0, pre:] != 0)  # pre-padded only
    assert post >= 1 and before_post == 0 and np.all(ids[1, :7 - post] != 0)  # post-padded only
    assert np.all(ids[2] != 0)  # unpadded, unmasked


def test_a_larger_batch_cycles_the_rows_and_varies_the_padding() -> None:
    model = _model([_input("ids", [None, 9], "int64"), _embedding("emb", "ids", 5, True)], ["ids"], ["emb"])
    ids = _feeds(model, batch=6)["ids"]
    assert ids.dtype == np.int64 and ids.shape == (6, 9)
    kinds = [_padding(r, 0) for r in ids]
    assert [k[0] > 0 for k in kinds] == [True, False, False, True, False, False]
    assert [k[1] > 0 for k in kinds] == [False, True, False, False, True, False]
    assert kinds[0][0] != kinds[3][0] and kinds[1][1] != kinds[4][1]  # not the same length each time


def test_ids_reach_the_embedding_through_layers_that_keep_values_and_the_smallest_input_dim_wins() -> None:
    layers = [_input("x", [None, 6], "float32"), _layer("drop", "Dropout", {"rate": 0.5}, "x"),
              _layer("shape", "Reshape", {"target_shape": [2, 3]}, "drop"), _embedding("big", "shape", 50, False),
              _embedding("small", "x", 4, False)]
    model = _model(layers, ["x"], ["big", "small"])
    assert input_values(model) == {"x": InputValues(tokens=4, pad=None)}
    x = _feeds(model, batch=5)["x"]
    assert x.dtype == np.float32 and x.shape == (5, 6)  # no padding: the batch stays as asked
    assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() < 4
    assert (x == 0).any()  # without mask_zero, 0 is an ordinary id


def test_ids_are_followed_into_a_nested_model() -> None:
    inner = _model([_input("tokens", [None, 5], "int32"), _embedding("emb", "tokens", 8, True)], ["tokens"], ["emb"],
                   name="encoder")
    outer_layer = _layer("encoder", "Functional", {}, "ids")
    outer_layer.model = inner
    model = _model([_input("ids", [None, 5], "int32"), outer_layer], ["ids"], ["encoder"])
    assert input_values(model) == {"ids": InputValues(tokens=8, pad=0.0)}


def test_time_distributed_embedding_counts_as_an_embedding() -> None:
    td = _layer("td", "TimeDistributed", {"layer": {"class_name": "Embedding",
                                                    "config": {"input_dim": 6, "output_dim": 2, "mask_zero": True}}}, "ids")
    model = _model([_input("ids", [None, 4, 3], "int32"), td], ["ids"], ["td"])
    assert input_values(model) == {"ids": InputValues(tokens=6, pad=0.0)}


def test_masking_input_gets_whole_steps_equal_to_mask_value_both_ways() -> None:
    model = _model([_input("seq", [None, 6, 4], "float32"), _layer("mask", "Masking", {"mask_value": -1.5}, "seq"),
                    _layer("dense", "Dense", {"units": 2}, "mask")], ["seq"], ["dense"])
    assert input_values(model) == {"seq": InputValues(pad=-1.5)}
    seq = _feeds(model)["seq"]
    assert seq.shape == (PADDED_ROWS, 6, 4)
    (pre, a), (b, post), (lead, trail) = (_padding(r, -1.5) for r in seq)
    assert pre >= 1 and a == 0 and post >= 1 and b == 0 and lead == trail == 0
    unpadded = np.ones(seq.shape[:2], bool)
    unpadded[0, :pre], unpadded[1, 6 - post:] = False, False
    assert np.all(seq[unpadded] != -1.5) and np.all((seq[unpadded] >= 0) & (seq[unpadded] < 1))  # the usual [0, 1)


def test_other_inputs_are_left_as_they_were() -> None:
    model = _model([_input("a", [None, 3], "float32"), _input("ids", [4, 5], "int32"),
                    _layer("dense", "Dense", {"units": 2}, "a"), _embedding("emb", "ids", 7, True)],
                   ["a", "ids"], ["dense", "emb"])
    specs = with_values([InputSpec("a", (None, 3)), InputSpec("ids", (4, 5), "int32")], model)
    assert specs[0].values is None and specs[1].values == InputValues(tokens=7, pad=0.0)
    assert padded_batch(specs, 2) == 2  # the padded input fixes its batch at 4: nothing to raise
    plain = random_inputs([InputSpec("a", (2, 3))], seed=1)["a"]
    assert np.array_equal(_feeds(model)["a"], plain)  # the float input draws exactly what it always drew


def test_pairing_keeps_the_values_of_a_inputs() -> None:
    spec_a = InputSpec("ids", (None, None), "int32", InputValues(tokens=9, pad=0.0))
    binding = bind_inputs([spec_a], [InputSpec("ids", (None, 6), "int32")])
    assert binding.specs[0].values == spec_a.values and binding.specs[0].shape == (None, 6)
    filled, _ = fill_dynamic(binding.specs, padded_batch(binding.specs, 2))
    assert filled[0].shape == (PADDED_ROWS, 6) and filled[0].values == spec_a.values


@pytest.mark.parametrize("steps", [1, 2])
def test_short_sequences_keep_an_unpadded_step(steps: int) -> None:
    model = _model([_input("ids", [None, steps], "int32"), _embedding("emb", "ids", 3, True)], ["ids"], ["emb"])
    ids = _feeds(model)["ids"]
    assert np.all((ids != 0).any(axis=1))  # no row is masked entirely


def test_the_report_says_what_the_inputs_hold() -> None:
    specs = [InputSpec("ids", (None, 6), "int32", InputValues(tokens=9, pad=0.0)), InputSpec("x", (None, 2)),
             InputSpec("seq", (None, 4, 3), values=InputValues(pad=-1.0))]
    assert value_notes(specs) == [
        "input 'ids': token ids in [0, 9), rows pre-padded, post-padded and unpadded with 0 (Keras masks)",
        "input 'seq': random values, rows pre-padded, post-padded and unpadded with -1 (Keras masks)",
    ]
