"""Keras 1 to Keras 2/3 vocabulary: layer configs, kernel layouts, Theano orientation, running_std.

Keras 1 facts used here (see ``docs/keras-formats.md`` sections 2 and 3):

* ``dim_ordering='th'`` kernels are ``(out, in, *spatial)``; ``'tf'`` kernels ``(*spatial, in, out)``.
  A ``th`` layer becomes a ``channels_first`` layer, so tensors keep their Keras 1 layout.
* ``Convolution1D`` stores ``(length, 1, in, out)``; ``Deconvolution2D`` stores a Conv2D-layout kernel
  that the backend transposes to ``(rows, cols, out, in)`` before ``conv2d_transpose``.
* Theano convolves (flips the kernel); TensorFlow cross-correlates. Kernels written by Theano are
  flipped on reading so every later stage sees cross-correlation kernels.
* BatchNormalization stores ``[gamma, beta, running_mean, running_std]``; what ``running_std``
  holds depends on the writer (``RUNNING_STD``). It becomes a ``moving_variance`` with the same
  inference result: ``sqrt(moving_variance + eps)`` equals the version's denominator.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..catalog import LayerRecord, catalog, kernel_layout
from ..catalog.legacy import keras1_value
from ..errors import FormatError, UnsupportedLayerError
from .rnn_layouts import KERAS1_RECURRENT, keras1_recurrent_config

__all__ = [
    "KERAS1_ONLY",
    "MERGE_MODES",
    "RUNNING_STD",
    "flip_kernels",
    "keras1_classes",
    "merged_sequential",
    "resolve_running_std",
    "running_std_to_variance",
    "upgrade_config",
    "upgrade_weights",
]

#: running_std interpretations: name -> inference denominator as a function of (running_std, eps)
RUNNING_STD = {
    "variance": lambda rs, eps: np.sqrt(rs + eps),  # 1.0.6 TF, 1.0.7 TF, 1.0.8-1.2.2
    "std": lambda rs, eps: rs + eps,  # 1.0.0-1.0.5, 1.0.6 Theano
    "theano-1.0.7": lambda rs, eps: np.sqrt(rs) + eps,  # 1.0.7 Theano
}


def resolve_running_std(choice: str, keras_version: str | None, backend: str | None) -> str:
    """Pick the running_std interpretation: the user's choice, or the version table for ``auto``."""
    if choice != "auto":
        if choice not in RUNNING_STD:
            raise FormatError(f"unknown running_std interpretation {choice!r}; choose from auto, {', '.join(RUNNING_STD)}")
        return choice
    if keras_version == "1.0.7" and backend == "theano":
        return "theano-1.0.7"
    if keras_version == "1.0.6" and backend == "theano":
        return "std"
    if keras_version and keras_version.split(".")[:3] in (["1", "0", str(p)] for p in range(6)):
        return "std"
    return "variance"


def _pair(value: Any, n: int = 2) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _fmt(cfg: dict[str, Any]) -> str:
    return "channels_first" if cfg.get("dim_ordering") == "th" else "channels_last"


def _common(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {"name": cfg.get("name"), "trainable": cfg.get("trainable", True)}
    shape = cfg.get("batch_input_shape")
    if shape is not None:
        out["batch_input_shape"] = shape
    elif cfg.get("input_shape") is not None:
        out["batch_input_shape"] = [None, *cfg["input_shape"]]
    if cfg.get("input_dtype"):
        out["dtype"] = cfg["input_dtype"]
    return out


#: Keras 1 ``Merge`` modes and the Keras 2 class each became
MERGE_MODES = {"sum": "Add", "mul": "Multiply", "ave": "Average", "max": "Maximum", "concat": "Concatenate", "dot": "Dot"}
#: classes outside the catalog that Keras 1 wrote with today's arguments (copied as they are)
_SAME_CLASS = {"Lambda", "Masking", "Embedding", "LSTM", "GRU", "SimpleRNN", "TimeDistributed", "Bidirectional"}
#: catalog classes only Keras 1 had (Keras 2 removed them): read and run, but no Keras 2 config holds them
KERAS1_ONLY = frozenset({"Highway", "MaxoutDense", "SReLU", "ParametricSoftplus", "Merge"})


@functools.cache
def _keras1_records() -> dict[str, LayerRecord]:
    """Keras 1 class name -> catalog record: each record's aliases, and its own name when Keras 1
    used it too (see :mod:`bnconvert.catalog.legacy`)."""
    table: dict[str, LayerRecord] = {}
    for record in catalog().values():
        if record.keras1:
            table[record.class_name] = record
        for alias in record.aliases:
            table[alias] = record
    return table


def keras1_classes() -> frozenset[str]:
    """The catalog classes a Keras 1 file can hold after the upgrade (under their modern names)
    that Keras 2 also has (not :data:`KERAS1_ONLY`)."""
    return frozenset(record.class_name for record in _keras1_records().values()) - KERAS1_ONLY


class _BadField(Exception):
    """A Keras 1 config value no Keras 1 could have written; becomes a FormatError naming the layer."""


def _bn_mode(mode: Any) -> int:
    """Keras 1 BatchNormalization ``mode``: 0 (feature-wise), 1 (per sample) or 2 (batch
    statistics); anything else is not a Keras 1 file (Keras 1 itself raised on other modes)."""
    if isinstance(mode, float) and mode.is_integer():
        mode = int(mode)
    if isinstance(mode, bool) or mode not in (0, 1, 2):
        shown = repr(mode) if len(repr(mode)) <= 40 else repr(mode)[:37] + "..."
        raise _BadField(f"config 'mode' is {shown}; Keras 1 BatchNormalization modes are 0, 1 and 2")
    return int(mode)


def upgrade_layer(class_name: str, cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One Keras 1 layer ``(class_name, config)`` in the Keras 2 vocabulary.

    The catalog says what the class is called today and how Keras 1 spelled its arguments; this
    function does the conversions that are more than a spelling."""
    out = _common(cfg)
    c = cfg
    record = _keras1_records().get(class_name)
    if record is None:
        return _upgrade_other(class_name, c, out)
    modern = record.class_name

    def arg(name: str) -> Any:
        return keras1_value(c, record.keras1_args, name)

    if modern == "InputLayer":
        out["batch_shape"] = c.get("batch_input_shape")
        out["dtype"] = c.get("input_dtype") or "float32"
        return modern, out
    if modern == "Dense":
        out.update(units=arg("units"), activation=arg("activation"), use_bias=arg("use_bias"))
        if c.get("input_dim") and "batch_input_shape" not in out:
            out["batch_input_shape"] = [None, c["input_dim"]]
        return modern, out
    if modern == "Conv1D":
        out.update(
            filters=arg("filters"), kernel_size=[arg("kernel_size")], strides=[arg("strides")],
            padding=arg("padding"), data_format="channels_last",
            dilation_rate=[arg("dilation_rate")], activation=arg("activation"),
            use_bias=arg("use_bias"),
        )
        if "batch_input_shape" not in out and c.get("input_dim"):
            out["batch_input_shape"] = [None, c.get("input_length"), c["input_dim"]]
        return modern, out
    if modern in ("Conv2D", "Conv2DTranspose", "SeparableConv2D"):
        out.update(
            filters=arg("filters"), kernel_size=[c["nb_row"], c["nb_col"]], strides=_pair(arg("strides")),
            padding=arg("padding"), data_format=_fmt(c), activation=arg("activation"),
            use_bias=arg("use_bias"), dilation_rate=_pair(arg("dilation_rate")),
        )
        if modern == "Conv2DTranspose":  # Keras 1 Deconvolution2D
            out["keras1_output_shape"] = c.get("output_shape")
            del out["dilation_rate"]
        if modern == "SeparableConv2D":
            out["depth_multiplier"] = arg("depth_multiplier")
        return modern, out
    if modern in ("LocallyConnected1D", "LocallyConnected2D"):  # Keras 1 wrote implementation 1's kernel layout
        out.update(filters=arg("filters"), padding=arg("padding"), activation=arg("activation"),
                   use_bias=arg("use_bias"), implementation=1)
        if modern == "LocallyConnected1D":
            out.update(kernel_size=[arg("kernel_size")], strides=[arg("strides")], data_format="channels_last")
            if "batch_input_shape" not in out and c.get("input_dim"):
                out["batch_input_shape"] = [None, c.get("input_length"), c["input_dim"]]
        else:
            out.update(kernel_size=[c["nb_row"], c["nb_col"]], strides=_pair(arg("strides")), data_format=_fmt(c))
        return modern, out
    if modern == "Conv3D":
        out.update(
            filters=arg("filters"), kernel_size=[c["kernel_dim1"], c["kernel_dim2"], c["kernel_dim3"]],
            strides=_pair(arg("strides"), 3), padding=arg("padding"), data_format=_fmt(c),
            activation=arg("activation"), use_bias=arg("use_bias"), dilation_rate=[1, 1, 1],
        )
        return modern, out
    if record.family == "pooling":
        n = int(modern[-2])
        if not record.keras1_args:  # global pooling
            out["data_format"] = _fmt(c)
        elif n == 1:
            pool = arg("pool_size")
            out.update(pool_size=[pool], strides=[arg("strides") or pool], padding=arg("padding"),
                       data_format="channels_last")
        else:
            pool = _pair(arg("pool_size"), n)
            out.update(pool_size=pool, strides=_pair(arg("strides") or pool, n), padding=arg("padding"),
                       data_format=_fmt(c))
        return modern, out
    if record.family == "spatial":  # ZeroPadding, Cropping, UpSampling: one argument each
        (spelled,) = record.keras1_args
        key = spelled.name
        out[key] = c.get(spelled.keras1, c.get(key))
        if int(modern[-2]) > 1:
            if isinstance(out[key], dict):  # ZeroPadding2D({'top_pad':..})
                p = out[key]
                out[key] = [[p.get("top_pad", 0), p.get("bottom_pad", 0)], [p.get("left_pad", 0), p.get("right_pad", 0)]]
            out["data_format"] = _fmt(c)
            if key == "size":
                out["interpolation"] = "nearest"
        return modern, out
    if modern == "BatchNormalization":
        out.update(axis=arg("axis"), epsilon=arg("epsilon"), momentum=arg("momentum"),
                   center=True, scale=True, keras1_mode=_bn_mode(arg("keras1_mode")))
        return modern, out
    if record.keras1_args:  # Dropout family, noise, parametric activations: spellings only
        out.update({spelled.name: arg(spelled.name) for spelled in record.keras1_args})
        return modern, out
    merged = dict(c)  # Keras 1 wrote it with today's arguments (Activation, Flatten, Reshape ...)
    merged.update(out)
    return modern, merged


def _upgrade_other(class_name: str, c: dict[str, Any], out: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A Keras 1 class outside the catalog: Merge, a class copied as it is, or a custom class."""
    if class_name == "Merge":
        mode = c.get("mode", "sum")
        if not isinstance(mode, str) or mode not in MERGE_MODES:
            # cos has no Keras 2 class (the catalog's Merge record runs it); a function is never run
            out["keras1_merge_mode"] = mode if isinstance(mode, str) else "<python function>"
            out["mode"] = mode if isinstance(mode, str) else None
            out["dot_axes"] = c.get("dot_axes", -1)
            if c.get("output_shape_type", "raw") == "raw" and isinstance(c.get("output_shape"), list):
                out["output_shape"] = c["output_shape"]  # the shape a function mode was declared to give
            return "Merge", out
        if mode == "concat":
            out["axis"] = c.get("concat_axis", -1)
        if mode == "dot":
            out["axes"] = c.get("dot_axes", -1)
        return MERGE_MODES[mode], out
    if class_name == "TimeDistributedDense":  # Dense on the last axis of (N, T, in): Keras 1's reshape-dot-reshape
        out.update(units=c["output_dim"], activation=c.get("activation", "linear"), use_bias=c.get("bias", True))
        if "batch_input_shape" not in out and c.get("input_dim"):
            out["batch_input_shape"] = [None, c.get("input_length"), c["input_dim"]]
        return "Dense", out
    if class_name in KERAS1_RECURRENT:
        return class_name, keras1_recurrent_config(class_name, c, out)
    if class_name == "ConvLSTM2D":  # Keras 1.2: nb_filter, per-gate weights, th kernels; no file to check against
        raise UnsupportedLayerError(f"layer '{c.get('name')}' (ConvLSTM2D): Keras 1 ConvLSTM2D files are not supported "
                                    "(re-save the model with Keras 2)")
    if class_name in ("TimeDistributed", "Bidirectional"):
        inner = c.get("layer")
        if not isinstance(inner, dict) or not isinstance(inner.get("class_name"), str):
            raise _BadField("config 'layer' is not a layer config")
        inner_class, inner_cfg = upgrade_layer(inner["class_name"], _config(inner))
        out["layer"] = {"class_name": inner_class, "config": inner_cfg}
        if class_name == "Bidirectional":
            out["merge_mode"] = c.get("merge_mode", "concat")
        return class_name, out
    if class_name == "Embedding":  # Keras 1: init, W_regularizer, dropout ... (training only)
        out.update(input_dim=c["input_dim"], output_dim=c["output_dim"], mask_zero=bool(c.get("mask_zero", False)))
        if "batch_input_shape" not in out and c.get("input_length") is not None:
            out["batch_input_shape"] = [None, c["input_length"]]
        return class_name, out
    if class_name == "Masking":
        out["mask_value"] = c.get("mask_value", 0.0)
        return class_name, out
    # _SAME_CLASS, or an unknown (custom) class: keep it and its config as written; an unknown
    # one is reported by name later.
    merged = dict(c)
    merged.update(out)
    return class_name, merged


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A whole Keras 1 model config, recursively, in the Keras 2 vocabulary."""
    class_name = config.get("class_name")
    body = config.get("config")
    if class_name == "Sequential":
        entries = body if isinstance(body, list) else body.get("layers", []) if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise FormatError("model_config: the Sequential config holds no list of layers")
        if entries and isinstance(entries[0], dict) and entries[0].get("class_name") == "Merge" \
                and isinstance((entries[0].get("config") or {}).get("layers"), list):
            return upgrade_config(merged_sequential(entries))
        return {"class_name": "Sequential", "config": {"name": "sequential", "layers": [_upgrade_entry(e) for e in entries]}}
    if class_name in ("Model", "Functional"):
        if not isinstance(body, dict) or not isinstance(body.get("layers", []), list):
            raise FormatError("model_config: the Model config holds no list of layers")
        body = dict(body)
        body["layers"] = [_upgrade_entry(e) for e in body.get("layers", [])]
        return {"class_name": "Functional", "config": body}
    raise FormatError(f"model_config: top-level class {class_name!r} is not a Keras 1 Sequential or Model")


def merged_sequential(entries: list[Any]) -> dict[str, Any]:
    """A Keras 1 Sequential whose first layer is a ``Merge`` of models as the Keras 1 functional
    ``Model`` config it stands for (still in Keras 1 words).

    Keras 1.2.2 (``models.py`` ``Sequential.get_config``) wrote such a model as a list whose first
    entry is ``Merge`` with, in its config, ``layers``: one config per merged branch (a Sequential,
    itself possibly starting with a Merge, or a single layer). Each branch becomes an input and a
    chain of layers, the Merge a layer called on the branches' outputs, the rest a chain after it.
    The weights were saved per leaf layer (``flattened_layers``), by name, as a Model's are."""
    layers: list[dict[str, Any]] = []
    inputs: list[list[Any]] = []
    seen: set[str] = set()

    def add(entry: Any, inbound: list[list[Any]]) -> list[Any]:
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict) or not isinstance(entry.get("class_name"), str):
            raise FormatError("model_config: a layer entry of a merged Keras 1 Sequential is not a layer config")
        cfg = dict(entry["config"])
        name = cfg.get("name")
        if not isinstance(name, str) or name in seen:
            raise FormatError(f"model_config: Keras 1 merged Sequential: layer name {name!r} is missing or used twice "
                              "(a branch merged twice is not supported)")
        seen.add(name)
        layers.append({"class_name": entry["class_name"], "name": name, "config": cfg,
                       "inbound_nodes": [[list(ref) for ref in inbound]] if inbound else []})
        return [name, 0, 0]

    def chain(branch: Any) -> list[Any]:
        """The branch's layers appended after an input of their own; their output."""
        if isinstance(branch, dict) and branch.get("class_name") == "Sequential":
            body = branch.get("config")
            items = body if isinstance(body, list) else body.get("layers") if isinstance(body, dict) else None
        else:
            items = [branch]
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            raise FormatError("model_config: a branch of a Keras 1 Merge holds no layers")
        if items[0].get("class_name") == "Merge" and isinstance((items[0].get("config") or {}).get("layers"), list):
            out = merge(items[0])
        else:
            first = _config(items[0])
            shape = first.get("batch_input_shape")
            if shape is None and isinstance(first.get("input_shape"), list):
                shape = [None, *first["input_shape"]]
            if not isinstance(shape, list):
                raise FormatError(f"model_config: the first layer of a Keras 1 Merge branch ({first.get('name')!r}) "
                                  "declares no input shape")
            ref = add({"class_name": "InputLayer", "config": {"name": f"{first.get('name')}_input", "batch_input_shape": shape,
                                                              "input_dtype": first.get("input_dtype") or "float32",
                                                              "sparse": False}}, [])
            inputs.append(ref)
            out = add(items[0], [ref])
        for item in items[1:]:
            if isinstance(item, dict) and item.get("class_name") in ("Sequential", "Model"):
                raise UnsupportedLayerError("a model nested inside a branch of a Keras 1 Merge is not supported")
            out = add(item, [out])
        return out

    def merge(entry: dict[str, Any]) -> list[Any]:
        cfg = dict(entry["config"])
        branches = cfg.pop("layers")
        refs = [chain(branch) for branch in branches]
        return add({"class_name": "Merge", "config": cfg}, refs)

    out = merge(entries[0])
    for item in entries[1:]:
        if isinstance(item, dict) and item.get("class_name") in ("Sequential", "Model"):
            raise UnsupportedLayerError("a model nested after the Merge of a Keras 1 Sequential is not supported")
        out = add(item, [out])
    return {"class_name": "Model", "config": {"name": "sequential", "layers": layers, "input_layers": inputs,
                                              "output_layers": [out]}}


def _upgrade_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or "class_name" not in entry:
        raise FormatError("model_config: a layer entry has no 'class_name'")
    if entry["class_name"] in ("Sequential", "Model"):
        upgraded = upgrade_config(entry)
        name = (entry.get("config") or {}).get("name") if isinstance(entry.get("config"), dict) else None
        upgraded["config"]["name"] = entry.get("name") or name or upgraded["config"]["name"]
        return {**entry, **upgraded, "name": upgraded["config"]["name"]}
    cfg = _config(entry)
    try:
        new_class, new_cfg = upgrade_layer(entry["class_name"], cfg)
    except _BadField as exc:
        raise FormatError(f"model_config: Keras 1 layer {_label(entry, cfg)}: {exc}") from None
    except KeyError as exc:
        raise FormatError(f"model_config: Keras 1 layer {_label(entry, cfg)} has no {exc} field") from None
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise FormatError(f"model_config: Keras 1 layer {_label(entry, cfg)} has a malformed field ({exc})") from None
    out = {"class_name": new_class, "config": new_cfg, "keras1_class": entry["class_name"]}
    if "name" in entry:
        out["name"] = entry["name"]
    if "inbound_nodes" in entry:
        out["inbound_nodes"] = entry["inbound_nodes"]
    return out


def _config(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry's ``config`` when it is a dict, else an empty one."""
    cfg = entry.get("config")
    return cfg if isinstance(cfg, dict) else {}


def _label(entry: dict[str, Any], cfg: dict[str, Any]) -> str:
    name = entry.get("name") or cfg.get("name")
    return f"'{name}' ({entry['class_name']})" if isinstance(name, str) else f"of class {entry['class_name']!r}"


def flip_kernels(class_name: str, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reverse the spatial axes of a convolution kernel (modern layout): Theano's true convolution
    becomes the cross-correlation every other runtime computes (Keras' ``convert_kernel``)."""
    if kernel_layout(class_name) is None:
        return weights
    w = dict(weights)
    for key in ("kernel", "depthwise_kernel"):
        if key in w:
            w[key] = np.ascontiguousarray(w[key][(slice(None, None, -1),) * (w[key].ndim - 2)])
    return w


def upgrade_weights(
    class_name: str,
    config: dict[str, Any],
    weights: dict[str, np.ndarray],
    *,
    source_class: str,
    flip: bool,
    running_std: str,
) -> dict[str, np.ndarray]:
    """A Keras 1 layer's weights in modern layout (and cross-correlation orientation when ``flip``)."""
    w = dict(weights)
    th = config.get("data_format") == "channels_first"
    kernel = kernel_layout(class_name)
    kind = kernel.kind if kernel is not None else None
    if kind == "conv" and kernel is not None and kernel.rank == 1 and "kernel" in w and w["kernel"].ndim == 4:
        w["kernel"] = w["kernel"][:, 0]  # (length, 1, in, out) -> (length, in, out)
    elif kind == "conv" and th and "kernel" in w:
        rank = w["kernel"].ndim - 2
        w["kernel"] = np.transpose(w["kernel"], (*range(2, 2 + rank), 1, 0))
    elif kind == "transpose" and "kernel" in w:
        k = w["kernel"]
        if th:
            k = np.transpose(k, (2, 3, 1, 0))
        w["kernel"] = np.swapaxes(k, -1, -2)  # (r, c, in, out) -> (r, c, out, in)
    elif kind == "separable" and th:
        w["depthwise_kernel"] = np.transpose(w["depthwise_kernel"], (2, 3, 1, 0))
        w["pointwise_kernel"] = np.transpose(w["pointwise_kernel"], (2, 3, 1, 0))
    if flip:
        w = flip_kernels(class_name, w)
    if class_name == "BatchNormalization" and "running_std" in w:
        w["moving_variance"] = running_std_to_variance(w.pop("running_std"), float(config.get("epsilon", 1e-3)), running_std)
    return w


def running_std_to_variance(running_std: np.ndarray, eps: float, interpretation: str) -> np.ndarray:
    """The moving variance that gives the same denominator ``sqrt(var + eps)`` as ``running_std`` did."""
    if interpretation == "variance":
        return running_std
    denom = RUNNING_STD[interpretation](running_std.astype(np.float64), eps)
    return (denom * denom - eps).astype(running_std.dtype)
