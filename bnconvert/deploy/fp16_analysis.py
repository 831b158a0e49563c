"""What float16 cannot hold: every float weight and folded scale of an export, judged per
output channel before anything is cast (:func:`analyse`), by the Keras layer that reads it.

* **overflow**: a value beyond float16's largest, 65504, becomes inf;
* **underflow**: an output channel whose values are all below float16's smallest subnormal
  (6e-8, rounding to 0 below 3e-8) becomes all zero;
* **precision**: an output channel whose values float16 rounds by more than ``max_rel_error``
  (the norm of the rounding over the norm of the channel; float16's own rounding is at most
  2^-11 = 4.9e-4, so only channels held mostly in subnormals, below 6.1e-5, get there).

Biases and shifts (what a layer adds) are judged on overflow only. A BatchNormalization left in
the graph (``--keep``) is judged by what it computes, its scale ``gamma / sqrt(var + eps)`` and
shift. Each node is named after its layer (:mod:`bnconvert.onnx.builder`), which is how a
finding names a layer. :mod:`.fp16` converts, keeping the layers found here in float32.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import GraphProto, NodeProto, TensorProto, numpy_helper

__all__ = ["DEFAULT_MAX_REL_ERROR", "FP16_MAX", "Fp16Finding", "analyse"]

#: float16's largest finite value
FP16_MAX = 65504.0
#: default threshold of the "precision" finding: a channel float16 rounds by more than 1% (20 times
#: its worst rounding of a normal number) is held mostly in subnormals (values below ~3e-6), and
#: its error alone would use half of :data:`FP16_RTOL`
DEFAULT_MAX_REL_ERROR = 1e-2

_SMALLEST = 2.0**-24  # float16's smallest subnormal
_NORMAL = 2.0**-14  # float16's smallest normal


@dataclass(frozen=True)
class Fp16Finding:
    """One weight (or a BatchNormalization's scale) float16 cannot hold faithfully."""

    layer: str
    tensor: str
    #: ``overflow``, ``underflow`` or ``precision``
    kind: str
    detail: str

    def line(self) -> str:
        return f"'{self.layer}': {self.tensor}: {self.detail}"


# -- which layer a node belongs to ------------------------------------------------------------------
def layer_namer(layers: Collection[str] | None) -> Callable[[str], str]:
    """Node name -> layer name. bnconvert names each node after its call: ``conv1``,
    ``conv1/bias``, ``outer/inner/matmul`` (nested), ``dense/call1`` (second call). With the
    model's layer paths (``Model.walk``) the longest one the node name starts with wins; without
    them, the first ``/`` segment."""
    known = set(layers or ())

    def layer_of(node_name: str) -> str:
        parts = node_name.split("/")
        for k in range(len(parts), 0, -1):
            head = "/".join(parts[:k])
            if head in known:
                return head
            bare = re.sub(r"_\d+$", "", head)  # a name made unique by the builder: conv_1
            if bare in known:
                return bare
        return parts[0]

    return layer_of


def subgraphs(node: NodeProto) -> list[GraphProto]:
    out: list[GraphProto] = []
    for attr in node.attribute:
        if attr.HasField("g"):
            out.append(attr.g)
        out.extend(attr.graphs)
    return out


def _reads(node: NodeProto) -> Iterator[tuple[NodeProto, int, str]]:
    """Every (reading node, input index, value) of ``node`` and of the nodes of its bodies."""
    for i, value in enumerate(node.input):
        if value:
            yield node, i, value
    for g in subgraphs(node):
        for inner in g.node:
            yield from _reads(inner)


# -- the analysis ---------------------------------------------------------------------------------
def is_float32(arr: np.ndarray) -> bool:
    return np.asarray(arr).dtype == np.float32


#: (op, input index) of the values a node adds (biases, shifts) or picks (Where's fill): their
#: rounding, at most 3e-8 in absolute value once below float16's normal range, is never more than
#: the rounding of the float16 sum they go into, so only their overflow is a finding
_ADDED = {("Conv", 2), ("ConvTranspose", 2), ("Gemm", 2), ("Add", 0), ("Add", 1), ("Sub", 0), ("Sub", 1),
          ("Sum", -1), ("LayerNormalization", 2), ("InstanceNormalization", 2), ("Where", 1), ("Where", 2),
          ("Pad", 2), ("ConstantOfShape", -1)}


def _added(node: NodeProto, index: int) -> bool:
    return (node.op_type, index) in _ADDED or (node.op_type, -1) in _ADDED


def _channel_axis(node: NodeProto, index: int, arr: np.ndarray) -> int | None:
    """The output-channel axis of a weight read by ``node`` as input ``index``; None for a
    vector or scalar (a scale, a floor), whose every value is a channel of its own."""
    if sum(d > 1 for d in arr.shape) <= 1:
        return None
    if node.op_type == "Conv" and index == 1:
        return 0
    if node.op_type == "ConvTranspose" and index == 1:
        return 1
    if node.op_type == "Gemm" and index == 1:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else arr.ndim - 1
    return arr.ndim - 1  # MatMul, Einsum, Mul...: Keras keeps features last


def _weight_findings(arr: np.ndarray, axis: int | None, max_rel_error: float, *,
                     added: bool = False) -> list[tuple[str, str]]:
    """(kind, detail) of what float16 does to ``arr`` (float32), channel by channel (only its
    overflow when the values are ``added`` to others)."""
    a = np.asarray(arr, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = a.astype(np.float16).astype(np.float32)
    finite = np.isfinite(a)
    over = finite & ~np.isfinite(h)
    out: list[tuple[str, str]] = []
    if over.any():
        out.append(("overflow", f"{int(over.sum())} of {a.size} values beyond +-65504 (largest "
                                f"{float(np.abs(a[over]).max()):.3g}) would be inf in float16"))
    if added:
        return out
    usable = finite & ~over
    a, h = np.where(usable, a, 0).astype(np.float32), np.where(usable, h, 0).astype(np.float32)
    rows = a.reshape(-1, 1) if axis is None else np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
    hrows = h.reshape(-1, 1) if axis is None else np.moveaxis(h, axis, 0).reshape(h.shape[axis], -1)
    unit = "values" if axis is None else "output channels"
    norm = np.sqrt(np.sum(np.square(rows), axis=1, dtype=np.float64))
    err = np.sqrt(np.sum(np.square(rows - hrows), axis=1, dtype=np.float64))
    live = norm > 0
    under = live & ~np.any(hrows != 0, axis=1)
    if under.any():
        largest = float(np.abs(rows[under]).max())
        out.append(("underflow", f"{int(under.sum())} of {len(rows)} {unit} would be all zero in float16 "
                                 f"(largest value in them {largest:.3g}, below float16's smallest {_SMALLEST:.2g})"))
    rel = np.divide(err, norm, out=np.zeros_like(err), where=live)
    bad = live & ~under & (rel > max_rel_error)
    if bad.any():
        out.append(("precision", f"{int(bad.sum())} of {len(rows)} {unit} rounded by more than {max_rel_error:g} "
                                 f"in float16 (worst {float(rel[bad].max()):.2g}: values below its normal range, {_NORMAL:.2g})"))
    return out


def _bn_findings(node: NodeProto, constants: Mapping[str, np.ndarray], max_rel_error: float) -> list[tuple[str, str]]:
    """What float16 does to a BatchNormalization's scale ``gamma / sqrt(var + eps)`` and shift."""
    names = list(node.input[1:5])
    if len(names) < 4 or not all(n in constants and is_float32(constants[n]) for n in names):
        return []
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)

    def affine(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        g, b, m, v = (np.asarray(x, np.float64) for x in values)
        with np.errstate(all="ignore"):
            s = g / np.sqrt(v + eps)
            return s, b - m * s

    exact = [np.asarray(constants[n]) for n in names]
    with np.errstate(over="ignore"):
        s, t = affine(exact)
        s16, t16 = affine([x.astype(np.float16) for x in exact])
    out: list[tuple[str, str]] = []
    beyond = ~np.isfinite(s16) | ~np.isfinite(t16) | (np.abs(s) > FP16_MAX) | (np.abs(t) > FP16_MAX)
    if beyond.any():
        out.append(("overflow", f"scale gamma/sqrt(var+eps) or shift beyond +-65504 on {int(beyond.sum())} of {s.size} "
                                f"channels (largest scale {float(np.abs(s).max()):.3g})"))
    with np.errstate(all="ignore"):
        rel = np.abs(s16 - s) / np.maximum(np.abs(s), 1e-300)
        rel = np.maximum(rel, np.abs(t16 - t) / np.maximum(np.maximum(np.abs(t), np.abs(s)), 1e-300))
    bad = ~beyond & (rel > max_rel_error)
    if bad.any():
        out.append(("precision", f"scale gamma/sqrt(var+eps) and shift rounded by more than {max_rel_error:g} on "
                                 f"{int(bad.sum())} of {s.size} channels in float16 (worst {float(rel[bad].max()):.2g})"))
    return out


def analyse(proto: onnx.ModelProto, constants: Mapping[str, np.ndarray], *,
            max_rel_error: float = DEFAULT_MAX_REL_ERROR, layers: Collection[str] | None = None) -> list[Fp16Finding]:
    """Every float32 weight and constant float16 cannot hold faithfully, by the layer reading it
    (see the module docstring); ``layers``: the model's layer paths, to name nested layers."""
    layer_of = layer_namer(layers)
    constants = {**constants, **_body_initializers(proto.graph)}  # a ConvLSTM's step holds its own
    readers: dict[str, list[tuple[NodeProto, int, str]]] = defaultdict(list)
    found: list[Fp16Finding] = []
    bn_inputs: set[str] = set()
    for top in proto.graph.node:
        layer = layer_of(top.name)
        for node, i, value in _reads(top):
            if value in constants:
                readers[value].append((node, i, layer))
            if node.op_type == "BatchNormalization" and i > 0:
                bn_inputs.add(value)
        for node in walk_nodes([top]):
            if node.op_type == "BatchNormalization":
                found += [Fp16Finding(layer, node.name, k, d) for k, d in _bn_findings(node, constants, max_rel_error)]
            for attr in node.attribute:
                if attr.HasField("t") and attr.t.data_type == TensorProto.FLOAT:
                    found += [Fp16Finding(layer, f"{node.name}.{attr.name}", k, d) for k, d in
                              _weight_findings(numpy_helper.to_array(attr.t), None, max_rel_error, added=_added(node, -1))]
    for name, arr in constants.items():
        if not is_float32(arr) or name not in readers or name in bn_inputs:
            continue
        node, index, _ = readers[name][0]
        added = all(_added(n, i) for n, i, _ in readers[name])
        for kind, detail in _weight_findings(arr, _channel_axis(node, index, np.asarray(arr)), max_rel_error, added=added):
            for layer in dict.fromkeys(r[2] for r in readers[name]):
                found.append(Fp16Finding(layer, name, kind, detail))
    return found


def _body_initializers(graph: GraphProto) -> dict[str, np.ndarray]:
    """The initializers the bodies of ``graph``'s nodes hold themselves, by name."""
    out: dict[str, np.ndarray] = {}
    for node in walk_nodes(list(graph.node)):
        for g in subgraphs(node):
            out.update((t.name, numpy_helper.to_array(t)) for t in g.initializer)
    return out


def walk_nodes(nodes: Iterable[NodeProto]) -> Iterator[NodeProto]:
    for node in nodes:
        yield node
        for g in subgraphs(node):
            yield from walk_nodes(list(g.node))
