"""Turn a Keras model config (any generation, already in the Keras 2/3 vocabulary) into a Model.

Handles Sequential (list or dict config, with or without an InputLayer), Functional/Model
graphs with the Keras 1/2 ``inbound_nodes`` form (``[[[name, node, tensor, kwargs]]]``) and the
Keras 3 form (``[{"args": [...keras tensors...], "kwargs": {...}}]``), and nested models.
Weights are attached afterwards by the format's reader.
"""

from __future__ import annotations

from typing import Any

from ..errors import FormatError
from ..model import Layer, Model, TensorRef

__all__ = ["build_model", "MODEL_CLASSES"]

MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})


def build_model(config: dict[str, Any], *, where: str = "model_config") -> Model:
    """Build the graph (no weights yet) from a ``{"class_name": ..., "config": ...}`` dict."""
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
    layer = Layer(name=name, class_name=class_name, config=dict(cfg), source_class=entry.get("keras1_class", ""))
    if class_name in MODEL_CLASSES:
        layer.model = build_model({"class_name": class_name, "config": cfg}, where=f"{where}/{name}")
        layer.model.name = name
    return layer


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
    for prev, layer in zip(layers, layers[1:]):
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
    for entry in body["layers"]:
        layer = _layer(entry, where)
        layer.calls, layer.call_kwargs = _inbound(entry.get("inbound_nodes") or [], layer, where)
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
    return model


def _renumber_nested(model: Model) -> None:
    """Keras 2 counts a nested model's own input node as node 0, so its first call in the outer
    graph is node 1 (Keras 3 writes 0): make every ref name the call index, as for other layers."""
    for nested in model.layers:
        if nested.model is None:
            continue
        refs = [r for layer in model.layers for call in layer.calls for r in call if r.layer == nested.name]
        refs += [r for r in model.outputs if r.layer == nested.name]
        if refs and min(r.node for r in refs) >= 1 and max(r.node for r in refs) == len(nested.calls):
            fix = {r: TensorRef(r.layer, r.node - 1, r.index) for r in refs}
            for layer in model.layers:
                layer.calls = [[fix.get(r, r) for r in call] for call in layer.calls]
            model.outputs = [fix.get(r, r) for r in model.outputs]


def _check_unique(layers: list[Layer], where: str) -> None:
    seen: set[str] = set()
    for layer in layers:
        if layer.name in seen:
            raise FormatError(f"{where}: two layers are named '{layer.name}'")
        seen.add(layer.name)


def _refs(value: Any, where: str, what: str) -> list[TensorRef]:
    if not isinstance(value, list) or not value:
        raise FormatError(f"{where}: '{what}' is missing or empty")
    if isinstance(value[0], str):  # Keras 3 writes a single input/output unwrapped
        value = [value]
    return [_ref(v, where) for v in value]


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


def _inbound(nodes: Any, layer: Layer, where: str) -> tuple[list[list[TensorRef]], list[dict[str, Any]]]:
    if not isinstance(nodes, list):
        raise FormatError(f"{where}: layer {layer.label} has malformed inbound_nodes")
    calls, kwargs = [], []
    for node in nodes:
        refs: list[TensorRef] = []
        if isinstance(node, dict):  # Keras 3
            _keras3_tensors(node.get("args", []), refs, where)
            given = node.get("kwargs") or {}
            if not isinstance(given, dict):
                raise FormatError(f"{where}: layer {layer.label} has malformed call arguments")
            kw = {k: v for k, v in given.items() if not _has_tensor(v)}
        elif isinstance(node, list):  # Keras 1/2: [[name, node, tensor, kwargs], ...]
            kw = {}
            for item in node:
                refs.append(_ref(item, where))
                if isinstance(item, list) and len(item) > 3 and isinstance(item[3], dict):
                    kw.update(item[3])
        else:
            raise FormatError(f"{where}: layer {layer.label} has a malformed inbound node")
        if not refs:
            raise FormatError(f"{where}: layer {layer.label} has a call with no input tensors")
        calls.append(refs)
        kwargs.append(kw)
    return calls, kwargs


def _has_tensor(value: Any) -> bool:
    found: list[TensorRef] = []
    _keras3_tensors(value if isinstance(value, list) else [value], found, "")
    return bool(found)
