"""The inputs a check feeds both models: seeded random data from the input shapes, or a file.

Random data follows Polygraphy's defaults: uniform in [0, 1) from seed 1 (one generator,
inputs drawn in model order). The batch dimension comes from ``batch``; any other dimension
the model leaves open must be given as ``name:1x224x224x3`` (``input_shapes``), which sets the
whole shape of that input, batch included.

Inputs of sequence models get values Keras reads (:func:`input_values`): an input that feeds an
Embedding gets token ids in ``[0, input_dim)`` (the smallest ``input_dim`` when it feeds several),
whatever its dtype; when such an Embedding has ``mask_zero``, or the input feeds a Masking layer,
rows are padded along the time axis, cycling pre-padded, post-padded, unpadded (with 0 for
mask_zero, ``mask_value`` for Masking), so that a check exercises Keras' masks both ways. The
built-in checks draw at least :data:`PADDED_ROWS` rows for such inputs (:func:`padded_batch`).

Both are bounded before anything is allocated: random data to :data:`MAX_ELEMENTS` elements in
all (a config can declare a 100000x100000 input, ``--batch`` can be 10**12), and an ``.npy`` (also
inside an ``.npz``) must hold the bytes its header declares; object arrays are refused (no pickle).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from ..errors import BnconvertError, FormatError
from ..model import TensorRef

if TYPE_CHECKING:
    from ..model import Model

__all__ = [
    "MAX_ELEMENTS", "MAX_FOLDER_FILES", "PADDED_ROWS", "REGIMES", "InputSpec", "InputValues", "check_inputs_file",
    "check_random_size", "input_values", "load_inputs", "padded_batch", "parse_input_shape", "parse_input_shapes",
    "parse_range", "random_inputs", "regime_text", "resolve_shape", "value_notes", "with_values",
]

Dim = int | None
#: most elements the inputs of one check may hold together (2**28: 1 GiB of float32)
MAX_ELEMENTS = 2**28
#: rows the built-in checks draw at least for a padded input: one pre-padded, one post-padded, one not
PADDED_ROWS = 3
#: the kinds of random floats (:func:`random_inputs`); ``verify --regimes`` runs each
REGIMES = ("uniform", "normal", "constant")
#: most ``.npy`` files an inputs folder may hold (one per input is expected)
MAX_FOLDER_FILES = 256


@dataclass(frozen=True)
class InputValues:
    """What the layers reading an input need its values to be (see :func:`input_values`).

    ``tokens``: ids in ``[0, tokens)`` (an Embedding's ``input_dim``); ``pad``: the value of
    padded steps (0 for a mask_zero Embedding, a Masking layer's ``mask_value``), None: no padding.
    """

    tokens: int | None = None
    pad: float | None = None


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, its shape (``None`` for a dynamic dimension) and numpy dtype,
    and what its values must be for the model's layers (None: anything)."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    values: InputValues | None = None

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
    return tuple(int(d) for d in shape if d is not None)  # none left: refused above


def _check_names(specs: Sequence[InputSpec], input_shapes: Mapping[str, Sequence[int]] | None) -> None:
    unknown = sorted(set(input_shapes or {}) - {s.name for s in specs})
    if unknown:
        known = ", ".join(s.name for s in specs)
        raise BnconvertError(f"--input-shape names {unknown} which are not inputs of the model (inputs: {known})")


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def check_random_size(
    specs: Sequence[InputSpec],
    *,
    batch: int = 1,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    source: str | os.PathLike[str] | None = None,
    advice: str = "give --inputs or --no-check",
) -> list[tuple[int, ...]]:
    """The shapes :func:`random_inputs` would draw, refused (naming ``source`` and the input, with
    ``advice``) when they hold more than :data:`MAX_ELEMENTS` elements in all. Cheap: callers run it
    before loading a runtime, so a model declaring a 100000x100000 input is refused at once."""
    where = f"{source}: " if source is not None else ""
    if batch < 1:
        raise BnconvertError(f"{where}--batch {batch}: must be at least 1")
    try:
        _check_names(specs, input_shapes)
        shapes = [resolve_shape(spec, batch=batch, given=(input_shapes or {}).get(spec.name)) for spec in specs]
    except BnconvertError as exc:
        raise BnconvertError(f"{where}{exc}") from None
    total = 0
    for spec, shape in zip(specs, shapes):
        count = math.prod(shape)
        total += count
        if count > MAX_ELEMENTS or total > MAX_ELEMENTS:
            which = f"input '{spec.name}' of shape {_shape_text(shape)}"
            size = f"{count:,} elements" if count == total else f"{total:,} elements with the inputs before it"
            raise BnconvertError(f"{where}{which} is too large for the check's random inputs ({size}, the limit is "
                                 f"{MAX_ELEMENTS:,}); {advice}")
    return shapes


def random_inputs(
    specs: Sequence[InputSpec],
    *,
    seed: int = 1,
    batch: int = 1,
    value_range: tuple[float, float] = (0.0, 1.0),
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    source: str | os.PathLike[str] | None = None,
    advice: str = "give --inputs or --no-check",
    regime: str = "uniform",
) -> dict[str, np.ndarray]:
    """Seeded data for every input: uniform in ``[low, high)`` for floats, integers in
    ``[ceil(low), ceil(high))`` (at least one value) for integer inputs, fair coins for booleans.

    ``regime`` (one of :data:`REGIMES`) changes the floats only: ``"normal"`` draws them from
    N(0, 1), ``"constant"`` sets every element to the middle of ``value_range`` (0.5 by default);
    token ids, padding, integers and booleans are drawn as in ``"uniform"``, the default.
    ``source`` (the model file) starts every error message; inputs of more than
    :data:`MAX_ELEMENTS` elements in all are refused before anything is drawn, with ``advice``.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, not {regime!r}")
    where = f"{source}: " if source is not None else ""
    shapes = check_random_size(specs, batch=batch, input_shapes=input_shapes, source=source, advice=advice)
    low, high = value_range
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec, shape in zip(specs, shapes):
        dtype = np.dtype(spec.dtype)
        if spec.values is not None and (dtype.kind in "iuf"):
            feeds[spec.name] = _sequence_values(spec.values, shape, dtype, rng, value_range, regime)
        elif dtype.kind == "f":
            feeds[spec.name] = _floats(rng, shape, dtype, value_range, regime)
        elif dtype.kind in "iu":
            lo = math.ceil(low)
            feeds[spec.name] = rng.integers(lo, max(lo + 1, math.ceil(high)), shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            raise BnconvertError(f"{where}input {spec.describe()}: cannot make random data of dtype {spec.dtype}; pass --inputs")
    return feeds


def _floats(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, value_range: tuple[float, float],
            regime: str) -> np.ndarray:
    """Floats of one input in ``regime`` (see :func:`random_inputs`)."""
    low, high = value_range
    if regime == "normal":
        return rng.standard_normal(shape).astype(dtype)
    if regime == "constant":
        return np.full(shape, (low + high) / 2, dtype=dtype)
    return rng.uniform(low, high, shape).astype(dtype)


def regime_text(regime: str, *, value_range: tuple[float, float] = (0.0, 1.0), seed: int = 1) -> str:
    """Where a regime's random floats come from, as reports print it."""
    low, high = value_range
    if regime == "normal":
        return f"normal (mean 0, std 1) from seed {seed}"
    if regime == "constant":
        return f"constant {(low + high) / 2:g}"
    return f"uniform [{low:g}, {high:g}) from seed {seed}"


def _sequence_values(values: InputValues, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator,
                     value_range: tuple[float, float], regime: str = "uniform") -> np.ndarray:
    """Token ids or floats, padded along axis 1 by rows: pre-padded, post-padded, unpadded, again.

    A row keeps at least one unpadded step (a fully masked row is a corner Keras itself treats
    differently between generations). Unpadded token ids avoid 0 when 0 is the padding, so the
    unpadded row is unmasked.
    """
    if values.tokens is not None:
        first = 1 if values.pad is not None and values.tokens > 1 else 0
        data = rng.integers(first, max(values.tokens, first + 1), shape).astype(dtype)
    else:
        data = _floats(rng, shape, dtype, value_range, regime)
    if values.pad is None or len(shape) < 2 or shape[1] < 2:
        return data
    steps = shape[1]
    for row in range(shape[0]):
        kind = row % PADDED_ROWS
        if kind == 2:
            continue  # unpadded
        count = min(steps - 1, max(1, steps * (1 + (row // PADDED_ROWS) % 2) // 3))
        where = slice(0, count) if kind == 0 else slice(steps - count, steps)
        data[row, where] = values.pad
    return data


#: layers whose output holds the values of their input (moved, or the identity at inference):
#: token ids pass through them to an Embedding
_MOVES_VALUES = frozenset({"Reshape", "Flatten", "Permute", "RepeatVector"})


def input_values(model: Model) -> dict[str, InputValues]:
    """Per model input (by its input layer's name): the values its consumers need.

    Followed from each input through the layers that keep its values (the catalog's identities,
    InputLayer, Reshape, Flatten, Permute, RepeatVector) and into nested models: an Embedding
    (also inside TimeDistributed) asks for token ids below its ``input_dim`` and, with
    ``mask_zero``, padding with 0; a Masking layer asks for padding with its ``mask_value``.
    """
    from ..catalog import catalog

    table = catalog()
    found: dict[str, InputValues] = {}
    for ref in model.inputs:
        tokens: list[int] = []
        pads: list[float] = []
        zero_pad = False
        seen: set[tuple[int, str, int, int]] = set()
        todo: list[tuple[Model, TensorRef]] = [(model, ref)]
        while todo:
            owner, here = todo.pop()
            key = (id(owner), here.layer, here.node, here.index)
            if key in seen:
                continue
            seen.add(key)
            for layer, k in owner.consumers(here):
                cls, config = layer.class_name, layer.config
                if cls == "TimeDistributed" and isinstance(config.get("layer"), dict):
                    cls, config = config["layer"].get("class_name"), config["layer"].get("config") or {}
                if layer.model is not None:
                    position = layer.calls[k].index(here)
                    if position < len(layer.model.inputs):
                        todo.append((layer.model, layer.model.inputs[position]))
                elif cls == "Embedding":
                    dim = config.get("input_dim")
                    if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
                        tokens.append(dim)
                    zero_pad = zero_pad or bool(config.get("mask_zero"))
                elif cls == "Masking":
                    value = config.get("mask_value", 0.0)
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                        pads.append(float(value))
                elif cls in _MOVES_VALUES or getattr(table.get(cls), "identity", False):
                    todo.append((owner, TensorRef(layer.name, k, 0)))
        if tokens:
            found[ref.layer] = InputValues(tokens=min(tokens), pad=0.0 if zero_pad else None)
        elif pads:
            found[ref.layer] = InputValues(pad=pads[0])
    return found


def with_values(specs: Sequence[InputSpec], model: Model | None) -> list[InputSpec]:
    """``specs`` with what ``model`` needs of each input's values (:func:`input_values`)."""
    if model is None or not model.has_graph:
        return list(specs)
    values = input_values(model)
    return [replace(s, values=values[s.name]) if s.name in values else s for s in specs]


def value_notes(specs: Sequence[InputSpec]) -> list[str]:
    """One report line per input whose random data follows its layers (:func:`input_values`)."""
    notes = []
    for s in specs:
        v = s.values
        if v is None:
            continue
        what = f"token ids in [0, {v.tokens})" if v.tokens is not None else "random values"
        if v.pad is not None:
            what += f", rows pre-padded, post-padded and unpadded with {v.pad:g} (Keras masks)"
        notes.append(f"input '{s.name}': {what}")
    return notes


def padded_batch(specs: Sequence[InputSpec], batch: int) -> int:
    """The batch the built-in checks draw: at least :data:`PADDED_ROWS` when an input with a
    dynamic batch is padded, so that pre-padded, post-padded and unpadded rows are all checked."""
    if any(s.values is not None and s.values.pad is not None and (not s.shape or s.shape[0] is None) for s in specs):
        return max(batch, PADDED_ROWS)
    return batch


def _npy(fh: IO[bytes], available: int, label: str) -> tuple[int, Callable[[], np.ndarray]]:
    """Check one ``.npy`` stream's header against the ``available`` bytes (file or zip member size)
    and return its element count and the function that reads its data: nothing is allocated for
    a header that lies."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise FormatError(f"{label}: .npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    if dtype.hasobject or dtype.kind not in "biufc":
        raise FormatError(f"{label}: holds an array of dtype {dtype}, not numbers (object arrays are never unpickled)")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise FormatError(f"{label}: an array of shape {_shape_text(shape)} ({count:,} elements) is above the limit "
                          f"of {MAX_ELEMENTS:,} for inputs")
    nbytes = count * dtype.itemsize
    header = fh.tell()
    if nbytes > available - header:
        raise FormatError(f"{label}: the header declares shape {_shape_text(shape)} {dtype} ({nbytes:,} bytes) but "
                          f"{max(available - header, 0):,} bytes follow it (truncated or damaged)")

    def read() -> np.ndarray:
        buf = bytearray(nbytes)
        view, got = memoryview(buf), 0
        while got < nbytes:
            n = fh.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                raise FormatError(f"{label}: the data ends after {got:,} of {nbytes:,} bytes (truncated)")
            got += n
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")

    return count, read


def _read(path: Path, wanted: Callable[[list[str]], list[str]], *, data: bool = True) -> dict[str, np.ndarray]:
    """The arrays of an ``.npy`` (named ``""``) or ``.npz`` that ``wanted`` picks from the names the
    file holds; the format is sniffed from the bytes, every header is checked before reading.
    Without ``data`` only the headers are checked (nothing is read, nothing returned)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(6)
            fh.seek(0)
            if head == b"\x93NUMPY":
                _, read = _npy(fh, size, str(path))
                return {"": read()} if data else {}
            if not head.startswith(b"PK"):
                raise FormatError(f"{path}: cannot read inputs (neither .npy nor .npz)")
            with zipfile.ZipFile(fh) as zf:
                members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
                out = {}
                for name in wanted(list(members)):
                    info = members[name]
                    with zf.open(info) as member:
                        _, read = _npy(member, info.file_size, f"{path}: array '{name}'")
                        if data:
                            out[name] = read()
                return out
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        # the bytes are damaged (numpy raises ValueError for a bad header, zipfile its own kinds)
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise FormatError(f"{path}: cannot read inputs ({text})") from None


def _damaged(path: Path, exc: BaseException) -> FormatError:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return FormatError(f"{path}: cannot read inputs ({text})")


def _npy_files(folder: Path) -> dict[str, Path]:
    """The ``.npy`` files of an inputs folder (not its subfolders), by name without ``.npy``."""
    found: dict[str, Path] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.endswith(".npy") or not entry.is_file():  # a link to a file counts
                    continue
                found[entry.name[:-4]] = Path(entry.path)
                if len(found) > MAX_FOLDER_FILES:
                    raise FormatError(f"{folder}: holds more than {MAX_FOLDER_FILES} .npy files; an inputs folder "
                                      "holds one per model input (<input name>.npy)")
    except OSError as exc:
        raise FormatError(f"{folder}: cannot be read ({exc.strerror or exc})") from None
    if not found:
        raise FormatError(f"{folder}: an inputs folder without .npy files (one per model input: <input name>.npy)")
    return found


def _read_folder(folder: Path, wanted: Callable[[list[str]], list[str]], *, data: bool = True
                 ) -> dict[str, np.ndarray]:
    """The arrays of a folder of ``.npy`` files (named by the file without ``.npy``) that ``wanted``
    picks; every chosen header is checked, and the element total bounded, before any data is read."""
    held = _npy_files(folder)
    readers: list[tuple[str, Callable[[], np.ndarray]]] = []
    total = 0
    with contextlib.ExitStack() as files:
        for name in wanted(sorted(held)):
            path = held[name]
            try:
                fh = files.enter_context(open(path, "rb"))
                size = os.fstat(fh.fileno()).st_size
                count, read = _npy(fh, size, str(path))
            except FormatError:
                raise
            except (OSError, ValueError, EOFError) as exc:  # numpy's ValueError: not an .npy header
                raise _damaged(path, exc) from None
            total += count
            if total > MAX_ELEMENTS:
                raise FormatError(f"{folder}: the arrays hold {total:,} elements together (up to {path.name}), above "
                                  f"the limit of {MAX_ELEMENTS:,} for inputs")
            readers.append((name, read))
        if not data:
            return {}
        out = {}
        for name, read in readers:
            try:
                out[name] = read()
            except OSError as exc:
                raise _damaged(held[name], exc) from None
        return out


def _inputs_file(path: str | os.PathLike[str], *, folder: bool = False) -> Path:
    """``path`` when it is a regular file (or, with ``folder``, a folder); else a FormatError
    naming it (one ``stat``: a folder without search permission is a message, not an exception
    from ``Path.exists``)."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FormatError(f"{p}: no such inputs file") from None
        raise FormatError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    except ValueError:  # a NUL in the path
        raise FormatError(f"{p}: no such inputs file") from None
    if stat.S_ISDIR(mode):
        if folder:
            return p
        raise FormatError(f"{p}: is a folder, not an inputs file")
    if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
        raise FormatError(f"{p}: not a regular file")
    return p


def _arrays(path: Path, wanted: Callable[[list[str]], list[str]], *, data: bool = True) -> dict[str, np.ndarray]:
    """:func:`_read_folder` for a folder, :func:`_read` for a file."""
    if path.is_dir():
        return _read_folder(path, wanted, data=data)
    return _read(path, wanted, data=data)


def check_inputs_file(path: str | os.PathLike[str]) -> None:
    """Check an inputs file (``.npy``/``.npz``) or folder (of ``.npy`` files) without reading its
    data: regular files whose every array header declares numbers, at most :data:`MAX_ELEMENTS`
    elements (in all, for a folder) and no more bytes than the file holds. Cheap: ``verify`` runs
    it before loading any runtime."""
    _arrays(_inputs_file(path, folder=True), lambda held: held, data=False)


def load_inputs(path: str | os.PathLike[str], specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """Real data from ``.npz`` (arrays named like the inputs; or ``arr_0..`` in input order;
    or, for one input, an array ``x`` or the only array), ``.npy`` (one input), or a folder of
    ``.npy`` files chosen the way ``.npz`` members are (``<input name>.npy``; for one input,
    ``x.npy`` or the only file).

    Arrays are cast to the input's dtype and checked against its fixed dimensions; only the
    arrays used are read, each after its header was checked against the bytes that hold it.
    """
    p = _inputs_file(path, folder=True)
    names = [s.name for s in specs]
    chosen: dict[str, str] = {}  # input name -> array name in the file

    def wanted(held: list[str]) -> list[str]:
        if all(n in held for n in names):
            chosen.update({n: n for n in names})
        elif len(specs) == 1 and (len(held) == 1 or "x" in held):
            chosen[names[0]] = "x" if "x" in held else held[0]
        elif [f"arr_{i}" for i in range(len(names))] == sorted(k for k in held if k.startswith("arr_"))[: len(names)]:
            chosen.update({n: f"arr_{i}" for i, n in enumerate(names)})
        else:
            missing = [n for n in names if n not in held]
            raise BnconvertError(f"{p}: no array for inputs {missing} (file holds {sorted(held)})")
        return list(dict.fromkeys(chosen.values()))

    arrays = _arrays(p, wanted)
    if "" in arrays:  # an .npy: one array
        wanted([""])
    total = sum(a.size for a in arrays.values())
    if total > MAX_ELEMENTS:
        raise FormatError(f"{p}: the arrays hold {total:,} elements together, above the limit of {MAX_ELEMENTS:,} for inputs")
    feeds = {}
    for spec in specs:
        value = arrays[chosen[spec.name]]
        try:
            resolve_shape(spec, given=value.shape, what=f"the array in {p.name}")  # raises, naming the input
        except BnconvertError as exc:
            raise BnconvertError(f"{p}: {exc}") from None
        feeds[spec.name] = value.astype(np.dtype(spec.dtype), copy=False)
    return feeds
