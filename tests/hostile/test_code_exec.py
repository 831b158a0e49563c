"""Nothing from a file runs, also where Keras is the reference: armed payloads through every command.

Two kinds of payload; each creates ``MARKER`` in the test's folder if it ever runs:

- a planted package on ``PYTHONPATH`` (``keras_hub``, ``keras_cv``, ``keras_nlp``, ``tf_keras_hub``,
  ``evilpkg``) named by a ``.keras`` layer's ``"module"``: Keras imports the module a config names
  (tf-keras any module at all, Keras 3 anything under keras, keras_hub, keras_cv or keras_nlp), so
  only an allow-list of full module paths keeps it out;
- a Lambda's marshalled bytecode in the ``model_config`` of a tf.keras ``.h5`` that is read with a
  clean ``--config``: bnconvert reads the clean JSON, but Keras would load the file's own config.

The first tests show the payloads are armed (Keras, asked directly, runs them); the others run
bnconvert in a real process, as a user would, and require that nothing ran, the exit code, and
that a refusal is one line on stderr, also after TensorFlow was loaded (no TensorFlow log lines).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest

import bnconvert
from bnconvert.check.runners import RunnerUnavailable
from bnconvert.readers.code import KERAS_MODULES, code_in_config, foreign_references

from ..conftest import ROOT, corpus_dir, fixture_file
from .build_files import _copy, _edit_keras, _set_config
from .build_models import MARKER, _keras2_lambda

needs_tf = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("tensorflow", "keras", "tf_keras")),
    reason="TensorFlow, keras and tf_keras are needed to show the payloads are armed",
)

#: packages planted on PYTHONPATH; importing any of them creates MARKER
PLANTED = ("keras_hub", "keras_cv", "keras_nlp", "tf_keras_hub", "evilpkg")
K3_BASE = "k3_dense_tanh.keras"  # Keras 3: imports keras_hub/keras_cv/keras_nlp modules
TFK_BASE = "tfk_chain.keras"  # tf-keras: imports any module ("keras_hub.x" becomes "tf_keras_hub.x")
REFERENCE = "k3_dense_tanh.keras"  # the other model of `verify`
#: what TensorFlow's native libraries print on stderr (absl format, and its preamble)
TF_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog|oneDNN|cuda|cuInit|TF_ENABLE_ONEDNN_OPTS|tensorflow", re.IGNORECASE)


# -- payloads ---------------------------------------------------------------------------------------


def plant(folder: Path) -> Path:
    """Packages that create ``folder/MARKER`` when imported; returns the folder to put on PYTHONPATH."""
    site = folder / "site"
    for name in PLANTED:
        pkg = site / name
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(f"open({str(folder / MARKER)!r}, 'a').write('imported {name}\\n')\n")
        (pkg / "layers.py").write_text("")
        (pkg / "evil.py").write_text("")
    return site


def module_keras(folder: Path, module: str, *, base: str = K3_BASE, layer: int | None = 1, key: str = "module",
                 name: str = "planted.keras") -> Path:
    """``base`` with the ``key`` of its layer ``layer`` (a Dense or Conv2D; None: the model itself)
    set to ``module``. (tf-keras ignores the module of a class it knows inside a model, but not
    the model's own: ``layer=None`` arms a tf-keras file.)"""
    def change(config: dict) -> None:
        (config if layer is None else config["config"]["layers"][layer])[key] = module
    return _edit_keras(base, folder, config=change, as_name=name)


def lambda_in_own_config(folder: Path, arch: Path | None = None) -> tuple[Path, Path]:
    """A tf.keras ``.h5`` whose own model_config has a Lambda (after its input), and the clean
    architecture JSON it is read with (the file's config before the Lambda went in; in ``arch``)."""
    path = _copy("tfk_chain.h5", folder, "lambda_own_config.h5")
    clean = (arch or folder) / "clean.json"
    with h5py.File(path, "r+") as f:
        text = f.attrs["model_config"]
        clean.write_text(text.decode() if isinstance(text, bytes) else text)
        _set_config(f, lambda c: c["config"]["layers"].insert(1, _keras2_lambda(folder)))
    return path, clean


# -- running ----------------------------------------------------------------------------------------


def run(args: list[str], *, site: Path | None = None, cwd: Path | None = None, quiet_env: bool = True,
        timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``bnconvert <args>`` in a real process (with the planted packages importable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")} if quiet_env else dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-c", "from bnconvert.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False)


def python(code: str, *, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=600,
                          check=False)


def assert_clean(done: subprocess.CompletedProcess[str], folder: Path, path: Path, allowed: tuple[int, ...]) -> None:
    """Nothing ran; the exit code is one of ``allowed``; a refusal is one line naming the file;
    no traceback and no TensorFlow log line anywhere on stderr."""
    assert not (folder / MARKER).exists(), f"a payload ran: {(folder / MARKER).read_text()}"
    assert done.returncode in allowed, f"exit {done.returncode}, expected {allowed}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert not [ln for ln in lines if TF_LOG.search(ln) and not ln.startswith("bnconvert: ")], done.stderr[-3000:]
    if done.returncode == 2:
        assert len(lines) == 1, f"a refusal must be one line:\n{done.stderr}"
        assert lines[0].startswith("bnconvert: error: ") and path.name in lines[0], lines[0]
        assert "unexpected" not in lines[0] and "internal error" not in lines[0], lines[0]


# -- the payloads are armed: Keras itself runs them ---------------------------------------------------


@needs_tf
def test_the_payloads_are_armed(tmp_path: Path) -> None:
    """Without bnconvert's guard, Keras imports the planted module and runs the Lambda's bytecode,
    even with safe_mode=True (tf-keras' legacy HDF5 path has no safe mode)."""
    site = plant(tmp_path)
    hub = module_keras(tmp_path, "keras_hub.evil")
    evil = module_keras(tmp_path, "evilpkg.layers", base=TFK_BASE, layer=None, name="evilpkg.keras")
    lam, _ = lambda_in_own_config(tmp_path)
    code = (  # the Lambda first: it writes MARKER afresh, the imports append to it
        "import keras, tf_keras\n"
        f"for load, path in ((tf_keras.models.load_model, {str(lam)!r}), (keras.models.load_model, {str(hub)!r}),\n"
        f"                   (tf_keras.models.load_model, {str(evil)!r})):\n"
        "    try:\n        load(path, compile=False, safe_mode=True)\n    except Exception as exc:\n        print(type(exc).__name__)\n"
    )
    done = python(code, site=site, cwd=tmp_path)
    ran = (tmp_path / MARKER).read_text() if (tmp_path / MARKER).exists() else ""
    assert "imported keras_hub" in ran and "imported evilpkg" in ran, (ran, done.stdout, done.stderr[-2000:])
    assert "ran" in ran, f"the Lambda did not run in tf-keras: {done.stdout} {done.stderr[-2000:]}"


# -- the allow-list -------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [
    "keras_hub.evil", "keras_hub", "keras_cv.models", "keras_nlp.layers", "tensorflow.python.ops", "tensorflow",
    "builtins", "tf_keras_hub.evil", "evilpkg", "evilpkg.layers", "keras.layers.evil", "keras.src.evil",
    "keras.src.export.tfsm_layer", "keras.src.utils.torch_utils", "tf_keras.src.layers.core.lambda_layer",
    "keras.src.layers.core.lambda_layer", "keras.models", "keras.saving", "keras.config", "keras.utils",
    "kerasx", "keras ", "keras.layers.", "__main__", "os", "",
])
def test_modules_outside_keras_are_named(module: str) -> None:
    config = {"class_name": "Functional", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d"}},
        {"module": "keras.layers", "class_name": "TimeDistributed", "config": {"layer": {
            "module": module, "class_name": "Dense", "config": {"name": "inner"}, "registered_name": None}}},
    ]}}
    assert foreign_references(config) == ([module], [])


@pytest.mark.parametrize("name", ["Custom>Evil", "evilpkg>Layer", "keras_hub>Backbone", ">"])
@pytest.mark.parametrize("key", ["registered_name", "class_name"])
def test_objects_registered_outside_keras_are_named(name: str, key: str) -> None:
    entry = {"module": "keras.layers", "class_name": "Dense", "registered_name": None, "config": {}}
    entry[key] = name
    assert foreign_references({"config": {"layers": [entry]}}) == ([], [name])
    assert foreign_references({"config": {"layers": [{**entry, key: "Custom>Adam"}]}}) == ([], [])  # tf-keras' own


def test_a_module_that_is_not_text_is_foreign() -> None:
    assert foreign_references({"module": {"class_name": "__bytes__"}})[0] == ["<a dict>"]
    assert foreign_references({"module": ["keras.layers"]})[0] == ["<a list>"]
    assert foreign_references({"module": None}) == ([], [])


def test_the_allow_list_is_full_paths_inside_keras() -> None:
    assert all(m == "keras" or m.startswith(("keras.", "tf_keras.src.")) for m in KERAS_MODULES)
    assert not {"keras_hub", "keras_cv", "keras_nlp", "tensorflow", "builtins", "tf_keras"} & KERAS_MODULES
    assert {"keras.layers", "keras.initializers", "keras.regularizers", "keras.src.models.functional",
            "keras.src.layers.core.dense", "tf_keras.src.engine.functional", "keras.src.engine.functional"} <= KERAS_MODULES


def _configs_of_real_files() -> list[tuple[str, dict]]:
    import zipfile

    folders = [ROOT / "fixtures", corpus_dir(), corpus_dir().parent.parent / "sequence-corpus" / "files"]
    out = []
    for folder in folders:
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            head = path.read_bytes()[:8] if path.is_file() else b""
            try:
                if head.startswith(b"PK"):
                    with zipfile.ZipFile(path) as zf:
                        if "config.json" not in zf.namelist():
                            continue
                        config = json.loads(zf.read("config.json"))
                        config.pop("compile_config", None)  # Keras drops it when loading with compile=False
                elif head.startswith(b"\x89HDF"):
                    with h5py.File(path, "r") as f:
                        text = f.attrs.get("model_config")
                    if text is None:
                        continue
                    config = json.loads(text)
                elif path.suffix == ".json":
                    config = json.loads(path.read_text())
                else:
                    continue
            except (OSError, ValueError, KeyError):
                continue
            out.append((path.name, config))
    return out


#: fixtures made as a third-party package writes them (bnconvert runs their published semantics;
#: Keras, which would need the package, is never handed them): what they name outside Keras
_THIRD_PARTY = {"norm_tfa_instance.h5": ([], ["Addons>InstanceNormalization"]),
                "norm_tfa_instance.keras": (["tensorflow_addons.layers.normalizations"], ["Addons>InstanceNormalization"])}


def test_real_files_name_nothing_outside_keras() -> None:
    """The fixtures and the corpora (when present): every module and registered name is allowed,
    and the only code found is in the files that do have Lambda layers."""
    configs = _configs_of_real_files()
    assert len(configs) >= 40
    for name, config in configs:
        code = code_in_config(config)
        modules, names = foreign_references(config)
        # a tf.keras Lambda names the module its function was defined in (``__main__`` in a script):
        # part of the code already found, never imported (the file is refused for its code)
        expected = _THIRD_PARTY.get(name, ([], []))
        assert (modules if not code else [m for m in modules if m != "__main__"], names) == expected, name
        assert not code or all(any(w in c for w in ("Lambda", "function_type", "__lambda__")) for c in code), (name, code)


def test_code_that_hides_in_other_places() -> None:
    """An RNN cell wrapper's dropout_fn_type, a layer that loads a SavedModel or a torch module,
    a TFOpLambda calling a file operation: all are code; TFOpLambda arithmetic is not."""
    def layer(cls: str, **config: object) -> dict:
        return {"config": {"layers": [{"class_name": cls, "config": {"name": "x", **config}}]}}

    assert code_in_config(layer("DropoutWrapper", dropout_fn="AAAA", dropout_fn_type="lambda"))
    assert code_in_config(layer("ResidualWrapper", residual_fn_type="lambda"))
    for cls in ("TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"):
        assert code_in_config(layer(cls)), cls
    for fn in ("io.write_file", "raw_ops.WriteFile", "compat.v1.py_func", "print", "py_function", "numpy_function",
               "summary.write", "compat.v1.io.read_file", "debugging.experimental.enable_dump_debug_info", None, 3):
        assert code_in_config(layer("TFOpLambda", function=fn)), fn
    for fn in ("__operators__.add", "math.multiply", "nn.relu", "reshape", "compat.v1.transpose", "linalg.matmul"):
        assert not code_in_config(layer("TFOpLambda", function=fn)), fn
    for cls in ("StringLookup", "IntegerLookup", "TextVectorization"):  # a vocabulary file (or gs:// URL) is read
        assert code_in_config(layer(cls, vocabulary="/etc/passwd")), cls
        assert not code_in_config(layer(cls, vocabulary=["a", "b"])) and not code_in_config(layer(cls, vocabulary=None))
    assert code_in_config(layer("DenseFeatures", feature_columns=[{"config": {"vocabulary_file": "gs://x/v.txt"}}]))


# -- the runner checks what Keras will load (in-process: refused before TensorFlow is imported) -------


@pytest.mark.parametrize(("base", "module"), [
    (K3_BASE, "keras_hub.evil"), (K3_BASE, "keras_cv.evil"), (K3_BASE, "keras_nlp.evil"), (K3_BASE, "evilpkg"),
    (K3_BASE, "tensorflow.evil"), (K3_BASE, "builtins"),
    (TFK_BASE, "keras_hub.evil"), (TFK_BASE, "evilpkg.layers"), (TFK_BASE, "tf_keras_hub.evil"), (TFK_BASE, "builtins"),
])
def test_keras_runner_refuses_a_planted_module(base: str, module: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bnconvert.check.keras_runner import KerasRunner

    monkeypatch.syspath_prepend(str(plant(tmp_path)))
    before = set(sys.modules)
    path = module_keras(tmp_path, module, base=base)
    with pytest.raises(RunnerUnavailable, match=rf"{re.escape(path.name)}: .*modules outside Keras \({re.escape(module)}\)"):
        KerasRunner(path)
    assert not (tmp_path / MARKER).exists()
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in PLANTED}


def test_keras_runner_refuses_a_registered_name(tmp_path: Path) -> None:
    from bnconvert.check.keras_runner import KerasRunner

    path = module_keras(tmp_path, "Custom>Evil", key="registered_name")
    with pytest.raises(RunnerUnavailable, match=r"registered outside Keras \(Custom>Evil\)"):
        KerasRunner(path)


def test_keras_runner_checks_the_files_own_config_not_the_clean_one(tmp_path: Path) -> None:
    """bnconvert reads the clean --config; Keras would load the file's model_config: that is checked."""
    from bnconvert.check.keras_runner import KerasRunner

    path, clean = lambda_in_own_config(tmp_path)
    model = bnconvert.load(path, config=clean)
    assert not any(layer.class_name == "Lambda" for _, layer, _ in model.walk())
    with pytest.raises(RunnerUnavailable, match=r"its model_config, which Keras would load, holds Python code.*evil_lambda"):
        KerasRunner(path, model=model)
    assert not (tmp_path / MARKER).exists()


@needs_tf
def test_keras_gets_the_architecture_bnconvert_read(tmp_path: Path) -> None:
    """A full .h5 read with --config: Keras is handed that architecture (and the file's weights),
    so both sides of the check are the same model, and the file's own config is never loaded."""
    from bnconvert.check.keras_runner import KerasRunner

    path, clean = lambda_in_own_config(tmp_path)
    model = bnconvert.load(path, config=clean)
    runner = KerasRunner(path, model=model, load_options={"config": str(clean)})
    keras_layers = [layer.name for layer in runner.keras_model.layers if "InputLayer" not in type(layer).__name__]
    assert keras_layers == [layer.name for layer in model.layers if layer.class_name != "InputLayer"]
    assert "evil_lambda" not in keras_layers
    assert not (tmp_path / MARKER).exists()


def test_keras_runner_checks_the_files_own_modules(tmp_path: Path) -> None:
    """The same with a planted module in a Keras 3 HDF5's own model_config."""
    from bnconvert.check.keras_runner import KerasRunner

    path = _copy("k3_dense_tanh.h5", tmp_path, "own_module.h5")
    clean = tmp_path / "clean.json"
    with h5py.File(path, "r+") as f:
        text = f.attrs["model_config"]
        clean.write_text(text.decode() if isinstance(text, bytes) else text)

        def change(config: dict) -> None:
            config["config"]["layers"][1]["module"] = "keras_hub.evil"
        _set_config(f, change)
    with pytest.raises(RunnerUnavailable, match=r"its model_config names Python modules outside Keras \(keras_hub.evil\)"):
        KerasRunner(path, model=bnconvert.load(path, config=clean))


def test_keras_runner_checks_the_weights_only_architecture(tmp_path: Path) -> None:
    """A weights-only file: the --config JSON is what Keras gets, as the text that was checked."""
    from bnconvert.check.keras_runner import KerasRunner

    weights = _copy("k2_weights.h5", tmp_path)
    config = json.loads(fixture_file("k2_weights.json").read_text())
    config["config"]["layers"][1]["module"] = "evilpkg"
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(config))
    with pytest.raises(RunnerUnavailable, match=r"modules outside Keras \(evilpkg\)"):
        KerasRunner(weights, load_options={"config": str(arch)})


# -- every command, in a real process ------------------------------------------------------------------


def _planted_case(folder: Path) -> tuple[Path, list[str]]:
    return module_keras(folder, "keras_hub.evil"), []


def _evilpkg_case(folder: Path) -> tuple[Path, list[str]]:
    return module_keras(folder, "evilpkg.layers", base=TFK_BASE, layer=None, name="evilpkg.keras"), []


def _lambda_case(folder: Path) -> tuple[Path, list[str]]:
    path, clean = lambda_in_own_config(folder, arch=folder.parent)
    return path, ["--config", str(clean)]


CASES: dict[str, Callable[[Path], tuple[Path, list[str]]]] = {
    "keras_hub_module": _planted_case, "evilpkg_module": _evilpkg_case, "lambda_in_own_config": _lambda_case,
}
#: command -> (arguments after the model path, allowed exit codes). The Keras reference is refused,
#: so fold/export check against bnconvert's float64 reference instead (0), and verify of a model
#: the float64 reference cannot run (the Lambda) is a clean refusal (2).
COMMANDS: dict[str, tuple[Callable[[Path, Path], list[str]], tuple[int, ...]]] = {
    "inspect": (lambda p, w: ["inspect", str(p)], (0,)),
    "inspect_folder": (lambda p, w: ["inspect", str(p.parent)], (0,)),
    "inspect_folder_jobs2": (lambda p, w: ["inspect", "--jobs", "2", str(p.parent)], (0,)),
    "fold": (lambda p, w: ["fold", str(p), "-o", str(w / f"out{p.suffix}")], (0,)),
    "export": (lambda p, w: ["export", str(p), "-o", str(w / "out.onnx"), "--json"], (0,)),
    "verify": (lambda p, w: ["verify", str(p), str(fixture_file(REFERENCE))], (0, 1, 2)),
    "verify_keras_only": (lambda p, w: ["verify", "--reference", "keras", str(fixture_file(REFERENCE)), str(p)], (2,)),
}


#: every command for two cases; for the tf-keras one, the commands that would load it in Keras
PAIRS = [(case, command) for case in sorted(CASES) for command in sorted(COMMANDS)
         if case != "evilpkg_module" or command in ("fold", "export", "verify_keras_only")]


@pytest.mark.parametrize(("case", "command"), PAIRS)
def test_every_command_in_a_real_process(case: str, command: str, tmp_path: Path) -> None:
    site = plant(tmp_path)
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    path, extra = CASES[case](model_dir)  # extra: --config, which applies to every file of a folder too
    build, allowed = COMMANDS[command]
    out = tmp_path / "out"
    out.mkdir()
    done = run([*build(path, out), *extra], site=site, cwd=tmp_path)
    # the payload writes into the folder of the model: look there too
    assert not (model_dir / MARKER).exists(), (model_dir / MARKER).read_text()
    assert_clean(done, tmp_path, path, allowed)
    if command == "verify_keras_only":
        expected = "evil_lambda" if case == "lambda_in_own_config" else r"modules outside Keras \((keras_hub\.evil|evilpkg\.layers)\)"
        assert re.search(expected, done.stderr), done.stderr
    if command in ("fold", "export") and case == "lambda_in_own_config":
        # Keras is handed the clean --config bnconvert read (and the file's weights), never the
        # file's own config: the check runs in Keras, on the same model as bnconvert's
        assert re.search(r"Keras \d", done.stdout), done.stdout[-3000:]
    elif command in ("fold", "export"):  # the report says why Keras was not the reference
        assert re.search(r"modules outside Keras \((keras_hub\.evil|evilpkg\.layers)\)", done.stdout), done.stdout[-3000:]


@needs_tf
def test_tensorflow_logs_never_reach_stderr(tmp_path: Path) -> None:
    """Both sides loaded in Keras (tf-keras and Keras 3), TF_CPP_MIN_LOG_LEVEL unset: stderr stays empty."""
    done = run(["verify", str(fixture_file("tfk_chain.h5")), str(fixture_file("tfk_chain.keras"))], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]
    path = _copy("k3_dense_tanh.keras", tmp_path)
    done = run(["fold", str(path), "-o", str(tmp_path / "folded.keras")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]
    assert "keras" in done.stdout.lower()


@needs_tf
def test_a_refusal_after_keras_was_loaded_is_one_line(tmp_path: Path) -> None:
    """A (a good file) loads TensorFlow and Keras; B is then refused: exactly one line on stderr."""
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    done = run(["verify", str(fixture_file("tfk_chain.keras")), str(bad)], cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error: ") and "bad.keras" in lines[0], done.stderr


@needs_tf
def test_keras_loads_the_bytes_that_were_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is swapped for an armed one after the check and before Keras loads it (while
    TensorFlow is imported): Keras loads the private copy that was checked, and nothing runs."""
    from bnconvert.check import keras_runner
    from bnconvert.check.keras_runner import KerasRunner

    (tmp_path / "armed").mkdir()
    armed, _ = lambda_in_own_config(tmp_path / "armed")
    path = _copy("tfk_chain.h5", tmp_path, "swapped.h5")
    real_import = keras_runner._import

    def import_then_swap(module: str) -> tuple[object, object]:
        os.replace(armed, path)  # between the check and the load
        return real_import(module)

    monkeypatch.setattr(keras_runner, "_import", import_then_swap)
    runner = KerasRunner(path)
    assert [layer.__class__.__name__ for layer in runner.keras_model.layers if "Lambda" in layer.__class__.__name__] == []
    assert h5py.File(path, "r").attrs["model_config"]  # the user's path now holds the armed file
    assert not (tmp_path / MARKER).exists() and not (tmp_path / "armed" / MARKER).exists()


def test_keras_is_never_handed_a_graph_with_a_cycle(tmp_path: Path) -> None:
    """The file bnconvert read was clean; the one Keras would load (copied later) has a cycle,
    which makes tf.keras wait forever: refused before Keras is imported."""
    from bnconvert.check.keras_runner import KerasRunner

    from .build_exhaustion import cycle_pair_h5

    looped = cycle_pair_h5(tmp_path)
    clean = bnconvert.load(fixture_file("tfk_chain.h5"))
    with pytest.raises(RunnerUnavailable, match=rf"{re.escape(looped.name)}: .*form a cycle"):
        KerasRunner(looped, model=clean)
