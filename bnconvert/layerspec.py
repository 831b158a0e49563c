"""What bnconvert knows about Keras layer classes: their weights by meaning, and their shapes.

Keras lists a layer's weights as trainable ones first, then non-trainable ones; the lists here
keep that order, which is also the order of ``vars/0..N`` in a ``.keras`` zip and of
``weight_names`` in an ``.h5``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = [
    "CONV_CLASSES",
    "TRANSPOSE_CLASSES",
    "DEPTHWISE_CLASSES",
    "SEPARABLE_CLASSES",
    "weight_spec",
    "meaning_of",
    "snake_case",
    "data_format",
    "spatial_rank",
]

CONV_CLASSES = frozenset({"Conv1D", "Conv2D", "Conv3D"})
TRANSPOSE_CLASSES = frozenset({"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"})
DEPTHWISE_CLASSES = frozenset({"DepthwiseConv1D", "DepthwiseConv2D"})
SEPARABLE_CLASSES = frozenset({"SeparableConv1D", "SeparableConv2D"})

_NO_WEIGHTS = frozenset(
    {
        "InputLayer", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "ThresholdedReLU",
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
        "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Flatten", "Reshape", "Permute",
        "RepeatVector", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
        "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
        "GlobalMaxPooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
        "GlobalAveragePooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
        "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Add",
        "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot", "Rescaling",
        "Lambda", "Masking", "Identity",
    }
)


def weight_spec(class_name: str, config: dict[str, Any]) -> list[tuple[str, bool]] | None:
    """The weights of a layer as ``(meaning, trainable)`` in Keras order, or None if unknown."""
    use_bias = bool(config.get("use_bias", True))
    bias = [("bias", True)] if use_bias else []
    if class_name in _NO_WEIGHTS:
        return []
    if class_name == "Dense" or class_name in CONV_CLASSES or class_name in TRANSPOSE_CLASSES:
        return [("kernel", True), *bias]
    if class_name in DEPTHWISE_CLASSES:
        return [("depthwise_kernel", True), *bias]
    if class_name in SEPARABLE_CLASSES:
        return [("depthwise_kernel", True), ("pointwise_kernel", True), *bias]
    if class_name == "BatchNormalization":
        spec = []
        if config.get("scale", True):
            spec.append(("gamma", True))
        if config.get("center", True):
            spec.append(("beta", True))
        spec += [("moving_mean", False), ("moving_variance", False)]
        if config.get("renorm"):
            spec += [("moving_stddev", False), ("renorm_mean", False), ("renorm_stddev", False)]
        return spec
    if class_name == "LayerNormalization":
        spec = []
        if config.get("scale", True):
            spec.append(("gamma", True))
        if config.get("center", True) and not config.get("rms_scaling"):  # Keras 3: no beta with rms_scaling
            spec.append(("beta", True))
        return spec
    if class_name == "PReLU":
        return [("alpha", True)]
    if class_name == "Normalization":  # mean/variance given in the config: no weights
        if config.get("mean") is not None and config.get("variance") is not None:
            return []
        return [("mean", False), ("variance", False), ("count", False)]
    if class_name == "Embedding":
        return [("embeddings", True)]
    return None


# Names of weights as files spell them (Keras 1 suffixes included), longest first.
_ALIASES = {
    "depthwise_kernel": "depthwise_kernel",
    "pointwise_kernel": "pointwise_kernel",
    "moving_variance": "moving_variance",
    "moving_mean": "moving_mean",
    "moving_stddev": "moving_stddev",
    "renorm_mean": "renorm_mean",
    "renorm_stddev": "renorm_stddev",
    "running_mean": "moving_mean",
    "running_std": "running_std",
    "embeddings": "embeddings",
    "kernel": "kernel",
    "bias": "bias",
    "gamma": "gamma",
    "beta": "beta",
    "alpha": "alpha",
    "W": "kernel",
    "b": "bias",
}
_ALIAS_RE = re.compile(r"(?:^|[_/])(" + "|".join(sorted(_ALIASES, key=len, reverse=True)) + r")$")


def meaning_of(weight_name: str) -> str | None:
    """Map a stored weight name (``bn_1/gamma:0``, ``conv1_W``, ``vars/0``) to its meaning, if clear."""
    name = weight_name.split(":")[0]
    match = _ALIAS_RE.search(name)
    return _ALIASES[match.group(1)] if match else None


@functools.lru_cache(maxsize=1024)  # once per class, not once per layer (three regex passes)
def snake_case(name: str) -> str:
    """Keras' ``to_snake_case``: the name a ``.keras`` zip gives a layer's weight group."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def data_format(config: dict[str, Any]) -> str:
    """``channels_last`` or ``channels_first`` for a layer config (missing means channels_last)."""
    return "channels_first" if config.get("data_format") == "channels_first" else "channels_last"


def spatial_rank(class_name: str) -> int | None:
    """1, 2 or 3 for a spatial layer named ``...1D/2D/3D...``, else None."""
    match = re.search(r"([123])D", class_name)
    return int(match.group(1)) if match else None
