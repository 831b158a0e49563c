"""HDF5 Keras files: Keras 1 full and weights-only, Keras 2 / tf.keras, Keras 3 legacy ``.h5``.

Datasets are always found through the ``weight_names`` attributes, never by walking the tree
(weight names need not match group names: ``Normalize/Normalize_5/gamma:0``). Attributes over
64 KB are split by Keras into ``layer_names0``, ``layer_names1``...; :func:`attr_list` joins them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from ..errors import FormatError, InternalError
from ..layerspec import weight_parts, weight_spec
from ..model import Layer, Model, Source
from ..provenance import H5_ATTRIBUTE, MAX_PROVENANCE_CHARS, ignored_note, parse_provenance
from . import h5guard, isolated, keras1
from .fields import check_fields
from .graph import MAX_LAYERS, build_model, paused_gc
from .h5guard import (
    MAX_DATASET_BYTES,
    Budget,
    child,
    child_id,
    describe_array,
    precheck_file,
    read_attr,
)
from .isolated import Answer, DeferredArray, ModelFile
from .rnn_layouts import (
    CUDNN_CLASSES,
    CUDNN_PARTS,
    convert_stored,
    explicit_reset_after,
    from_cudnn,
    is_cudnn,
    upgrade_cudnn_config,
)
from .weights import assign, distribute

__all__ = ["MAX_CONFIG_CHARS", "MAX_JSON_DEPTH", "attr_list", "attr_text", "parse_config", "read_h5", "scan_attrs", "scan_h5"]

#: A model config longer than this (characters) is refused before parsing; real ones are < 10 MB.
MAX_CONFIG_CHARS = 64 * 1024**2
#: Nesting deeper than this is refused; real configs nest < 20 levels (a nested model adds ~6).
MAX_JSON_DEPTH = 200
#: Keras splits a long list attribute into ``name0``, ``name1``...; more chunks than this is not Keras.
_MAX_CHUNKS = 10_000


def _where(obj: h5py.HLObject) -> str:
    try:
        return f"HDF5 object '{obj.name}'" if obj.name not in (None, "/") else "HDF5 root"
    except (RuntimeError, ValueError, KeyError):
        return "HDF5 object"


class _Where:
    """:func:`_where` computed only when a message needs it (asking libhdf5 for an object's name
    costs more than reading a small attribute)."""

    def __init__(self, obj: h5py.HLObject) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return _where(self.obj)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def attr_text(obj: h5py.HLObject, name: str) -> str | None:
    """A string attribute (bytes or str in the file), or None when absent."""
    value = read_attr(obj, name, _where(obj))
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, np.bytes_):
        value = bytes(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    raise FormatError(f"{_where(obj)}: attribute '{name}' is not a string (found {type(value).__name__})")


def attr_list(obj: h5py.HLObject, name: str) -> list[str] | None:
    """A list-of-strings attribute, joining the chunks Keras writes for large ones."""
    where = _Where(obj)
    whole = read_attr(obj, name, where)  # type: ignore[arg-type]
    if whole is not None:
        chunks = [whole]
    elif f"{name}0" in obj.attrs:
        chunks, i = [], 0
        while f"{name}{i}" in obj.attrs:
            if i >= _MAX_CHUNKS:
                raise FormatError(f"{where}: attribute '{name}' is split into more than {_MAX_CHUNKS} chunks; refused")
            chunks.append(read_attr(obj, f"{name}{i}", where))  # type: ignore[arg-type]
            i += 1
    else:
        return None
    out = []
    for chunk in chunks:
        arr = np.atleast_1d(np.asarray(chunk))
        if arr.size == 0:  # Keras writes an empty float array for a layer without weights
            continue
        if arr.dtype.kind not in "SUO" or arr.ndim != 1:
            raise FormatError(f"{where}: attribute '{name}' is not a list of names (found {arr.dtype} {arr.shape})")
        for v in arr.tolist():
            if isinstance(v, bytes):
                v = v.decode("utf-8", errors="replace")
            if not isinstance(v, str):
                raise FormatError(f"{where}: attribute '{name}' holds a {type(v).__name__}, not a name")
            out.append(v)
    return out


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 1), without recursion; only containers are walked."""
    # level by level: no (item, depth) pair per container, half the time on a 300k-layer config
    depth, level = 1, [value] if isinstance(value, (dict, list)) else []
    while level:
        below: list[Any] = []
        deeper = False
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            if children:
                deeper = True
                below += [v for v in children if isinstance(v, (dict, list))]
        if deeper:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return depth
        level = below
    return depth


def parse_config(text: str, what: str) -> dict[str, Any]:
    """Parse a model config JSON, also when it was JSON-encoded twice (a string holding JSON).

    Bounded: longer than ``MAX_CONFIG_CHARS`` or nested deeper than ``MAX_JSON_DEPTH`` is refused.
    """
    if not isinstance(text, str):
        raise FormatError(f"{what} is not text")
    if len(text) > MAX_CONFIG_CHARS:
        raise FormatError(f"{what} is {len(text):,} characters long (limit {MAX_CONFIG_CHARS:,}); refused")
    try:
        with paused_gc():  # JSON has no cycles; collecting while millions of objects appear is 5x slower
            value = json.loads(text)
        if isinstance(value, str):
            if len(value) > MAX_CONFIG_CHARS:
                raise FormatError(f"{what} is too long; refused")
            with paused_gc():
                value = json.loads(value)
    except RecursionError:
        raise FormatError(f"{what} is nested too deeply (limit {MAX_JSON_DEPTH} levels); refused") from None
    except ValueError as exc:  # JSONDecodeError, and int() past Python's digit limit
        raise FormatError(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FormatError(f"{what} is not a JSON object (found {type(value).__name__})")
    if _depth(value) > MAX_JSON_DEPTH:
        raise FormatError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep; refused")
    return value


def _format(gen: int, full: bool) -> str:
    return f"keras{gen}-h5" if full else f"keras{gen}-weights"


def _generation(version: str | None) -> int:
    if version is None:
        return 1  # Keras 1 save_weights wrote no version; Keras 2 and 3 always do
    if version.startswith("1"):
        return 1
    if version.startswith("3"):
        return 3
    return 2


def read_h5(
    path: str,
    answer: Answer,
    source: ModelFile,
    *,
    config_text: str | None = None,
    running_std: str = "auto",
    flip_kernels: bool | None = None,
    lazy: bool = False,
) -> Model:
    """Build a Model from what the isolated child found in a Keras HDF5 file (:func:`scan_h5`):
    ``answer`` holds its facts, ``source`` is the open file the contiguous weights are read from
    (by offset; with ``lazy`` the large ones only when used, see :mod:`.isolated`)."""
    if answer.get("nb_layers"):
        raise FormatError("pre-1.0 Keras weights (layer_{k}/param_{p}) are not supported: re-save with Keras 1 or 2")
    config_attr = answer.get("model_config")
    full = config_attr is not None
    if full:
        kind = answer.get("model_weights")
        if kind is None:
            raise FormatError("the file has a model_config but no model_weights group")
        if kind != "group":
            raise FormatError("'model_weights' is a dataset, not a group")
    layer_names = answer.get("layer_names")
    if layer_names is None:
        if answer.get("layers_group"):
            raise FormatError("this is a Keras 3 weights file (.weights.h5); pass the .keras model or its config")
        raise FormatError("no Keras layer list (layer_names) in this HDF5 file: not a Keras model or weights file")
    if len(layer_names) > MAX_LAYERS:
        raise FormatError(f"layer_names lists {len(layer_names):,} layers, more than bnconvert reads ({MAX_LAYERS:,}); "
                          "refused")
    if len(set(layer_names)) != len(layer_names):
        seen: set[str] = set()
        duplicates = sorted({n for n in layer_names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
        raise FormatError(f"layer_names lists {', '.join(repr(n) for n in duplicates[:5])} more than once")

    version = answer.get("keras_version")
    config_text = config_attr if config_text is None else config_text
    config = parse_config(config_text, "model config") if config_text is not None else None
    if version is None and config is not None and isinstance(config.get("keras_version"), str):
        version = config["keras_version"]  # Keras 1.2 to_json() records it
    gen = _generation(version)
    if config is not None and gen == 1 and _looks_modern(config):
        gen = 2

    backend, origin = _backend(answer, layer_names, gen)
    source_info = Source(path=path, format=_format(gen, full), keras_version=version, backend=backend,
                         backend_origin=origin)
    source_info.provenance, stamp_notes = _stamp(answer)
    source_info.notes += stamp_notes
    flip = backend == "theano" if flip_kernels is None else flip_kernels
    source_info.kernels_flipped = flip
    if flip_kernels is not None:
        source_info.backend_origin += f"; kernel flip set by option ({'on' if flip else 'off'})"
    if gen == 1:
        source_info.running_std = keras1.resolve_running_std(running_std, version, backend)

    reader = _Arrays(answer, source, lazy=lazy)
    stored = {name: reader.layer(name) for name in layer_names}
    if isolated.after_answer is not None:
        isolated.after_answer(path)
    stored = {name: [(n, reader.array(d, n, name)) for n, d in named] for name, named in stored.items()}
    if config is None:
        model = _weights_only(stored, source_info)
    else:
        source_info.config = config
        graph_config = keras1.upgrade_config(config) if gen == 1 else config
        if "CuDNN" in config_text:  # the text first: walking a 100,000-layer config costs 0.4 s
            graph_config = upgrade_cudnn_config(graph_config)
        model = build_model(graph_config)
        if "GRU" in config_text:
            reset_after = gen == 3 or _tf_keras(version)
            for _, layer, _ in model.walk():
                if layer.model is None:
                    layer.config = explicit_reset_after(layer.class_name, layer.config, reset_after)
        check_fields(model)
        model.source = source_info
        _attach(model, stored, keras1=gen == 1)
    if gen == 1 or flip:
        _upgrade(model, source_info, flip)
    answer.get("visited")  # every group of the file parsed without damage (see visit_links)
    return model


# -- in the isolated child: everything that touches libhdf5 -------------------------------------


@isolated.job("h5")
def scan_h5(fd: int, size: int, params: dict[str, Any], facts: dict[str, Any],
            send_blob: Callable[[np.ndarray], int]) -> None:
    """Run in the isolated child: gather, in the order :func:`read_h5` needs them, the facts of a
    Keras HDF5 file into ``facts``; weights become descriptors (dtype, shape, and an offset in
    the file or the index of a blob sent with ``send_blob``). A FormatError stops the scan; the
    facts gathered so far are still sent."""
    precheck_file(fd, size, "")
    with h5py.File(isolated.h5_path(fd), "r") as f:
        facts["nb_layers"] = "nb_layers" in f.attrs
        if facts["nb_layers"]:
            return
        facts["model_config"] = attr_text(f, "model_config")
        root: h5py.Group = f
        if facts["model_config"] is not None:
            found = child(f, "model_weights", "HDF5 root")
            facts["model_weights"] = None if found is None else "group" if isinstance(found, h5py.Group) else "dataset"
            if not isinstance(found, h5py.Group):
                return
            root = found
        names = attr_list(root, "layer_names")
        facts["layer_names"] = names
        if names is None:
            facts["layers_group"] = isinstance(child(f, "layers", "HDF5 root"), h5py.Group)
            return
        if len(set(names)) != len(names):
            return  # refused by the reader
        facts["keras_version"] = attr_text(f, "keras_version")
        facts["backend"] = attr_text(f, "backend") or attr_text(root, "backend")
        _scan_stamp(f, facts)
        groups: dict[str, h5py.Group] = {}
        for name in names:
            where = f"layer '{name}'"
            group = child(root, name, where)
            facts[f"group:{name}"] = None if group is None else "group" if isinstance(group, h5py.Group) else "dataset"
            if isinstance(group, h5py.Group):
                groups[name] = group
                facts[f"weight_names:{name}"] = attr_list(group, "weight_names")
        budget = Budget(size)
        for name, group in groups.items():
            where = f"layer '{name}'"
            described = []
            for n in facts[f"weight_names:{name}"] or []:
                did = child_id(group.id, n, where)
                if did is None:
                    raise FormatError(f"{where}: weight '{n}' is listed in weight_names but missing from the file")
                if not isinstance(did, h5py.h5d.DatasetID):
                    raise FormatError(f"{where}: weight '{n}' is a group, not a dataset")
                described.append([n, describe_array(did, f"{where}: weight '{n}'", budget, send_blob)])
            facts[f"weights:{name}"] = described
        visit_links(f)
        facts["visited"] = True


def _scan_stamp(f: h5py.File, facts: dict[str, Any]) -> None:
    """In the isolated child: the provenance stamp (root attribute ``bnconvert``) as text in
    ``facts["bnconvert"]``, or why it cannot be read in ``facts["bnconvert_problem"]``: a bad
    stamp is ignored with a note, it never makes the file unreadable."""
    try:
        text = attr_text(f, H5_ATTRIBUTE)
    except FormatError as exc:
        facts["bnconvert_problem"] = str(exc).split(": ", 1)[-1]
        return
    if text is not None and len(text) > MAX_PROVENANCE_CHARS:
        facts["bnconvert_problem"] = f"it is {len(text):,} characters long (limit {MAX_PROVENANCE_CHARS:,})"
    else:
        facts["bnconvert"] = text


def _stamp(answer: Answer) -> tuple[dict[str, Any] | None, list[str]]:
    """The provenance stamp the child found (see :func:`_scan_stamp`), checked, and its notes."""
    where = f"root attribute '{H5_ATTRIBUTE}'"
    problem = answer.facts.get("bnconvert_problem")
    if problem is not None:
        return None, [ignored_note(where, str(problem))]
    return parse_provenance(answer.facts.get("bnconvert"), where)


@isolated.job("attrs")
def scan_attrs(fd: int, size: int, params: dict[str, Any], facts: dict[str, Any],
               send_blob: Callable[[np.ndarray], int]) -> None:
    """Run in the isolated child: the root attributes ``params["names"]`` as text (or None)."""
    precheck_file(fd, size, "")
    with h5py.File(isolated.h5_path(fd), "r") as f:
        for name in params["names"]:
            facts[name] = attr_text(f, name)
        visit_links(f)  # the caller may hand the file to Keras next


def visit_links(f: h5py.File) -> None:
    """In the isolated child: walk every link of the file (hard links recursed into, soft and
    external ones only listed, as ``H5Lvisit`` does), which makes libhdf5 parse every group's
    B-tree nodes and name heap: a damaged one crashes the child, not the process that may later
    open the file in-process (the writer copying groups, Keras as the check's reference).
    About 2 ms for ResNet50's 600 links."""
    f.id.links.visit(lambda name: None)


# -- back in the main process: the child's descriptors checked and read --------------------------

_CODES = ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")
_DTYPES = {np.dtype(code).newbyteorder("<").str for code in _CODES} | {np.dtype(code).newbyteorder(">").str for code in _CODES}
_MAX_DIMS = 32


class _Arrays:
    """Turns the child's weight descriptors into arrays, checking each against the file."""

    def __init__(self, answer: Answer, source: ModelFile, *, lazy: bool) -> None:
        self.answer, self.source, self.lazy = answer, source, lazy
        self.plain_left = source.size

    def layer(self, name: str) -> list[tuple[str, Any]]:
        where = f"layer '{name}'"
        kind = self.answer.get(f"group:{name}")
        if kind is None:
            return []
        if kind != "group":
            raise FormatError(f"{where}: expected a weight group, found a dataset")
        described = self.answer.get(f"weights:{name}")
        if not isinstance(described, list) or not all(isinstance(d, list) and len(d) == 2 for d in described):
            raise InternalError(f"the isolated HDF5 reader described the weights of {where} as {type(described).__name__}")
        return [(str(n), d) for n, d in described]

    def array(self, d: Any, name: str, layer: str) -> np.ndarray:
        where = f"layer '{layer}': weight '{name}'"

        def bad(what: str) -> FormatError:
            return FormatError(f"{where}: damaged HDF5 file (the isolated reader reported {what})")

        if not isinstance(d, dict) or d.get("t") not in _DTYPES:
            raise bad(f"dtype {d.get('t') if isinstance(d, dict) else d!r}")
        dtype = np.dtype(d["t"])
        shape = d.get("s")
        if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape)):
            raise bad(f"shape {shape!r}")
        shape = tuple(shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > MAX_DATASET_BYTES:
            raise bad(f"an implausible shape {shape}")
        if "o" in d:
            offset = d["o"]
            if not isinstance(offset, int) or offset < 0 or offset + nbytes > self.source.size or nbytes > self.plain_left:
                raise bad(f"{nbytes:,} bytes at offset {offset!r}, outside the file's {self.source.size:,} bytes")
            self.plain_left -= nbytes
            if self.lazy and nbytes >= h5guard.MAP_FROM:
                return DeferredArray(self.source, offset, dtype, shape)  # type: ignore[return-value]
            return self.source.read(offset, dtype, shape)
        if "b" in d:
            index = d["b"]
            if not isinstance(index, int) or not 0 <= index < len(self.answer.blobs):
                raise bad(f"blob {index!r}")
            blob = self.answer.blobs[index]
            if blob.size != nbytes:
                raise bad(f"{blob.size:,} bytes for shape {shape} of {dtype}")
            return blob.view(dtype).reshape(shape)
        if nbytes != 0:
            raise bad(f"no data for shape {shape}")
        return np.zeros(shape, dtype)


def _tf_keras(version: str | None) -> bool:
    """True for a file tf.keras 2 wrote, whose GRU defaulted to ``reset_after=True``: ``2.3.0-tf``
    (TF 2.2) and every 2.4+ (only tf.keras had those). Standalone Keras 2 (up to 2.3.1) and
    tf.keras 1 defaulted to False; ``2.2.4-tf`` is both TF 1.x and TF 2.0/2.1, but those always
    wrote the key."""
    if not version:
        return False
    try:
        major, minor = (int(x) for x in version.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return major == 2 and (minor >= 4 or (minor == 3 and version.endswith("-tf")))


def _looks_modern(config: dict[str, Any]) -> bool:
    text = json.dumps(config)[:20000]
    return '"Conv2D"' in text or '"inbound_nodes": [{' in text or '"units"' in text


def _backend(answer: Answer, layer_names: list[str], gen: int) -> tuple[str | None, str]:
    attr = answer.get("backend")
    if attr:
        return attr, "file attribute"
    if gen == 3:
        return None, "not recorded (Keras 3)"
    names: list[str] = []
    for layer in layer_names:
        if answer.get(f"group:{layer}") == "group":
            names += answer.get(f"weight_names:{layer}") or []
    if not names:
        return None, "unknown (no weights to tell from)"
    if all(n.endswith(":0") or ":" in n for n in names):
        return "tensorflow", "inferred: weight names end in ':0'"
    return "theano", "inferred: weight names lack the ':0' suffix TensorFlow adds"


def _attach(model: Model, stored: dict[str, list[tuple[str, np.ndarray]]], *, keras1: bool) -> None:
    for layer in model.layers:
        named = stored.get(layer.name)
        if named is None:
            spec = weight_spec(layer.class_name, layer.config)
            if layer.model is not None or spec:
                raise FormatError(f"layer {layer.label} is in the model config but has no weights in the file")
            named = []
        if layer.model is not None:
            distribute(layer.model, named, keras1=keras1)
            continue
        parts = weight_parts(layer.class_name, layer.config) if layer.class_name in _MAY_HOLD_RNN else None
        if parts is not None and any(p.kind in ("LSTM", "GRU", "SimpleRNN") for p in parts):
            named, cudnn = convert_stored(layer.label, parts, named, keras1=keras1)
            if cudnn:
                layer.config[CUDNN_PARTS] = cudnn
        assign(layer, named, keras1=keras1)
    known = {layer.name for layer in model.layers}
    extra = [name for name, named in stored.items() if named and name not in known]
    if extra:
        raise FormatError(f"the file holds weights for layers not in the model config: {', '.join(extra[:5])}")


#: the classes whose weights may be in a Keras 1 or cuDNN recurrent layout (their own or a wrapped layer's)
_MAY_HOLD_RNN = frozenset({"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "TimeDistributed"})


def _guess_class(weights: dict[str, np.ndarray]) -> str:
    if "moving_mean" in weights or "moving_variance" in weights or "running_std" in weights:
        return "BatchNormalization"
    if "pointwise_kernel" in weights:
        return "SeparableConv2D"
    if "depthwise_kernel" in weights:
        return "DepthwiseConv2D"
    kernel = weights.get("kernel")
    recurrent = weights.get("recurrent_kernel")
    if kernel is not None and recurrent is not None and kernel.ndim == 2 and recurrent.ndim == 2:
        units = recurrent.shape[0]
        gates = kernel.shape[1] // units if units else 0
        name = {1: "SimpleRNN", 3: "GRU", 4: "LSTM"}.get(gates) if recurrent.shape[1] == gates * units else None
        if name is not None:
            arrays = [kernel, recurrent] + ([weights["bias"]] if "bias" in weights else [])
            return f"CuDNN{name}" if is_cudnn(name, arrays) else name
    if kernel is not None:
        return {2: "Dense", 3: "Conv1D", 4: "Conv2D", 5: "Conv3D"}.get(kernel.ndim, "Unknown")
    if "embeddings" in weights and len(weights) == 1:
        return "Embedding"
    return "Unknown" if weights else "NoWeights"


def _guessed_recurrent(layer: Layer) -> None:
    """A weights-only recurrent layer: its units and bias layout from the shapes; cuDNN weights
    (a bias of two halves) in the LSTM/GRU layout, as Keras' ``load_weights`` would convert them."""
    w = layer.weights
    layer.config["units"] = int(w["recurrent_kernel"].shape[0])
    layer.config["use_bias"] = "bias" in w
    if layer.class_name in CUDNN_CLASSES:
        layer.source_class = layer.class_name
        layer.class_name = CUDNN_CLASSES[layer.class_name]
        layer.weights = dict(zip(("kernel", "recurrent_kernel", "bias"),
                                 from_cudnn(layer.class_name, [w["kernel"], w["recurrent_kernel"], w["bias"]])))
        layer.config[CUDNN_PARTS] = [0]
    if layer.class_name == "GRU":
        layer.config["reset_after"] = "bias" in layer.weights and layer.weights["bias"].ndim == 2


def _weights_only(stored: dict[str, list[tuple[str, np.ndarray]]], source: Source) -> Model:
    """A model with no architecture: layers in file order, classes guessed from weight names."""
    layers = []
    for name, named in stored.items():
        layer = Layer(name=name, class_name="Unknown", config={"name": name})
        assign(layer, named)  # unknown class: names give the meaning
        layer.class_name = layer.source_class = _guess_class(layer.weights)
        if "recurrent_kernel" in layer.weights and layer.class_name not in ("Dense", "Unknown"):
            _guessed_recurrent(layer)
        if layer.class_name == "BatchNormalization":
            layer.config.update(epsilon=None, axis=None, center="beta" in layer.weights, scale="gamma" in layer.weights)
        layers.append(layer)
    source.notes.append("weights only, no architecture: layer classes are guessed from weight names and "
                        "connections are unknown (pass the architecture JSON with --config)")
    return Model(name="weights", layers=layers, inputs=[], outputs=[], kind="weights-only", source=source)


def _upgrade(model: Model, source: Source, flip: bool) -> None:
    gen1 = source.generation == 1
    for _, layer, _ in model.walk():
        if layer.model is not None or not layer.weights:
            continue
        # a TimeDistributed holds its inner layer's weights, in the inner class's layout
        class_name, config = layer.class_name, layer.config
        inner = config.get("layer") if class_name == "TimeDistributed" else None
        if isinstance(inner, dict) and isinstance(inner.get("class_name"), str) and isinstance(inner.get("config"), dict):
            class_name, config = inner["class_name"], inner["config"]
        if gen1:
            eps_known = layer.config.get("epsilon") is not None
            if layer.class_name == "BatchNormalization" and not eps_known:
                layer.config["epsilon"] = 1e-3
                layer.config["epsilon_assumed"] = True
            layer.weights = keras1.upgrade_weights(
                class_name, config, layer.weights,
                source_class=layer.source_class, flip=flip, running_std=source.running_std or "variance",
            )
        elif flip:
            layer.weights = keras1.flip_kernels(class_name, layer.weights)
