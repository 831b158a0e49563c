"""How to read a model file: the three choices a user can make, as one small value.

``config`` is the architecture JSON of a weights-only ``.h5``; ``running_std`` says what a Keras 1
BatchNormalization ``running_std`` holds; ``flip_kernels`` overrides the Theano kernel-flip
decision. Every command and API function that reads a file takes one :class:`LoadOptions`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["RUNNING_STD", "LoadOptions", "LoadOptionsLike"]

#: what ``running_std`` accepts (see :func:`bnconvert.readers.load`)
RUNNING_STD = ("auto", "variance", "std", "theano-1.0.7")


@dataclass(frozen=True)
class LoadOptions:
    """The reading choices for one model file (defaults: decide everything from the file)."""

    config: str | None = None
    running_std: str = "auto"
    flip_kernels: bool | None = None

    def __post_init__(self) -> None:
        if self.running_std not in RUNNING_STD:
            raise ValueError(f"running_std must be one of {', '.join(RUNNING_STD)}, not {self.running_std!r}")
        if self.config is not None:
            object.__setattr__(self, "config", os.fspath(self.config))

    @classmethod
    def of(cls, value: LoadOptionsLike) -> LoadOptions:
        """``value`` as LoadOptions: itself, the defaults for None, or a mapping of the fields."""
        if value is None:
            return cls()
        if isinstance(value, LoadOptions):
            return value
        unknown = set(value) - {"config", "running_std", "flip_kernels"}
        if unknown:
            raise TypeError(f"unknown load options: {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in value.items() if v is not None})

    def read(self, path: str | os.PathLike[str], *, lazy: bool = False) -> Model:
        """:func:`bnconvert.readers.load` of ``path`` with these options."""
        from . import load

        return load(path, config=self.config, running_std=self.running_std, flip_kernels=self.flip_kernels, lazy=lazy)

    def for_file(self, path: str | os.PathLike[str]) -> LoadOptions:
        """The options that concern ``path``, so that one set can serve two files (``verify A B``,
        a file and its folded copy): ``config`` only for a weights-only HDF5, ``flip_kernels`` not
        for a file that records the TensorFlow backend (a modern or bnconvert-written file),
        nothing for a ``.keras`` zip. ``running_std`` is read by the Keras 1 reader only."""
        from . import root_attributes, sniff

        if self == LoadOptions():
            return self
        if sniff(path) != "hdf5":
            return LoadOptions()
        if self.config is None and self.flip_kernels is None:
            return self  # running_std alone needs no peek into the file
        attrs = root_attributes(path, ("model_config", "backend"))  # with the readers' guards
        return replace(
            self,
            config=None if attrs["model_config"] is not None else self.config,
            flip_kernels=None if attrs["backend"] == "tensorflow" else self.flip_kernels,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "running_std": self.running_std, "flip_kernels": self.flip_kernels}


#: what the API accepts for load options: LoadOptions, a mapping of its fields, or None (defaults)
LoadOptionsLike: TypeAlias = "LoadOptions | Mapping[str, Any] | None"
