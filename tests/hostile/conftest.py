"""Hostile and broken model files, generated from the fixtures into temporary folders.

Each :class:`Case` builds one file (plus, for some, a second file it refers to) and says what every
command must do with it: ``refuse`` (exit 2, one line on stderr naming the file and matching
``match``), ``ok`` (exit 0) or ``any`` (exit 0 or a clean refusal). Whatever a command does,
nothing in the file may ever run: the Lambda and custom-class cases carry payloads that would
create ``MARKER`` (next to the file) if they were executed or imported.
"""


from __future__ import annotations

import faulthandler
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .build_files import (
    deep_json_keras,
    empty,
    h5_compressed_shape_bomb,
    h5_config_not_string,
    h5_external_group,
    h5_external_link,
    h5_external_storage,
    h5_global_heap_loop,
    h5_layer_names_not_strings,
    h5_plugin_filter,
    h5_repeated_weight,
    h5_shape_bomb,
    h5_soft_link,
    h5_soft_link_inside_path,
    h5_weight_name_absolute,
    h5_weight_name_parent,
    hdf5_magic_then_garbage,
    json_root_not_object,
    malformed_json_h5,
    malformed_json_keras,
    random_bytes,
    truncated_h5,
    truncated_keras,
    zip_absolute,
    zip_bomb,
    zip_bomb_lying,
    zip_config_bomb,
    zip_duplicate,
    zip_encrypted,
    zip_magic_then_garbage,
    zip_slip,
)
from .build_models import (
    EVIL_MODULE,
    MARKER,
    bad_config_value,
    bn_sizes_differ,
    custom_class_h5,
    custom_class_keras,
    h5_that_is_zip,
    inf_in_kernel,
    keras_that_is_hdf5,
    lambda_h5,
    lambda_keras,
    missing_layer_h5,
    nan_in_bn,
    nan_in_staying_bn,
    negative_variance,
    slightly_negative_variance,
    wrapped_lambda_h5,
    wrong_count_h5,
    wrong_count_keras,
    wrong_shape_h5,
    wrong_shape_keras,
)

__all__ = ["Case", "CASES", "CASE_IDS", "EVIL_MODULE", "MARKER", "folder_state"]


@dataclass(frozen=True)
class Case:
    """One hostile file and what each command must do with it."""

    name: str
    build: Callable[[Path], Path]
    match: str = ""  # regex the refusal line must match (what is wrong)
    expect: dict[str, str] = field(default_factory=dict)  # command -> refuse | ok | any (default refuse)

    def expected(self, command: str) -> str:
        return self.expect.get(command, self.expect.get("*", "refuse"))


_LOADS = {"*": "ok", "verify": "skip"}  # verify of a loadable model runs Keras: covered elsewhere
_NO_CODE = {"inspect": "ok", "fold": "any", "export": "refuse", "verify": "any"}

CASES = [
    Case("random_bytes", random_bytes, r"(not|neither) a Keras model file"),
    Case("empty", empty, r"empty"),
    Case("hdf5_magic_garbage", hdf5_magic_then_garbage, r"damaged HDF5|truncated"),
    Case("zip_magic_garbage", zip_magic_then_garbage, r"damaged \.keras|zip"),
    Case("truncated_h5", truncated_h5, r"truncated"),
    Case("truncated_keras", truncated_keras, r"damaged \.keras"),
    Case("zip_slip", zip_slip, r"'\.\./\.\./evil\.txt'.*parent path"),
    Case("zip_absolute", zip_absolute, r"'/tmp/evil\.txt'.*absolute"),
    Case("zip_duplicate", zip_duplicate, r"'config\.json' appears twice"),
    Case("zip_bomb", zip_bomb, r"model\.weights\.h5.*(zip bomb|inflate)"),
    Case("zip_bomb_lying", zip_bomb_lying, r"model\.weights\.h5.*(size its header declares|cannot be read)"),
    Case("zip_config_bomb", zip_config_bomb, r"config\.json.*inflate"),
    Case("zip_encrypted", zip_encrypted, r"encrypted"),
    Case("h5_external_link", h5_external_link, r"kernel.*external link"),
    Case("h5_external_group", h5_external_group, r"'dense'.*external link"),
    Case("h5_soft_link", h5_soft_link, r"kernel.*soft link"),
    Case("h5_soft_link_in_path", h5_soft_link_inside_path, r"soft link"),
    Case("h5_external_storage", h5_external_storage, r"external raw files"),
    Case("h5_plugin_filter", h5_plugin_filter, r"filter 32001.*plugin"),
    Case("h5_shape_bomb", h5_shape_bomb, r"(implausible shape|shape bomb)"),
    Case("h5_compressed_bomb", h5_compressed_shape_bomb, r"inflate"),
    Case("h5_repeated_weight", h5_repeated_weight, r"shape bomb or a weight listed many times"),
    Case("h5_global_heap_loop", h5_global_heap_loop, r"global heap at byte \d+ is corrupted"),
    Case("h5_config_not_string", h5_config_not_string, r"model_config.*not a string"),
    Case("h5_layer_names_numbers", h5_layer_names_not_strings, r"layer_names.*not a list of names"),
    Case("h5_weight_name_absolute", h5_weight_name_absolute, r"outside its group"),
    Case("h5_weight_name_parent", h5_weight_name_parent, r"outside its group"),
    Case("malformed_json_h5", malformed_json_h5, r"not valid JSON"),
    Case("malformed_json_keras", malformed_json_keras, r"config\.json is not valid JSON"),
    Case("deep_json", deep_json_keras, r"nested"),
    Case("json_not_object", json_root_not_object, r"not a JSON object"),
    Case("missing_layer", missing_layer_h5, r"'dense_1'.*no weights"),
    Case("wrong_shape_h5", wrong_shape_h5, r"'dense_1' \(Dense\).*kernel.*\(7, 12\).*\(12, 12\)"),
    Case("wrong_shape_keras", wrong_shape_keras, r"'dense_1' \(Dense\).*kernel.*\(12, 5\).*\(12, 12\)"),
    Case("wrong_count_h5", wrong_count_h5, r"'dense_2' \(Dense\).*expected 2 weights.*found 1"),
    Case("wrong_count_keras", wrong_count_keras, r"'batch_normalization' \(BatchNormalization\).*expected 4 weights.*found 3"),
    Case("bn_sizes_differ", bn_sizes_differ, r"'batch_normalization_1'.*differ in size"),
    Case("bad_config_value", bad_config_value, r"'batch_normalization.*'epsilon' is 'a lot'"),
    Case("nan_in_bn", nan_in_bn, r"batch_normalization_1.*(NaN|nan)",
         expect={"inspect": "ok", "verify": "skip"}),
    Case("inf_in_kernel", inf_in_kernel, r"dense_1.*(NaN|Inf|inf)", expect={"inspect": "ok", "verify": "skip"}),
    Case("negative_variance", negative_variance, r"batch_normalization_1.*(variance|<= 0)",
         expect={"inspect": "ok", "verify": "skip"}),
    # var < 0 but var + eps > 0 keeps the BN invariant: inspect warns, fold and export compute it
    Case("slightly_negative_variance", slightly_negative_variance, r"batch_normalization_1.*negative",
         expect={"inspect": "ok", "fold": "ok", "export": "ok", "verify": "skip"}),
    Case("nan_in_staying_bn", nan_in_staying_bn, r"'batch_normalization'.*(NaN|nan)",
         expect={"inspect": "ok", "verify": "skip"}),
    Case("lambda_h5", lambda_h5, r"evil_lambda", expect=_NO_CODE),
    Case("lambda_keras", lambda_keras, r"evil_lambda", expect=_NO_CODE),
    Case("wrapped_lambda_h5", wrapped_lambda_h5, r"'td'", expect=_NO_CODE),
    Case("custom_class_keras", custom_class_keras, r"EvilLayer", expect=_NO_CODE),
    Case("custom_class_h5", custom_class_h5, r"EvilLayer", expect=_NO_CODE),
    Case("keras_that_is_hdf5", keras_that_is_hdf5, expect=_LOADS),
    Case("h5_that_is_zip", h5_that_is_zip, expect=_LOADS),
]
CASE_IDS = [c.name for c in CASES]


#: a test running longer than this hangs (a loop in libhdf5 cannot be interrupted): the run is
#: killed, with every thread's traceback in $TMPDIR/bnconvert-hostile-hang.txt
HANG_SECONDS = 300


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / "bnconvert-hostile-hang.txt", "w") as log:
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=log)
        yield
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case], Path]:
    """Build each case once per session (in its own folder); returns the built file's path."""
    root = tmp_path_factory.mktemp("hostile-store")
    built: dict[str, Path] = {}

    def get(case: Case) -> Path:
        if case.name not in built:
            folder = root / case.name
            folder.mkdir()
            built[case.name] = case.build(folder)
        return built[case.name]

    return get


@pytest.fixture
def hostile_copy(hostile_store: Callable[[Case], Path], tmp_path: Path) -> Callable[[Case], Path]:
    """A fresh copy of a case's folder in this test's tmp dir; returns the model file in it."""
    def copy(case: Case) -> Path:
        src = hostile_store(case)
        dst = tmp_path / case.name
        shutil.copytree(src.parent, dst)
        return dst / src.name
    return copy


def folder_state(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder`` (hidden ones too): size, mtime_ns and sha256 of its content."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() or p.is_symlink():
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "link"
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, digest)
        elif p.is_dir():
            out[str(p.relative_to(folder)) + "/"] = (0, 0, "dir")
    return out
