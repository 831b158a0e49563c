"""No hang, no exhaustion: graph cycles, named pipes in folders, bzip2/LZMA bombs, and inputs that
used to cost work growing faster than their size (a deep weight path, a long ``layer_names`` with
one duplicate, configs of hundreds of thousands of layers).

Commands run in a real process with a generous timeout: a hang fails the test instead of stopping
the run. Timings are not asserted (the machines that run the suite differ too much); the timeout
only tells a hang from slowness.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import bnconvert
from bnconvert.batch import collect
from bnconvert.errors import FormatError
from bnconvert.readers.graph import MAX_LAYERS, build_model, count_layers
from bnconvert.readers.h5guard import MAX_PATH_PARTS
from bnconvert.readers.keras_zip import read_zip

from ..conftest import fixture_file
from . import build_exhaustion as bx

HANG = 60  # seconds: far above what any of these takes; only a hang gets there


def _cli(*args: str, timeout: int = HANG) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from bnconvert.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout)


def _refused(done: subprocess.CompletedProcess[str], path: Path, pattern: str) -> str:
    """The one error line of a refusal (exit 2) that names ``path`` and matches ``pattern``."""
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{done.stderr}"
    line = lines[0]
    assert line.startswith(f"bnconvert: error: {path}"), line
    assert "Traceback" not in done.stderr and "unexpected" not in line and "internal error" not in line, line
    assert re.search(pattern, line), f"{line!r} does not match {pattern!r}"
    return line


# -- cycles --------------------------------------------------------------------------------------

#: builder, the layers the message must list (in the order of the data flow, from the layer first
#: in the config), and where in the config
CYCLES = {
    "self_keras": (bx.cycle_self_keras, r"config\.json: the layer 'bn_head' takes its own output as input \(a cycle\)"),
    "pair_keras": (bx.cycle_pair_keras, r"config\.json: the layers 'shared_conv' -> 'pre_conv' -> 'shared_conv' form a cycle"),
    "self_h5": (bx.cycle_self_h5, r"model_config: the layer 'bn_head' takes its own output as input \(a cycle\)"),
    "pair_h5": (bx.cycle_pair_h5, r"model_config: the layers 'fork_conv' -> 'fork_relu' -> 'fork_conv' form a cycle"),
    "nested_h5": (bx.cycle_nested_h5,
                  r"model_config/inner_fn: the layers 'inner_dense' -> 'inner_fn_bn' -> 'inner_relu' -> 'inner_dense' "
                  r"form a cycle"),
    "sequential_in_functional_keras": (bx.cycle_in_sequential_in_functional_keras,
                                       r"config\.json: the layers 'inner_seq' -> 'fork_conv' -> 'inner_seq' form a cycle"),
}


@pytest.fixture(scope="module")
def cycle_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cycles")
    out = {}
    for name, (build, _) in CYCLES.items():
        (root / name).mkdir()
        out[name] = build(root / name)
    return out


@pytest.mark.parametrize("name", sorted(CYCLES))
def test_a_cycle_is_refused_by_the_reader(name: str, cycle_files: dict[str, Path]) -> None:
    with pytest.raises(FormatError, match=CYCLES[name][1]):
        bnconvert.load(cycle_files[name])


@pytest.mark.parametrize("command", ["inspect", "fold", "export", "verify"])
@pytest.mark.parametrize("name", sorted(CYCLES))
def test_every_command_refuses_a_cycle_without_hanging(name: str, command: str, cycle_files: dict[str, Path],
                                                        tmp_path: Path) -> None:
    path = cycle_files[name]
    args = {
        "inspect": [str(path)],
        "fold": [str(path), "-o", str(tmp_path / f"out{path.suffix}")],  # with the Keras check
        "export": [str(path), "-o", str(tmp_path / "out.onnx")],
        "verify": [str(path), str(fixture_file("k3_functional.keras"))],
    }[command]
    _refused(_cli(command, *args), path, CYCLES[name][1])
    assert not list(tmp_path.iterdir()), "a refused command wrote something"


def _functional(layers: list[dict], outputs: list[list]) -> dict:
    return {"class_name": "Functional", "config": {"name": "m", "layers": layers,
                                                   "input_layers": [["x", 0, 0]], "output_layers": outputs}}


def _input() -> dict:
    return {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_input_shape": [None, 4]},
            "inbound_nodes": []}


def _dense(name: str, *calls: list[tuple[str, int]]) -> dict:
    return {"class_name": "Dense", "name": name, "config": {"name": name, "units": 4},
            "inbound_nodes": [[[src, node, 0, {}] for src, node in call] for call in calls]}


def test_a_shared_layer_at_two_depths_is_no_cycle() -> None:
    # A(B(A(x))): 'a' takes 'b' on its second call, 'b' takes the first call of 'a'
    model = build_model(_functional([_input(), _dense("a", [("x", 0)], [("b", 0)]), _dense("b", [("a", 0)])],
                                    [["a", 1, 0]]))
    assert [len(layer.calls) for layer in model.layers] == [0, 2, 1]


def test_calls_are_replayed_in_order() -> None:
    # the first call of 'a' needs its own second call: Keras replays calls in order, so never
    with pytest.raises(FormatError, match=r"the layer 'a' takes its own output as input"):
        build_model(_functional([_input(), _dense("a", [("a", 1)], [("x", 0)])], [["a", 0, 0]]))


@pytest.mark.parametrize(("node", "times"), [(1, "called once"), (-1, "called once")])
def test_a_call_that_is_never_made_is_refused(node: int, times: str) -> None:
    # tf.keras would wait forever for the second call of 'a'
    with pytest.raises(FormatError, match=rf"layer 'b' \(Dense\) takes the output of call {node} of 'a', which is {times}"):
        build_model(_functional([_input(), _dense("a", [("x", 0)]), _dense("b", [("a", node)])], [["b", 0, 0]]))
    unconnected = {"class_name": "Dense", "name": "a", "config": {"name": "a", "units": 4}, "inbound_nodes": []}
    with pytest.raises(FormatError, match=r"takes the output of call 0 of 'a', which is never called"):
        build_model(_functional([_input(), unconnected, _dense("b", [("a", 0)])], [["b", 0, 0]]))


def test_a_tensor_passed_as_a_keyword_argument_counts() -> None:
    def keras3(name: str, source: str, mask: str) -> dict:
        def tensor(src: str) -> dict:
            return {"class_name": "__keras_tensor__", "config": {"keras_history": [src, 0, 0]}}
        return {"class_name": "Dense", "name": name, "config": {"name": name, "units": 4},
                "inbound_nodes": [{"args": [tensor(source)], "kwargs": {"mask": tensor(mask)}}]}

    with pytest.raises(FormatError, match=r"'a' -> 'b' -> 'a' form a cycle"):
        build_model(_functional([_input(), keras3("a", "x", "b"), keras3("b", "a", "x")], [["b", 0, 0]]))
    tf_keras = _dense("a", [("x", 0)])
    tf_keras["inbound_nodes"][0][0][3] = {"mask": ["b", 0, 0]}  # tf.keras writes tensors in kwargs so
    with pytest.raises(FormatError, match=r"'a' -> 'b' -> 'a' form a cycle"):
        build_model(_functional([_input(), tf_keras, _dense("b", [("a", 0)])], [["b", 0, 0]]))


def test_a_long_cycle_is_shown_by_its_ends() -> None:
    n = 5000
    layers = [_input(), _dense("d0", [(f"d{n - 1}", 0)])] + [_dense(f"d{i}", [(f"d{i - 1}", 0)]) for i in range(1, n)]
    start = time.perf_counter()
    with pytest.raises(FormatError) as caught:
        build_model(_functional(layers, [["d0", 0, 0]]))
    elapsed = time.perf_counter() - start
    message = str(caught.value)
    assert message.startswith("model_config: the layers 'd0' -> 'd1' -> 'd2' -> 'd3' -> ... (4992 more) -> ")
    assert message.endswith("'d4998' -> 'd4999' -> 'd0' form a cycle")
    assert elapsed < HANG


# -- named pipes and devices in a folder ---------------------------------------------------------


@pytest.fixture
def folder_with_pipes(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("POSIX FIFOs")
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.keras").write_bytes(fixture_file("k3_chain.keras").read_bytes())
    (folder / "sub" / "b.h5").write_bytes(fixture_file("tfk_chain.h5").read_bytes())
    os.mkfifo(folder / "pipe.h5")  # nobody ever writes: opening it for reading would block
    os.mkfifo(folder / "sub" / "pipe.keras")
    if os.path.exists("/dev/zero"):
        (folder / "zero.h5").symlink_to("/dev/zero")  # a device that never ends
    return folder


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX FIFOs")
@pytest.mark.parametrize("recursive", [True, False])
def test_pipes_and_devices_in_a_folder_are_skipped_unopened(folder_with_pipes: Path, recursive: bool) -> None:
    devices = int((folder_with_pipes / "zero.h5").is_symlink())
    found = collect([folder_with_pipes], recursive=recursive)
    assert [Path(t.path).name for t in found.tasks] == (["a.keras", "b.h5"] if recursive else ["a.keras"])
    assert found.skipped == 1 + devices + (1 if recursive else 0)
    args = ["inspect", *(["-r"] if recursive else []), str(folder_with_pipes)]
    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    if recursive:
        assert f"2 model files: 2 audited, 0 failed; {2 + devices} other files skipped" in done.stderr, done.stderr


# -- bzip2 and LZMA bombs ------------------------------------------------------------------------

BOMB_MB = 128  # what the stream would inflate to; the header declares 100 KB (4 KB for config.json)
BOMBS: dict[str, tuple[Callable[..., Path], str]] = {
    "bzip2": (bx.zip_bzip2_bomb, "model.weights.h5"),
    "lzma": (bx.zip_lzma_bomb, "model.weights.h5"),
    "bzip2_config": (bx.zip_bzip2_config_bomb, "config.json"),
}


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    return {name: build(root, megabytes=BOMB_MB) for name, (build, _) in BOMBS.items()}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_bomb_stops_at_its_declared_size(name: str, bombs: dict[str, Path]) -> None:
    member = BOMBS[name][1]
    tracemalloc.start()
    try:
        with zipfile.ZipFile(bombs[name]) as zf, pytest.raises(FormatError, match=(
                rf"zip entry '{member}' inflates to more than the size its header declares")):
            read_zip(str(bombs[name]), zf)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2, f"{peak:,} bytes held while reading a member that declares at most 100 KB"


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_the_cli_refuses_a_bomb(name: str, bombs: dict[str, Path]) -> None:
    _refused(_cli("inspect", str(bombs[name])), bombs[name],
             rf"{BOMBS[name][1]}.*inflates to more than the size its header declares")


def test_honest_members_of_every_method_read_the_same(tmp_path: Path) -> None:
    src = fixture_file("k3_functional.keras")
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    reference = bnconvert.load(src)
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        path = tmp_path / f"method{method}.keras"
        with zipfile.ZipFile(path, "w", compression=method) as zf:
            for n, data in members.items():
                zf.writestr(n, data)
        model = bnconvert.load(path)
        for (_, a, _), (_, b, _) in zip(reference.walk(), model.walk(), strict=True):
            assert a.weights.keys() == b.weights.keys()
            assert all((a.weights[k] == b.weights[k]).all() for k in a.weights)


# -- work that used to grow faster than the input ------------------------------------------------


def test_a_weight_path_thousands_of_groups_deep_is_refused(tmp_path: Path) -> None:
    path = bx.deep_weight_path_h5(tmp_path, depth=3000)
    _refused(_cli("inspect", str(path)), path, rf"layer 'dense': the name 'g/g/.*' is 3,000 groups deep "
                                               rf"\(limit {MAX_PATH_PARTS}\); refused")


def test_a_weight_path_within_the_limit_is_read(tmp_path: Path) -> None:
    path = bx.deep_weight_path_h5(tmp_path, depth=MAX_PATH_PARTS)
    done = _cli("inspect", str(path))
    assert done.returncode == 0, done.stderr


def test_one_duplicate_among_many_layer_names(tmp_path: Path) -> None:
    path = bx.duplicate_layer_names_h5(tmp_path, count=30_000)
    _refused(_cli("inspect", str(path)), path, r"layer_names lists 'layer_15000' more than once")


@pytest.mark.parametrize("kind", ["Sequential", "Functional"])
def test_a_config_of_300k_layers_is_refused(kind: str, tmp_path: Path) -> None:
    path = bx.big_config_keras(tmp_path, 300_000, kind)
    _refused(_cli("inspect", str(path)), path,
             rf"config\.json: the model has 300,000 layers, more than bnconvert reads \({MAX_LAYERS:,}\); refused")


def test_a_config_at_the_layer_limit_is_read(tmp_path: Path) -> None:
    path = bx.big_config_keras(tmp_path, MAX_LAYERS, "Functional")
    done = _cli("inspect", "--json", str(path), timeout=2 * HANG)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["layers"] == MAX_LAYERS
    assert [bn["name"] for bn in report["batch_norms"]] == ["batch_normalization"]


def test_nested_models_count_towards_the_limit() -> None:
    inner = {"class_name": "Sequential", "config": {"layers": [{"class_name": "ReLU", "config": {"name": f"r{i}"}}
                                                               for i in range(60_000)]}}
    config = {"class_name": "Functional", "config": {"layers": [{**inner, "name": "s1"}, {**inner, "name": "s2"}]}}
    assert count_layers(config) == 120_002
    with pytest.raises(FormatError, match=r"120,002 layers, more than bnconvert reads"):
        build_model(config)


def test_keras1_weight_names_in_a_large_nested_model(tmp_path: Path) -> None:
    # each 'd7_W' finds its layer from its own underscores (it used to try every layer: 20 s here)
    path = bx.nested_keras1_names_h5(tmp_path, count=10_000)
    done = _cli("inspect", "--json", str(path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parameters"] == 20_000


def test_many_outputs_and_many_bns(tmp_path: Path) -> None:
    # each BN's forward fold asks whether its output is a model output (was a scan of the list)
    path = bx.many_outputs_keras(tmp_path, bns=1000, outputs=30_000)
    done = _cli("inspect", "--json", str(path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["batch_norms"]) == 1000
    assert {bn["fold"]["action"] for bn in report["batch_norms"]} == {"stays"}


def test_a_weights_only_file_of_many_bns(tmp_path: Path) -> None:
    # each BN is reported with the previous layer with weights (was a scan from the top per BN)
    path = bx.weights_only_bn_chain_h5(tmp_path, pairs=2000)
    done = _cli("inspect", "--json", str(path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [bn["input_from"]["layer"] for bn in report["batch_norms"]] == [f"dense_{i}" for i in range(2000)]


def test_a_layer_list_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = bx.duplicate_layer_names_h5(tmp_path, count=MAX_LAYERS + 1)
    _refused(_cli("inspect", str(path)), path,
             rf"layer_names lists {MAX_LAYERS + 1:,} layers, more than bnconvert reads \({MAX_LAYERS:,}\); refused")


@pytest.mark.parametrize("command", ["fold", "export"])
def test_a_long_chain_of_removed_layers_read_from_everywhere(command: str, tmp_path: Path) -> None:
    # each Dropout is removed and each is read by an output: every reference used to walk the chain
    path = bx.dropout_chain_keras(tmp_path, count=5000)
    out = tmp_path / ("out.keras" if command == "fold" else "out.onnx")
    done = _cli(command, str(path), "--no-check", "-o", str(out), timeout=2 * HANG)
    assert done.returncode == 0, done.stderr
    if command == "fold":
        with zipfile.ZipFile(out) as zf:
            layers = json.loads(zf.read("config.json"))["config"]["layers"]
        assert not [e for e in layers if e["class_name"] in ("Dropout", "BatchNormalization")]
        assert len(layers) == 5002  # input, dense, the activations
    else:
        import onnx
        graph = onnx.load(str(out)).graph
        assert [o.name for o in graph.output] == [f"a{i}" for i in range(5000)]
