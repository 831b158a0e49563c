"""How Keras 1 spelled a class's arguments: the facts :mod:`bnconvert.readers.keras1` translates.

A record's ``aliases`` are the other Keras 1 names of its class (``Convolution2D`` for Conv2D);
``keras1`` says Keras 1 also wrote it under its own name (Dense, Dropout ...). Either way, the
reader's upgrade of it is a valid Keras 2 config (what :mod:`bnconvert.writers.keras1_config`
may write). ``keras1_args`` lists the arguments Keras 1 spelled differently or defaulted, each as
a :class:`Keras1Arg` (``Dropout``: ``rate`` was ``p``, default 0). Conversions that are more than
a spelling (``nb_row``/``nb_col`` -> ``kernel_size``, ``dim_ordering`` -> ``data_format``, a
Deconvolution2D's ``output_shape``, Merge modes) stay in the reader, which reads every spelled
argument through :func:`keras1_value`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InternalError

__all__ = ["Keras1Arg", "REQUIRED", "keras1_value"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: the default of an argument every Keras 1 config had to give (missing: KeyError naming it)
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Keras1Arg:
    """One argument: its modern ``name``, its Keras 1 spelling, and Keras 1's default."""

    name: str
    keras1: str
    default: Any = REQUIRED


def keras1_value(config: dict[str, Any], args: tuple[Keras1Arg, ...], name: str) -> Any:
    """The value of modern argument ``name`` in a Keras 1 ``config`` (its default when absent);
    KeyError naming the Keras 1 spelling when a required one is missing."""
    for arg in args:
        if arg.name == name:
            if arg.default is REQUIRED:
                return config[arg.keras1]
            return config.get(arg.keras1, arg.default)
    raise InternalError(f"the catalog records no Keras 1 spelling of argument {name!r}")
