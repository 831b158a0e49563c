"""Which function converts which Keras layer class: one plain dict, filled by an explicit decorator.

A handler converts one call of one layer::

    @converts("Conv1D", "Conv2D", "Conv3D")
    def conv(b: Builder, call: Call) -> list[Tensor]: ...

It reads ``call.inputs`` (asking :meth:`Builder.view` for the layout it needs), appends nodes to
``b`` and returns one :class:`Tensor` per output. A handler that meets a configuration it cannot
export raises :class:`~bnconvert.errors.UnsupportedLayerError` with the reason.

The handler modules are listed once, in :mod:`bnconvert.onnx.layers`; :func:`handlers` imports
that package before answering, so nothing depends on who imported what first.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UnsupportedLayerError
from ..model import Layer
from .builder import Builder, Call, Tensor

__all__ = ["Handler", "HANDLERS", "converts", "handlers", "handler_for", "supported_classes", "refuse"]

Handler = Callable[[Builder, Call], list[Tensor]]

#: Keras class name -> handler. Filled by :func:`converts` when :mod:`bnconvert.onnx.layers` loads.
HANDLERS: dict[str, Handler] = {}


def converts(*class_names: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``class_names``."""

    def register(func: Handler) -> Handler:
        for name in class_names:
            if name in HANDLERS:
                raise RuntimeError(f"two ONNX handlers for Keras class {name!r}")
            HANDLERS[name] = func
        return func

    return register


def handlers() -> dict[str, Handler]:
    """The registry, with every handler module loaded."""
    from . import layers  # noqa: F401 - the explicit list of handler modules

    return HANDLERS


def handler_for(layer: Layer) -> Handler:
    """The handler of ``layer``'s class; UnsupportedLayerError naming the layer otherwise."""
    table = handlers()
    try:
        return table[layer.class_name]
    except KeyError:
        raise UnsupportedLayerError(
            f"layer {layer.label} cannot be exported to ONNX: no handler for class {layer.class_name!r}"
        ) from None


def supported_classes() -> list[str]:
    """Every Keras class name the ONNX export handles, sorted."""
    return sorted(handlers())


def refuse(call: Call, reason: str) -> UnsupportedLayerError:
    """The error a handler raises for a configuration it cannot export: ``'name' (Class: reason)``."""
    return UnsupportedLayerError(f"'{call.name}' ({call.layer.source_class}: {reason})")
