"""Seeded random inputs, dynamic dimensions, and real data from .npz/.npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnconvert.check.inputs import InputSpec, load_inputs, parse_input_shapes, parse_range, random_inputs
from bnconvert.errors import BnconvertError, FormatError

SPECS = [InputSpec("image", (None, 4, 4, 3)), InputSpec("ids", (None, 5), "int32")]


def test_random_inputs_are_seeded_uniform_and_batched() -> None:
    feeds = random_inputs(SPECS, seed=1, batch=3)
    assert feeds["image"].shape == (3, 4, 4, 3) and feeds["image"].dtype == np.float32
    assert feeds["ids"].shape == (3, 5) and feeds["ids"].dtype == np.int32
    # Polygraphy's default: uniform [0, 1) from seed 1; one generator, inputs drawn in order
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(feeds["image"], rng.uniform(0, 1, (3, 4, 4, 3)).astype(np.float32))
    again = random_inputs(SPECS, seed=1, batch=3)
    np.testing.assert_array_equal(feeds["image"], again["image"])
    other = random_inputs(SPECS, seed=2, batch=3)
    assert not np.array_equal(feeds["image"], other["image"])
    ranged = random_inputs(SPECS, value_range=(-2.0, -1.0))["image"]
    assert ranged.min() >= -2.0 and ranged.max() < -1.0


def test_dynamic_dimensions_need_an_input_shape() -> None:
    specs = [InputSpec("input_1", (None, None, None, 3))]
    with pytest.raises(BnconvertError, match=r"input 'input_1'.*--input-shape input_1:1xNxNx3"):
        random_inputs(specs)
    feeds = random_inputs(specs, input_shapes=parse_input_shapes(["input_1:2x8x6x3"]))
    assert feeds["input_1"].shape == (2, 8, 6, 3)
    with pytest.raises(BnconvertError, match="fixes it at 3"):
        random_inputs(specs, input_shapes={"input_1": (1, 8, 8, 4)})
    with pytest.raises(BnconvertError, match="rank 3"):
        random_inputs(specs, input_shapes={"input_1": (1, 8, 8)})
    with pytest.raises(BnconvertError, match="not inputs of the model"):
        random_inputs(specs, input_shapes={"nope": (1, 8, 8, 3)})


@pytest.mark.parametrize("text", ["input_1", "input_1:", "x:1xAx3", "x:0x3", ":1x2"])
def test_bad_input_shape_strings(text: str) -> None:
    with pytest.raises(BnconvertError, match="--input-shape"):
        parse_input_shapes([text])


def test_parse_input_shape_and_range() -> None:
    assert parse_input_shapes(["a:b:1x2", "c:3,4"]) == {"a:b": (1, 2), "c": (3, 4)}
    assert parse_range("-1,1") == (-1.0, 1.0)
    for bad in ("1", "1,0", "a,b", "0,inf"):
        with pytest.raises(BnconvertError, match="--range"):
            parse_range(bad)


def test_load_inputs_by_name_position_and_npy(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((2, 4, 4, 3))
    ids = np.arange(10).reshape(2, 5)
    np.savez(tmp_path / "named.npz", image=x, ids=ids, extra=np.zeros(1))
    feeds = load_inputs(tmp_path / "named.npz", SPECS)
    assert feeds["image"].dtype == np.float32 and feeds["ids"].dtype == np.int32
    np.testing.assert_allclose(feeds["image"], x.astype(np.float32))
    np.savez(tmp_path / "positional.npz", x, ids)
    np.testing.assert_array_equal(load_inputs(tmp_path / "positional.npz", SPECS)["ids"], ids)
    one = [SPECS[0]]
    np.savez(tmp_path / "xy.npz", x=x, y=np.zeros(2))  # the fixtures' *.expected.npz layout
    np.testing.assert_allclose(load_inputs(tmp_path / "xy.npz", one)["image"], x.astype(np.float32))
    np.save(tmp_path / "one.npy", x)
    assert load_inputs(tmp_path / "one.npy", one)["image"].shape == (2, 4, 4, 3)


def test_load_inputs_errors_name_the_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", image=np.zeros((2, 4, 4, 2)), ids=np.zeros((2, 5)))
    with pytest.raises(BnconvertError, match=r"bad\.npz: input .image.*bad\.npz sets axis 3 to 2"):
        load_inputs(tmp_path / "bad.npz", SPECS)
    np.savez(tmp_path / "missing.npz", image=np.zeros((2, 4, 4, 3)))
    with pytest.raises(BnconvertError, match=r"no array for inputs \['ids'\]"):
        load_inputs(tmp_path / "missing.npz", SPECS)
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(FormatError, match="cannot read inputs"):
        load_inputs(tmp_path / "junk.npz", SPECS)
    with pytest.raises(FormatError, match="no such inputs file"):
        load_inputs(tmp_path / "absent.npz", SPECS)
