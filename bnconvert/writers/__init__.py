"""Keras files out, written without TensorFlow, in the input's own format.

The written config is the input's config, edited (``config_edit``); the weights are written the
way that format stores them (``h5`` for legacy HDF5 files, ``keras_zip`` for ``.keras``
archives). A Keras 1 input becomes a Keras 2 ``.h5`` (``keras1_config``), which tf-keras and
Keras 3 load. :func:`stamp_keras` (``stamp``) writes the provenance into a written file in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import OutputError, UnsupportedLayerError
from ..model import Model
from ..readers.rnn_layouts import CUDNN_CLASSES
from .config_edit import cudnn_as_native, edit_config, keras3_compatible
from .h5 import write_h5
from .keras1_config import keras2_config_from_keras1
from .keras_zip import write_zip
from .order import in_keras_order
from .stamp import stamp_keras

__all__ = ["write_model", "output_format", "describe_format", "stamp_keras"]

_DESCRIPTIONS = {
    "keras2-h5": "Keras 2 / tf.keras HDF5 (.h5): loads with tf-keras and Keras 3",
    "keras3-h5": "Keras 3 legacy HDF5 (.h5): loads with Keras 3",
    "keras3-zip": "Keras 3 .keras archive: loads with Keras 3",
    "tfkeras-zip": "tf.keras .keras archive: loads with tf-keras",
}


def output_format(original: Model) -> str:
    """The format a folded copy of ``original`` is written in (its own; Keras 1 becomes Keras 2)."""
    if original.source is None:
        raise OutputError("the model does not say which file it came from")
    fmt = original.source.format
    if fmt.startswith(("keras1", "keras2")):
        return "keras2-h5"
    if fmt.startswith("keras3") and not fmt.endswith("zip"):
        return "keras3-h5"
    return fmt


def describe_format(fmt: str, original: Model | None = None) -> str:
    """One line saying what was written and what loads it."""
    text = _DESCRIPTIONS.get(fmt, fmt)
    if original is not None and original.source is not None:
        src = original.source
        if src.generation == 1:
            text += "; converted from Keras 1 (th layers as channels_first, kernels in the modern layout)"
        elif src.kernels_flipped:
            text += "; Theano kernels flipped for the TensorFlow backend"
        written = [layer.source_class for _, layer, _ in original.walk()]
        written += [layer.config["layer"].get("source_class") for _, layer, _ in original.walk()
                    if isinstance(layer.config.get("layer"), dict)]  # a wrapped CuDNNLSTM
        cudnn = sorted({name for name in written if name in CUDNN_CLASSES})
        if cudnn:
            text += (f"; {'/'.join(cudnn)} written as {'/'.join(CUDNN_CLASSES[c] for c in cudnn)} with the functions "
                     "cuDNN computes, weights kept in the cuDNN layout (Keras converts them on loading)")
        if fmt == "keras2-h5" and Path(src.path).suffix == ".keras":
            text += "; HDF5 under a .keras name as the input was: Keras 3 needs it renamed to .h5"
    return text


def write_model(folded: Model, path: str | os.PathLike[str], *, original: Model) -> str:
    """Write ``folded`` (the result of folding ``original``) to ``path``; returns the format written.

    ``path`` is written directly: use :func:`bnconvert.io.atomic_output` around this for an atomic write.
    """
    src = original.source
    if src is None or src.config is None or not original.has_graph:
        raise OutputError("no architecture: a weights-only file can only be written with its architecture (--config)")
    fmt = output_format(original)
    try:
        _write(folded, Path(path), original=original, config=src.config, fmt=fmt)
    except (OutputError, UnsupportedLayerError) as exc:
        raise type(exc)(f"{src.path}: {exc}") from None
    return fmt


def _write(folded: Model, out: Path, *, original: Model, config: dict[str, Any], fmt: str) -> None:
    folded = in_keras_order(folded)  # Keras loads (and names) weights in this order, see .order
    if fmt.endswith("zip"):
        write_zip(folded, out, config=edit_config(config, folded), original=original)
    else:
        keras1 = original.source is not None and original.source.generation == 1
        base = keras2_config_from_keras1(original) if keras1 else config
        edited = cudnn_as_native(edit_config(base, folded))
        if fmt == "keras2-h5":
            edited = keras3_compatible(edited)
        write_h5(folded, out, config=edited, keras1=keras1, original=original)
