"""The layer catalog: one record per Keras class, with its inference semantics in float64 numpy.

Layout, one module per family (mirroring :mod:`bnconvert.onnx.layers`): ``activations``,
``attention`` (MultiHeadAttention, GroupQueryAttention, EinsumDense), ``conv``, ``dense`` (and Embedding),
``legacy_layers`` (LocallyConnected, Keras 1 only classes), ``merge``, ``misc`` (identities and scaling, Lambda,
Masking), ``normalization``, ``operations`` and ``array_ops`` (Keras 3 operation layers:
``keras.ops.mean``, ``x + 3.0``, ``x[..., 0]``), ``pooling``, ``preprocessing`` (resizing, crops, augmentations,
refused string layers), ``audio`` (STFT and mel spectrograms), ``categorical`` (Discretization,
CategoryEncoding), ``recurrent`` (SimpleRNN, LSTM, GRU, RNN cells),
``reshape``, ``scoring`` (Attention, AdditiveAttention, Dot, ReversibleEmbedding,
RandomFourierFeatures), ``spatial`` (padding, cropping, upsampling), ``tf_ops`` (tf.keras TFOpLambda and
SlicingOpLambda: ``tf.math.reduce_mean``, ``x + y``, ``x[:, 1:3]``), ``wrappers`` (Bidirectional,
TimeDistributed), ``conv_lstm``. Beside its ``call``, a record holds
its output-shape rule and its weights by meaning, both functions of the config and the input
shapes (:mod:`.facts`), the checks its config fields must pass (:mod:`.checks`) and, for a
convolution, its kernel layout (:class:`.facts.KernelLayout`: spatial rank, regular, transposed,
depthwise or separable); a class bnconvert reads but cannot run has ``call`` None
(:func:`~.record.declares`). Each declares its
classes with :func:`~.record.defines`; :data:`CATALOG` is keyed by the same class names as the
ONNX handler registry, and :mod:`.families` is the one list of family modules.

Conventions every record follows, written once here:

- **Float64 everywhere.** Inputs and weights are read as float64 and every function computes
  and returns float64: the reference is exact to about 1e-15, so what a check measures is the
  float32 rounding of the model under test, never the reference's.
- **Keras' layout, as Keras computes it.** Tensors are batch-first, in the layout the Keras
  model itself holds them: ``channels_last`` ``(N, *spatial, C)`` by default, ``channels_first``
  ``(N, C, *spatial)`` for a layer whose config says so. A record that computes channels_last
  internally (convolutions, pooling) moves the channel axis there and back; a layer's ``axis``
  settings (BatchNormalization, Concatenate, Softmax ...) index the tensor as Keras holds it.
  Flatten of a channels_first input flattens it channels_last, as Keras does.
- **Kernel layouts (Keras', whatever the data format):** Dense ``(in, out)``; Conv1D/2D/3D
  ``(*k, C_in/groups, filters)``; Conv*Transpose ``(*k, filters, C_in)``; DepthwiseConv
  ``(*k, C, depth_multiplier)``, output channel ``c*dm + m``; SeparableConv depthwise
  ``(*k, C, dm)`` then pointwise ``(*1, C*dm, filters)``.
- **Convolution and pooling arithmetic is TensorFlow's**, which every Keras uses: cross-correlation,
  ``same`` padding ``max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0)`` with the odd pixel after,
  ``causal`` padding ``(k-1)*d`` before; same-padded average pooling divides by the real pixels
  of each window; transposed convolutions are the gradient of the convolution whose input has
  Keras' output length (``output_padding`` included).
- **Keras 1 semantics arrive upgraded.** The readers turn Keras 1 files into the Keras 2/3
  vocabulary before the catalog sees them: class and argument names (``Convolution2D`` ->
  ``Conv2D``, ``border_mode`` -> ``padding``), ``th`` kernels into Keras' layout, Theano kernels
  flipped (true convolution -> cross-correlation), ``running_std`` into ``moving_variance``; a
  Keras 1 BN mode stays in ``config["keras1_mode"]``. Functions that changed between
  generations (``hard_sigmoid``, bilinear upsampling) read the generation from the
  :class:`CallContext`.
- **Inference only**: dropouts and noise are the identity; BatchNormalization uses its moving
  statistics (except Keras 1 mode 2, which used the batch's, at inference too).
- **Masks** (Keras' ``supports_masking``/``compute_mask``, per record: ``masking`` and ``mask``,
  see :data:`~.record.MASKING`): a mask is a boolean array, ``(N, T)`` for a sequence, True
  where a step is kept; it travels beside the tensor, never inside it. ``keep`` classes pass
  their first input's mask on and ignore it (Dense, dropouts, activations, normalizations);
  ``own`` classes read the masks from :meth:`CallContext.mask` and give their outputs' masks
  (Embedding ``mask_zero``, Masking, recurrent layers and their wrappers, merges, masked
  GlobalAveragePooling1D and Softmax); every other class drops them (Keras 3 drops them with a
  warning, tf.keras refuses to build such a model). Where Keras generations compute a mask
  differently (merges: Keras 3 OR, tf.keras AND), the record follows the file's generation and
  says so in its ``notes``/docstring. A class whose values would depend on a mask it does not
  implement refuses a masked input (UnsupportedLayerError) rather than ignore it.

Each record's ``call(layer, inputs, context) -> outputs`` is written from Keras' own source
and documentation (Keras 3 ``keras/src/layers``, ``keras/src/ops``; tf.keras where it differs),
never from bnconvert's ONNX handlers: that is what makes the float64 reference an independent
check of the export. :mod:`bnconvert.check.reference` runs a whole model with it.
"""

from __future__ import annotations

from .facts import KernelLayout
from .record import CATALOG, MASKING, CallContext, LayerRecord, MaskRule, Semantics, catalog, defines, output_masks, record_for
from .roles import BARRIER, FoldRole

__all__ = ["CATALOG", "MASKING", "CallContext", "LayerRecord", "MaskRule", "Semantics", "output_masks", "catalog", "defines", "record_for", "classes",
           "FoldRole", "fold_role", "identity_classes", "KernelLayout", "kernel_layout"]


def classes() -> list[str]:
    """Every Keras class name the catalog describes, sorted."""
    return sorted(catalog())


def fold_role(class_name: str) -> FoldRole:
    """How a BN's affine meets ``class_name`` when folding (a class the catalog lacks is a barrier)."""
    record = catalog().get(class_name)
    return record.fold if record is not None else BARRIER


def kernel_layout(class_name: str) -> KernelLayout | None:
    """The spatial kernel layout of ``class_name``; None for a class without one (or unknown)."""
    record = catalog().get(class_name)
    return record.kernel if record is not None else None


def identity_classes() -> tuple[str, ...]:
    """The classes that are the identity at inference (InputLayer included), sorted."""
    return tuple(sorted(name for name, record in catalog().items() if record.identity))
