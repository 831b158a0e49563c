"""Turn a Keras model config (any generation, already in the Keras 2/3 vocabulary) into a Model.

Handles Sequential (list or dict config, with or without an InputLayer), Functional/Model
graphs with the Keras 1/2 ``inbound_nodes`` form (``[[[name, node, tensor, kwargs]]]``) and the
Keras 3 form (``[{"args": [...keras tensors...], "kwargs": {...}}]``), and nested models.
Weights are attached afterwards by the format's reader.
"""

from __future__ import annotations

import gc
import itertools
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..catalog.normalization import READ_AS
from ..errors import FormatError
from ..model import (
    GIVEN_MASK,
    MODEL_CLASSES,
    OP_ARGS,
    Layer,
    Model,
    TensorArg,
    TensorRef,
    is_operation,
)

__all__ = ["MAX_LAYERS", "TENSOR_KWARGS", "build_model", "count_layers", "flat_keyed", "operation_name", "paused_gc"]

#: A config with more layers than this (nested models included) is refused before anything is
#: built. The largest real Keras models have a few thousand (NASNetLarge ~1,000, a keras_hub
#: backbone a few hundred); reading is linear, but a million layers would still take minutes.
MAX_LAYERS = 100_000


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cycle collector paused while a large acyclic structure is built (parsed JSON, a
    model's layers): each of its full passes walks every object made so far, which makes reading a
    100,000-layer config two to three times slower. Nothing built here forms a reference cycle."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def count_layers(config: Any) -> int:
    """How many layer entries a model config holds, nested models included (no recursion)."""
    total, stack = 0, [config]
    while stack:
        item = stack.pop()
        body = item.get("config") if isinstance(item, dict) else None
        entries = body.get("layers") if isinstance(body, dict) else body
        if not isinstance(entries, list):
            continue
        total += len(entries)
        stack.extend(e for e in entries if isinstance(e, dict) and isinstance(e.get("class_name"), str)
                     and e["class_name"] in MODEL_CLASSES)  # a class name that is a list is the file's error
    return total


def build_model(config: dict[str, Any], *, where: str = "model_config") -> Model:
    """Build the graph (no weights yet) from a ``{"class_name": ..., "config": ...}`` dict.

    A config of more than :data:`MAX_LAYERS` layers is refused first."""
    count = count_layers(config)
    if count > MAX_LAYERS:
        raise FormatError(f"{where}: the model has {count:,} layers, more than bnconvert reads "
                          f"({MAX_LAYERS:,}); refused")
    with paused_gc():
        return _build(config, where)


def _build(config: dict[str, Any], where: str) -> Model:
    if not isinstance(config, dict) or "class_name" not in config:
        raise FormatError(f"{where}: expected an object with 'class_name', got {type(config).__name__}")
    class_name = config["class_name"]
    body = config.get("config")
    if class_name == "Sequential":
        return _sequential(body, where)
    if class_name in ("Functional", "Model"):
        return _functional(body, where)
    raise FormatError(f"{where}: top-level class {class_name!r} is not a Sequential or Functional model")


def _layer(entry: Any, where: str) -> Layer:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise FormatError(f"{where}: a layer entry has no 'class_name'")
    cfg = entry.get("config")
    if not isinstance(cfg, dict):
        cfg = {} if cfg is None else {"value": cfg}
    name = entry.get("name") or cfg.get("name")
    if not isinstance(name, str) or not name:
        raise FormatError(f"{where}: a {entry['class_name']} layer has no name")
    class_name = entry["class_name"]
    # the class the file wrote, when the reader renamed it (Keras 1 Convolution2D, CuDNNLSTM)
    source = entry.get("keras1_class") or entry.get("source_class") or ""
    if class_name in READ_AS:  # tf.keras' SyncBatchNormalization is a BatchNormalization at inference
        source, class_name = source or class_name, READ_AS[class_name]
    operation = operation_name(entry)
    if operation is not None:  # named the user's way; the file's class stays in source_class
        class_name, source = operation, class_name
    layer = Layer(name=name, class_name=class_name, config=dict(cfg), source_class=source if isinstance(source, str) else "")
    if class_name in MODEL_CLASSES:
        layer.model = _build({"class_name": class_name, "config": cfg}, f"{where}/{name}")
        layer.model.name = name
    return layer


#: Keras 3 operation classes whose ``keras.ops`` function is not the class name in snake case
_KERAS_OP_NAMES = {
    "AllClose": "allclose", "CDist": "cdist", "IsIn": "isin", "SearchSorted": "searchsorted",
    "BatchNorm": "batch_normalization", "LayerNorm": "layer_normalization", "RMSNorm": "rms_normalization",
    "HSVToRGB": "image.hsv_to_rgb", "RGBToHSV": "image.rgb_to_hsv", "RGBToGrayscale": "image.rgb_to_grayscale",
    "SSIM": "image.ssim",
}
#: tf.keras layers that call the TensorFlow function their config names
_TF_OP_LAYERS = frozenset({"TFOpLambda", "SlicingOpLambda"})
#: the operation classes of Keras 3.15 (``keras.src.ops``): how a Keras 3 ``.h5`` file, whose
#: config entries have no ``module``, tells an operation layer from a Keras layer
_KERAS3_OPERATIONS = frozenset("""
    Abs Absolute AdaptiveAveragePool AdaptiveMaxPool Add All AllClose Amax Amin Angle Any Append
    Arange Arccos Arccosh Arcsin Arcsinh Arctan Arctan2 Arctanh Argmax Argmin Argpartition Argsort
    Array ArraySplit AssociativeScan Average AveragePool BatchNorm BinaryCrossentropy Bincount
    BitwiseAnd BitwiseInvert BitwiseLeftShift BitwiseNot BitwiseOr BitwiseRightShift BitwiseXor
    BroadcastTo CDist CTCDecode CTCLoss Cast CategoricalCrossentropy Cbrt Ceil Celu Cholesky
    CholeskyInverse Clip Concatenate Cond Conj Conjugate Conv ConvTranspose ConvertToTensor Copy
    Corrcoef Correlate Cos Cosh CountNonzero Cross Cumprod Cumsum Deg2rad DepthToSpace DepthwiseConv
    Det Diag Diagflat Diagonal Diff Digitize Divide DivideNoNan Dot DotProductAttention Dsplit
    Dstack Eig Eigh Einsum Elu EmptyLike Equal Erf Erfc Erfinv Exp Exp2 ExpandDims Expm1
    ExtractSequences FFT FFT2 Fabs Flip Fliplr Flipud Floor FloorDivide Fmax Fmin Fmod Fold ForiLoop
    Full FullLike Gcd Gelu Geomspace GetItem Glu Greater GreaterEqual HardShrink HardSigmoid
    HardSilu HardTanh Heaviside Histogram Hsplit Hstack Hypot I0 IFFT2 IRFFT ISTFT Imag InTopK Inner
    Inv IsIn Isclose Isfinite Isinf Isnan Isneginf Isposinf Isreal JVP Kron LayerNorm Lcm Ldexp
    LeakyRelu LeftShift Less LessEqual Linspace Log Log10 Log1p Log2 LogSigmoid LogSoftmax Logaddexp
    Logaddexp2 Logdet LogicalAnd LogicalNot LogicalOr LogicalXor Logspace Logsumexp Lstsq LuFactor
    Map Matmul MatrixRank Max MaxPool Maximum Mean Median Meshgrid Min Minimum Mod Moments Moveaxis
    MultiHot Multiply NanToNum Nanargmax Nanargmin Nancumprod Nancumsum Nanmax Nanmean Nanmedian
    Nanmin Nanpercentile Nanprod Nanquantile Nanstd Nansum Nanvar Ndim Negative Nextafter Nonzero
    Norm Normalize NotEqual OneHot OnesLike Outer PSNR Pad Percentile Pinv Polar Power Prod Ptp Qr
    Quantile RFFT RMSNorm Rad2deg Ravel Real Reciprocal Relu Relu6 Repeat Reshape RightShift Roll
    Rot90 Round Rsqrt STFT SVD SaturateCast Scan Scatter ScatterUpdate SearchSorted SegmentMax
    SegmentMin SegmentProd SegmentReduction SegmentSum Select Selu SeparableConv Sigmoid Sign
    Signbit Silu Sin Sinc Sinh Size Slice SliceUpdate Slogdet SoftShrink Softmax Softplus Softsign
    Solve SolveTriangular Sort SpaceToDepth SparseCategoricalCrossentropy SparsePlus SparseSigmoid
    Sparsemax Split Sqrt Square Squareplus Squeeze Stack Std StopGradient Subtract Sum Swapaxes
    Switch Take TakeAlongAxis Tan Tanh TanhShrink Tensordot Threshold Tile TopK Trace Transpose
    Trapezoid Tril Triu TrueDivide Trunc Unfold Unique UnravelIndex Unstack Vander Var Vdot
    VectorizedMap View ViewAsComplex ViewAsReal Vsplit Vstack Where WhileLoop ZerosLike
""".split())  # noqa: SIM905 - a word list reads better than 318 quoted names
#: the image operations among them (``keras.ops.image.*``)
_KERAS3_IMAGE_OPERATIONS = frozenset("""
    AffineTransform CropImages ElasticTransform ExtractPatches GaussianBlur HSVToRGB MapCoordinates
    PadImages PerspectiveTransform RGBToGrayscale RGBToHSV Resize SSIM ScaleAndTranslate SobelEdges
""".split())  # noqa: SIM905


def _snake_case(name: str) -> str:
    """Keras' own spelling of an operation class as a function (``ExpandDims`` -> ``expand_dims``)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def operation_name(entry: dict[str, Any]) -> str | None:
    """The user's name of an operation layer (:data:`~bnconvert.model.OPERATION_PREFIXES`), None
    for a Keras layer: ``keras.ops.mean`` for a Keras 3 ``Mean`` of module ``keras.src.ops.numpy``
    (``keras.ops.image.resize`` for the image operations), ``tf.math.reduce_mean`` for a tf.keras
    ``TFOpLambda`` whose ``function`` is ``math.reduce_mean`` (a leading ``compat.v1.`` dropped)."""
    cls = entry.get("class_name")
    if not isinstance(cls, str):
        return None
    module = entry.get("module")
    keras3 = isinstance(module, str) and module.startswith(("keras.src.ops", "keras.ops"))
    if keras3 or (module is None and _keras3_h5_operation(entry)):
        name = _KERAS_OP_NAMES.get(cls)
        if name is None:
            image = module.endswith(".image") if isinstance(module, str) else cls in _KERAS3_IMAGE_OPERATIONS
            name = ("image." if image else "") + _snake_case(cls)
        return f"keras.ops.{name}"
    if cls in _TF_OP_LAYERS:
        cfg = entry.get("config")
        function = cfg.get("function") if isinstance(cfg, dict) else None
        if isinstance(function, str) and function:
            return "tf." + function.removeprefix("compat.v1.")
    return None


def _keras3_h5_operation(entry: dict[str, Any]) -> bool:
    """Whether a config entry without ``module`` is a Keras 3 operation layer, as Keras 3 writes
    them into ``.h5`` files: an operation class, a Keras 3 call (``{"args": ...}``) and a config
    without a layer's ``trainable``; for the names merge layers share (``Add``, ``Concatenate``),
    not called on one list of tensors as a merge layer is (``Add()([x, y])``)."""
    cls, cfg, nodes = entry.get("class_name"), entry.get("config"), entry.get("inbound_nodes")
    if ((cls not in _KERAS3_OPERATIONS and cls not in _KERAS3_IMAGE_OPERATIONS) or not isinstance(cfg, dict)
            or "trainable" in cfg or not isinstance(nodes, list)):
        return False
    calls = [n for n in nodes if isinstance(n, dict)]
    if not calls or len(calls) != len(nodes):
        return False
    if cls in _MERGE_NAMES:  # keras.ops.add(x, y) takes two arguments, Add()([x, y]) one list
        return not any(isinstance(n.get("args"), list) and len(n["args"]) == 1 and isinstance(n["args"][0], list)
                       for n in calls)
    return True


#: merge layers whose class names are also operation classes (``Concatenate`` is told by ``trainable`` alone:
#: ``keras.ops.concatenate`` takes a list too)
_MERGE_NAMES = frozenset({"Add", "Average", "Dot", "Maximum", "Minimum", "Multiply", "Subtract"})


def _input_layer(name: str, batch_shape: Any, dtype: Any = "float32") -> Layer:
    return Layer(
        name=name,
        class_name="InputLayer",
        config={"name": name, "batch_shape": list(batch_shape), "dtype": dtype or "float32", "synthetic": True},
    )


def batch_shape_of(cfg: dict[str, Any]) -> list[Any] | None:
    """The batch shape a layer config declares (``batch_shape``/``batch_input_shape``/``input_shape``)."""
    for key in ("batch_shape", "batch_input_shape", "input_shape"):
        value = cfg.get(key)
        if value is None:
            continue
        if not isinstance(value, (list, tuple)):
            raise FormatError(f"layer '{cfg.get('name')}': config '{key}' is {value!r}, not a shape")
        return list(value) if key != "input_shape" else [None, *value]
    if cfg.get("input_dim") is not None:
        return [None, cfg["input_dim"]]
    return None


def _sequential(body: Any, where: str) -> Model:
    entries: Any
    if isinstance(body, list):
        entries, name, build_shape = body, "sequential", None
    elif isinstance(body, dict):
        entries = body.get("layers")
        name = body.get("name") or "sequential"
        build_shape = body.get("build_input_shape")
    else:
        raise FormatError(f"{where}: Sequential config is neither a list nor an object")
    if not isinstance(entries, list) or not entries:
        raise FormatError(f"{where}: Sequential model has no layers")
    layers = [_layer(e, where) for e in entries]
    if layers[0].class_name != "InputLayer":
        shape = batch_shape_of(layers[0].config) or (list(build_shape) if build_shape else None)
        if shape is None:
            raise FormatError(f"{where}: Sequential model declares no input shape")
        dtype = layers[0].config.get("dtype") if isinstance(layers[0].config.get("dtype"), str) else "float32"
        layers.insert(0, _input_layer(f"{layers[0].name}_input", shape, dtype))
    for prev, layer in itertools.pairwise(layers):
        layer.calls = [[TensorRef(prev.name)]]
        layer.call_kwargs = [{}]
    _check_unique(layers, where)
    return Model(
        name=name,
        layers=layers,
        inputs=[TensorRef(layers[0].name)],
        outputs=[TensorRef(layers[-1].name)],
        kind="Sequential",
    )


def _functional(body: Any, where: str) -> Model:
    if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        raise FormatError(f"{where}: Functional config has no 'layers' list")
    layers = []
    kwarg_refs: dict[str, list[list[TensorRef]]] = {}  # tensors passed as keyword arguments, per call
    for entry in body["layers"]:
        layer = _layer(entry, where)
        layer.calls, layer.call_kwargs, extra = _inbound(entry.get("inbound_nodes") or [], layer, where)
        if any(extra):
            kwarg_refs[layer.name] = extra
        layers.append(layer)
    _check_unique(layers, where)
    model = Model(
        name=body.get("name") or "model",
        layers=layers,
        inputs=_refs(body.get("input_layers"), where, "input_layers"),
        outputs=_refs(body.get("output_layers"), where, "output_layers"),
        kind="Functional",
    )
    for ref in [*model.inputs, *model.outputs]:
        if ref.layer not in model:
            raise FormatError(f"{where}: model input/output names unknown layer '{ref.layer}'")
    for layer in layers:
        for call in layer.calls:
            for ref in call:
                if ref.layer not in model:
                    raise FormatError(f"{where}: layer {layer.label} takes its input from unknown layer '{ref.layer}'")
    _renumber_nested(model)
    _check_calls_exist(model, where)
    _check_acyclic(model, kwarg_refs, where)
    return model


def _renumber_nested(model: Model) -> None:
    """Keras 2 counts a nested model's own input node as node 0, so its first call in the outer
    graph is node 1 (Keras 3 writes 0): make every ref name the call index, as for other layers.
    One pass over the graph, whatever the number of nested models."""
    nested = {layer.name: layer for layer in model.layers if layer.model is not None}
    if not nested:
        return
    refs: dict[str, list[TensorRef]] = {}
    for ref in [*(r for layer in model.layers for call in layer.calls for r in call), *model.outputs]:
        if ref.layer in nested:
            refs.setdefault(ref.layer, []).append(ref)
    fix: dict[TensorRef, TensorRef] = {}
    for name, found in refs.items():
        if min(r.node for r in found) >= 1 and max(r.node for r in found) == len(nested[name].calls):
            fix.update((r, TensorRef(r.layer, r.node - 1, r.index)) for r in found)
    if fix:
        for layer in model.layers:
            layer.calls = [[fix.get(r, r) for r in call] for call in layer.calls]
        model.outputs = [fix.get(r, r) for r in model.outputs]


#: a cycle longer than this is shown by its first and last layers
_CYCLE_SHOWN = 8


def _check_calls_exist(model: Model, where: str) -> None:
    """FormatError for a layer taking the output of a call its producer never makes (``['conv', 7, 0]``
    of a layer called once, or of a layer never called): tf.keras would wait for it forever.
    An InputLayer has no calls; every reference names its one tensor."""
    for layer in model.layers:
        for call in layer.calls:
            for ref in call:
                producer = model[ref.layer]
                made = len(producer.calls)
                if producer.class_name != "InputLayer" and not 0 <= ref.node < made:
                    times = "never called" if made == 0 else "called once" if made == 1 else f"called {made} times"
                    raise FormatError(f"{where}: layer {layer.label} takes the output of call {ref.node} of "
                                      f"'{producer.name}', which is {times}")


def _check_acyclic(model: Model, kwarg_refs: dict[str, list[list[TensorRef]]], where: str) -> None:
    """FormatError naming the layers of a cycle in a functional graph (Keras would wait forever
    for a tensor that can only exist after itself: tf.keras loops, Keras 3 gives up).

    The graph is that of *calls*, as Keras rebuilds it: call ``k`` of a layer needs the tensors
    it takes (positional or keyword) and, because Keras replays a layer's calls in order, call
    ``k - 1`` of the same layer. A shared layer used at two depths (``A(B(A(x)))``) is therefore
    no cycle. A keyword tensor past a layer's last call counts as needing its last call. Iterative
    depth-first search: linear in the number of calls and references, no recursion.
    """
    layers = model.layers
    position = {layer.name: i for i, layer in enumerate(layers)}
    first: list[int] = []  # node id of each layer's call 0
    count = 0
    for layer in layers:
        first.append(count)
        count += len(layer.calls)
    if count == 0:
        return
    owner = [0] * count  # node id -> layer position
    for i, layer in enumerate(layers):
        for k in range(len(layer.calls)):
            owner[first[i] + k] = i

    def needs(node: int) -> list[int]:
        i = owner[node]
        k = node - first[i]
        layer = layers[i]
        out = [node - 1] if k > 0 else []
        extra = kwarg_refs.get(layer.name)
        for ref in [*layer.calls[k], *(extra[k] if extra else ())]:
            j = position.get(ref.layer)
            calls = len(layers[j].calls) if j is not None else 0
            if j is not None and calls:
                out.append(first[j] + min(max(ref.node, 0), calls - 1))
        return out

    state = bytearray(count)  # 0 unseen, 1 on the current path, 2 done
    for root in range(count):
        if state[root]:
            continue
        path: list[int] = [root]
        todo: list[list[int]] = [needs(root)]
        state[root] = 1
        while path:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            nxt = todo[-1].pop()
            if state[nxt] == 1:
                _refuse_cycle(model, [owner[n] for n in path[path.index(nxt):]], where)
            if state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                todo.append(needs(nxt))


def _refuse_cycle(model: Model, cycle: list[int], where: str) -> None:
    """``cycle`` lists layer positions, each needing the next (the last needs the first)."""
    flow: list[int] = []
    for i in reversed(cycle):  # in the direction the data flows; a layer's calls count once
        if not flow or flow[-1] != i:
            flow.append(i)
    if len(flow) > 1 and flow[0] == flow[-1]:
        flow.pop()
    start = flow.index(min(flow))  # from the layer written first in the config
    names = [model.layers[i].name for i in flow[start:] + flow[:start]]
    if len(names) == 1:
        raise FormatError(f"{where}: the layer '{names[0]}' takes its own output as input (a cycle)")
    shown = [f"'{n}'" for n in names]
    if len(shown) > _CYCLE_SHOWN:
        half = _CYCLE_SHOWN // 2
        shown = [*shown[:half], f"... ({len(names) - _CYCLE_SHOWN} more)", *shown[-half:]]
    raise FormatError(f"{where}: the layers {' -> '.join([*shown, shown[0]])} form a cycle")


def _check_unique(layers: list[Layer], where: str) -> None:
    seen: set[str] = set()
    for layer in layers:
        if layer.name in seen:
            raise FormatError(f"{where}: two layers are named '{layer.name}'")
        seen.add(layer.name)


def _refs(value: Any, where: str, what: str) -> list[TensorRef]:
    if isinstance(value, dict):  # a model called on / returning a dict (tf.keras 2.3+, Keras 3)
        value = flat_keyed(value)
    if not isinstance(value, list) or not value:
        raise FormatError(f"{where}: '{what}' is missing or empty")
    if isinstance(value[0], str):  # Keras 3 writes a single input/output unwrapped
        value = [value]
    return [_ref(v, where) for v in value]


def flat_keyed(value: dict[str, Any]) -> list[Any]:
    """A dict of inputs or outputs as Keras flattens it (``tree.flatten``/``nest.flatten``: by
    sorted key), which is the order of ``model.inputs``/``model.outputs``."""
    return [value[key] for key in sorted(value, key=str)]


def _ref(value: Any, where: str) -> TensorRef:
    if isinstance(value, dict):  # Keras 3 __keras_tensor__
        inner = value.get("config")
        value = inner.get("keras_history") if isinstance(inner, dict) else None
    if not isinstance(value, (list, tuple)) or len(value) < 3 or not isinstance(value[0], str):
        raise FormatError(f"{where}: malformed tensor reference {str(value)[:80]}")
    try:
        return TensorRef(value[0], int(value[1]), int(value[2]))
    except (TypeError, ValueError, OverflowError):
        raise FormatError(f"{where}: malformed tensor reference {str(value)[:80]}") from None


def _keras3_tensors(value: Any, out: list[TensorRef], where: str) -> None:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            out.append(_ref(value, where))
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _keras3_tensors(item, out, where)


#: the key of :attr:`~bnconvert.model.Layer.call_kwargs` that says which call inputs were passed
#: as keyword arguments: ``{"value": [1], "key": [2]}`` (kwarg name -> indices into the call's inputs)
TENSOR_KWARGS = "tensor_kwargs"
#: keyword arguments whose tensors are not inputs of the call (Keras computes them, or takes them
#: for the mask machinery): they only order the calls
_NOT_INPUTS = frozenset({"mask"})


def _inbound(nodes: Any, layer: Layer, where: str) -> tuple[list[list[TensorRef]], list[dict[str, Any]], list[list[TensorRef]]]:
    """Per call: the input tensors, the keyword arguments, and the tensors passed as ``mask=``
    (not inputs, but Keras needs them before the call).

    Tensors passed as other keyword arguments (tf.keras ``TFOpLambda`` ``y=``, MultiHeadAttention
    ``value=``/``key=``, ``initial_state=``) become inputs of the call after the positional ones,
    in the order the file lists them; ``call_kwargs[k][TENSOR_KWARGS]`` maps each such kwarg name
    to its input indices, so a layer's semantics can tell them apart."""
    if not isinstance(nodes, list):
        raise FormatError(f"{where}: layer {layer.label} has malformed inbound_nodes")
    calls: list[list[TensorRef]] = []
    kwargs: list[dict[str, Any]] = []
    extra: list[list[TensorRef]] = []
    if is_operation(layer):
        for node in nodes:
            refs, op_args = _operation_call(node, layer, where)
            calls.append(refs)
            kwargs.append({OP_ARGS: op_args})
            extra.append([])
        return calls, kwargs, extra
    for node in nodes:
        refs = []
        more: list[TensorRef] = []
        kw: dict[str, Any] = {}
        tensor_kw: list[tuple[str, list[TensorRef]]] = []
        if isinstance(node, dict):  # Keras 3
            _keras3_tensors(node.get("args", []), refs, where)
            given = node.get("kwargs") or {}
            if not isinstance(given, dict):
                raise FormatError(f"{where}: layer {layer.label} has malformed call arguments")
            for k, v in given.items():
                found: list[TensorRef] = []
                _keras3_tensors(v if isinstance(v, list) else [v], found, where)
                _sort_kwarg(k, v, found, kw, more, tensor_kw)
        elif isinstance(node, list):  # Keras 1/2: [[name, node, tensor, kwargs], ...]
            if node and isinstance(node[0], str):
                node = [node]  # tf.keras writes a call on one tensor unwrapped (TFOpLambda)
            for item in node:
                refs.append(_ref(item, where))
                if isinstance(item, list) and len(item) > 3 and isinstance(item[3], dict):
                    for k, v in item[3].items():
                        found = []
                        _keras2_tensors(v, found)
                        _sort_kwarg(k, v, found, kw, more, tensor_kw)
        else:
            raise FormatError(f"{where}: layer {layer.label} has a malformed inbound node")
        if not refs:
            raise FormatError(f"{where}: layer {layer.label} has a call with no input tensors")
        if tensor_kw:
            positions: dict[str, list[int]] = {}
            for k, found in tensor_kw:
                positions.setdefault(k, []).extend(range(len(refs), len(refs) + len(found)))
                refs += found
            kw[TENSOR_KWARGS] = positions
        if more:
            kw[GIVEN_MASK] = list(more)
        calls.append(refs)
        kwargs.append(kw)
        extra.append(more)
    return calls, kwargs, extra


def _sort_kwarg(name: str, value: Any, found: list[TensorRef], kw: dict[str, Any], masks: list[TensorRef],
                tensor_kw: list[tuple[str, list[TensorRef]]]) -> None:
    """File one call keyword argument: a plain value into ``kw``, the tensors of ``mask=`` into
    ``masks``, other tensors into ``tensor_kw`` (they become call inputs)."""
    if not found:
        kw[name] = value
    elif name in _NOT_INPUTS:
        masks += found
    else:
        tensor_kw.append((name, found))


def _keras2_tensors(value: Any, out: list[TensorRef]) -> None:
    """Tensors in tf.keras call keyword arguments, in the order written: tf.keras takes every list
    ``[layer, node, tensor(, kwargs)]`` there for one (``convert_inner_node_data``)."""
    queue = deque([value])  # first in, first out: the tensors come out in the order written
    while queue:
        item = queue.popleft()
        if isinstance(item, dict):
            queue.extend(item.values())
        elif isinstance(item, list):
            if len(item) in (3, 4) and isinstance(item[0], str):
                if all(type(x) is int and 0 <= x < 2**31 for x in item[1:3]):
                    out.append(TensorRef(item[0], item[1], item[2]))
            else:
                queue.extend(item)



# -- operation layers -------------------------------------------------------------------------------
#: tf.keras' stand-in for a constant in the first argument of a TFOpLambda call
_CONSTANT_VALUE = "_CONSTANT_VALUE"
_SLICE_KEYS = frozenset({"start", "stop", "step"})


def _operation_call(node: Any, layer: Layer, where: str) -> tuple[list[TensorRef], tuple[list[Any], dict[str, Any]]]:
    """One call of an operation layer: its input tensors and its full arguments ``(args, kwargs)``
    with each tensor replaced by a :class:`~bnconvert.model.TensorArg` indexing those inputs (in
    the order met: the args depth first, then the kwargs in the order written).

    Keras 3 writes ``{"args": [...], "kwargs": {...}}`` with tensors as ``__keras_tensor__`` and
    slices, ``...``, numpy constants as ``__slice__``, ``__ellipsis__``, ``__numpy__``. tf.keras
    writes the call's first argument (a tensor, or a list of them for ``tf.concat``) as
    ``[layer, node, tensor, kwargs]`` entries, a constant among them as ``["_CONSTANT_VALUE", -1,
    value, kwargs]``, and every other argument in ``kwargs`` by name, tensors as ``[layer, node,
    tensor]``; SlicingOpLambda slices as ``{"start", "stop", "step"}`` dicts. Both become one form:
    python ``slice``, ``Ellipsis``, ``None`` for a new axis, numpy arrays for Keras 3 arrays."""
    refs: list[TensorRef] = []

    def tensor(ref: TensorRef) -> TensorArg:
        refs.append(ref)
        return TensorArg(len(refs) - 1)

    if isinstance(node, dict):  # Keras 3
        given_args, given_kwargs = node.get("args", []), node.get("kwargs") or {}
        if not isinstance(given_args, (list, tuple)) or not isinstance(given_kwargs, dict):
            raise FormatError(f"{where}: layer {layer.label} has malformed call arguments")

        def keras3(value: Any) -> Any:
            if isinstance(value, dict):
                kind, cfg = value.get("class_name"), value.get("config")
                if kind == "__keras_tensor__":
                    return tensor(_ref(value, where))
                if kind == "__slice__" and isinstance(cfg, dict):
                    return slice(*(keras3(cfg.get(k)) for k in ("start", "stop", "step")))
                if kind == "__ellipsis__":
                    return Ellipsis
                if kind in ("__numpy__", "__tensor__") and isinstance(cfg, dict):
                    return _array(cfg.get("value"), cfg.get("dtype"), layer, where)
                if kind == "__tuple__" and isinstance(cfg, dict):
                    return keras3(cfg.get("value"))
                return {k: keras3(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [keras3(v) for v in value]
            return value

        args = [keras3(a) for a in given_args]
        kwargs = {k: keras3(v) for k, v in given_kwargs.items()}
    elif isinstance(node, list):  # tf.keras TFOpLambda / SlicingOpLambda
        slicing = layer.source_class == "SlicingOpLambda"
        found: list[dict[str, Any]] = []

        def first(value: Any) -> Any:
            if isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str):
                if len(value) == 4 and isinstance(value[3], dict):
                    found.append(value[3])
                if value[0] == _CONSTANT_VALUE:
                    return value[2]
                return tensor(_ref(value, where))
            if isinstance(value, list) and value:
                return [first(v) for v in value]
            raise FormatError(f"{where}: layer {layer.label} has a malformed inbound node")

        def keyword(value: Any, depth: int = 0) -> Any:
            if isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str) \
                    and all(type(x) is int and 0 <= x < 2**31 for x in value[1:3]):
                return tensor(_ref(value, where))
            if slicing and depth <= 1 and isinstance(value, dict) and set(value) == _SLICE_KEYS:
                return slice(*(keyword(value[k], 2) for k in ("start", "stop", "step")))
            if isinstance(value, dict) and value.get("class_name") == "__ellipsis__":
                return Ellipsis
            if isinstance(value, dict):
                return {k: keyword(v, 2) for k, v in value.items()}
            if isinstance(value, list):
                return [keyword(v, depth + 1) for v in value]
            return value

        args = [first(node)]
        # tf.keras files the same kwargs with every tensor of the first argument; Keras calls with the last
        kwargs = {k: keyword(v) for k, v in (found[-1] if found else {}).items()}
    else:
        raise FormatError(f"{where}: layer {layer.label} has a malformed inbound node")
    if not refs:
        raise FormatError(f"{where}: layer {layer.label} has a call with no input tensors")
    return refs, (args, kwargs)


def _array(value: Any, dtype: Any, layer: Layer, where: str) -> np.ndarray:
    """A constant array of a Keras 3 call (``__numpy__``/``__tensor__``), in the dtype written."""
    try:
        return np.asarray(value, dtype=np.dtype(dtype) if isinstance(dtype, str) else None)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{where}: layer {layer.label} has a constant argument numpy cannot read ({exc})") from None
