"""Recurrent weights as older files store them, turned into the fused Keras 2/3 layout (and back).

The catalog's layout (:mod:`bnconvert.catalog.recurrent`): ``kernel (F, g*u)``,
``recurrent_kernel (u, g*u)``, ``bias (g*u,)`` (GRU with ``reset_after``: ``(2, 3u)``), gates side
by side: LSTM i, f, c, o; GRU z, r, h. Two other layouts reach the readers:

* **Keras 1** (``consume_less`` ``cpu``/``mem``, the default) stores one ``W``, ``U``, ``b`` per
  gate: LSTM in the order i, c, f, o (``W_i, U_i, b_i, W_c, U_c, b_c, W_f, U_f, b_f, W_o, U_o,
  b_o``), GRU z, r, h, SimpleRNN one triple. ``consume_less='gpu'`` stored the fused ``W, U, b``
  already in today's gate order. The conversion is Keras 2's own
  (``preprocess_weights_for_loading`` for ``original_keras_version == '1'``, kept in tf-keras
  ``hdf5_format.py``): concatenate the gates in the new order.
* **CuDNNLSTM / CuDNNGRU** (Keras 2.1-2.3, tf.keras 1.x) store per gate a kernel in cuDNN's
  (Fortran) order and the transposed recurrent kernel, and two biases (input and recurrent) of
  ``g*u`` each. Keras' ``_convert_rnn_weights`` (tf-keras ``hdf5_format.py``), which
  ``load_weights`` runs when such weights meet an LSTM/GRU, is reproduced here exactly: per
  gate, input kernel ``k.T.reshape(k.shape, order='F')``, recurrent kernel ``k.T``; LSTM bias =
  the sum of the two halves, GRU bias reshaped to ``(2, 3u)`` (a GRU with ``reset_after``).
  Keras tells the layout from the bias size, and so does :func:`convert_stored`. The inverse
  (:func:`to_cudnn`) is Keras' own too: ``order='C'``, and an LSTM bias split in two equal halves
  (only their sum matters).

A config of class CuDNNLSTM/CuDNNGRU becomes an LSTM/GRU with the functions cuDNN hard-codes
(tanh, sigmoid; GRU ``reset_after``), the class written in the file kept as the layer's
``source_class``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import FormatError
from ..layerspec import WeightPart

__all__ = ["CUDNN_CLASSES", "CUDNN_PARTS", "KERAS1_RECURRENT", "convert_stored", "explicit_reset_after", "from_cudnn", "is_cudnn",
           "keras1_gates", "keras1_recurrent_config", "to_cudnn", "upgrade_cudnn_config"]

#: the cuDNN classes and the class each becomes
CUDNN_CLASSES = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}
#: layer config key (bookkeeping, never written to a file): indices of the layer's weight parts
#: (:func:`~bnconvert.layerspec.weight_parts`) the file stores in the cuDNN layout
CUDNN_PARTS = "cudnn_parts"
#: the Keras 1 recurrent classes the reader upgrades (they kept their names in Keras 2)
KERAS1_RECURRENT = frozenset({"LSTM", "GRU", "SimpleRNN"})
_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
#: Keras 1 per-gate triples in file order, as indices of today's gates (LSTM i, c, f, o -> i, f, c, o)
_KERAS1_ORDER = {"LSTM": (0, 2, 1, 3), "GRU": (0, 1, 2), "SimpleRNN": (0,)}


def _hsplit_apply(kernel: np.ndarray, func: Any, gates: int) -> np.ndarray:
    return np.hstack([func(k) for k in np.hsplit(kernel, gates)])


def from_cudnn(kind: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """CuDNNLSTM/CuDNNGRU ``[kernel, recurrent_kernel, bias]`` in the LSTM / GRU(reset_after) layout."""
    gates = _GATES[kind]
    kernel = _hsplit_apply(arrays[0], lambda k: k.T.reshape(k.shape, order="F"), gates)
    recurrent = _hsplit_apply(arrays[1], lambda k: k.T, gates)
    bias = np.asarray(arrays[2])
    bias = np.sum(np.split(bias, 2, axis=0), axis=0) if kind == "LSTM" else bias.reshape((2, -1))
    return [kernel, recurrent, bias]


def to_cudnn(kind: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The inverse of :func:`from_cudnn` (an LSTM bias split into two equal halves, as Keras does)."""
    gates = _GATES[kind]
    kernel = _hsplit_apply(np.asarray(arrays[0]), lambda k: k.T.reshape(k.shape, order="C"), gates)
    recurrent = _hsplit_apply(np.asarray(arrays[1]), lambda k: k.T, gates)
    bias = np.asarray(arrays[2])
    bias = np.tile(0.5 * bias, 2).astype(bias.dtype) if kind == "LSTM" else bias.reshape(-1)
    return [kernel, recurrent, bias]


def keras1_gates(kind: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Keras 1 per-gate ``[W_a, U_a, b_a, W_b, ...]`` (file order) fused in today's gate order."""
    order = _KERAS1_ORDER[kind]
    triples = [arrays[3 * i:3 * i + 3] for i in range(len(order))]
    gates = [triples[order.index(g)] for g in range(len(order))]  # today's gate g sits at file slot order.index(g)
    return [np.concatenate([t[j] for t in gates], axis=-1) for j in range(3)]


def is_cudnn(kind: str, arrays: list[np.ndarray]) -> bool:
    """True when LSTM/GRU ``[kernel, recurrent_kernel, bias]`` have the cuDNN bias of two halves."""
    if kind not in ("LSTM", "GRU") or len(arrays) != 3 or arrays[1].ndim != 2:
        return False
    units, bias = arrays[1].shape[0], arrays[2]
    return bias.ndim == 1 and bias.shape[0] == 2 * _GATES[kind] * units and arrays[1].shape[1] == _GATES[kind] * units


def convert_stored(label: str, parts: list[WeightPart], named: list[tuple[str, np.ndarray]], *,
                   keras1: bool) -> tuple[list[tuple[str, np.ndarray]], list[int]]:
    """A layer's stored ``(name, array)`` list (legacy ``.h5`` order) in the catalog's layout, part
    by part, and the indices of the parts that were in the cuDNN layout."""
    expected = [len(p.meanings) for p in parts]
    counts = expected
    if keras1 and len(named) != sum(expected):
        per_gate = [3 * _GATES[p.kind] if p.kind in _GATES and len(p.meanings) == 3 else len(p.meanings) for p in parts]
        if sum(per_gate) == len(named):
            counts = per_gate
    if sum(counts) != len(named):
        return named, []  # the count check in assign names the problem
    out: list[tuple[str, np.ndarray]] = []
    cudnn: list[int] = []
    start = 0
    for i, (part, count) in enumerate(zip(parts, counts)):
        mine = named[start:start + count]
        start += count
        arrays = [a for _, a in mine]
        if count != len(part.meanings):  # Keras 1 per-gate weights
            try:
                arrays = keras1_gates(part.kind, arrays)
            except ValueError as exc:
                raise FormatError(f"layer {label}: Keras 1 {part.kind} gate weights do not fit together ({exc})") from None
            mine = list(zip(part.meanings, arrays))
        elif is_cudnn(part.kind, arrays):
            mine = list(zip(part.meanings, from_cudnn(part.kind, arrays)))
            cudnn.append(i)
        out += mine
    return out, cudnn


# -- configs ---------------------------------------------------------------------------------------------
def keras1_recurrent_config(class_name: str, c: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """A Keras 1 LSTM/GRU/SimpleRNN config in Keras 2 words (what Keras 2's
    ``legacy_recurrent_support`` converted: ``output_dim`` -> ``units``, ``inner_activation`` ->
    ``recurrent_activation``, ``dropout_W/U`` -> ``dropout``/``recurrent_dropout``,
    ``consume_less`` -> ``implementation``). Initializers and regularizers are left out (training
    only; Keras 1 spelled them in ways current Keras refuses, ``'one'``)."""
    if "output_dim" not in c:
        raise KeyError("output_dim")
    cfg = dict(out)
    if "batch_input_shape" not in cfg and c.get("input_dim") is not None:
        cfg["batch_input_shape"] = [None, c.get("input_length"), c["input_dim"]]
    cfg.update(units=c["output_dim"], activation=c.get("activation", "tanh"), use_bias=True,
               return_sequences=bool(c.get("return_sequences", False)), return_state=False,
               go_backwards=bool(c.get("go_backwards", False)), stateful=bool(c.get("stateful", False)),
               unroll=bool(c.get("unroll", False)), dropout=c.get("dropout_W", 0.0) or 0.0,
               recurrent_dropout=c.get("dropout_U", 0.0) or 0.0,
               implementation=2 if c.get("consume_less") == "gpu" else 1)
    if class_name != "SimpleRNN":
        cfg["recurrent_activation"] = c.get("inner_activation", "hard_sigmoid")
    if class_name == "LSTM":
        cfg["unit_forget_bias"] = c.get("forget_bias_init", "one") in ("one", "ones")
    if class_name == "GRU":
        cfg["reset_after"] = False  # Keras 1's GRU applied the reset gate before the recurrent product
    return cfg


def _cudnn_config(class_name: str, c: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(c)
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer", "kernel_regularizer",
                "recurrent_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                "recurrent_constraint", "bias_constraint"):
        cfg.pop(key, None)
    cfg.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True)
    if class_name == "CuDNNGRU":
        cfg["reset_after"] = True  # cuDNN's GRU: the reset gate applied after the recurrent product
    return cfg


def upgrade_cudnn_config(config: dict[str, Any]) -> dict[str, Any]:
    """A model config with every CuDNNLSTM/CuDNNGRU (also inside wrappers and nested models) as an
    LSTM/GRU; the input is not modified. An entry that was renamed records ``source_class``."""
    text_has = _mentions_cudnn(config)
    if not text_has:
        return config
    out = copy.deepcopy(config)
    _walk_entries(out)
    return out


def _class(entry: dict[str, Any]) -> str | None:
    """An entry's class name, None when it is not a string (a damaged or hostile config)."""
    name = entry.get("class_name")
    return name if isinstance(name, str) else None


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside ``value`` (itself included), depth first. A dict is yielded before its
    values are visited, so a caller may replace them (a converted ``config``) and the walk goes
    on into the new ones."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))


def _mentions_cudnn(value: Any) -> bool:
    return any(_class(item) in CUDNN_CLASSES for item in _dicts(value))


def _walk_entries(entry: Any) -> None:
    for item in _dicts(entry):
        name = _class(item)
        if name in CUDNN_CLASSES and isinstance(item.get("config"), dict):
            item["config"] = _cudnn_config(name, item["config"])
            item["class_name"] = CUDNN_CLASSES[name]
            item["source_class"] = name


def _is_gru(item: dict[str, Any]) -> bool:
    return _class(item) in ("GRU", "GRUCell") and isinstance(item.get("config"), dict)


def explicit_reset_after(class_name: str, config: dict[str, Any], default: bool) -> dict[str, Any]:
    """A layer config with GRU's ``reset_after`` written into every GRU/GRUCell config that lacks
    it (its own, a wrapper's inner layer's, a generic RNN's cells'): the default changed between
    generations (False in Keras 1 and standalone Keras 2, whose configs from 2.1.3 on always
    record it; True in tf.keras 2 and Keras 3). ``config`` itself is not modified; it is returned
    as it is when nothing lacks the key."""
    if class_name == "GRU" and "reset_after" not in config:
        return {**config, "reset_after": default}
    if not _gru_without_reset_after(config):
        return config
    out = copy.deepcopy(config)
    for item in _dicts(out):
        if _is_gru(item):
            item["config"].setdefault("reset_after", default)
    return out


def _gru_without_reset_after(value: Any) -> bool:
    return any(_is_gru(item) and "reset_after" not in item["config"] for item in _dicts(value))
