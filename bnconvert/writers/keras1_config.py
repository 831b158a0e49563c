"""A Keras 2 model config for a model read from a Keras 1 file, so current Keras can load it.

The reader already translated every layer to the Keras 2 vocabulary (``upgrade_config``); this
module drops the bookkeeping keys it added, fills in what Keras 2 needs (``batch_input_shape`` on
InputLayers, ``output_padding`` that reproduces a Deconvolution2D's declared output shape,
explicit ``data_format`` on Flatten) and refuses what Keras 2 cannot express (Keras 1 BN modes
1/2, Merge with a Python function, classes whose Keras 1 arguments differ from Keras 2's).
"""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedLayerError
from ..model import MODEL_CLASSES, Model, TensorRef
from ..readers.keras1 import MERGE_MODES, keras1_classes, upgrade_config
from ..readers.rnn_layouts import KERAS1_RECURRENT
from ..shapes import infer_shapes
from .config_edit import entry_name, layer_entries

__all__ = ["KERAS1_WRITABLE", "keras2_config_from_keras1"]

#: classes whose upgraded config is a valid Keras 2 config: the catalog classes Keras 1 wrote
#: (under their own name or an alias), what its Merge modes became, Lambda (outside the catalog), and the
#: recurrent layers, wrappers, Embedding and Masking, whose configs the reader rewrites whole in Keras 2 words
KERAS1_WRITABLE = (keras1_classes() | frozenset(MERGE_MODES.values()) | {"Lambda"} | MODEL_CLASSES | KERAS1_RECURRENT
                   | {"Embedding", "Masking", "TimeDistributed", "Bidirectional"})
_BOOKKEEPING = ("keras1_mode", "keras1_output_shape", "epsilon_assumed", "synthetic", "keras1_merge_mode")


def keras2_config_from_keras1(model: Model) -> dict[str, Any]:
    """The Keras 2 config of ``model`` (read from a Keras 1 file; ``model`` is the unfolded one)."""
    if model.source is None or model.source.config is None:
        raise UnsupportedLayerError("a Keras 1 model without its architecture cannot be written as a Keras file")
    config = upgrade_config(model.source.config)
    _clean(config, model)
    _explicit_inputs(config, model)
    return config


def _explicit_inputs(model_entry: dict[str, Any], model: Model) -> None:
    """Give every Sequential an InputLayer entry, as tf.keras 2 writes them: Keras 3 misreads a
    ``batch_input_shape`` on the first real layer of a legacy Sequential config."""
    entries = layer_entries(model_entry)
    if model_entry.get("class_name") == "Sequential" and entries and entries[0].get("class_name") != "InputLayer":
        cfg = entries[0].setdefault("config", {})
        shape = cfg.pop("batch_input_shape", None) or (model.layers[0].config.get("batch_shape") if model.layers else None)
        if shape is None:
            raise UnsupportedLayerError("the Keras 1 Sequential model declares no input shape")
        name = model.layers[0].name if model.layers and model.layers[0].class_name == "InputLayer" else f"{entry_name(entries[0])}_input"
        dtype = cfg.pop("dtype", None) or "float32"
        entries.insert(0, {"class_name": "InputLayer", "config": {
            "batch_input_shape": list(shape), "dtype": dtype, "sparse": False, "ragged": False, "name": name}})
    for entry in entries:
        name = entry_name(entry)
        inner = model[name].model if name in model else None
        if entry.get("class_name") in MODEL_CLASSES and inner is not None:
            _explicit_inputs(entry, inner)


def _clean(model_entry: dict[str, Any], model: Model) -> None:
    shapes: dict[TensorRef, Any] | None = None
    for entry in layer_entries(model_entry):
        name = entry_name(entry)
        cls = entry.get("class_name")
        entry.pop("keras1_class", None)
        label = f"layer '{name}' ({cls})"
        if cls not in KERAS1_WRITABLE:
            raise UnsupportedLayerError(f"{label} of a Keras 1 file has no Keras 2 equivalent bnconvert can write")
        layer = model[name] if name in model else None  # noqa: SIM401 (Model has no .get)
        if cls in MODEL_CLASSES:
            if layer is None or layer.model is None:
                raise UnsupportedLayerError(f"{label}: nested model not found")
            _clean(entry, layer.model)
            continue
        cfg = entry.setdefault("config", {})
        if cls == "BatchNormalization" and int(cfg.get("keras1_mode", 0) or 0) != 0:
            raise UnsupportedLayerError(
                f"{label} uses Keras 1 mode {cfg['keras1_mode']} (batch statistics at inference), which no later "
                "Keras can express; it cannot be written as a Keras 2 file"
            )
        if cfg.get("keras1_merge_mode"):
            raise UnsupportedLayerError(f"{label}: Keras 1 Merge mode {cfg['keras1_merge_mode']!r} has no Keras 2 layer")
        if cls == "Conv2DTranspose" and cfg.get("keras1_output_shape"):
            if shapes is None:
                shapes = infer_shapes(model)
            cfg["output_padding"] = _output_padding(cfg, layer, shapes, label)
        for key in _BOOKKEEPING:
            cfg.pop(key, None)
        inner = cfg.get("layer")  # a wrapper's inner layer: the same bookkeeping, the same limits
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            if inner.get("class_name") not in KERAS1_WRITABLE:
                raise UnsupportedLayerError(f"{label} wraps a {inner.get('class_name')} layer, which has no Keras 2 "
                                            "equivalent bnconvert can write")
            if int(inner["config"].get("keras1_mode", 0) or 0) != 0:
                raise UnsupportedLayerError(f"{label} wraps a BatchNormalization of Keras 1 mode "
                                            f"{inner['config']['keras1_mode']}, which no later Keras can express")
            for key in _BOOKKEEPING:
                inner["config"].pop(key, None)
        if cls == "InputLayer":
            cfg.pop("trainable", None)  # tf-keras' InputLayer refuses it
            if "batch_shape" in cfg:
                cfg["batch_input_shape"] = cfg.pop("batch_shape")
        if cls == "Flatten":
            cfg.setdefault("data_format", "channels_last")  # Keras 1 flattened in memory order


def _output_padding(cfg: dict[str, Any], layer: Any, shapes: dict[TensorRef, Any], label: str) -> list[int]:
    """``output_padding`` that makes Keras 2 produce the output shape Keras 1 was told."""
    given = list(cfg["keras1_output_shape"])
    channels_first = cfg.get("data_format") == "channels_first"
    target = given[2:] if channels_first else given[1:-1]
    shape = shapes.get(layer.calls[0][0]) if layer is not None and layer.calls else None
    if shape is None:
        raise UnsupportedLayerError(f"{label}: input shape unknown, cannot express its Keras 1 output_shape in Keras 2")
    spatial = list(shape[2:] if channels_first else shape[1:-1])
    pads = []
    for size, want, k, s in zip(spatial, target, cfg["kernel_size"], cfg["strides"]):
        pad = k // 2 if cfg.get("padding") == "same" else 0
        extra = None if size is None or want is None else int(want) - ((int(size) - 1) * int(s) + int(k) - 2 * pad)
        if extra is None or not 0 <= extra < max(int(s), 1):
            raise UnsupportedLayerError(f"{label}: Keras 1 output_shape {given} cannot be reproduced by a Keras 2 Conv2DTranspose")
        pads.append(extra)
    return pads
