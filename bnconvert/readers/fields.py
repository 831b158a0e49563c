"""Config values are what they claim to be: ``filters`` a positive integer, ``epsilon`` a finite
number, ``padding`` one of Keras' words...

Checked for the classes later stages compute with (BatchNormalization, Dense, the convolutions,
pooling, reshaping, the input layer), on the config in the Keras 2/3 vocabulary, so a hostile or
damaged config becomes one FormatError naming the layer and the field instead of a crash deep in
folding or export. A field that is absent keeps Keras' default and is not checked here (the
weight checks in :mod:`.consistency` report what a missing ``filters`` or ``units`` means).

Integers are bounded (below ``2**31``: what ONNX attributes, numpy shapes and every runtime accept
without overflow) and axes lie within the largest rank a config can describe; whether an axis
lies within the rank of the layer's actual input is checked where the shapes are known
(:mod:`.consistency`). Each rule carries the words the message uses for what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import FormatError
from ..layerspec import CONV_CLASSES, DEPTHWISE_CLASSES, SEPARABLE_CLASSES, TRANSPOSE_CLASSES
from ..model import Model

__all__ = ["check_fields"]

Check = Callable[[Any], bool]
_SHOWN = 5
#: integers in a config (sizes, strides, units, dimensions) stay below this
MAX_INT = 2**31
#: axes are within this rank (an input shape has at most 8 dimensions; a layer can add one)
MAX_RANK = 9


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_int(v: Any) -> Any:
    """Integral floats (``23.0``: Keras 1 files hold them) as ints, also inside lists; else ``v``."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, (list, tuple)):
        return [_as_int(x) for x in v]
    return v


def _pos_int(v: Any) -> bool:
    return _int(v) and 0 < v < MAX_INT


def _nonneg_int(v: Any) -> bool:
    return _int(v) and 0 <= v < MAX_INT


def _pos_ints(v: Any) -> bool:
    return _pos_int(v) or (isinstance(v, (list, tuple)) and 0 < len(v) <= 3 and all(_pos_int(x) for x in v))


def _opt(check: Check) -> Check:
    def optional(v: Any) -> bool:
        return v is None or check(v)
    optional.want = getattr(check, "want", "")  # type: ignore[attr-defined]
    return optional


def _bool(v: Any) -> bool:
    return isinstance(v, bool) or v in (0, 1)


def _finite_nonneg(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _one_of(*words: Any) -> Check:
    return lambda v: v in words


def _one_axis(v: Any) -> bool:
    return _int(v) and -MAX_RANK <= v <= MAX_RANK  # MAX_RANK itself: tf.keras' virtual-batch shift


def _axis(v: Any) -> bool:
    return _one_axis(v) or (isinstance(v, (list, tuple)) and 0 < len(v) <= 8 and all(_one_axis(x) for x in v))


def _activation(v: Any) -> bool:
    return v is None or isinstance(v, (str, dict))


def _shape(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and 0 < len(v) <= 8 and all(x is None or _nonneg_int(x) for x in v)


def _target_shape(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and 0 < len(v) <= 8 and all(_pos_int(x) or x == -1 for x in v)
            and sum(1 for x in v if x == -1) <= 1)


def _dims(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and 0 < len(v) <= 8 and all(_int(x) for x in v)
            and sorted(v) == list(range(1, len(v) + 1)))


def _amounts(v: Any) -> bool:
    """ZeroPadding/Cropping: an int, a list of ints, or a list of (before, after) pairs; all >= 0."""
    def ok(x: Any) -> bool:
        pair = isinstance(x, (list, tuple)) and len(x) == 2 and all(_nonneg_int(y) for y in x)
        return _nonneg_int(x) or pair
    return ok(v) or (isinstance(v, (list, tuple)) and 0 < len(v) <= 3 and all(ok(x) for x in v))


def _wants(**texts: str) -> None:
    """What each check expects, in the words of the message (``config 'strides' is ..., expected ...``)."""
    for name, text in texts.items():
        globals()[name].want = text


_wants(
    _pos_int="a positive integer below 2**31",
    _pos_ints="positive integers below 2**31",
    _axis=f"an axis from -{MAX_RANK} to {MAX_RANK}",
    _one_axis=f"an axis from -{MAX_RANK} to {MAX_RANK}",
    _shape="up to 8 dimensions, each null or an integer from 0 to 2**31 - 1",
    _target_shape="up to 8 positive integers below 2**31, at most one -1",
    _dims="a permutation of 1..rank",
    _amounts="integers from 0 to 2**31 - 1",
    _finite_nonneg="a finite number >= 0",
    _number="a finite number",
    _bool="true or false",
)
_PADDING = _one_of("valid", "same", "causal", "full")
_FORMAT = _one_of(None, "channels_last", "channels_first")
#: set by the Keras 1 reader (which already refused other modes): a later file cannot smuggle one in
def _keras1_mode(v: Any) -> bool:
    return _int(v) and v in (0, 1, 2)


_keras1_mode.want = "0, 1 or 2 (the Keras 1 BatchNormalization modes)"  # type: ignore[attr-defined]
_CONV = {
    "kernel_size": _pos_ints, "strides": _pos_ints, "dilation_rate": _pos_ints, "padding": _PADDING,
    "data_format": _FORMAT, "use_bias": _bool, "activation": _activation, "groups": _pos_int,
    "depth_multiplier": _pos_int, "filters": _pos_int, "output_padding": _opt(_amounts),
}
_POOL = {"pool_size": _pos_ints, "strides": _opt(_pos_ints), "padding": _PADDING, "data_format": _FORMAT}
_FIELDS: dict[str, dict[str, Check]] = {
    "Dense": {"units": _pos_int, "use_bias": _bool, "activation": _activation},
    "BatchNormalization": {"axis": _opt(_axis), "epsilon": _opt(_finite_nonneg), "center": _bool, "scale": _bool,
                           "momentum": _opt(_number), "virtual_batch_size": _opt(_pos_int), "renorm": _bool,
                           "keras1_mode": _keras1_mode},
    "InputLayer": {"batch_shape": _opt(_shape), "batch_input_shape": _opt(_shape)},
    "Reshape": {"target_shape": _target_shape},
    "Permute": {"dims": _dims},
    "RepeatVector": {"n": _pos_int},
    "Concatenate": {"axis": _one_axis},
    "Activation": {"activation": _activation},
    "Flatten": {"data_format": _FORMAT},
}
for _cls in CONV_CLASSES | TRANSPOSE_CLASSES | DEPTHWISE_CLASSES | SEPARABLE_CLASSES:
    _FIELDS[_cls] = _CONV
for _n in ("1D", "2D", "3D"):
    _FIELDS[f"MaxPooling{_n}"] = _FIELDS[f"AveragePooling{_n}"] = _POOL
    _FIELDS[f"GlobalMaxPooling{_n}"] = {"data_format": _FORMAT, "keepdims": _bool}
    _FIELDS[f"GlobalAveragePooling{_n}"] = _FIELDS[f"GlobalMaxPooling{_n}"]
    _FIELDS[f"ZeroPadding{_n}"] = {"padding": _amounts, "data_format": _FORMAT}
    _FIELDS[f"Cropping{_n}"] = {"cropping": _amounts, "data_format": _FORMAT}
    _FIELDS[f"UpSampling{_n}"] = {"size": _pos_ints, "data_format": _FORMAT}
#: fields every layer may carry, whatever its class
_COMMON: dict[str, Check] = {
    "input_shape": _opt(_shape), "batch_input_shape": _opt(_shape), "batch_shape": _opt(_shape),
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems(model: Model, prefix: str, out: list[str]) -> None:
    for layer in model.layers:
        if layer.model is not None:
            _problems(layer.model, f"{prefix}{layer.name}/", out)
            continue
        rules = {**_COMMON, **_FIELDS.get(layer.class_name, {})}
        for key, check in rules.items():
            if key not in layer.config:
                continue
            value = layer.config[key]
            if not check(value) and check(_as_int(value)):
                layer.config[key] = value = _as_int(value)
            if not check(value):
                want = getattr(check, "want", "")
                out.append(f"layer '{prefix}{layer.name}' ({layer.source_class}): config '{key}' is {_show(layer.config[key])}"
                           + (f", expected {want}" if want else ""))


def check_fields(model: Model) -> None:
    """FormatError listing every config value that is not what its field claims (with a count).

    Integral floats where Keras means an integer (``pool_size: [23.0, 23.0]`` in a Keras 1 file)
    are turned into ints in the layer config (the file's own config stays in ``model.source``).
    """
    out: list[str] = []
    _problems(model, "", out)
    if out:
        more = f"; and {len(out) - _SHOWN} more" if len(out) > _SHOWN else ""
        raise FormatError(f"malformed model config ({len(out)} value{'s' if len(out) > 1 else ''} of the wrong kind): "
                          + "; ".join(out[:_SHOWN]) + more)

