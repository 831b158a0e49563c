"""Export a Model to ONNX (:func:`to_onnx`) and a Keras file to an ONNX file (:func:`export_file`).

By default the ONNX model takes and returns tensors exactly like the Keras model (same names,
same layout, a dynamic batch dimension) so it can replace it; inside, image tensors are held
channels-first. ``nchw=True`` makes the image inputs and outputs of a channels_last model NCHW.

:func:`export_file` reads, folds (unless ``fold=False``), exports, validates, writes to a
temporary file in the target folder, runs the numerical check on that file, and only then moves
it into place: a failed export never leaves a file behind, and never touches the input.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import __version__
from ..bn import unsafe_values
from ..check.compare import DEFAULT_ATOL, DEFAULT_RTOL
from ..errors import (
    BnconvertError,
    EquivalenceError,
    FoldError,
    FormatError,
    InternalError,
    UnsupportedLayerError,
)
from ..io import atomic_output, check_output
from ..model import Layer, Model, is_operation
from ..readers import load
from ..replace import ReplacementsLike, apply_replacements
from ..text import one_line, refuse_unencodable
from .builder import Builder, Tensor, reads
from .convert import Run, format_problems, run_model, unsupported_layers
from .layers.operations import value_type
from .layout import channels_first, held_shape, identity
from .save import (
    EXTERNAL_DATA_ABOVE,
    add_initializers,
    constants_bytes,
    validate_parts,
    write_onnx,
)

__all__ = ["to_onnx", "to_onnx_parts", "export_file", "require_exportable", "fold_metadata", "ExportReport", "OPSETS", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
#: the opsets bnconvert writes (and tests)
OPSETS = range(13, 22)

_DTYPES = {
    "float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE,
    "int32": TensorProto.INT32, "int64": TensorProto.INT64, "uint8": TensorProto.UINT8, "int8": TensorProto.INT8,
}


def _where(model: Model) -> str:
    return os.path.basename(model.source.path) if model.source else f"model '{model.name}'"


def _data_format(model: Model) -> str:
    """``channels_first`` when the model's spatial layers all say so (Keras 1 ``th``)."""
    formats = {layer.config.get("data_format") for _, layer, _ in model.walk()} - {None}
    return "channels_first" if formats == {"channels_first"} else "channels_last"


def _dtype_name(value: Any) -> str:
    if isinstance(value, dict):  # Keras 3 DTypePolicy
        value = (value.get("config") or {}).get("name")
    return value if isinstance(value, str) and value in _DTYPES else "float32"


def _dims(shape: tuple, name: str) -> list[Any]:
    return ["batch" if i == 0 else (d if d is not None else f"{name}_dim{i}") for i, d in enumerate(shape)]


def _graph_inputs(b: Builder, model: Model, nchw: bool) -> tuple[list[onnx.ValueInfoProto], list[Tensor]]:
    infos, tensors = [], []
    for ref in model.inputs:
        layer = model[ref.layer]
        shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
        if not shape:
            raise FormatError(f"{_where(model)}: input '{layer.name}' declares no shape")
        shape = tuple(None if d is None else int(d) for d in shape)
        perm = channels_first(len(shape)) if nchw and len(shape) >= 3 else identity(len(shape))
        name = b.claim(layer.name)
        dtype = _dtype_name(layer.config.get("dtype"))
        infos.append(helper.make_tensor_value_info(name, _DTYPES[dtype], _dims(held_shape(shape, perm), name)))
        if dtype != "float32":
            name = b.node("Cast", [name], name=f"{name}/float", to=TensorProto.FLOAT)
        tensors.append(b.tensor(shape, perm, name))
    return infos, tensors


def _output_names(model: Model) -> list[str]:
    names: list[str] = []
    taken = {ref.layer for ref in model.inputs}
    for ref in model.outputs:
        base = ref.layer if (ref.node, ref.index) == (0, 0) else f"{ref.layer}_{ref.node}_{ref.index}"
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
        taken.add(name)
    return names


def _graph_outputs(b: Builder, model: Model, outs: list[Tensor], nchw: bool, inputs: set[str]) -> list[onnx.ValueInfoProto]:
    """Name each output like its Keras layer: the value computing it takes the name (it was
    reserved up front), or an Identity when that value is an input or already an output."""
    infos, done = [], set()
    produced: set[str] = set()  # the outputs of b.nodes[:indexed] (b.produced, without a scan per output)
    indexed = 0
    for wanted, t in zip(_output_names(model), outs):
        perm = channels_first(t.rank) if nchw and t.rank >= 3 else identity(t.rank)
        src = b.current(b.view(t, perm))
        if value_type(t) != TensorProto.FLOAT:  # a boolean or integer an operation made: its values as float32
            src = b.node("Cast", [src], name=f"{wanted}/float", to=TensorProto.FLOAT)
        for node in b.nodes[indexed:]:
            produced.update(node.output)
        indexed = len(b.nodes)
        if src in produced and src not in inputs and src not in done:
            b.rename(src, wanted)
        else:
            b.rename(b.node("Identity", [src], name=f"{wanted}/output", out=f"{wanted}/output"), wanted)
        done.add(wanted)
        infos.append(helper.make_tensor_value_info(wanted, TensorProto.FLOAT, _dims(held_shape(t.shape, perm), wanted)))
    b.apply_renames()
    return infos


def _prune(b: Builder, outputs: list[str]) -> None:
    """Drop nodes whose results nobody reads, and initializers nobody uses."""
    needed = set(outputs)
    kept = []
    for node in reversed(b.nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(reads(node))  # a Scan body's weights too
    b.nodes[:] = list(reversed(kept))
    for name in [n for n in b.constants if n not in needed]:
        del b.constants[name]


def _axis(node: onnx.NodeProto) -> int | None:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), None)


def _merge_concats(b: Builder, outputs: list[str]) -> None:
    """Flatten ``Concat(.., Concat(x, y), ..)`` into ``Concat(.., x, y, ..)`` when both join along
    the same axis and the inner result is read by nothing else (Inception's nested branches):
    the same values, one node fewer each time."""
    readers = Counter(i for node in b.nodes for i in node.input)
    readers.update(outputs)
    producer = {node.output[0]: node for node in b.nodes if node.op_type == "Concat"}
    gone: set[int] = set()
    for node in b.nodes:  # topological: an inner Concat is flattened before its reader looks at it
        if node.op_type != "Concat":
            continue
        axis = _axis(node)
        merged: list[str] = []
        for name in node.input:
            inner = producer.get(name)
            if inner is not None and readers[name] == 1 and _axis(inner) == axis:
                merged += inner.input
                gone.add(id(inner))
            else:
                merged.append(name)
        if len(merged) != len(node.input):
            del node.input[:]
            node.input.extend(merged)
    b.nodes[:] = [node for node in b.nodes if id(node) not in gone]


def without_dead_ops(model: Model) -> Model:
    """``model`` without the operation layers, and the layers the export could not convert anyway,
    whose outputs nothing reads.

    Keras 3 records the mask a layer was handed (``mask=`` in its call) as the operations that
    computed it (``keras.ops.not_equal`` for a mask_zero Embedding, ``not_equal`` + ``any`` for
    Masking): layers whose outputs are no call's input and no model output. bnconvert computes
    masks by propagating them (the walk of :mod:`.convert`), which gives the same values, so those
    layers are dead code; keeping them would refuse the model for operations it never needs.
    """
    from dataclasses import replace

    from .registry import handlers

    table = handlers()

    def droppable(layer: Layer) -> bool:
        return is_operation(layer) or layer.class_name not in table

    def drop(model: Model) -> Model:
        layers = [replace(layer, model=drop(layer.model)) if layer.model is not None else layer for layer in model.layers]
        changed = any(a is not b for a, b in zip(layers, model.layers))
        while True:
            read = {ref.layer for layer in layers for call in layer.calls for ref in call} | {r.layer for r in model.outputs}
            read |= {r.layer for r in model.inputs}
            dead = {layer.name for layer in layers if layer.model is None and layer.name not in read and droppable(layer)}
            if not dead:
                return model.with_layers(layers) if changed else model
            layers, changed = [layer for layer in layers if layer.name not in dead], True

    return drop(model)


def require_exportable(model: Model, *, opset: int = DEFAULT_OPSET) -> None:
    """Refuse, before any work, an opset out of range, a model without an architecture, and a
    model with layers that have no handler (all of them named in one message; dead Keras 3 mask
    operations are not counted, see :func:`without_dead_ops`)."""
    where = _where(model)
    model = without_dead_ops(model)
    if opset not in OPSETS:
        raise BnconvertError(f"opset {opset} is not supported: choose {OPSETS.start} to {OPSETS.stop - 1}")
    if not model.has_graph:
        raise FormatError(f"{where}: weights-only file without an architecture; pass the model JSON with --config")
    problems = unsupported_layers(model)
    if problems:
        raise UnsupportedLayerError(format_problems(where, problems))


def to_onnx(model: Model, *, opset: int = DEFAULT_OPSET, nchw: bool = False, fold_summary: dict | None = None) -> onnx.ModelProto:
    """The ONNX model computing what ``model`` computes at inference.

    Raises UnsupportedLayerError naming every layer that cannot be exported (all of them, in one
    message), FormatError for a model without an architecture or without declared input shapes.
    """
    graph, constants = to_onnx_parts(model, opset=opset, nchw=nchw, fold_summary=fold_summary)
    return add_initializers(graph, constants)


def to_onnx_parts(
    model: Model, *, opset: int = DEFAULT_OPSET, nchw: bool = False, fold_summary: dict | None = None
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """:func:`to_onnx` in two parts: the ModelProto without initializers, and the initializer
    values by name, as numpy arrays (views of the model's weights where the layout allows).

    What :func:`export_file` writes straight to disk and the TensorFlow-free check hands to
    onnxruntime, without building a ``ModelProto`` that holds every weight.
    """
    where = _where(model)
    require_exportable(model, opset=opset)
    model = without_dead_ops(model)
    b = Builder(opset)
    nchw = nchw and _data_format(model) == "channels_last"  # a channels_first model is NCHW already
    input_infos, tensors = _graph_inputs(b, model, nchw)
    b.reserve(_output_names(model))
    run = Run(builder=b, source=model.source)
    try:
        outs = run_model(run, model, tensors)
    except FormatError as exc:  # a handler refusing the file's values ("layer 'bn': NaN ..."): name the file
        raise FormatError(f"{where}: {exc}") from None
    if run.problems:
        raise UnsupportedLayerError(format_problems(where, run.problems))
    output_infos = _graph_outputs(b, model, outs, nchw, {i.name for i in input_infos})  # type: ignore[arg-type]
    _prune(b, [o.name for o in output_infos])
    _merge_concats(b, [o.name for o in output_infos])
    graph = helper.make_graph(b.nodes, model.name, input_infos, output_infos)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="bnconvert", producer_version=__version__)
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    props = {"producer": f"bnconvert {__version__}", "layout": "nchw" if nchw else "keras"}
    if model.source is not None:
        props.update(source_file=os.path.basename(model.source.path), source_format=model.source.format,
                     keras_version=model.source.keras_version or "unknown")
    props["fold_summary"] = json.dumps(fold_summary, default=str) if fold_summary is not None else "not folded"
    helper.set_model_props(proto, props)
    proto.doc_string = f"Exported by bnconvert {__version__} from {where}"
    return proto, b.constants


# -- files -----------------------------------------------------------------------------------
@dataclass
class ExportReport:
    """What :func:`export_file` did."""

    source: str
    output: str
    opset: int
    layout: str
    nodes: int
    op_types: dict[str, int]
    parameters: int
    size_bytes: int
    external_data: str | None = None
    fold: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    check_summary: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> str:
        """A few human-readable lines."""
        ops = ", ".join(f"{n} {op}" for op, n in sorted(self.op_types.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
        size = f"{self.size_bytes / 1e6:.1f} MB" + (f" (weights in {os.path.basename(self.external_data)})" if self.external_data else "")
        layout = _LAYOUT_WORDS.get(self.layout, self.layout)
        lines = [f"{self.output}: opset {self.opset}, {layout}, {self.nodes} nodes ({ops}), "
                 f"{self.parameters:,} parameters, {size}, {self.seconds:.1f} s"]
        if self.fold is not None:
            lines.append(f"  fold: {_fold_line(self.fold)}")
        else:
            lines.append("  fold: skipped (--no-fold)")
        check = (self.check_summary or "NOT CHECKED").splitlines()  # a failed check: its whole report
        lines.append(f"  check: {check[0]}")
        lines += [f"  {line}" for line in check[1:]]
        if self.check is not None and self.check.get("checked") and not self.check.get("passed"):
            lines.append("  nothing written")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(map(one_line, lines))  # one line each: names are data


#: the summary's words for ``ExportReport.layout`` (the JSON keeps the short name)
_LAYOUT_WORDS = {"keras": "inputs and outputs shaped as in Keras", "nchw": "image inputs and outputs NCHW"}


def _fold_line(fold: dict[str, Any]) -> str:
    t = fold.get("totals") or {}
    if not t:
        return "done"
    line = f"{t.get('folded', 0)} of {t.get('batch_norms', 0)} BatchNormalization folded"
    parts = [f"{t[k]} {k}" for k in ("backward", "forward", "merged") if t.get(k)]
    if parts:
        line += f" ({', '.join(parts)})"
    if t.get("stays"):
        line += f", {t['stays']} stay (exported as BatchNormalization or Mul+Add)"
    return line


def _fold(model: Model) -> tuple[Model, dict[str, Any]]:
    from ..fold.apply import fold_model

    folded, report = fold_model(model)
    return folded, report.to_dict()


def fold_metadata(fold: dict[str, Any]) -> dict[str, Any]:
    """The part of a fold report worth keeping in the ONNX metadata: totals and why BN stayed."""
    stays = [{"name": bn.get("name"), "reason": bn.get("reason")} for bn in fold.get("batch_norms", [])
             if bn.get("action") == "stays"]
    return {"totals": fold.get("totals", {}), "stays": stays}


def _numerical_check(src: Path, onnx_path: Path, load_options: dict[str, Any] | None, handed: list[Model],
                     reference: Any, *, atol: float, rtol: float, seed: int, batch: int) -> Any:
    """``bnconvert.check.check_export`` on the written file: with ``reference`` when it was prepared
    ahead (the TensorFlow-free float64 reference of the model as read), else from ``handed``, the
    model as read (not folded) and the only reference left to it: the check's reference is built
    from it instead of reading the file again."""
    from ..check import check_export

    return check_export(str(src), str(onnx_path), load_options=load_options, atol=atol, rtol=rtol, seed=seed,
                        batch=batch, original_model=handed.pop() if handed else None, reference=reference)


def _start_reference(src: Path, model: Model, *, seed: int, batch: int) -> Any:
    from ..check.verify import start_reference

    return start_reference(src, model, seed=seed, batch=batch)


def export_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    nchw: bool = False,
    fold: bool = True,
    load_options: dict[str, Any] | None = None,
    force: bool = False,
    check: bool = True,
    external_data_above: int = EXTERNAL_DATA_ABOVE,
    replacements: ReplacementsLike = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 1,
    batch: int = 2,
    require_check: bool = False,
) -> ExportReport:
    """Read ``in_path``, fold its BN (unless ``fold=False``), export ONNX to ``out_path``.

    ``external_data_above`` is the initializer size in bytes above which weights go to
    ``OUT.onnx.data`` (default: just under the 2 GiB protobuf limit). Raises OutputError when
    ``out_path`` exists (without ``force``) or is the input, EquivalenceError (the report as
    ``.report``) when the numerical check fails, or when ``require_check`` and no check ran
    (``check=False``); nothing is written in either case. The check runs the written file in
    onnxruntime against the source (Keras, else bnconvert's float64 reference) on inputs uniform
    in [0, 1) from ``seed`` with batch ``batch``, and passes when every output satisfies
    ``|reference - onnx| <= atol + rtol * max|reference|`` (:mod:`bnconvert.check.compare`).
    ``replacements`` replace Lambda and custom layers of the model as read (:func:`bnconvert.replace.apply_replacements`); the check's
    reference is then the replaced model in bnconvert's float64 reference.
    """
    start = time.perf_counter()
    src, dst = Path(in_path), Path(out_path)
    inputs = [src, (load_options or {}).get("config")]  # the model and its --config: never the output
    check_output(dst, force=force, inputs=inputs)
    original = model = apply_replacements(load(src, lazy=True, **(load_options or {})), replacements)
    unsafe = unsafe_values(model)
    if unsafe:
        raise FoldError(f"{src}: refusing to export: " + "; ".join(unsafe[:5]) + (f" (and {len(unsafe) - 5} more)" if len(unsafe) > 5 else ""))
    refuse_unencodable(model, src, "export")  # before anything is written
    require_exportable(model, opset=opset)
    if require_check and not check:
        raise EquivalenceError(f"{src}: --require-check and --no-check: the export would not be checked; nothing written")
    # the check's TensorFlow-free reference (float64, numpy) is prepared now from the model as read;
    # it runs in a second thread once the file is written, beside onnxruntime
    reference = _start_reference(src, original, seed=seed, batch=batch) if check else None
    handed = [original] if check and reference is None else []
    del original  # so that at most two copies of the weights are ever held (see _numerical_check)
    with contextlib.ExitStack() as stack:
        if reference is not None:
            stack.enter_context(reference)  # an error below still waits for the thread
        fold_dict = None
        if fold:
            model, fold_dict = _fold(model)
        proto, constants = to_onnx_parts(model, opset=opset, nchw=nchw, fold_summary=fold_metadata(fold_dict) if fold_dict else None)
        del model  # the folded weights now live on in ``constants`` only
        op_types = dict(Counter(n.op_type for n in proto.graph.node))
        parameters = int(sum(a.size for a in constants.values()))
        external = constants_bytes(constants) > external_data_above
        validate_parts(proto, constants)
        report = ExportReport(source=str(src), output=str(dst), opset=opset, layout="nchw" if nchw else "keras",
                              nodes=len(proto.graph.node), op_types=op_types, parameters=parameters, size_bytes=0, fold=fold_dict)
        data_name = dst.name + ".data" if external else None
        with atomic_output(dst, force=force, inputs=inputs, companions=[data_name] if data_name else []) as tmp:
            write_onnx(proto, constants, tmp, external_data=data_name)
            del proto, constants
            if check:
                from ..check.runners import OnnxLoadError

                try:
                    result = _numerical_check(src, tmp, load_options, handed, reference, atol=atol, rtol=rtol,
                                              seed=seed, batch=batch)
                except OnnxLoadError as exc:  # the file bnconvert just wrote: its own bug, not the input's
                    raise InternalError(f"{src}: onnxruntime cannot load the ONNX bnconvert wrote, nothing written "
                                        f"({str(exc).split('(', 1)[-1].rstrip(')')})") from None
                report.check = result.to_dict()
                report.check_summary = result.headline() if result else result.summary()
                if not result:
                    raise EquivalenceError(f"{src}: the ONNX model does not match the original; nothing written",
                                           report=report)
            else:
                from ..check.results import CheckResult

                skipped = CheckResult.not_run("export", str(src), "--no-check", atol=atol, rtol=rtol)
                report.check, report.check_summary = skipped.to_dict(), skipped.headline()
    if data_name:
        report.external_data = str(dst.parent / data_name)
    report.size_bytes = dst.stat().st_size + (Path(report.external_data).stat().st_size if report.external_data else 0)
    report.seconds = time.perf_counter() - start
    return report
