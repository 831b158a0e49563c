"""Every bad input gets one line, ``bnconvert: error: <file>: <what is wrong>``, exit 2, no
traceback and nothing written; a bug of bnconvert's own is ``internal error, please report``
with exit 3 (and its traceback under ``--debug``).

The cases are the ones that used to escape as ``unexpected ValueError``/``MemoryError``, as
click's three-line usage error, or as a message that did not name the file: integers beyond any
real model (``strides`` 2**70), inputs too large for the check's random data, an ``.npy`` whose
header declares a huge array, ``--batch 10**12``, Keras 1 BatchNormalization ``axis -9`` and
``mode 3``, paths the system will not let bnconvert read, NaN and ``variance + epsilon <= 0``,
and folds whose weights overflow float32.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bnconvert.cli import main

from ..conftest import ROOT
from .build_files import _copy, _edit_h5, _edit_keras, _set_config
from .build_models import _bn_edit
from .conftest import folder_state

BIG = 2**70  # beyond int64: numpy and ONNX raise OverflowError / "Value out of range" on it


def _run(args: list[str | Path]):
    return CliRunner().invoke(main, [str(a) for a in args])


def _refused(result, path: Path | str, pattern: str) -> str:
    """Exit 2 and exactly one line on stderr: ``bnconvert: error: <path>: ...`` matching ``pattern``."""
    assert result.exit_code == 2, f"exit {result.exit_code}, expected 2\n{result.output}"
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith(f"bnconvert: error: {path}: "), line
    assert "unexpected" not in line and "internal error" not in line, line
    assert re.search(pattern, line), f"{line!r} does not say {pattern!r}"
    return line


def _commands(path: Path, work: Path, *, check: bool = False) -> dict[str, list[str | Path]]:
    """inspect, fold and export of ``path``, writing (if anything) into ``work``."""
    no_check = [] if check else ["--no-check"]
    return {
        "inspect": ["inspect", path],
        "fold": ["fold", path, "-o", work / f"folded{path.suffix}", *no_check],
        "export": ["export", path, "-o", work / "out.onnx", *no_check],
    }


def _set(layer: str, key: str, value: object) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        for entry in config["config"]["layers"]:
            if entry["config"].get("name") == layer:
                entry["config"][key] = value
                return
        raise AssertionError(f"no layer {layer!r} in the fixture")
    return change


# -- integers no real model holds ----------------------------------------------------------------

HUGE = [  # (id, fixture, layer, config key, value)
    ("strides", "k3_educba.keras", "conv2d", "strides", [BIG, 1]),
    ("kernel_size", "k3_educba.keras", "conv2d", "kernel_size", [BIG, 3]),
    ("filters", "k3_educba.keras", "conv2d", "filters", BIG),
    ("dilation_rate", "k3_educba.keras", "conv2d_1", "dilation_rate", [1, BIG]),
    ("pool_size", "k3_educba.keras", "max_pooling2d", "pool_size", [BIG, 2]),
    ("pool_strides", "k3_educba.keras", "max_pooling2d", "strides", [2, BIG]),
    ("units", "k3_dense_tanh.keras", "dense_1", "units", BIG),
    ("units_2_31", "k3_dense_tanh.keras", "dense_1", "units", 2**31),  # the first integer refused
]


@pytest.mark.parametrize("command", ["inspect", "fold", "export"])
@pytest.mark.parametrize(("case", "fixture", "layer", "key", "value"), HUGE, ids=[h[0] for h in HUGE])
def test_huge_integers_in_a_config(case: str, fixture: str, layer: str, key: str, value: object, command: str,
                                   tmp_path: Path) -> None:
    path = _edit_keras(fixture, tmp_path, config=_set(layer, key, value), as_name=f"huge_{case}.keras")
    before = folder_state(tmp_path)
    result = _run(_commands(path, tmp_path)[command])
    _refused(result, path, rf"layer '{layer}' \(\w+\): config '{key}' is {re.escape(str(value))}, expected .*below 2\*\*31")
    assert folder_state(tmp_path) == before


LARGEST = 2**31 - 1
WINDOWS = [  # (id, layer, key, value, the layer named): allowed integers, a window larger than its input
    ("pool_size", "max_pooling2d", "pool_size", [LARGEST, LARGEST], "max_pooling2d"),
    ("dilation_rate", "conv2d", "dilation_rate", [LARGEST, 1], "conv2d"),
    ("kernel_size", "conv2d", "kernel_size", [LARGEST, 3], "conv2d"),
    ("pool_strides", "max_pooling2d", "strides", [LARGEST, LARGEST], "conv2d_1"),  # 1x1 left for a 3x3 kernel
]


@pytest.mark.parametrize("command", ["inspect", "fold", "export"])
@pytest.mark.parametrize(("case", "layer", "key", "value", "named"), WINDOWS, ids=[w[0] for w in WINDOWS])
def test_a_window_larger_than_its_input(case: str, layer: str, key: str, value: object, named: str, command: str,
                                        tmp_path: Path) -> None:
    """Keras refuses to build such a layer (a negative output size); bnconvert used to take the
    shape for unknown: inspect and fold passed, export called the layer unsupported."""
    path = _edit_keras("k3_educba.keras", tmp_path, config=_set(layer, key, value), as_name=f"window_{case}.keras")
    before = folder_state(tmp_path)
    line = _refused(_run(_commands(path, tmp_path)[command]), path,
                    rf"layer '{named}' \(\w+\): its output shape \(\?, -?\d+, -?\d+, 8\) has an empty or negative "
                    r"dimension \(a kernel, pool or crop larger than its input\?\)")
    assert line.count("empty or negative") == 1, "only the layer where it starts is named, not every one after it"
    assert folder_state(tmp_path) == before


# -- inputs too large for the check -----------------------------------------------------------------


def _huge_input(folder: Path) -> Path:
    """k3_dense_tanh with a 100000x100000x10 input: its Dense layers act on the last axis, so the
    weights still fit the config and only the check's random inputs are impossible (2e11 floats)."""
    return _edit_keras("k3_dense_tanh.keras", folder, config=_set("input_layer", "batch_shape", [None, 100_000, 100_000, 10]),
                       as_name="huge_input.keras")


def _cli_no_tf(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command in a fresh process; prints on stdout (last line) whether TensorFlow got imported."""
    code = ("import sys\nfrom bnconvert.cli import main\ntry:\n    main()\nfinally:\n"
            "    print('tensorflow' in sys.modules)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT, check=False)


@pytest.mark.parametrize("command", ["fold", "export"])
def test_huge_input_shape_for_the_checks_random_inputs(command: str, tmp_path: Path) -> None:
    path = _huge_input(tmp_path)
    assert _run(["inspect", path]).exit_code == 0  # the model is fine: only the check cannot run
    before = folder_state(tmp_path)
    result = _run(_commands(path, tmp_path, check=True)[command])
    _refused(result, path, r"input 'input_layer' of shape \(2, 100000, 100000, 10\) is too large for the check's "
                           r"random inputs \(200,000,000,000 elements, the limit is 268,435,456\); give --inputs or --no-check")
    assert folder_state(tmp_path) == before
    assert _run([*_commands(path, tmp_path)[command]]).exit_code == 0  # --no-check: nothing to draw


def test_huge_input_is_refused_before_tensorflow_loads(tmp_path: Path) -> None:
    """The fold check runs Keras when it can: the size is refused before Keras is even imported."""
    path = _huge_input(tmp_path)
    done = _cli_no_tf("fold", path, "-o", tmp_path / "out.keras")
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False", "TensorFlow was imported for a check refused anyway"
    assert done.stderr.splitlines() == [
        (f"bnconvert: error: {path}: input 'input_layer' of shape (2, 100000, 100000, 10) is too large for the "
        "check's random inputs (200,000,000,000 elements, the limit is 268,435,456); give --inputs or --no-check")]


def test_verify_huge_declared_input(tmp_path: Path) -> None:
    path = _huge_input(tmp_path)
    other = _copy("k3_dense_tanh.keras", tmp_path, "small.keras")
    result = _run(["verify", path, path, "--reference", "float64"])
    _refused(result, path, r"input 'input_layer' of shape \(1, 100000, 100000, 10\) is too large for the check's random "
                           r"inputs .*; give --inputs, or a smaller --batch or --input-shape")
    # and B that does not take A's inputs is named (it used to be a line naming no file)
    result = _run(["verify", path, other, "--reference", "float64"])
    _refused(result, other, rf"input 'input_layer' \[\?x100000x100000x10\] float32 of A does not fit input 'input_layer' "
                            rf"\[\?x10\] float32 of B \(A is {re.escape(str(path))}\)")


def _npy_header_only(path: Path, shape: tuple[int, ...], dtype: str = "<f4", body: int = 64) -> bytes:
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})
        fh.write(bytes(body))
    return path.read_bytes()


def _verify_pair(tmp_path: Path) -> tuple[Path, Path]:
    a = _copy("k3_dense_tanh.keras", tmp_path, "a.keras")
    b = _copy("k3_dense_tanh.h5", tmp_path, "b.h5")
    return a, b


def test_verify_inputs_npy_with_a_huge_header(tmp_path: Path) -> None:
    a, b = _verify_pair(tmp_path)
    npy = tmp_path / "x.npy"
    _npy_header_only(npy, (100_000, 100_000))
    before = folder_state(tmp_path)
    result = _run(["verify", a, b, "--inputs", npy])
    _refused(result, npy, r"an array of shape \(100000, 100000\) \(10,000,000,000 elements\) is above the limit of "
                          r"268,435,456 for inputs")
    assert folder_state(tmp_path) == before


def test_verify_inputs_npz_member_with_a_huge_header(tmp_path: Path) -> None:
    a, b = _verify_pair(tmp_path)
    data = _npy_header_only(tmp_path / "member.npy", (2**40, 10))
    npz = tmp_path / "x.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("input_layer.npy", data)
    result = _run(["verify", a, b, "--inputs", npz])
    _refused(result, npz, r"array 'input_layer': an array of shape \(1099511627776, 10\) .* above the limit")


def test_verify_inputs_npy_whose_header_lies_about_its_size(tmp_path: Path) -> None:
    a, b = _verify_pair(tmp_path)
    npy = tmp_path / "short.npy"
    _npy_header_only(npy, (1000, 10))
    result = _run(["verify", a, b, "--inputs", npy])
    _refused(result, npy, r"the header declares shape \(1000, 10\) float32 \(40,000 bytes\) but 64 bytes follow it")


def test_verify_inputs_huge_header_refused_before_tensorflow_loads(tmp_path: Path) -> None:
    a, b = _verify_pair(tmp_path)
    npy = tmp_path / "x.npy"
    _npy_header_only(npy, (100_000, 100_000))
    done = _cli_no_tf("verify", a, b, "--inputs", npy)
    assert done.returncode == 2 and done.stdout.strip().splitlines()[-1] == "False", done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(f"bnconvert: error: {npy}: "), done.stderr


@pytest.mark.parametrize("batch", [10**12, 2**28 + 1, 10**30])
def test_verify_huge_batch(batch: int, tmp_path: Path) -> None:
    a, b = _verify_pair(tmp_path)
    before = folder_state(tmp_path)
    result = _run(["verify", a, b, "--batch", str(batch)])
    _refused(result, a, rf"--batch {batch} is too large for the check's random inputs \(the limit is 268,435,456 "
                        r"elements\); give --inputs or a smaller --batch")
    assert folder_state(tmp_path) == before


def test_verify_batch_within_the_limit_but_too_large_for_the_model(tmp_path: Path) -> None:
    """--batch under the limit, the inputs above it (batch x 10 elements): named with the input."""
    a, b = _verify_pair(tmp_path)
    result = _run(["verify", a, b, "--batch", str(2**28 // 4), "--reference", "float64"])
    _refused(result, a, r"input 'input_layer' of shape \(67108864, 10\) is too large for the check's random inputs "
                        r"\(671,088,640 elements, the limit is 268,435,456\); give --inputs, or a smaller --batch")


# -- Keras 1 BatchNormalization -------------------------------------------------------------------


def _keras1_bn(folder: Path, key: str, value: object, name: str) -> Path:
    def edit(f: h5py.File) -> None:
        def change(config: dict) -> None:
            bn = next(e for e in config["config"] if e["class_name"] == "BatchNormalization")
            bn["config"][key] = value
        _set_config(f, change)
    return _edit_h5("k1_tf_seq.h5", folder, edit, name)


@pytest.mark.parametrize("command", ["inspect", "fold", "export"])
def test_keras1_bn_axis_outside_its_input(command: str, tmp_path: Path) -> None:
    path = _keras1_bn(tmp_path, "axis", -9, "k1_axis.h5")
    before = folder_state(tmp_path)
    _refused(_run(_commands(path, tmp_path)[command]), path,
             r"layer 'batchnormalization_1' \(BatchNormalization\): config 'axis' is -9, outside its rank-4 input")
    assert folder_state(tmp_path) == before


@pytest.mark.parametrize("axis", [-10, 10, BIG])
def test_bn_axis_beyond_any_rank(axis: int, tmp_path: Path) -> None:
    path = _edit_keras("k3_dense_tanh.keras", tmp_path, config=_set("batch_normalization", "axis", axis), as_name="axis.keras")
    _refused(_run(["export", path, "-o", tmp_path / "out.onnx", "--no-check"]), path,
             rf"layer 'batch_normalization' \(BatchNormalization\): config 'axis' is {axis}, expected an axis from -9 to 9")


@pytest.mark.parametrize("mode", [3, -1, 2.5, "0", True])
@pytest.mark.parametrize("command", ["inspect", "fold", "export"])
def test_keras1_bn_mode_other_than_0_1_2_is_invalid(command: str, mode: object, tmp_path: Path) -> None:
    path = _keras1_bn(tmp_path, "mode", mode, "k1_mode.h5")
    before = folder_state(tmp_path)
    _refused(_run(_commands(path, tmp_path)[command]), path,
             rf"Keras 1 layer 'batchnormalization_1' \(BatchNormalization\): config 'mode' is {re.escape(repr(mode))}; "
             r"Keras 1 BatchNormalization modes are 0, 1 and 2")
    assert folder_state(tmp_path) == before


# -- paths the system will not let bnconvert read ------------------------------------------------


def _path_commands(bad: Path, good: Path, work: Path) -> dict[str, list[str | Path]]:
    """Every place a path is given: the model of each command, --config, --inputs, -o."""
    return {
        "inspect": ["inspect", bad],
        "fold": ["fold", bad, "-o", work / "folded.keras", "--no-check"],
        "export": ["export", bad, "-o", work / "out.onnx", "--no-check"],
        "verify_a": ["verify", bad, good],
        "verify_b": ["verify", good, bad],
        "verify_inputs": ["verify", good, good, "--inputs", bad],
        "config": ["fold", good, "--config", bad, "-o", work / "folded.keras", "--no-check"],
    }


UNREADABLE = {
    "folder": (lambda d: _mkdir(d / "a_folder.keras"), r"is a folder"),
    "parent_not_a_folder": (lambda d: _copy("k3_dense_tanh.keras", d, "m.keras") / "inside.keras", r"no such"),
    "dangling_symlink": (lambda d: _symlink(d / "dangling.keras", d / "gone.keras"), r"no such"),
}


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _symlink(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("where", ["inspect", "fold", "export", "verify_a", "verify_b", "verify_inputs", "config"])
@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_paths_that_cannot_be_read(kind: str, where: str, tmp_path: Path) -> None:
    """click used to answer some of these with a three-line usage error (``File ... is a directory``)."""
    make, pattern = UNREADABLE[kind]
    good = _copy("k3_dense_tanh.keras", tmp_path, "good.keras")
    bad = make(tmp_path)
    if kind == "folder" and where == "inspect":
        pattern = r"no model file found"  # inspect searches folders: an empty one has none
        result = _run(["inspect", bad])
        assert result.exit_code == 2 and result.stderr.splitlines() == [
            f"bnconvert: error: no model file found in {bad} (0 other files skipped)"], result.stderr
        return
    if kind == "folder" and where == "verify_inputs":
        pattern = r"an inputs folder without \.npy files"  # --inputs takes a folder of .npy files
    before = folder_state(tmp_path)
    _refused(_run(_path_commands(bad, good, tmp_path)[where]), bad, pattern)
    assert folder_state(tmp_path) == before


def _without_dac() -> list[str] | None:
    """A prefix that runs a command as this root user without the capabilities that let root
    read any file (so ``chmod`` counts, as for everyone else); None when there is no way."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "pass"], capture_output=True, timeout=60, check=False)
    return prefix if probe.returncode == 0 else None


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
@pytest.mark.parametrize("where", ["inspect", "fold", "export", "verify_a", "verify_b", "verify_inputs", "config", "output"])
@pytest.mark.parametrize("kind", ["mode_000", "folder_without_search"])
def test_paths_without_permission(kind: str, where: str, tmp_path: Path) -> None:
    """A file that exists but may not be read: chmod 000, or inside a folder without search (x)
    permission. Root reads them anyway, so as root the command runs without those capabilities.
    Before, click's three-line usage error ("Path ... is not readable") or an internal error
    (``Path.exists`` raises PermissionError inside an unsearchable folder)."""
    if os.geteuid() == 0:
        prefix = _without_dac()
        if prefix is None:
            pytest.skip("running as root, and setpriv cannot drop the capability to read any file")
    else:
        prefix = []
    tmp_path.chmod(0o755)
    good = _copy("k3_dense_tanh.keras", tmp_path, "good.keras")
    if kind == "mode_000":
        bad = _copy("k3_dense_tanh.keras", tmp_path, "locked.keras")
        bad.chmod(0)
        locked = bad
    else:
        locked = tmp_path / "closed"
        locked.mkdir()
        bad = _copy("k3_dense_tanh.keras", locked, "inside.keras")
        locked.chmod(0o600)  # readable listing, no search: the file cannot even be stat'ed
    try:
        if where == "output":
            if kind == "mode_000":
                pytest.skip("a write replaces the output, it never opens an existing one")
            args: list[str | Path] = ["fold", good, "-o", locked / "folded.keras", "--no-check"]
            named = locked / "folded.keras"
        else:
            args, named = _path_commands(bad, good, tmp_path)[where], bad
        code = "import sys\nsys.path.insert(0, sys.argv.pop(1))\nfrom bnconvert.cli import main\nmain()\n"
        done = subprocess.run([*prefix, sys.executable, "-c", code, str(ROOT), *map(str, args)],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    finally:
        locked.chmod(0o755 if locked.is_dir() else 0o644)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith(f"bnconvert: error: {named}: "), done.stderr
    assert re.search(r"cannot (be read|be accessed|read inputs) \(Permission denied\)", lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["good.keras", locked.name]), "something was written"


# -- NaN and variance + epsilon <= 0 --------------------------------------------------------------

BAD_VALUES = {
    "nan_mean": (_bn_edit("moving_mean", lambda a: np.where(np.arange(a.size) == 3, np.nan, a)),
                 r"layer 'batch_normalization_1' \(BatchNormalization\): NaN or Inf in moving_mean"),
    "inf_gamma": (_bn_edit("gamma", lambda a: np.where(np.arange(a.size) == 0, np.inf, a)),
                  r"layer 'batch_normalization_1' \(BatchNormalization\): NaN or Inf in gamma"),
    "negative_variance": (_bn_edit("moving_variance", lambda a: np.where(np.arange(a.size) == 2, -0.5, a)),
                          (r"layer 'batch_normalization_1' \(BatchNormalization\): moving variance \+ epsilon <= 0 "
                          r"on 1 of 12 channels \(2\)")),
}


def _zero_variance_no_epsilon(f: h5py.File) -> None:
    """var = 0 with epsilon = 0: 1/sqrt(0)."""
    _bn_edit("moving_variance", lambda a: np.where(np.arange(a.size) == 5, 0.0, a))(f)
    _set_config(f, _set("batch_normalization_1", "epsilon", 0.0))


BAD_VALUES["zero_variance_zero_epsilon"] = (
    _zero_variance_no_epsilon,
    r"layer 'batch_normalization_1' \(BatchNormalization\): moving variance \+ epsilon <= 0 on 1 of 12 channels \(5\)")


@pytest.mark.parametrize("args", ["fold", "export", "export_no_fold", "fold_check", "export_check"])
@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_nan_and_nonpositive_variance_are_refused_naming_file_and_layer(case: str, args: str, tmp_path: Path) -> None:
    edit, pattern = BAD_VALUES[case]
    path = _edit_h5("k3_dense_tanh.h5", tmp_path, edit, f"{case}.h5")
    assert _run(["inspect", path]).exit_code == 0  # a finding there, not an error
    command = args.split("_")[0]
    extra = {"fold": ["--no-check"], "export": ["--no-check"], "export_no_fold": ["--no-check", "--no-fold"],
             "fold_check": [], "export_check": []}[args]
    before = folder_state(tmp_path)
    out = tmp_path / ("folded.h5" if command == "fold" else "out.onnx")
    line = _refused(_run([command, path, "-o", out, *extra]), path, pattern)
    assert f"refusing to {command}" in line
    assert folder_state(tmp_path) == before


# -- folds beyond float32 -------------------------------------------------------------------------


def _huge_scale(layer: str = "batch_normalization_1", model: str = "dense_tanh") -> Callable[[h5py.File], None]:
    """gamma 1e30 over variance 0 + epsilon 1e-30: gamma/sqrt(var+eps) = 1e45, beyond float32
    (every stored value is finite and var + eps > 0: nothing else refuses it)."""
    def edit(f: h5py.File) -> None:
        group = f[f"model_weights/{layer}/{model}/{layer}"]
        group["gamma"][...] = np.full(group["gamma"].shape, 1e30, "float32")
        group["moving_variance"][...] = np.zeros(group["moving_variance"].shape, "float32")
        _set_config(f, _set(layer, "epsilon", 1e-30))
    return edit


@pytest.mark.parametrize("args", [["fold", "--no-check"], ["export", "--no-check"], ["fold"], ["export"]],
                         ids=["fold", "export", "fold_check", "export_check"])
def test_fold_giving_inf_is_refused_even_without_the_check(args: list[str], tmp_path: Path) -> None:
    path = _edit_h5("k3_dense_tanh.h5", tmp_path, _huge_scale(), "inf_fold.h5")
    shown = _run(["inspect", path])  # a finding there, an error one: fold would refuse
    assert shown.exit_code == 0 and "[error] batch_normalization_1: huge-fold-scale" in shown.stdout, shown.output
    assert "beyond float32, folding it would give Inf; fold and export refuse it" in shown.stdout
    before = folder_state(tmp_path)
    out = tmp_path / ("folded.h5" if args[0] == "fold" else "out.onnx")
    _refused(_run([args[0], path, "-o", out, *args[1:]]), path,
             r"folding 'batch_normalization_1' into 'dense_1' gives values beyond float32 "
             r"\(gamma/sqrt\(var\+eps\) up to 1e\+45\); refused")
    assert folder_state(tmp_path) == before


def test_fold_giving_inf_into_a_convolution(tmp_path: Path) -> None:
    """educba: a BN before MaxPool merges into the BN after it, which folds forward into the next
    Conv2D; the message names both BNs and the layer that would take the Inf."""
    path = _edit_h5("k3_educba.h5", tmp_path, _huge_scale("batch_normalization", "educba"), "inf_conv.h5")
    before = folder_state(tmp_path)
    _refused(_run(["fold", path, "-o", tmp_path / "folded.h5", "--no-check"]), path,
             r"folding 'batch_normalization_1' \(with 'batch_normalization' merged into it\) into 'conv2d_1' gives "
             r"values beyond float32 \(gamma/sqrt\(var\+eps\) up to 1\.25e\+45\); refused")
    assert folder_state(tmp_path) == before


# -- bnconvert's own bugs ---------------------------------------------------------------------------


def _internal_error(result, name: str) -> None:
    assert result.exit_code == 3, f"exit {result.exit_code}, expected 3\n{result.output}"
    line = result.stderr.splitlines()[-1]
    assert line.startswith("bnconvert: internal error, please report: "), result.stderr
    assert f"KeyError: '{name}'" in line and line.endswith("(rerun with --debug for the traceback)"), line


def _boom(name: str) -> Callable[..., None]:
    def raise_key_error(*args: object, **kwargs: object) -> None:
        raise KeyError(name)
    return raise_key_error


BUGS = {
    # the field checks of a .keras read (in the reader's child process, forked with the patch)
    "keras_fields": ("bnconvert.readers.keras_zip", "check_fields", "k3_dense_tanh.keras"),
    # the field checks of an HDF5 read
    "h5_fields": ("bnconvert.readers.h5", "check_fields", "k3_dense_tanh.h5"),
    # the weight consistency check of every read (main process)
    "weights_check": ("bnconvert.readers", "check_weights", "k3_dense_tanh.h5"),
    # shape inference while planning the folds (was swallowed, silently changing fold decisions)
    "fold_plan_shapes": ("bnconvert.fold.plan", "infer_shapes", "k3_educba.keras"),
}

@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("command", ["inspect", "fold", "export"])
@pytest.mark.parametrize("bug", sorted(BUGS))
def test_an_internal_bug_is_not_bad_input(bug: str, command: str, debug: bool, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    module, name, fixture = BUGS[bug]
    if bug == "fold_plan_shapes" and command == "inspect":
        pytest.skip("inspect plans no folds")
    monkeypatch.setattr(f"{module}.{name}", _boom(f"bug in {name}"))
    path = _copy(fixture, tmp_path)
    before = folder_state(tmp_path)
    result = _run((["--debug"] if debug else []) + _commands(path, tmp_path)[command])
    _internal_error(result, f"bug in {name}")
    assert "malformed" not in result.stderr and "bnconvert: error:" not in result.stderr
    if debug:
        assert "Traceback (most recent call last)" in result.stderr, result.stderr
    else:
        assert "Traceback" not in result.output and len(result.stderr.splitlines()) == 1, result.stderr
    assert folder_state(tmp_path) == before


def test_an_internal_bug_in_a_real_process(tmp_path: Path) -> None:
    """The line and exit 3 outside CliRunner too, and ``--debug`` shows where the bug is."""
    path = _copy("k3_dense_tanh.h5", tmp_path)
    code = ("import sys, bnconvert.readers as r\n"
            "def planted_bug(*a, **k): raise KeyError('planted')\n"
            "r.check_weights = planted_bug\n"
            "from bnconvert.cli import main\nmain()\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["fold", str(path), "-o", str(tmp_path / "folded.h5"), "--no-check"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines() == [
        "bnconvert: internal error, please report: KeyError: 'planted' (rerun with --debug for the traceback)"]
    done = subprocess.run([sys.executable, "-c", code, "--debug", *args], capture_output=True, text=True, timeout=120,
                          env=env, check=False)
    assert done.returncode == 3
    assert "Traceback (most recent call last)" in done.stderr and "in planted_bug" in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("bnconvert: internal error, please report: KeyError: 'planted'")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
