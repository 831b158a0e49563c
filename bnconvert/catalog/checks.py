"""What a config field must hold: the checks family modules declare as a record's ``fields``.

Each check is a predicate on the value of one config field, carrying in ``want`` the words a
message uses for what was expected (``config 'strides' is ..., expected positive integers below
2**31``); :mod:`bnconvert.readers.fields` applies a record's checks to every layer of a file.

Integers are bounded (below ``2**31``: what ONNX attributes, numpy shapes and every runtime accept
without overflow) and axes lie within the largest rank a config can describe; whether an axis
lies within the rank of the layer's actual input is checked where the shapes are known
(:mod:`bnconvert.readers.consistency`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeGuard

__all__ = ["Check", "Fields", "MAX_INT", "MAX_RANK", "as_int", "pos_int", "pos_ints", "opt", "boolean", "finite_nonneg",
           "number", "one_of", "one_axis", "axis", "activation", "shape", "target_shape", "dims", "amounts",
           "nonneg_int", "PADDING", "FORMAT", "keras1_mode", "CONV", "POOL"]

Check = Callable[[Any], bool]
#: config field -> its check: a record's ``fields``
Fields = dict[str, Check]
#: integers in a config (sizes, strides, units, dimensions) stay below this
MAX_INT = 2**31
#: axes are within this rank (an input shape has at most 8 dimensions; a layer can add one)
MAX_RANK = 9


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_int(v: Any) -> Any:
    """Integral floats (``23.0``: Keras 1 files hold them) as ints, also inside lists; else ``v``."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, (list, tuple)):
        return [as_int(x) for x in v]
    return v


def pos_int(v: Any) -> TypeGuard[int]:
    return _int(v) and 0 < v < MAX_INT


def nonneg_int(v: Any) -> TypeGuard[int]:
    return _int(v) and 0 <= v < MAX_INT


def pos_ints(v: Any) -> bool:
    return pos_int(v) or (isinstance(v, (list, tuple)) and 0 < len(v) <= 3 and all(pos_int(x) for x in v))


def opt(check: Check) -> Check:
    def optional(v: Any) -> bool:
        return v is None or check(v)
    optional.want = getattr(check, "want", "")  # type: ignore[attr-defined]
    return optional


def boolean(v: Any) -> bool:
    return isinstance(v, bool) or v in (0, 1)


def finite_nonneg(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_of(*words: Any) -> Check:
    return lambda v: v in words


def one_axis(v: Any) -> bool:
    return _int(v) and -MAX_RANK <= v <= MAX_RANK  # MAX_RANK itself: tf.keras' virtual-batch shift


def axis(v: Any) -> bool:
    return one_axis(v) or (isinstance(v, (list, tuple)) and 0 < len(v) <= 8 and all(one_axis(x) for x in v))


def activation(v: Any) -> bool:
    return v is None or isinstance(v, (str, dict))


def shape(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and 0 < len(v) <= 8 and all(x is None or nonneg_int(x) for x in v)


def target_shape(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and 0 < len(v) <= 8 and all(pos_int(x) or x == -1 for x in v)
            and sum(1 for x in v if x == -1) <= 1)


def dims(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and 0 < len(v) <= 8 and all(_int(x) for x in v)
            and sorted(v) == list(range(1, len(v) + 1)))


def amounts(v: Any) -> bool:
    """ZeroPadding/Cropping: an int, a list of ints, or a list of (before, after) pairs; all >= 0."""
    def ok(x: Any) -> bool:
        pair = isinstance(x, (list, tuple)) and len(x) == 2 and all(nonneg_int(y) for y in x)
        return nonneg_int(x) or pair
    return ok(v) or (isinstance(v, (list, tuple)) and 0 < len(v) <= 3 and all(ok(x) for x in v))


def _wants(**texts: str) -> None:
    """What each check expects, in the words of the message (``config 'strides' is ..., expected ...``)."""
    for name, text in texts.items():
        globals()[name].want = text


_wants(
    pos_int="a positive integer below 2**31",
    pos_ints="positive integers below 2**31",
    axis=f"an axis from -{MAX_RANK} to {MAX_RANK}",
    one_axis=f"an axis from -{MAX_RANK} to {MAX_RANK}",
    shape="up to 8 dimensions, each null or an integer from 0 to 2**31 - 1",
    target_shape="up to 8 positive integers below 2**31, at most one -1",
    dims="a permutation of 1..rank",
    amounts="integers from 0 to 2**31 - 1",
    finite_nonneg="a finite number >= 0",
    number="a finite number",
    boolean="true or false",
)
PADDING = one_of("valid", "same", "causal", "full")
FORMAT = one_of(None, "channels_last", "channels_first")
#: ``keras1_mode`` is set by the Keras 1 reader (which already refused other modes): a later file
#: cannot smuggle one in
def keras1_mode(v: Any) -> bool:
    return _int(v) and v in (0, 1, 2)


keras1_mode.want = "0, 1 or 2 (the Keras 1 BatchNormalization modes)"  # type: ignore[attr-defined]

#: the fields of every convolution (regular, transposed, depthwise, separable)
CONV: Fields = {
    "kernel_size": pos_ints, "strides": pos_ints, "dilation_rate": pos_ints, "padding": PADDING,
    "data_format": FORMAT, "use_bias": boolean, "activation": activation, "groups": pos_int,
    "depth_multiplier": pos_int, "filters": pos_int, "output_padding": opt(amounts),
}
#: the fields of max and average pooling
POOL: Fields = {"pool_size": pos_ints, "strides": opt(pos_ints), "padding": PADDING, "data_format": FORMAT}
