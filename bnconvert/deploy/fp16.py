"""Half precision: the folded export with its weights and its compute in float16.

bnconvert folds in float64 and exports float32. :func:`to_float16` turns that export (the graph
without initializers and the initializer arrays, as :func:`bnconvert.onnx.export.to_onnx_parts`
returns them) into a float16 model:

* every float32 initializer becomes float16, and so does every float value inside the graph:
  Cast ``to`` FLOAT, Constant and ConstantOfShape values, the inputs and outputs of Scan bodies;
* the graph's float inputs and outputs stay float32 (a Cast after each input, one before each
  output) unless ``io_float16``;
* an operator input whose schema at the model's opset has no float16 (Resize's ``roi`` and
  ``scales``, IsInf before opset 20) stays float32, and so do Range and CumSum, whose
  integer-valued results float16 holds exactly only up to 2048 (:data:`FLOAT32_OPS`), and a
  MatMul reading a Transpose of the first axis, with that Transpose (onnxruntime crashes loading
  the pair in float16, see ``_FUSED_PAIRS``).

Before anything is cast, :func:`~bnconvert.deploy.fp16_analysis.analyse` finds every weight and
folded scale float16 cannot hold (overflow past 65504, a channel flushed to zero, a channel
rounded beyond ``max_rel_error``), by the layer that reads it. A layer with a finding keeps
float32 (its nodes, its weights, its Scan bodies; Casts at its borders) when ``on_risk="keep"``,
or the conversion is refused (:class:`Fp16RiskError`) when ``"refuse"``.
Only weights are judged: an activation that outgrows float16 is not seen here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import numpy as np
import onnx
from onnx import GraphProto, NodeProto, TensorProto, helper, numpy_helper

from ..errors import BnconvertError
from ..text import one_line
from .fp16_analysis import (
    DEFAULT_MAX_REL_ERROR,
    FP16_MAX,
    Fp16Finding,
    analyse,
    is_float32,
    layer_namer,
    subgraphs,
    walk_nodes,
)

__all__ = [
    "FP16_ATOL", "FP16_RTOL", "FP16_MAX", "DEFAULT_MAX_REL_ERROR", "FLOAT32_OPS", "RiskPolicy",
    "Fp16Finding", "Fp16Report", "Fp16RiskError", "analyse", "to_float16",
]

#: the check's tolerances for a float16 export against the float reference (the rule of
#: :mod:`bnconvert.check.compare`: ``|A-B| <= atol + rtol * max|A|``). float16 rounds every weight
#: and every intermediate value by up to 2^-11 = 4.9e-4 of itself. Measured against Keras 3
#: (folded, batch 4, inputs uniform in [0, 1), random BN statistics, two random models each), in
#: onnxruntime 1.32 CPU (float16 weights; many kernels compute in float32 between Casts) / in
#: onnx.reference (every node computed in float16): ResNet50 logits 3.1e-4..3.6e-4 / 1.0e-3..1.1e-3,
#: softmax 5.8e-4..1.9e-3 / 2.1e-3..5.8e-3; MobileNetV2 logits 2.9e-4..3.2e-4 / 5.3e-4..7.5e-4,
#: softmax 4.7e-4..5.9e-4 / 1.5e-3..1.8e-3; the top class always the same. The worst of
#: the 108 exportable fixture and corpus models against their float32 export in onnxruntime:
#: 7.5e-3, and 1.1e-2 in onnx.reference (mvirgo's lane CNN, whose input BatchNormalization folds
#: forward into the first Conv: a large folded bias cancels a large product). 2e-2 covers that
#: and stays far below what a mistake costs (a weight cast wrong, a layer dropped: 1e-1 or more).
FP16_RTOL = 2e-2
#: the absolute term: an output computed from activations near 1 that comes out near 0 carries
#: the rounding of those activations, about two float16 steps of 1 (2 x 4.9e-4)
FP16_ATOL = 1e-3
#: operators kept in float32 whatever their schema allows: integer-valued results (positions,
#: counts, running sums) that float16 holds exactly only up to 2048
FLOAT32_OPS = frozenset({"Range", "CumSum"})
#: a MatMul reading a Transpose that moves the first axis of a tensor of rank 3 or more (a
#: batch-major sequence to time-major: perm 1,0,2; also seen 1,2,0 and 1,2,0,3) stays float32
#: with that Transpose: onnxruntime (1.32, CPU, default optimisation level) fuses the pair into
#: a FusedMatMul with a batch transpose, which has no float16 kernel, and crashes (a segmentation
#: fault) while loading the model, with or without a Cast between the two. The transposes of the
#: last axes (attention's 0,2,1,3 and 0,1,3,2) load and stay float16.
_FUSED_PAIRS = {("Transpose", "MatMul")}

RiskPolicy = Literal["keep", "refuse"]

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


class Fp16RiskError(BnconvertError):
    """float16 cannot hold some weights of the model and ``on_risk="refuse"`` was asked."""


@dataclass
class Fp16Report:
    """What :func:`to_float16` did, and the tolerance the check of a float16 export uses."""

    io_dtype: str
    atol: float
    rtol: float
    max_rel_error: float
    on_risk: str
    findings: list[Fp16Finding] = field(default_factory=list)
    #: ``(layer, reason)`` of every layer left in float32 because of a finding
    kept_float32: list[tuple[str, str]] = field(default_factory=list)
    #: op type -> nodes that compute in float32 by their schema or :data:`FLOAT32_OPS`
    float32_ops: dict[str, int] = field(default_factory=dict)
    #: initializers now float16, initializers left float32 (of the float ones), Casts added
    float16_initializers: int = 0
    float32_initializers: int = 0
    casts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "io_dtype": self.io_dtype, "atol": self.atol, "rtol": self.rtol, "max_rel_error": self.max_rel_error,
            "on_risk": self.on_risk,
            "findings": [{"layer": f.layer, "tensor": f.tensor, "kind": f.kind, "detail": f.detail} for f in self.findings],
            "kept_float32": [{"layer": layer, "reason": reason} for layer, reason in self.kept_float32],
            "float32_ops": dict(self.float32_ops), "float16_initializers": self.float16_initializers,
            "float32_initializers": self.float32_initializers, "casts": self.casts,
        }

    def summary(self) -> str:
        """A few plain-English lines (:func:`bnconvert.render.fp16_text`)."""
        from ..render import fp16_text

        return fp16_text(self)



# -- types and schemas ----------------------------------------------------------------------------
def _value_types(proto: onnx.ModelProto, constants: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Element type of every value of the model, bodies included, by ONNX type inference (the
    initializers declared as typed graph inputs: inference needs their types, not their bytes)."""
    light = onnx.ModelProto()
    light.CopyFrom(proto)
    types: dict[str, int] = {name: int(helper.np_dtype_to_tensor_dtype(np.asarray(arr).dtype)) for name, arr in constants.items()}
    for name, arr in constants.items():
        light.graph.input.append(helper.make_tensor_value_info(name, types[name], list(np.shape(arr))))
    inferred = onnx.shape_inference.infer_shapes(light)

    def collect(g: GraphProto) -> None:
        for vi in (*g.input, *g.output, *g.value_info):
            if vi.type.HasField("tensor_type"):
                types.setdefault(vi.name, vi.type.tensor_type.elem_type)
        for t in g.initializer:
            types.setdefault(t.name, t.data_type)
        for node in g.node:
            for sub in subgraphs(node):
                collect(sub)

    collect(inferred.graph)
    return types


@cache
def _admits(op: str, domain: str, opset: int) -> tuple[tuple[bool, ...], tuple[bool, ...], bool, bool]:
    """Per formal input and output of ``op`` at ``opset``: whether it accepts float16; and
    whether the last input and the last output are variadic."""
    try:
        schema = onnx.defs.get_schema(op, opset, domain)
    except onnx.defs.SchemaError:
        return (), (), True, True  # unknown op: every slot as float16 (the checker says otherwise)
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def ok(formal: Any) -> bool:
        return "tensor(float16)" in allowed.get(formal.type_str, {formal.type_str})

    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    ins, outs = schema.inputs, schema.outputs
    return (tuple(ok(f) for f in ins), tuple(ok(f) for f in outs),
            bool(ins) and ins[-1].option == variadic, bool(outs) and outs[-1].option == variadic)


def _fusion_guarded(graph: GraphProto) -> set[str]:
    """Names of the nodes of ``graph`` and its bodies in a pair of :data:`_FUSED_PAIRS`."""
    producer = {out: node for node in graph.node for out in node.output if out}
    guarded: set[str] = set()
    for node in graph.node:
        for value in node.input:
            before = producer.get(value)
            if before is not None and (before.op_type, node.op_type) in _FUSED_PAIRS and _moves_first_axis(before):
                guarded.update((before.name, node.name))
        for body in subgraphs(node):
            guarded |= _fusion_guarded(body)
    return guarded


def _moves_first_axis(transpose: NodeProto) -> bool:
    perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
    return perm is None or (len(perm) >= 3 and perm[0] != 0)  # no perm: all axes reversed


def _slot_ok(flags: tuple[bool, ...], variadic: bool, i: int) -> bool:
    if i < len(flags):
        return flags[i]
    return flags[-1] if flags and variadic else True


# -- the conversion -------------------------------------------------------------------------------
class _Converter:
    """Two passes over the graph and its bodies: decide the precision (16 or 32) of every float
    value (its producer's), then read each value at the precision its reader needs, through a Cast
    emitted right after the value's producer (one per value and precision)."""

    def __init__(self, opset: int, types: dict[str, int], constants: Mapping[str, np.ndarray], kept: set[str],
                 layer_of: Callable[[str], str], io_float16: bool) -> None:
        self.opset, self.types, self.constants, self.kept = opset, types, constants, kept
        self.layer_of, self.io16 = layer_of, io_float16
        self.prec: dict[str, int] = {}
        self.region: dict[str, bool] = {}  # node name (unique, see to_float16) -> computes in float16
        self.init_needs: dict[str, set[int]] = defaultdict(set)
        self.casts_after: dict[str, list[NodeProto]] = defaultdict(list)
        self.cast_of: dict[tuple[str, int], str] = {}
        self.renamed: dict[str, str] = {}  # graph output -> the producer's new output name
        self.original: dict[str, str] = {}  # and back
        self.float32_ops: Counter[str] = Counter()
        self.taken: set[str] = set()
        self.guarded: set[str] = set()
        self.n_casts = 0

    def is_float(self, value: str) -> bool:
        return self.types.get(value) == FLOAT

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    # pass 1: precisions
    def need_in(self, node: NodeProto, i: int) -> int | None:
        """The precision ``node`` reads its input ``i`` at (None: any, a Cast)."""
        if node.op_type == "Cast" and i == 0:
            return None
        ins, _, variadic, _ = _admits(node.op_type, node.domain, self.opset)
        return 16 if self.region[node.name] and _slot_ok(ins, variadic, i) else 32

    def plan(self, graph: GraphProto, region16: bool | None) -> None:
        """``region16`` None for the main graph (each node by its layer), else the body's region."""
        for node in graph.node:
            ins, outs, v_in, v_out = _admits(node.op_type, node.domain, self.opset)
            own16 = (self.layer_of(node.name) not in self.kept) if region16 is None else region16
            fp16 = own16 and node.op_type not in FLOAT32_OPS and node.name not in self.guarded
            self.region[node.name] = fp16
            floats = [i for i, v in enumerate(node.input) if v and self.is_float(v)]
            if own16 and (not fp16 or any(not _slot_ok(ins, v_in, i) for i in floats)):
                self.float32_ops[node.op_type] += 1
            for i in floats:
                if node.input[i] in self.constants:
                    need = self.need_in(node, i)
                    if need is not None:
                        self.init_needs[node.input[i]].add(need)
            for i, out in enumerate(node.output):
                if out and self.is_float(out):
                    if node.op_type == "Cast":
                        self.prec[out] = 16 if fp16 else 32
                    else:
                        self.prec[out] = 16 if fp16 and _slot_ok(outs, v_out, i) else 32
            for body in subgraphs(node):
                for name in [vi.name for vi in body.input] + [t.name for t in body.initializer]:
                    if self.is_float(name):
                        self.prec[name] = 16 if fp16 else 32
                self.plan(body, fp16)  # registers the body's reads of initializers too

    # pass 2: rewrite inputs, register casts
    def cast(self, value: str, to: int) -> str:
        key = (value, to)
        if key not in self.cast_of:
            name = self.fresh(f"{value}/float{to}")
            self.cast_of[key] = name
            self.casts_after[value].append(helper.make_node("Cast", [value], [name], name=name,
                                                            to=FLOAT16 if to == 16 else FLOAT))
            self.n_casts += 1
        return self.cast_of[key]

    def rewrite(self, graph: GraphProto, out_need: int) -> None:
        for vi in graph.output:
            v = vi.name
            if self.is_float(v) and self.prec.get(v, out_need) != out_need:
                new = self.fresh(f"{v}/float{self.prec[v]}")
                self.renamed[v] = new
                self.original[new] = v
                self.prec[new] = self.prec[v]
                self.casts_after[v].insert(0, helper.make_node("Cast", [new], [v], name=self.fresh(f"{v}/output_cast"),
                                                               to=FLOAT16 if out_need == 16 else FLOAT))
                self.prec[v] = out_need
                self.n_casts += 1
            if self.is_float(v):
                vi.type.tensor_type.elem_type = FLOAT16 if out_need == 16 else FLOAT
        for node in graph.node:
            for i, v in enumerate(node.input):
                if v and v in self.prec:
                    need = self.need_in(node, i)
                    if need is not None and need != self.prec[v]:
                        node.input[i] = self.cast(v, need)
            fp16 = self.region[node.name]
            for i, out in enumerate(node.output):
                if out in self.renamed:
                    node.output[i] = self.renamed[out]
            self._retype_attributes(node, fp16)
            for body in subgraphs(node):
                for vi in body.input:
                    if self.is_float(vi.name):
                        vi.type.tensor_type.elem_type = FLOAT16 if fp16 else FLOAT
                for t in body.initializer:
                    if fp16 and t.data_type == FLOAT:
                        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
                self.rewrite(body, 16 if fp16 else 32)
        for vi in graph.value_info:
            if vi.name in self.prec:
                vi.type.tensor_type.elem_type = FLOAT16 if self.prec[vi.name] == 16 else FLOAT

    def _retype_attributes(self, node: NodeProto, fp16: bool) -> None:
        if not (fp16 and node.output and self.prec.get(node.output[0]) == 16):
            return
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = FLOAT16
            elif attr.HasField("t") and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
        if node.op_type == "Constant":
            for attr in list(node.attribute):
                if attr.name in ("value_float", "value_floats"):
                    value = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float16)
                    node.attribute.remove(attr)
                    node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))

    # emission
    def emit(self, graph: GraphProto, owned: list[str]) -> None:
        """Rebuild ``graph``'s node list with the Casts after their sources (``owned``: the
        values available on entry: graph inputs, initializers)."""
        nodes: list[NodeProto] = []
        for v in owned:
            nodes += self.casts_after.pop(v, [])
        for node in graph.node:
            for body in subgraphs(node):
                self.emit(body, [vi.name for vi in body.input] + [t.name for t in body.initializer])
            nodes.append(node)
            for out in node.output:
                nodes += self.casts_after.pop(self.original.get(out, out), [])
        graph.ClearField("node")
        graph.node.extend(nodes)


def _refusal(findings: list[Fp16Finding]) -> str:
    layers = list(dict.fromkeys(f.layer for f in findings))
    shown = "; ".join(f.line() for f in findings[:4]) + (f" (and {len(findings) - 4} more)" if len(findings) > 4 else "")
    return one_line(f"float16 cannot hold the weights of {len(layers)} layer{'s' if len(layers) != 1 else ''} "
                    f"({', '.join(repr(n) for n in layers)}): {shown}; keep them in float32 with --fp16-risky keep, "
                    "or export without --fp16")


def to_float16(
    proto: onnx.ModelProto,
    constants: Mapping[str, np.ndarray],
    *,
    io_float16: bool = False,
    on_risk: RiskPolicy = "keep",
    max_rel_error: float = DEFAULT_MAX_REL_ERROR,
    layers: Collection[str] | None = None,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray], Fp16Report]:
    """The float16 version of an export (``proto`` without initializers, ``constants`` by name,
    as :func:`bnconvert.onnx.export.to_onnx_parts` returns them): a new proto, new constants
    (float16 arrays where float32 ones were; others shared, not copied) and the report.

    Layers whose weights float16 cannot hold (:func:`analyse`) stay float32 with
    ``on_risk="keep"``; ``"refuse"`` raises :class:`Fp16RiskError` naming them. ``layers``: the
    model's layer paths (``[p for p, _, _ in model.walk()]``) so that nested layers are named
    right; without it a node belongs to the first ``/`` segment of its name. A ``proto`` that
    holds its initializers (:func:`~bnconvert.onnx.export.to_onnx`) works too, with
    ``constants={}``: they come back in the new constants. The inputs are not modified.
    """
    if on_risk not in ("keep", "refuse"):
        raise ValueError(f"on_risk must be 'keep' or 'refuse', got {on_risk!r}")
    if proto.graph.initializer:  # a whole model (to_onnx, onnx.load): its initializers as arrays
        constants = {**{t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}, **constants}
        bare = onnx.ModelProto()
        bare.CopyFrom(proto)
        bare.graph.ClearField("initializer")
        proto = bare
    layer_of = layer_namer(layers)
    findings = analyse(proto, constants, max_rel_error=max_rel_error, layers=layers)
    if findings and on_risk == "refuse":
        raise Fp16RiskError(_refusal(findings))
    reasons: dict[str, list[str]] = defaultdict(list)
    for f in findings:
        reasons[f.layer].append(f"{f.tensor}: {f.detail}")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    conv = _Converter(opset, _value_types(proto, constants), constants, set(reasons), layer_of, io_float16)
    nodes = list(walk_nodes(list(out.graph.node)))
    for node in nodes:
        conv.taken.update(node.output)
        conv.taken.add(node.name)
    seen: set[str] = set()
    for node in nodes:  # the passes know a node by its name: bnconvert's are unique, make sure
        if not node.name or node.name in seen:
            node.name = conv.fresh(node.name or node.op_type)
        seen.add(node.name)
    conv.taken.update(constants)
    conv.taken.update(vi.name for vi in out.graph.input)
    io = 16 if io_float16 else 32
    for vi in out.graph.input:
        if conv.is_float(vi.name):
            conv.prec[vi.name] = io
            vi.type.tensor_type.elem_type = FLOAT16 if io == 16 else FLOAT
    conv.guarded = _fusion_guarded(out.graph)
    conv.plan(out.graph, None)
    new_constants: dict[str, np.ndarray] = {}
    n16 = n32 = 0
    for name, arr in constants.items():
        if is_float32(arr):
            conv.prec[name] = 32 if 32 in conv.init_needs.get(name, ()) else 16
            if conv.prec[name] == 16:
                with np.errstate(over="ignore"):
                    arr = np.asarray(arr).astype(np.float16)
                n16 += 1
            else:
                n32 += 1
        new_constants[name] = arr
    conv.rewrite(out.graph, io)
    conv.emit(out.graph, [vi.name for vi in out.graph.input] + list(new_constants))
    if conv.casts_after:
        raise RuntimeError(f"bnconvert fp16: Casts left without a place: {sorted(conv.casts_after)[:3]}")
    report = Fp16Report(io_dtype="float16" if io_float16 else "float32", atol=FP16_ATOL, rtol=FP16_RTOL,
                        max_rel_error=max_rel_error, on_risk=on_risk, findings=findings,
                        kept_float32=[(layer, "; ".join(r)) for layer, r in reasons.items()],
                        float32_ops=dict(conv.float32_ops), float16_initializers=n16, float32_initializers=n32,
                        casts=conv.n_casts)
    return out, new_constants, report
