"""What in a model config makes Keras run or import code, however deeply it is nested.

bnconvert itself never runs such code: a Lambda's bytecode stays an opaque string in the config,
a custom class is only a name. But the reference runners (the fold check and ``verify``) hand a
file to Keras, and Keras *does* run it: tf-keras unmarshals a legacy ``.h5`` Lambda's bytecode
with no ``safe_mode`` at all, and both Kerases import the module a ``"module"`` entry names. So
before a config reaches Keras it is walked completely here (not just the top-level layers: a
Lambda can hide inside ``TimeDistributed``, ``Bidirectional``, a nested model, a Keras 1 ``Merge``
or an RNN cell wrapper), and a config with code, or naming anything outside Keras, never gets there:

- :func:`code_in_config`: Lambda layers and every ``*_type: "lambda"`` (marshalled bytecode),
  layers that load code from elsewhere (a SavedModel, a torch module, a JAX function), tf.keras
  ``TFOpLambda`` layers calling a TensorFlow function that is not a tensor operation
  (``io.write_file``, ``raw_ops.*``, ``compat.v1.py_func``...), and configs that make Keras read
  another file or URL while loading (a lookup layer's ``vocabulary`` path, ``vocabulary_file``).
- :func:`foreign_references`: every ``"module"`` not in :data:`KERAS_MODULES` (the full module
  paths Keras 3 and tf-keras define their layers and config objects in: a prefix match would let
  ``keras_hub.anything`` or ``tensorflow.anything`` through, and Keras imports it), and every
  ``class_name`` / ``registered_name`` of the form ``package>Name`` (an object registered by
  other code) that is not one of tf-keras' own (:data:`KERAS_REGISTERED_NAMES`).

:func:`scan_config` does both in one walk (what the Keras runner uses).
"""

from __future__ import annotations

from typing import Any

from ..model import Model

__all__ = [
    "code_in_config", "code_in_model", "foreign_references", "scan_config", "KERAS_MODULES", "KERAS_REGISTERED_NAMES",
    "TF_OP_NAMESPACES", "TF_OP_FUNCTIONS",
]

# -- the allow-lists ------------------------------------------------------------------------------
# Written out, not computed from an import of Keras (bnconvert reads files without TensorFlow, and
# a list computed at run time could not be reviewed). Source: the objects keras 3.15 and tf-keras
# 2.21 register (keras.src.api_export's public names; the modules under keras.src / tf_keras.src
# defining subclasses of Operation/Layer, Initializer, Regularizer, Constraint, DTypePolicy/Policy,
# Quantizer, SeedGenerator, Loss, Metric, Optimizer, LearningRateSchedule), checked against the
# "module" values of the fixtures and of two corpora of real files. Left out on purpose: modules
# of layers that load code (Lambda, TFSMLayer, TorchModuleWrapper, JaxLayer/FlaxLayer, tf-keras'
# SavedModel ReloadedLayer, feature columns, PyMetric), test utilities, the backend, package
# ``__init__`` modules (they re-export helper functions), and every other package.

#: public namespaces Keras writes as "module" for exported objects ("keras.layers" + "Dense"); not
#: ``keras.models``: it exports only functions (load_model, model_from_json...), the classes are
#: written as ``keras`` + ``Model``/``Sequential``
_PUBLIC = (
    "keras", "keras.activations", "keras.constraints", "keras.dtype_policies", "keras.initializers",
    "keras.layers", "keras.layers.experimental", "keras.layers.experimental.preprocessing",
    "keras.losses", "keras.metrics", "keras.mixed_precision", "keras.optimizers",
    "keras.optimizers.experimental", "keras.optimizers.legacy", "keras.optimizers.schedules",
    "keras.quantizers", "keras.random", "keras.regularizers",
)

#: modules under ``keras.src`` (Keras 3) of non-exported or internal classes ("keras.src.models.functional")
_KERAS3_SRC = (
    "activations.activations", "applications.convnext", "applications.inception_resnet_v2",
    "constraints.constraints", "dtype_policies.dtype_policy", "dtype_policies.dtype_policy_map",
    "initializers.constant_initializers", "initializers.initializer", "initializers.random_initializers",
    "layers.activations.activation", "layers.activations.elu", "layers.activations.leaky_relu",
    "layers.activations.prelu", "layers.activations.relu", "layers.activations.softmax",
    "layers.attention.additive_attention", "layers.attention.attention",
    "layers.attention.grouped_query_attention", "layers.attention.multi_head_attention",
    "layers.convolutional.base_conv", "layers.convolutional.base_conv_transpose",
    "layers.convolutional.base_depthwise_conv", "layers.convolutional.base_separable_conv",
    "layers.convolutional.conv1d", "layers.convolutional.conv1d_transpose", "layers.convolutional.conv2d",
    "layers.convolutional.conv2d_transpose", "layers.convolutional.conv3d",
    "layers.convolutional.conv3d_transpose", "layers.convolutional.depthwise_conv1d",
    "layers.convolutional.depthwise_conv2d", "layers.convolutional.separable_conv1d",
    "layers.convolutional.separable_conv2d", "layers.core.dense", "layers.core.einsum_dense",
    "layers.core.embedding", "layers.core.identity", "layers.core.input_layer", "layers.core.masking",
    "layers.core.reversible_embedding", "layers.core.wrapper", "layers.input_spec", "layers.layer",
    "layers.merging.add", "layers.merging.average", "layers.merging.base_merge",
    "layers.merging.concatenate", "layers.merging.dot", "layers.merging.maximum",
    "layers.merging.minimum", "layers.merging.multiply", "layers.merging.subtract",
    "layers.normalization.batch_normalization", "layers.normalization.group_normalization",
    "layers.normalization.layer_normalization", "layers.normalization.rms_normalization",
    "layers.normalization.spectral_normalization", "layers.normalization.unit_normalization",
    "layers.pooling.adaptive_average_pooling1d", "layers.pooling.adaptive_average_pooling2d",
    "layers.pooling.adaptive_average_pooling3d", "layers.pooling.adaptive_max_pooling1d",
    "layers.pooling.adaptive_max_pooling2d", "layers.pooling.adaptive_max_pooling3d",
    "layers.pooling.average_pooling1d", "layers.pooling.average_pooling2d",
    "layers.pooling.average_pooling3d", "layers.pooling.base_adaptive_pooling",
    "layers.pooling.base_global_pooling", "layers.pooling.base_pooling",
    "layers.pooling.global_average_pooling1d", "layers.pooling.global_average_pooling2d",
    "layers.pooling.global_average_pooling3d", "layers.pooling.global_max_pooling1d",
    "layers.pooling.global_max_pooling2d", "layers.pooling.global_max_pooling3d",
    "layers.pooling.max_pooling1d", "layers.pooling.max_pooling2d", "layers.pooling.max_pooling3d",
    "layers.preprocessing.category_encoding", "layers.preprocessing.data_layer",
    "layers.preprocessing.discretization", "layers.preprocessing.hashed_crossing",
    "layers.preprocessing.hashing", "layers.preprocessing.image_preprocessing.aug_mix",
    "layers.preprocessing.image_preprocessing.auto_contrast",
    "layers.preprocessing.image_preprocessing.base_image_preprocessing_layer",
    "layers.preprocessing.image_preprocessing.center_crop",
    "layers.preprocessing.image_preprocessing.clahe", "layers.preprocessing.image_preprocessing.cut_mix",
    "layers.preprocessing.image_preprocessing.equalization",
    "layers.preprocessing.image_preprocessing.max_num_bounding_box",
    "layers.preprocessing.image_preprocessing.mix_up",
    "layers.preprocessing.image_preprocessing.rand_augment",
    "layers.preprocessing.image_preprocessing.random_brightness",
    "layers.preprocessing.image_preprocessing.random_color_degeneration",
    "layers.preprocessing.image_preprocessing.random_color_jitter",
    "layers.preprocessing.image_preprocessing.random_contrast",
    "layers.preprocessing.image_preprocessing.random_crop",
    "layers.preprocessing.image_preprocessing.random_elastic_transform",
    "layers.preprocessing.image_preprocessing.random_erasing",
    "layers.preprocessing.image_preprocessing.random_flip",
    "layers.preprocessing.image_preprocessing.random_gaussian_blur",
    "layers.preprocessing.image_preprocessing.random_grayscale",
    "layers.preprocessing.image_preprocessing.random_hue",
    "layers.preprocessing.image_preprocessing.random_invert",
    "layers.preprocessing.image_preprocessing.random_perspective",
    "layers.preprocessing.image_preprocessing.random_posterization",
    "layers.preprocessing.image_preprocessing.random_rotation",
    "layers.preprocessing.image_preprocessing.random_saturation",
    "layers.preprocessing.image_preprocessing.random_sharpness",
    "layers.preprocessing.image_preprocessing.random_shear",
    "layers.preprocessing.image_preprocessing.random_translation",
    "layers.preprocessing.image_preprocessing.random_zoom",
    "layers.preprocessing.image_preprocessing.resizing",
    "layers.preprocessing.image_preprocessing.solarization", "layers.preprocessing.index_lookup",
    "layers.preprocessing.integer_lookup", "layers.preprocessing.mel_spectrogram",
    "layers.preprocessing.normalization", "layers.preprocessing.pipeline",
    "layers.preprocessing.rescaling", "layers.preprocessing.stft_spectrogram",
    "layers.preprocessing.string_lookup", "layers.preprocessing.text_vectorization",
    "layers.regularization.activity_regularization", "layers.regularization.alpha_dropout",
    "layers.regularization.dropout", "layers.regularization.gaussian_dropout",
    "layers.regularization.gaussian_noise", "layers.regularization.spatial_dropout",
    "layers.reshaping.cropping1d", "layers.reshaping.cropping2d", "layers.reshaping.cropping3d",
    "layers.reshaping.flatten", "layers.reshaping.permute", "layers.reshaping.repeat_vector",
    "layers.reshaping.reshape", "layers.reshaping.up_sampling1d", "layers.reshaping.up_sampling2d",
    "layers.reshaping.up_sampling3d", "layers.reshaping.zero_padding1d",
    "layers.reshaping.zero_padding2d", "layers.reshaping.zero_padding3d", "layers.rnn.bidirectional",
    "layers.rnn.conv_lstm", "layers.rnn.conv_lstm1d", "layers.rnn.conv_lstm2d", "layers.rnn.conv_lstm3d",
    "layers.rnn.gru", "layers.rnn.lstm", "layers.rnn.rnn", "layers.rnn.simple_rnn",
    "layers.rnn.stacked_rnn_cells", "layers.rnn.time_distributed", "legacy.layers", "losses.loss",
    "losses.losses", "metrics.accuracy_metrics", "metrics.confusion_metrics",
    "metrics.correlation_metrics", "metrics.f_score_metrics", "metrics.hinge_metrics",
    "metrics.iou_metrics", "metrics.metric", "metrics.probabilistic_metrics", "metrics.reduction_metrics",
    "metrics.regression_metrics", "models.functional", "models.model", "models.sequential", "ops.core",
    "ops.einops", "ops.image", "ops.linalg", "ops.math", "ops.nn", "ops.numpy", "ops.operation",
    "optimizers.adadelta", "optimizers.adafactor", "optimizers.adagrad", "optimizers.adam",
    "optimizers.adamax", "optimizers.adamw", "optimizers.base_optimizer", "optimizers.ftrl",
    "optimizers.lamb", "optimizers.lion", "optimizers.loss_scale_optimizer", "optimizers.multi_optimizer",
    "optimizers.muon", "optimizers.nadam", "optimizers.optimizer", "optimizers.rmsprop",
    "optimizers.schedule_free_adamw", "optimizers.schedules.learning_rate_schedule", "optimizers.sgd",
    "quantizers.awq_config", "quantizers.gptq_config", "quantizers.quantization_config",
    "quantizers.quantizers", "random.seed_generator", "regularizers.regularizers",
)

#: modules under ``tf_keras.src`` (tf-keras 2.16+); Keras 2.13-2.15 wrote the same tree as
#: ``keras.src`` (tf-keras maps it back), for which only the classes Keras 2 did not export count
_TF_KERAS_SRC = (
    "applications.convnext", "applications.inception_resnet_v2", "constraints", "engine.base_layer",
    "engine.base_preprocessing_layer", "engine.functional", "engine.input_layer", "engine.sequential",
    "engine.training", "initializers.initializers", "layers.activation.elu",
    "layers.activation.leaky_relu", "layers.activation.prelu", "layers.activation.relu",
    "layers.activation.softmax", "layers.activation.thresholded_relu",
    "layers.attention.additive_attention", "layers.attention.attention",
    "layers.attention.base_dense_attention", "layers.attention.multi_head_attention",
    "layers.convolutional.base_conv", "layers.convolutional.base_depthwise_conv",
    "layers.convolutional.base_separable_conv", "layers.convolutional.conv1d",
    "layers.convolutional.conv1d_transpose", "layers.convolutional.conv2d",
    "layers.convolutional.conv2d_transpose", "layers.convolutional.conv3d",
    "layers.convolutional.conv3d_transpose", "layers.convolutional.depthwise_conv1d",
    "layers.convolutional.depthwise_conv2d", "layers.convolutional.separable_conv1d",
    "layers.convolutional.separable_conv2d", "layers.core.activation", "layers.core.dense",
    "layers.core.einsum_dense", "layers.core.embedding", "layers.core.identity", "layers.core.masking",
    "layers.core.tf_op_layer", "layers.kernelized", "layers.locally_connected.locally_connected1d",
    "layers.locally_connected.locally_connected2d", "layers.merging.add", "layers.merging.average",
    "layers.merging.base_merge", "layers.merging.concatenate", "layers.merging.dot",
    "layers.merging.maximum", "layers.merging.minimum", "layers.merging.multiply",
    "layers.merging.subtract", "layers.normalization.batch_normalization",
    "layers.normalization.batch_normalization_v1", "layers.normalization.group_normalization",
    "layers.normalization.layer_normalization", "layers.normalization.spectral_normalization",
    "layers.normalization.unit_normalization", "layers.pooling.average_pooling1d",
    "layers.pooling.average_pooling2d", "layers.pooling.average_pooling3d",
    "layers.pooling.base_global_pooling1d", "layers.pooling.base_global_pooling2d",
    "layers.pooling.base_global_pooling3d", "layers.pooling.base_pooling1d",
    "layers.pooling.base_pooling2d", "layers.pooling.base_pooling3d",
    "layers.pooling.global_average_pooling1d", "layers.pooling.global_average_pooling2d",
    "layers.pooling.global_average_pooling3d", "layers.pooling.global_max_pooling1d",
    "layers.pooling.global_max_pooling2d", "layers.pooling.global_max_pooling3d",
    "layers.pooling.max_pooling1d", "layers.pooling.max_pooling2d", "layers.pooling.max_pooling3d",
    "layers.preprocessing.category_encoding", "layers.preprocessing.discretization",
    "layers.preprocessing.hashed_crossing", "layers.preprocessing.hashing",
    "layers.preprocessing.image_preprocessing", "layers.preprocessing.index_lookup",
    "layers.preprocessing.integer_lookup", "layers.preprocessing.normalization",
    "layers.preprocessing.string_lookup", "layers.preprocessing.text_vectorization",
    "layers.regularization.activity_regularization", "layers.regularization.alpha_dropout",
    "layers.regularization.dropout", "layers.regularization.gaussian_dropout",
    "layers.regularization.gaussian_noise", "layers.regularization.spatial_dropout1d",
    "layers.regularization.spatial_dropout2d", "layers.regularization.spatial_dropout3d",
    "layers.reshaping.cropping1d", "layers.reshaping.cropping2d", "layers.reshaping.cropping3d",
    "layers.reshaping.flatten", "layers.reshaping.permute", "layers.reshaping.repeat_vector",
    "layers.reshaping.reshape", "layers.reshaping.up_sampling1d", "layers.reshaping.up_sampling2d",
    "layers.reshaping.up_sampling3d", "layers.reshaping.zero_padding1d",
    "layers.reshaping.zero_padding2d", "layers.reshaping.zero_padding3d", "layers.rnn.abstract_rnn_cell",
    "layers.rnn.base_conv_lstm", "layers.rnn.base_conv_rnn", "layers.rnn.base_cudnn_rnn",
    "layers.rnn.base_rnn", "layers.rnn.base_wrapper", "layers.rnn.bidirectional",
    "layers.rnn.cell_wrappers", "layers.rnn.conv_lstm1d", "layers.rnn.conv_lstm2d",
    "layers.rnn.conv_lstm3d", "layers.rnn.cudnn_gru", "layers.rnn.cudnn_lstm", "layers.rnn.gru",
    "layers.rnn.gru_v1", "layers.rnn.lstm", "layers.rnn.lstm_v1", "layers.rnn.simple_rnn",
    "layers.rnn.stacked_rnn_cells", "layers.rnn.time_distributed", "losses", "metrics.accuracy_metrics",
    "metrics.base_metric", "metrics.confusion_metrics", "metrics.f_score_metrics",
    "metrics.hinge_metrics", "metrics.iou_metrics", "metrics.probabilistic_metrics",
    "metrics.regression_metrics", "mixed_precision.loss_scale_optimizer", "mixed_precision.policy",
    "models.sharpness_aware_minimization", "optimizers.adadelta", "optimizers.adafactor",
    "optimizers.adagrad", "optimizers.adam", "optimizers.adamax", "optimizers.adamw", "optimizers.ftrl",
    "optimizers.legacy.adadelta", "optimizers.legacy.adagrad", "optimizers.legacy.adam",
    "optimizers.legacy.adamax", "optimizers.legacy.ftrl", "optimizers.legacy.gradient_descent",
    "optimizers.legacy.nadam", "optimizers.legacy.optimizer_v2", "optimizers.legacy.rmsprop",
    "optimizers.lion", "optimizers.nadam", "optimizers.optimizer", "optimizers.rmsprop",
    "optimizers.schedules.learning_rate_schedule", "optimizers.sgd", "premade_models.linear",
    "premade_models.wide_deep", "regularizers",
)
_KERAS2_SRC = (
    "engine.functional", "engine.sequential", "engine.training", "engine.input_layer", "engine.base_layer",
    "layers.core.tf_op_layer", "applications.convnext", "applications.inception_resnet_v2",
)

#: every "module" a config may name before Keras is asked to load it
KERAS_MODULES: frozenset[str] = frozenset(
    _PUBLIC
    + tuple(f"keras.src.{m}" for m in _KERAS3_SRC)
    + tuple(f"tf_keras.src.{m}" for m in _TF_KERAS_SRC)
    + tuple(f"keras.src.{m}" for m in _KERAS2_SRC)
)

#: tf-keras' own objects registered under a package name (its global registry after import)
KERAS_REGISTERED_NAMES: frozenset[str] = frozenset({
    "Custom>Adadelta", "Custom>Adafactor", "Custom>Adagrad", "Custom>Adam", "Custom>AdamW", "Custom>Adamax",
    "Custom>CustomScaleLayer", "Custom>Ftrl", "Custom>Lion", "Custom>Nadam", "Custom>RMSprop", "Custom>SGD",
    "Custom>SharpnessAwareMinimization",
})

#: TensorFlow namespaces whose functions a tf.keras ``TFOpLambda`` may call: tensor arithmetic only
#: (no file, device, summary, lookup-table or Python-function operations)
TF_OP_NAMESPACES: frozenset[str] = frozenset({
    "__operators__", "math", "nn", "linalg", "signal", "bitwise", "image", "random", "strings", "sparse", "ragged",
})
#: top-level TensorFlow functions a ``TFOpLambda`` may call (also as ``compat.v1.<name>``)
TF_OP_FUNCTIONS: frozenset[str] = frozenset({
    "abs", "add", "add_n", "argmax", "argmin", "argsort", "boolean_mask", "broadcast_to", "cast", "ceil",
    "clip_by_norm", "clip_by_value", "concat", "constant", "convert_to_tensor", "cos", "cumsum", "divide",
    "einsum", "ensure_shape", "equal", "exp", "expand_dims", "eye", "fill", "floor", "floor_div", "floordiv", "gather",
    "gather_nd", "greater", "greater_equal", "identity", "less", "less_equal", "linspace", "logical_and",
    "logical_not", "logical_or", "matmul", "maximum", "meshgrid", "minimum", "multiply", "negative", "norm",
    "not_equal", "one_hot", "ones", "ones_like", "pad", "pow", "range", "rank", "realdiv", "reduce_all",
    "reduce_any", "reduce_logsumexp", "reduce_max", "reduce_mean", "reduce_min", "reduce_prod", "reduce_sum",
    "repeat", "reshape", "reverse", "roll", "round", "scatter_nd", "searchsorted", "shape", "sigmoid", "sign",
    "sin", "size", "slice", "sort", "split", "sqrt", "square", "squeeze", "stack", "stop_gradient",
    "strided_slice", "subtract", "tanh", "tensordot", "tile", "transpose", "truediv", "truncatediv", "unique",
    "unstack", "where", "zeros", "zeros_like",
})

# -- the walk -------------------------------------------------------------------------------------

#: layers whose config is code, or makes Keras load code from elsewhere when the layer is built
_CODE_CLASSES = frozenset({
    "Lambda", "__lambda__",  # marshalled bytecode
    "TFSMLayer", "ReloadedLayer",  # a TensorFlow SavedModel read from a path in the config
    "TorchModuleWrapper",  # a pickled torch module
    "JaxLayer", "FlaxLayer",  # JAX functions / a Flax module
})
#: tf.keras layers that call a TensorFlow function named in their config
_TF_OP_CLASSES = frozenset({"TFOpLambda", "SlicingOpLambda"})
#: lookup layers read their ``vocabulary`` from a path (or a gs:// URL) when it is a string
_VOCABULARY_CLASSES = frozenset({"StringLookup", "IntegerLookup", "TextVectorization", "IndexLookup"})
#: keys whose string value is a file Keras opens while building the object (feature columns, SavedModels)
_PATH_KEYS = frozenset({"vocabulary_file", "filepath"})


#: where a JSON object sits: None for the root, else (parent's place, key or index)
_Place = Any
#: class names that need a closer look (:func:`_code_at`)
_LOOK_CLOSER = _CODE_CLASSES | _TF_OP_CLASSES | _VOCABULARY_CLASSES


def _where(place: _Place) -> str:
    """``config.config.layers[2]`` for a place of :func:`scan_config`'s walk."""
    parts: list[str] = []
    while place is not None:
        place, key = place
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "config" + "".join(reversed(parts))


def _named(entry: dict[str, Any]) -> str:
    inner = entry.get("config")
    name = entry.get("name") or (inner.get("name") if isinstance(inner, dict) else None)
    return f" '{name}'" if isinstance(name, str) else ""


def _tf_op_allowed(function: Any) -> bool:
    """Whether a ``TFOpLambda`` may call ``function`` (a TensorFlow API name like ``math.add``)."""
    if not isinstance(function, str):
        return False
    name = function.removeprefix("compat.v1.")
    head, _, rest = name.partition(".")
    return head in TF_OP_NAMESPACES if rest else head in TF_OP_FUNCTIONS


def _code_at(entry: dict[str, Any], place: _Place, found: list[str]) -> None:
    """What in this one JSON object is code, or makes Keras load something, appended to ``found``."""
    cls = entry.get("class_name")
    cls = cls if isinstance(cls, str) else None
    if cls in _CODE_CLASSES:
        found.append(f"{_where(place)}: {cls}{_named(entry)}")
    elif cls in _TF_OP_CLASSES:
        inner = entry.get("config")
        function = inner.get("function") if isinstance(inner, dict) else None
        if not _tf_op_allowed(function):
            found.append(f"{_where(place)}: {cls}{_named(entry)} calls TensorFlow's {function!r}, not a tensor operation")
    elif cls in _VOCABULARY_CLASSES:
        inner = entry.get("config")
        vocabulary = inner.get("vocabulary") if isinstance(inner, dict) else None
        if isinstance(vocabulary, str):
            found.append(f"{_where(place)}: {cls}{_named(entry)} reads its vocabulary from {vocabulary!r}")
    for key, value in entry.items():  # function_type, output_shape_type, mode_type, dropout_fn_type, ...
        if value == "lambda" and isinstance(key, str) and key.endswith("_type"):
            found.append(f"{_where(place)}.{key} = {value!r} (serialised bytecode)")
        elif key in _PATH_KEYS and isinstance(value, str):
            found.append(f"{_where(place)}.{key} = {value!r} (a file read while loading)")


def scan_config(config: Any, limit: int = 10) -> tuple[list[str], list[str], list[str]]:
    """Everything in ``config`` (parsed JSON) that is code or lies outside Keras, in one walk:
    ``(code, modules, registered names)`` (see :func:`code_in_config`, :func:`foreign_references`).

    Iterative (no recursion limit) and written for speed: a config of 300,000 layers has millions
    of objects, and the closer look (and the readable path) is only taken where a cheap test hits.
    """
    code: list[str] = []
    modules: set[str] = set()
    names: set[str] = set()
    stack: list[tuple[Any, _Place]] = [(config, None)]
    pop, push = stack.pop, stack.append
    while stack:
        value, place = pop()
        if isinstance(value, dict):
            cls = value.get("class_name")
            if (cls.__class__ is str and cls in _LOOK_CLOSER) or "lambda" in value.values() or not _PATH_KEYS.isdisjoint(value):
                _code_at(value, place, code)
            module = value.get("module")
            if module is not None and (module.__class__ is not str or module not in KERAS_MODULES):
                modules.add(module if isinstance(module, str) else f"<a {type(module).__name__}>")
            registered = value.get("registered_name")
            for name in (cls, registered):
                if name.__class__ is str and ">" in name and name not in KERAS_REGISTERED_NAMES:
                    names.add(name)
            if len(code) >= limit and len(modules) + len(names) >= limit:
                break
            for key, item in value.items():
                if isinstance(item, (dict, list)):
                    push((item, (place, key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, (dict, list)):
                    push((item, (place, index)))
    return code[:limit], sorted(modules)[:limit], sorted(names)[:limit]


def code_in_config(config: Any, limit: int = 10) -> list[str]:
    """Where ``config`` (parsed JSON) holds code or makes Keras load it, as readable paths; empty when nowhere."""
    return scan_config(config, limit)[0]


def foreign_references(config: Any, limit: int = 10) -> tuple[list[str], list[str]]:
    """What ``config`` names outside Keras: ``(modules, registered names)``, each sorted.

    A ``"module"`` is foreign unless it is one of :data:`KERAS_MODULES` exactly (``None`` is
    Keras' own "no module"); a ``class_name`` or ``registered_name`` is foreign when it has the
    ``package>Name`` form of a registered object and is not one of tf-keras' own.
    """
    _, modules, names = scan_config(config, limit)
    return modules, names


def code_in_model(model: Model) -> list[str]:
    """Code anywhere in a loaded model: layers first (``layer 'lam' (Lambda)``), then every place
    in the file's raw config and in the layers' configs (a Lambda inside a wrapper)."""
    found = [f"layer '{path}' ({layer.source_class})"
             for path, layer, _ in model.walk() if layer.class_name in _CODE_CLASSES]
    for path, layer, _ in model.walk():
        found += [f"layer '{path}': {w}" for w in code_in_config(layer.config)]
    if model.source is not None and model.source.config is not None:
        found += code_in_config(model.source.config)
    return list(dict.fromkeys(found))
