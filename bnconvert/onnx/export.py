"""Export a Model to ONNX (:func:`to_onnx`, :func:`to_onnx_parts`).

By default the ONNX model takes and returns tensors exactly like the Keras model (same names,
same layout, a dynamic batch dimension) so it can replace it; inside, image tensors are held
channels-first. ``nchw=True`` makes the image inputs and outputs of a channels_last model NCHW.

Exporting a file (read, fold, export, write atomically, check) is :func:`bnconvert.pipeline.export_file`.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import __version__
from ..errors import BnconvertError, FormatError, UnsupportedLayerError
from ..model import Layer, Model, is_operation
from .builder import Builder, Tensor, reads
from .convert import Run, format_problems, run_model, unsupported_layers
from .layers.operations import value_type
from .layout import channels_first, held_shape, identity
from .save import add_initializers

if TYPE_CHECKING:
    pass

__all__ = ["to_onnx", "to_onnx_parts", "require_exportable", "OPSETS", "DEFAULT_OPSET"]

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


def to_onnx(model: Model, *, opset: int = DEFAULT_OPSET, nchw: bool = False) -> onnx.ModelProto:
    """The ONNX model computing what ``model`` computes at inference.

    Raises UnsupportedLayerError naming every layer that cannot be exported (all of them, in one
    message), FormatError for a model without an architecture or without declared input shapes.
    """
    graph, constants = to_onnx_parts(model, opset=opset, nchw=nchw)
    return add_initializers(graph, constants)


def to_onnx_parts(
    model: Model, *, opset: int = DEFAULT_OPSET, nchw: bool = False
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
    # what the model is; where it came from, its fold and its check are stamped by the pipeline
    # once the check has run (bnconvert.provenance.onnx_props, bnconvert.onnx.save.stamp_onnx)
    props = {"producer": f"bnconvert {__version__}", "layout": "nchw" if nchw else "keras"}
    helper.set_model_props(proto, props)
    proto.doc_string = f"Exported by bnconvert {__version__} from {where}"
    return proto, b.constants
