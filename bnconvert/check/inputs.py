"""The inputs a check feeds both models: seeded random data from the input shapes, or a file.

Random data follows Polygraphy's defaults: uniform in [0, 1) from seed 1 (one generator,
inputs drawn in model order). The batch dimension comes from ``batch``; any other dimension
the model leaves open must be given as ``name:1x224x224x3`` (``input_shapes``), which sets the
whole shape of that input, batch included.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BnconvertError, FormatError

__all__ = ["InputSpec", "parse_input_shape", "parse_input_shapes", "parse_range", "resolve_shape", "random_inputs", "load_inputs"]

Dim = int | None


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, its shape (``None`` for a dynamic dimension) and numpy dtype."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"'{self.name}' [{dims}] {self.dtype}"


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``'input_1:1x224x224x3'`` -> ``('input_1', (1, 224, 224, 3))`` (``,`` also separates dims)."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not dims:
        raise BnconvertError(f"--input-shape {text!r}: expected NAME:DIMS, e.g. input_1:1x224x224x3")
    try:
        shape = tuple(int(d) for d in dims.replace(",", "x").split("x"))
    except ValueError:
        raise BnconvertError(f"--input-shape {text!r}: dimensions must be integers separated by 'x'") from None
    if any(d <= 0 for d in shape):
        raise BnconvertError(f"--input-shape {text!r}: dimensions must be positive")
    return name, shape


def parse_input_shapes(items: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Several ``NAME:DIMS`` strings into a dict; a name given twice is an error."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, shape = parse_input_shape(item)
        if name in shapes:
            raise BnconvertError(f"--input-shape: input '{name}' given twice")
        shapes[name] = shape
    return shapes


def parse_range(text: str) -> tuple[float, float]:
    """``'0,1'`` -> ``(0.0, 1.0)``; LOW must be below HIGH."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise BnconvertError(f"--range {text!r}: expected LOW,HIGH, e.g. 0,1 or -1,1") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise BnconvertError(f"--range {text!r}: LOW must be finite and below HIGH")
    return low, high


def resolve_shape(
    spec: InputSpec, *, batch: int = 1, given: Sequence[int] | None = None, what: str = "--input-shape"
) -> tuple[int, ...]:
    """The concrete shape to feed: ``given`` (checked against the model; ``what`` names where it
    came from in messages) or the model's with ``batch`` as the batch dimension."""
    if given is not None:
        given = tuple(int(d) for d in given)
        if len(given) != len(spec.shape):
            raise BnconvertError(f"input {spec.describe()}: {what} has rank {len(given)}, the model expects {len(spec.shape)}")
        for axis, (want, got) in enumerate(zip(spec.shape, given)):
            if want is not None and want != got:
                raise BnconvertError(f"input {spec.describe()}: {what} sets axis {axis} to {got}, the model fixes it at {want}")
        return given
    shape = list(spec.shape)
    if shape and shape[0] is None:
        shape[0] = batch
    open_axes = [i for i, d in enumerate(shape) if d is None]
    if open_axes:
        raise BnconvertError(
            f"input {spec.describe()} has dynamic dimensions (axes {open_axes}): "
            f"set them with --input-shape {spec.name}:" + "x".join(str(d) if d is not None else "N" for d in shape)
        )
    return tuple(int(d) for d in shape)


def _check_names(specs: Sequence[InputSpec], input_shapes: Mapping[str, Sequence[int]] | None) -> None:
    unknown = sorted(set(input_shapes or {}) - {s.name for s in specs})
    if unknown:
        known = ", ".join(s.name for s in specs)
        raise BnconvertError(f"--input-shape names {unknown} which are not inputs of the model (inputs: {known})")


def random_inputs(
    specs: Sequence[InputSpec],
    *,
    seed: int = 1,
    batch: int = 1,
    value_range: tuple[float, float] = (0.0, 1.0),
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded data for every input: uniform in ``[low, high)`` for floats, integers in
    ``[ceil(low), ceil(high))`` (at least one value) for integer inputs, fair coins for booleans."""
    if batch < 1:
        raise BnconvertError(f"--batch {batch}: must be at least 1")
    _check_names(specs, input_shapes)
    low, high = value_range
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = resolve_shape(spec, batch=batch, given=(input_shapes or {}).get(spec.name))
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.uniform(low, high, shape).astype(dtype)
        elif dtype.kind in "iu":
            lo = math.ceil(low)
            feeds[spec.name] = rng.integers(lo, max(lo + 1, math.ceil(high)), shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            raise BnconvertError(f"input {spec.describe()}: cannot make random data of dtype {spec.dtype}; pass --inputs")
    return feeds


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix.lower() == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                return {"": np.asarray(data)}
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise FormatError(f"{path}: cannot read inputs ({exc})") from None


def load_inputs(path: str | os.PathLike[str], specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """Real data from ``.npz`` (arrays named like the inputs; or ``arr_0..`` in input order;
    or, for one input, an array ``x`` or the only array) or ``.npy`` (one input).

    Arrays are cast to the input's dtype and checked against its fixed dimensions.
    """
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"{p}: no such inputs file")
    arrays = _read(p)
    names = [s.name for s in specs]
    if all(n in arrays for n in names):
        chosen = {n: arrays[n] for n in names}
    elif len(specs) == 1 and (len(arrays) == 1 or "x" in arrays):
        chosen = {names[0]: arrays["x"] if "x" in arrays else next(iter(arrays.values()))}
    elif [f"arr_{i}" for i in range(len(names))] == sorted(k for k in arrays if k.startswith("arr_"))[: len(names)]:
        chosen = {n: arrays[f"arr_{i}"] for i, n in enumerate(names)}
    else:
        missing = [n for n in names if n not in arrays]
        raise BnconvertError(f"{p}: no array for inputs {missing} (file holds {sorted(arrays)})")
    feeds = {}
    for spec in specs:
        value = np.asarray(chosen[spec.name])
        resolve_shape(spec, given=value.shape, what=f"the array in {p.name}")  # raises, naming the input
        feeds[spec.name] = value.astype(np.dtype(spec.dtype), copy=False)
    return feeds
