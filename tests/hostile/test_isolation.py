"""HDF5 files that crash, hang or exhaust libhdf5 itself, and the isolated child that parses them.

The files are built with h5py and then patched byte by byte: a v1 B-tree node that is its own
child, two B-tree nodes that are each other's child and sibling, a chunk B-tree that loops, a
local-heap free list that points to itself. libhdf5 segfaults or allocates until memory runs out
on them; bnconvert must answer with one line and exit 2 in every command, write nothing, and keep
auditing the other files of a folder run (``--jobs 1`` and ``--jobs 2``). Also: the child's limits
(CPU, wall clock), a bug of ours in the child (exit 3, not blamed on the file), a file truncated
between the child's answer and the main process's read, and the fresh-interpreter child used when
threads are running.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from bnconvert import batch
from bnconvert.audit import audit
from bnconvert.errors import BnconvertError, FormatError, InternalError
from bnconvert.readers import h5guard, isolated, load, root_attributes
from bnconvert.readers.isolated import DeferredArray

from ..conftest import fixture_file

SOURCE = "k3_dense_tanh.h5"


# -- builders: locate the structure, patch its bytes ---------------------------------------------


def _signatures(data: bytes | bytearray, signature: bytes) -> Iterator[int]:
    at = data.find(signature)
    while at != -1:
        yield at
        at = data.find(signature, at + 1)


def _group_tree_nodes(data: bytearray) -> list[int]:
    """Offsets of the v1 B-tree nodes of groups (type 0) that have entries: ``TREE``, type, level,
    entries used (2 bytes), left and right sibling (8 bytes each), then key 0, child 0, ..."""
    return [at for at in _signatures(data, b"TREE") if data[at + 4] == 0 and struct.unpack_from("<H", data, at + 6)[0] >= 1]


def _make_own_child(data: bytearray, node: int, child: int) -> None:
    data[node + 5] = 1  # level 1: its children are B-tree nodes, not symbol tables
    struct.pack_into("<Q", data, node + 24 + 8, child)  # child 0 (after the 8-byte key 0)


def btree_own_child(folder: Path) -> Path:
    """The root group's B-tree node lists itself as its child: libhdf5 recurses until SIGSEGV."""
    data = bytearray(fixture_file(SOURCE).read_bytes())
    node = _group_tree_nodes(data)[0]
    _make_own_child(data, node, node)
    path = folder / "btree_own_child.h5"
    path.write_bytes(bytes(data))
    return path


def btree_own_child_in_an_unread_group(folder: Path) -> Path:
    """The self-child B-tree node in a group no reader looks into (``top_level_model_weights``,
    given one subgroup), but which ``fold`` copies into its output: the old version's inspect
    read the file, and its fold crashed while writing."""
    path = folder / "btree_own_child_unread.h5"
    shutil.copy(fixture_file(SOURCE), path)
    before = dict(_tree_entries(path.read_bytes()).items())
    with h5py.File(path, "r+") as f:
        f["model_weights/top_level_model_weights"].create_group("extra")
    data = bytearray(path.read_bytes())
    grown = [at for at, used in _tree_entries(data).items() if before.get(at) == 0 and used == 1]
    assert len(grown) == 1, grown
    _make_own_child(data, grown[0], grown[0])
    path.write_bytes(bytes(data))
    return path


def _tree_entries(data: bytes | bytearray) -> dict[int, int]:
    return {at: struct.unpack_from("<H", data, at + 6)[0] for at in _signatures(data, b"TREE") if data[at + 4] == 0}


def btree_sibling_cycle(folder: Path) -> Path:
    """Two group B-tree nodes, each the other's child and sibling (left and right pointers loop);
    the second given the first's keys, so that a lookup in the first goes on into the second."""
    data = bytearray(fixture_file(SOURCE).read_bytes())
    a, b = _group_tree_nodes(data)[:2]
    data[b + 6 : b + 8] = data[a + 6 : a + 8]  # as many entries
    data[b + 24 : b + 24 + 24] = data[a + 24 : a + 24 + 24]  # key 0, child 0, key 1
    _make_own_child(data, a, b)
    _make_own_child(data, b, a)
    struct.pack_into("<QQ", data, a + 8, b, b)
    struct.pack_into("<QQ", data, b + 8, a, a)
    path = folder / "btree_sibling_cycle.h5"
    path.write_bytes(bytes(data))
    return path


def btree_siblings_only(folder: Path) -> Path:
    """Every group B-tree node its own left and right sibling, nothing else changed."""
    data = bytearray(fixture_file(SOURCE).read_bytes())
    for node in _group_tree_nodes(data):
        struct.pack_into("<QQ", data, node + 8, node, node)
    path = folder / "btree_siblings_only.h5"
    path.write_bytes(bytes(data))
    return path


def chunk_btree_loop(folder: Path) -> Path:
    """Every weight compressed (chunked, so indexed by a v1 chunk B-tree), and each chunk B-tree
    node made its own child and its own sibling: libhdf5 crashes when it reads the data."""
    path = folder / "chunk_btree_loop.h5"
    shutil.copy(fixture_file(SOURCE), path)
    with h5py.File(path, "r+") as f:
        names: list[str] = []
        f["model_weights"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            values = f["model_weights"][name][()]
            del f["model_weights"][name]
            f["model_weights"].create_dataset(name, data=values, chunks=values.shape, compression="gzip")
    data = bytearray(path.read_bytes())
    nodes = [at for at in _signatures(data, b"TREE") if data[at + 4] == 1]
    assert nodes, "no chunk B-tree in the rewritten file"
    for node in nodes:
        data[node + 5] = 1  # level 1: its children are B-tree nodes, not chunks
        struct.pack_into("<QQ", data, node + 8, node, node)  # left and right sibling: itself
        # key 0 is 8 bytes (chunk size, filter mask) plus 8 per dimension and one more, all zero
        # for a dataset stored as one chunk: child 0 is the first non-zero 8-byte field after it
        for rank in range(1, 6):
            at = node + 24 + 8 + 8 * (rank + 1)
            if struct.unpack_from("<Q", data, at)[0] != 0:
                struct.pack_into("<Q", data, at, node)  # child 0: itself
                break
    path.write_bytes(bytes(data))
    return path


def heap_free_list_loop(folder: Path) -> Path:
    """Every local heap's first free block names itself as the next one: libhdf5 builds the free
    list forever, allocating until the memory limit."""
    data = bytearray(fixture_file(SOURCE).read_bytes())
    patched = 0
    for at in _signatures(data, b"HEAP"):
        size, free, address = struct.unpack_from("<QQQ", data, at + 8)
        if free < size and address + free + 16 <= len(data):
            struct.pack_into("<QQ", data, address + free, free, 16)  # next free block: itself
            patched += 1
    assert patched
    path = folder / "heap_free_list_loop.h5"
    path.write_bytes(bytes(data))
    return path


def keras_btree_own_child(folder: Path) -> Path:
    """A ``.keras`` archive whose ``model.weights.h5`` has a B-tree node that is its own child."""
    with zipfile.ZipFile(fixture_file("k3_dense_tanh.keras")) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    data = bytearray(members["model.weights.h5"])
    node = _group_tree_nodes(data)[0]
    _make_own_child(data, node, node)
    members["model.weights.h5"] = bytes(data)
    path = folder / "keras_btree_own_child.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def keras_btree_own_child_in_an_unread_group(folder: Path) -> Path:
    """A ``.keras`` archive whose ``model.weights.h5`` has a self-child B-tree node in a group the
    reader never opens (the writer or Keras might)."""
    with zipfile.ZipFile(fixture_file("k3_dense_tanh.keras")) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    image = io.BytesIO(members["model.weights.h5"])
    with h5py.File(image, "r+") as f:
        f.create_group("unused").create_group("a")
    data = bytearray(image.getvalue())
    before = set(_tree_entries(members["model.weights.h5"]))
    grown = [at for at, used in _tree_entries(data).items() if at not in before and used == 1]
    assert len(grown) == 1, grown
    _make_own_child(data, grown[0], grown[0])
    members["model.weights.h5"] = bytes(data)
    path = folder / "keras_btree_own_child_unread.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


CRASHERS: dict[str, Callable[[Path], Path]] = {
    "btree_own_child": btree_own_child,
    "btree_own_child_in_an_unread_group": btree_own_child_in_an_unread_group,
    "btree_sibling_cycle": btree_sibling_cycle,
    "chunk_btree_loop": chunk_btree_loop,
    "heap_free_list_loop": heap_free_list_loop,
    "keras_btree_own_child": keras_btree_own_child,
    "keras_btree_own_child_in_an_unread_group": keras_btree_own_child_in_an_unread_group,
}
MESSAGE = r"damaged (HDF5|\.keras \(zip\)) file \((the HDF5 library crashed reading it: SIG[A-Z]+|.*memory.*|reading it exceeded .*)\)"


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from bnconvert.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


# -- every command: one line, exit 2, nothing written -------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "fold", "export"])
@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_a_file_that_crashes_libhdf5_is_one_line_in_every_command(name: str, command: str, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    path = CRASHERS[name](folder)
    out = tmp_path / "out"
    out.mkdir()
    args = {"inspect": [str(path)], "fold": [str(path), "-o", str(out / ("folded" + path.suffix)), "--no-check"],
            "export": [str(path), "-o", str(out / "model.onnx"), "--no-check"]}[command]
    before = sorted(p.name for p in folder.iterdir())
    start = time.monotonic()
    done = _cli(command, *args)
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"bnconvert: error: {path}: "), lines[0]
    assert re.search(MESSAGE, lines[0]), lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not list(out.iterdir()), "an output was written"
    assert sorted(p.name for p in folder.iterdir()) == before
    assert time.monotonic() - start < 60


def test_what_each_file_does_to_libhdf5_without_isolation(tmp_path: Path) -> None:
    # the files are what they claim: opened by h5py in a plain child (with a memory cap), each one
    # crashes it or exhausts its memory (the free-list loop) rather than failing cleanly
    for name in ("btree_own_child", "btree_own_child_in_an_unread_group", "btree_sibling_cycle", "heap_free_list_loop"):
        path = CRASHERS[name](tmp_path)
        code = ("import resource, h5py, sys\n"
                "resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, resource.RLIM_INFINITY))\n"
                "f = h5py.File(sys.argv[1], 'r')\n"
                "try:\n    f['model_weights'].visit(lambda n: None)\n"
                "except MemoryError:\n    sys.exit(99)\n"
                "except Exception as exc:\n    sys.exit(98 if 'memory' in str(exc) else 0)\n")
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=120, check=False)
        assert done.returncode < 0 or done.returncode in (98, 99), (name, done.returncode)


def test_looping_siblings_alone_read_as_before_and_the_walk_that_follows_them_hits_the_cpu_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # reading a group looks names up through children, never siblings: the file reads as the
    # original does; what follows siblings (H5Oget_info's storage walk) loops forever, and the
    # child's CPU limit ends it
    path = btree_siblings_only(tmp_path)
    done = _cli("inspect", str(path), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"] == json.loads(_cli("inspect", str(fixture_file(SOURCE)), "--format", "json").stdout)["summary"]
    monkeypatch.setattr(isolated, "cpu_seconds", lambda size: 2.0)
    start = time.monotonic()
    with pytest.raises(FormatError, match="exceeded the CPU limit"):
        isolated.run(isolated.ModelFile(path), "test-storage-info")
    assert time.monotonic() - start < 20


# -- folder runs: the crashing file is an error record, the others are audited -----------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_crashing_file_in_a_folder_is_that_file_s_error_record(jobs: str, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    good = ["k3_chain.h5", "k3_dense_tanh.keras", "tfk_chain.h5"]
    for name in good:
        shutil.copy(fixture_file(name), folder / name)
    bad = [btree_own_child(folder), heap_free_list_loop(folder), keras_btree_own_child(folder)]
    done = _cli("inspect", str(folder), "--format", "jsonl", "--jobs", jobs, timeout=300)
    assert done.returncode == 2, done.stderr  # some files failed
    records = {Path(r["file"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert sorted(records) == sorted(good + [p.name for p in bad])
    for name in good:
        assert "error" not in records[name] and "batch_norms" in records[name]["summary"], records[name]
    for path in bad:
        assert re.search(MESSAGE, records[path.name]["error"]), records[path.name]


def test_jobs_1_survives_a_crash_outside_the_hdf5_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # any crash while auditing a file (here a SIGSEGV raised in the audit itself) is that file's
    # record with --jobs 1, as with --jobs 2: each file is audited in a forked child
    shutil.copy(fixture_file("k3_chain.h5"), tmp_path / "a.h5")
    shutil.copy(fixture_file("k3_chain.h5"), tmp_path / "crash.h5")
    shutil.copy(fixture_file("tfk_chain.h5"), tmp_path / "c.h5")
    real = batch.audit_file

    def audit_file(path: str, **options: object) -> dict:
        if path.endswith("crash.h5"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(path, **options)

    monkeypatch.setattr(batch, "audit_file", audit_file)
    tasks = [batch.Task(str(tmp_path / n)) for n in ("a.h5", "crash.h5", "c.h5")]
    records = list(batch.audit_records(tasks, jobs=1))
    assert [Path(r["file"]).name for r in records] == ["a.h5", "crash.h5", "c.h5"]
    assert "process reading this file died" in records[1]["error"]
    assert "error" not in records[0] and "error" not in records[2]


# -- the child's limits and its own failures ---------------------------------------------------


@isolated.job("test-spin")
def _spin(fd: int, size: int, params: dict, facts: dict, send_blob: Callable) -> None:
    while True:
        pass


@isolated.job("test-block")
def _block(fd: int, size: int, params: dict, facts: dict, send_blob: Callable) -> None:
    time.sleep(3600)


@isolated.job("test-storage-info")
def _storage_info(fd: int, size: int, params: dict, facts: dict, send_blob: Callable) -> None:
    with h5py.File(isolated.h5_path(fd), "r") as f:
        facts["info"] = str(h5py.h5o.get_info(f["model_weights"].id))


@isolated.job("test-bug")
def _bug(fd: int, size: int, params: dict, facts: dict, send_blob: Callable) -> None:
    facts["some"] = {}["missing"]  # a KeyError of ours, not of the file


@isolated.job("test-exit")
def _exit(fd: int, size: int, params: dict, facts: dict, send_blob: Callable) -> None:
    os._exit(5)


@isolated.job("test-allocate")
def _allocate(fd: int, size: int, params: dict, facts: dict, send_blob: Callable) -> None:
    hog = []
    while True:
        hog.append(np.ones(64 * 1024**2 // 8))


def _source() -> isolated.ModelFile:
    return isolated.ModelFile(fixture_file(SOURCE))


def test_a_child_that_spins_stops_at_the_cpu_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolated, "cpu_seconds", lambda size: 1.0)
    start = time.monotonic()
    with pytest.raises(FormatError, match="exceeded the CPU limit"):
        isolated.run(_source(), "test-spin")
    assert time.monotonic() - start < 15


def test_a_child_that_blocks_stops_at_the_wall_clock_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocked, it uses no CPU: not a loop in the file, so not called a damaged file (a machine
    too busy to run the child looks the same)."""
    monkeypatch.setattr(isolated, "cpu_seconds", lambda size: 1.0)
    monkeypatch.setattr(isolated, "WALL_GRACE", 0.5)
    monkeypatch.setattr(isolated, "can_fork", lambda: True)
    monkeypatch.setattr(isolated, "_Spawned", isolated._Forked)  # the second try blocks as well
    start = time.monotonic()
    with pytest.raises(BnconvertError, match=r"stalled: its reading process got 0\.\d s of CPU in \d+ s") as caught:
        isolated.run(_source(), "test-block")
    assert not isinstance(caught.value, FormatError)
    assert time.monotonic() - start < 15


def test_a_forked_child_stuck_at_start_is_read_again_in_a_fresh_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked child can be stuck on a lock a native thread of the parent held at the fork (it
    then uses no CPU): the file is read again, once, in a fresh interpreter, with the same answer."""
    want = isolated.run(_source(), "h5")
    monkeypatch.setattr(isolated, "cpu_seconds", lambda size: 1.0)
    monkeypatch.setattr(isolated, "WALL_GRACE", 0.5)
    monkeypatch.setattr(isolated, "can_fork", lambda: True)
    monkeypatch.setattr(isolated, "_child_main", lambda *args, **kwargs: time.sleep(3600))  # forked children only
    again = isolated.run(_source(), "h5")
    assert again.facts == want.facts and again.error is None and len(again.blobs) == len(want.blobs)
    for a, b in zip(again.blobs, want.blobs):
        np.testing.assert_array_equal(a, b)


def test_a_child_that_loops_past_the_wall_clock_limit_is_a_damaged_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Busy for the whole wall-clock limit (the CPU limit set high): a loop, the file's doing."""
    monkeypatch.setattr(isolated, "cpu_seconds", lambda size: 1.0)
    monkeypatch.setattr(isolated, "WALL_FACTOR", 1)
    monkeypatch.setattr(isolated, "WALL_GRACE", 1.0)
    monkeypatch.setattr(isolated, "_limit", lambda cpu: None)  # no CPU limit: only the wall clock stops it
    with pytest.raises(FormatError, match=r"took more than \d+ s"):
        isolated.run(_source(), "test-spin")


def test_a_child_that_allocates_stops_at_the_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolated, "MEMORY_ALLOWANCE", 256 * 1024**2)
    with pytest.raises(FormatError, match="memory limit"):
        isolated.run(_source(), "test-allocate").get("anything")  # the error stopped the scan


def test_a_bug_in_the_child_is_an_internal_error_not_bad_input() -> None:
    with pytest.raises(InternalError, match=r"KeyError: 'missing'") as info:
        isolated.run(_source(), "test-bug")  # raised at once: not an error of the file's
    assert info.value.exit_code == 3
    with pytest.raises(InternalError, match="without an answer"):
        isolated.run(_source(), "test-exit")


def test_a_bug_in_the_readers_is_not_reported_as_a_malformed_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from bnconvert.readers import h5

    def broken(*args: object) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(h5, "_backend", broken)  # in the main process
    with pytest.raises(KeyError):
        load(fixture_file(SOURCE))
    monkeypatch.setitem(isolated._JOBS, "h5", _bug)  # in the child
    with pytest.raises(InternalError):
        load(fixture_file(SOURCE))


def test_a_bug_in_the_child_exits_3_in_the_cli(tmp_path: Path) -> None:
    code = ("import sys\nfrom bnconvert.readers import isolated\n"
            "def bug(*a):\n    raise KeyError('ours')\n"
            "isolated._JOBS['h5'] = bug\n"
            "from bnconvert.cli import main\nsys.argv = ['bnconvert', 'inspect', sys.argv[1]]\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code, str(fixture_file(SOURCE))], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert "internal error, please report" in done.stderr


def test_root_attributes_go_through_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    assert root_attributes(fixture_file(SOURCE), ("backend", "nothing")) == {"backend": "tensorflow", "nothing": None}

    def crash(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setitem(isolated._JOBS, "attrs", crash)
    with pytest.raises(FormatError, match=r"k3_dense_tanh\.h5: damaged HDF5 file \(the HDF5 library crashed reading it: SIGSEGV\)"):
        root_attributes(fixture_file(SOURCE), ("backend",))


def test_with_threads_running_the_child_is_a_fresh_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    forks = []
    monkeypatch.setattr(isolated, "_Forked", lambda *a: forks.append(a))  # must not be used
    try:
        assert not isolated.can_fork()
        model = load(fixture_file("k3_chain.h5"))
        assert any(layer.weights for layer in model.layers)
        with pytest.raises(FormatError, match=r"crashed reading it: SIGSEGV"):
            load(btree_own_child(tmp_path))
    finally:
        stop.set()
        thread.join()
    assert not forks


# -- no memory map: a file that shrinks is an error, never SIGBUS -------------------------------


def test_a_file_truncated_after_the_child_answered_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "shrinking.h5"
    shutil.copy(fixture_file("k3_chain.h5"), path)
    monkeypatch.setattr(isolated, "after_answer", lambda name: os.truncate(name, 4096))
    with pytest.raises(FormatError, match=r"shrinking\.h5: the file was truncated while being read"):
        load(path)


def test_the_readers_never_map_a_file() -> None:
    root = Path(isolated.__file__).parents[1]
    for source in root.rglob("*.py"):
        text = source.read_text()
        assert "mmap.mmap(" not in text and "np.memmap" not in text, source


def test_lazy_inspect_reads_no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h5guard, "MAP_FROM", 1024)  # the fixture is small: defer anything from 1 KiB
    model = load(fixture_file("k3_chain.h5"), lazy=True)
    deferred = [w for _, layer, _ in model.walk() for w in layer.weights.values() if isinstance(w, DeferredArray)]
    assert deferred
    audit(model).to_dict()
    assert not any(w.loaded for w in deferred)


def test_find_in_file_matches_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h5guard, "_BLOCK", 4096)
    data = fixture_file("k3_chain.h5").read_bytes()
    data = data + b"GCO" + b"L\x01" + bytes(4093) + b"GCOL\x01GCOL\x01"
    path = tmp_path / "blocks.bin"
    path.write_bytes(data)
    expected = [i for i in range(len(data)) if data.startswith(b"GCOL\x01", i)]
    fd = os.open(path, os.O_RDONLY)
    try:
        assert list(h5guard.find_in_file(fd, len(data), b"GCOL\x01")) == expected
    finally:
        os.close(fd)
