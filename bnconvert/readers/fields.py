"""Config values are what they claim to be: ``filters`` a positive integer, ``epsilon`` a finite
number, ``padding`` one of Keras' words...

Which fields a class has and what each must hold is its catalog record's ``fields``
(:mod:`bnconvert.catalog.checks`); this module applies them to every layer, on the config in the
Keras 2/3 vocabulary, so a hostile or damaged config becomes one FormatError naming the layer and
the field instead of a crash deep in folding or export. A field that is absent keeps Keras'
default and is not checked here (the weight checks in :mod:`.consistency` report what a missing
``filters`` or ``units`` means).
"""

from __future__ import annotations

from typing import Any

from ..catalog import catalog
from ..catalog.checks import Fields, as_int, opt, shape
from ..errors import FormatError
from ..model import Model

__all__ = ["check_fields"]

_SHOWN = 5
#: fields every layer may carry, whatever its class
_COMMON: Fields = {
    "input_shape": opt(shape), "batch_input_shape": opt(shape), "batch_shape": opt(shape),
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems(model: Model, prefix: str, out: list[str]) -> None:
    records = catalog()
    for layer in model.layers:
        if layer.model is not None:
            _problems(layer.model, f"{prefix}{layer.name}/", out)
            continue
        record = records.get(layer.class_name)
        rules = {**_COMMON, **(record.fields if record is not None else {})}
        for key, check in rules.items():
            if key not in layer.config:
                continue
            value = layer.config[key]
            if not check(value) and check(as_int(value)):
                layer.config[key] = value = as_int(value)
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

