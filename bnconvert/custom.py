"""A user's own Keras class: one catalog record and one ONNX handler, registered by the user.

bnconvert never imports the class a file names (:mod:`bnconvert.readers.code`), so a custom layer
is a name with weights. Its author knows what it computes and says it the way bnconvert's own
families do (tf2onnx's custom op handlers, done the bnconvert way): the float64 semantics, the
output-shape rule and the weights by meaning go into the layer catalog
(:class:`~bnconvert.catalog.record.LayerRecord`), the ONNX emission into the handler registry
(:func:`~bnconvert.onnx.registry.converts`), under the class name the file records::

    import numpy as np
    import bnconvert
    from bnconvert.catalog.facts import WeightSpec, same_shape

    def scale_shift(layer, xs, ctx):                    # float64 numpy, Keras' layout
        w = layer.weights
        return [np.asarray(xs[0], np.float64) * w["scale"] + w["shift"]]

    def scale_shift_weights(config, shapes):            # Keras' order, shapes when known
        c = shapes[0][-1] if shapes else None
        return [WeightSpec("scale", (c,)), WeightSpec("shift", (c,))]

    def scale_shift_onnx(b, call):                      # onnx.helper nodes through the Builder
        perm, x = b.native(call.x)
        ...

    bnconvert.register_layer("ScaleShift", call=scale_shift, shape=same_shape,
                             weights=scale_shift_weights, onnx=scale_shift_onnx)

Registered classes are checked like built-in ones: the readers hold the file's weights to the
record's ``weights`` rule, the float64 reference (the check of every export) runs its ``call``,
and the export its handler. A built-in class is replaced only with ``override=True``. The CLI
loads registrations from a Python file the user names (``--plugin FILE.py``): that is the user's
code, not the model file's, and it runs as any Python script does.
"""

from __future__ import annotations

import os
import re
import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .catalog.checks import Fields
from .catalog.facts import ShapeRule, WeightRule, no_weights, same_shape
from .catalog.record import CATALOG, MASKING, LayerRecord, MaskRule, Semantics, catalog
from .catalog.roles import BARRIER, FoldRole
from .errors import BnconvertError

__all__ = ["PluginError", "RegistrationError", "load_plugin", "register_layer", "registered_layers", "unregister_layer"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(>[A-Za-z_][A-Za-z0-9_]*)*\Z")

#: class name -> (the record it replaced, the handler it replaced), for the classes registered here
_REGISTERED: dict[str, tuple[LayerRecord | None, Callable[..., Any] | None]] = {}


class RegistrationError(BnconvertError, ValueError):
    """A registration that would break the catalog (an unknown masking policy, a built-in class
    without ``override=True`` ...)."""


class PluginError(BnconvertError):
    """A ``--plugin`` file that cannot be run."""


def _handlers() -> dict[str, Any]:
    from .onnx.registry import handlers

    return handlers()


def register_layer(
    class_name: str,
    *,
    call: Semantics,
    shape: ShapeRule = same_shape,
    weights: WeightRule = no_weights,
    onnx: Callable[..., Any] | None = None,
    masking: str = "drop",
    mask: MaskRule | None = None,
    fields: Fields | None = None,
    fold: FoldRole = BARRIER,
    notes: str = "",
    override: bool = False,
) -> LayerRecord:
    """Register the Keras class ``class_name`` (as the file records it: ``ScaleShift``, or
    ``package>ScaleShift`` for a registered name): ``call`` its float64 semantics
    ``(layer, inputs, context) -> outputs`` (:data:`~bnconvert.catalog.record.Semantics`), ``shape``
    its output-shape rule, ``weights`` its weights by meaning in Keras' order
    (:mod:`bnconvert.catalog.facts`), ``onnx`` its handler ``(builder, call) -> [Tensor]``
    (:mod:`bnconvert.onnx.registry`; None: the float64 reference runs it, the export refuses it),
    ``masking``/``mask`` how it treats Keras masks (:data:`~bnconvert.catalog.record.MASKING`),
    ``fields`` its config checks, ``fold`` how a BatchNormalization's affine meets it (default: a
    barrier). A built-in class is replaced only with ``override=True``; registering a class
    registered before replaces that registration. Returns the record."""
    if not isinstance(class_name, str) or not _NAME.match(class_name):
        raise RegistrationError(f"register_layer: {class_name!r} is not a Keras class name")
    for what, value in (("call", call), ("shape", shape), ("weights", weights)):
        if not callable(value):
            raise RegistrationError(f"register_layer('{class_name}'): {what} is not callable")
    if onnx is not None and not callable(onnx):
        raise RegistrationError(f"register_layer('{class_name}'): onnx is not callable")
    if masking not in MASKING:
        raise RegistrationError(f"register_layer('{class_name}'): masking {masking!r} is not one of {MASKING}")
    if (masking == "own") != (mask is not None):
        raise RegistrationError(f"register_layer('{class_name}'): a mask rule goes with masking='own', and only with it")
    records, table = catalog(), _handlers()
    builtin = (class_name in records or class_name in table) and class_name not in _REGISTERED
    if builtin and not override:
        raise RegistrationError(f"register_layer: {class_name!r} is a built-in class of bnconvert; pass "
                                "override=True to replace it")
    if class_name not in _REGISTERED:
        _REGISTERED[class_name] = (records.get(class_name), table.get(class_name))
    record = LayerRecord(class_name, call, "custom", shape=shape, weights=weights, fold=fold, fields=dict(fields or {}),
                         masking=masking, mask=mask, notes=notes or "registered with bnconvert.register_layer")
    CATALOG[class_name] = record
    if onnx is not None:
        table[class_name] = onnx
    else:  # never a handler written for other semantics (a built-in's, an earlier registration's)
        table.pop(class_name, None)
    return record


def unregister_layer(class_name: str) -> None:
    """Undo :func:`register_layer` for ``class_name``: a built-in class gets its own record and
    handler back; KeyError when the class was not registered."""
    record, handler = _REGISTERED.pop(class_name)
    table = _handlers()
    if record is None:
        CATALOG.pop(class_name, None)
    else:
        CATALOG[class_name] = record
    if handler is None:
        table.pop(class_name, None)
    else:
        table[class_name] = handler


def registered_layers() -> list[str]:
    """The classes registered with :func:`register_layer`, sorted."""
    return sorted(_REGISTERED)


def load_plugin(path: str | os.PathLike[str]) -> list[str]:
    """Run the user's Python file ``path`` (its own code, never the model file's: the CLI's
    ``--plugin``), which registers classes with :func:`register_layer`; returns the classes it
    registered. An exception in the file is a :class:`PluginError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise PluginError(f"plugin {p}: no such file")
    before = set(_REGISTERED)
    try:
        runpy.run_path(str(p), run_name="bnconvert_plugin")
    except BnconvertError:
        raise
    except SystemExit as exc:
        raise PluginError(f"plugin {p}: exited ({exc.code})") from None
    except Exception as exc:  # the user's code may raise anything: it is named, not hidden
        raise PluginError(f"plugin {p}: {type(exc).__name__}: {exc}") from exc
    return sorted(set(_REGISTERED) - before)
