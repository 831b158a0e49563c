"""A model file read by offset, never mapped: what the main process reads weights with.

The isolated child (:mod:`.isolated`) tells where each contiguous weight lies; the main process
reads it here with ``os.preadv`` on an ordinary descriptor. A memory map would turn a file
truncated under it into SIGBUS; a short read is a clear FormatError instead. With lazy loading
a large weight is a :class:`DeferredArray`, read on first use.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import FormatError

__all__ = ["DeferredArray", "ModelFile"]


class ModelFile:
    """A model file open for reading by offset: one descriptor, shared by the isolated child (which
    inherits it, so both see the same file even if the name is replaced) and the weights read
    later. Closed with :meth:`close` or when the last :class:`DeferredArray` using it is gone."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise FormatError(f"cannot be read ({exc.strerror})") from None
        self._close = weakref.finalize(self, os.close, self.fd)
        self.size = os.fstat(self.fd).st_size

    def close(self) -> None:
        self._close()

    def read(self, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """The array of ``dtype`` and ``shape`` stored at ``offset``; FormatError if the file no
        longer holds it (it was truncated after the child located it)."""
        out = np.empty(shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # ndarray is a buffer; its stubs say so from 3.12
        done = 0
        while done < len(view):
            try:
                got = os.preadv(self.fd, [view[done:]], offset + done)
            except InterruptedError:  # pragma: no cover - retried by Python itself since 3.5
                continue
            except OSError as exc:
                raise FormatError(f"cannot be read ({exc.strerror})") from None
            if got == 0:
                raise FormatError(f"the file was truncated while being read (it now ends before byte "
                                  f"{offset + len(view):,})")
            done += got
        return out


class DeferredArray:
    """A weight of a lazily read model (``load(..., lazy=True)``): its ``shape``, ``dtype``,
    ``ndim``, ``size`` and ``nbytes`` are known, its values are read from the file on first use
    (``np.asarray``, indexing, arithmetic, any other attribute) and kept. Reading checks that the
    file still holds them: a file truncated in the meantime is a FormatError naming it."""

    __array_priority__ = 10.0

    def __init__(self, source: ModelFile, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self._source: ModelFile | None = source
        self._offset = offset
        self.dtype = dtype
        self.shape = shape
        self.ndim = len(shape)
        self.size = math.prod(shape)
        self.nbytes = self.size * dtype.itemsize
        self._value: np.ndarray | None = None
        self._lock = threading.Lock()  # export's reference thread may use the weights meanwhile

    @property
    def loaded(self) -> bool:
        """Have the values been read?"""
        return self._value is not None

    def value(self) -> np.ndarray:
        """The values (read now if not yet), read-only."""
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    assert self._source is not None
                    try:
                        read = self._source.read(self._offset, self.dtype, self.shape)
                    except FormatError as exc:
                        raise FormatError(f"{self._source.path}: {exc}") from None
                    read.flags.writeable = False
                    self._value, self._source = read, None
                value = self._value
        return value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        value = self.value()
        if dtype is not None and np.dtype(dtype) != value.dtype:
            return value.astype(dtype)
        return value.copy() if copy else value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.value(), name)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self) -> Any:
        return iter(self.value())

    def __getitem__(self, key: Any) -> Any:
        return self.value()[key]

    def __repr__(self) -> str:
        state = "read" if self.loaded else "not read yet"
        return f"DeferredArray(shape={self.shape}, dtype={self.dtype}, {state})"


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: DeferredArray, *args: Any) -> Any:
        return getattr(self.value(), name)(*args)

    method.__name__ = name
    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__floordiv__", "__rfloordiv__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__", "__mod__",
              "__neg__", "__pos__", "__abs__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
              "__and__", "__rand__", "__or__", "__ror__", "__invert__", "__bool__", "__float__", "__int__",
              "__index__", "__contains__"):
    setattr(DeferredArray, _name, _delegate(_name))
DeferredArray.__hash__ = None  # type: ignore[assignment]  # like an ndarray
