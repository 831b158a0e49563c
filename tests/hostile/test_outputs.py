"""Outputs: written to a temporary file in the target folder and renamed; an existing file is kept
without ``--force``; the input is never the output; a read-only folder or a full disk gives one
clear line and leaves nothing behind. First :mod:`bnconvert.io` itself, then every command that
writes."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bnconvert.cli import main
from bnconvert.errors import OutputError
from bnconvert.io import (
    InputSet,
    Terminated,
    atomic_output,
    check_output,
    same_file,
    terminate_on_signals,
)

from ..conftest import fixture_file
from .conftest import folder_state

SOURCE = "k3_dense_tanh.keras"


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` unwritable (chmod; ``chattr +i`` when running as root); skip if impossible."""
    os.chmod(folder, 0o555)
    immutable = False
    try:
        probe = folder / ".probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:  # root ignores the mode bits
            probe.unlink()
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode == 0 \
                if shutil.which("chattr") else False
            if not immutable:
                pytest.skip("cannot make a folder read-only here (root without chattr)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
        os.chmod(folder, 0o755)


# -- bnconvert.io --------------------------------------------------------------------------------


def test_temporary_file_lives_in_the_target_folder_and_is_renamed(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with atomic_output(target) as tmp:
        assert tmp.name == "model.onnx" and tmp.parent.parent == tmp_path and tmp.parent != tmp_path
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_failure_inside_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("the writer failed half way")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "disk is full"), (errno.EFBIG, "larger than"),
                                            (errno.EROFS, "read-only"), (errno.EACCES, "(?i)permission denied")])
def test_os_errors_become_one_clear_output_error(tmp_path: Path, code: int, words: str) -> None:
    target = tmp_path / "out.h5"
    with pytest.raises(OutputError, match=words) as info, atomic_output(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(code, os.strerror(code))
    assert str(target) in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    target.write_bytes(b"keep me")
    ran = []
    with pytest.raises(OutputError, match=r"already exists.*--force"), atomic_output(target) as tmp:
        ran.append(tmp)
    assert not ran and target.read_bytes() == b"keep me"
    with atomic_output(target, force=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_output_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    with pytest.raises(OutputError, match=r"already exists|appeared"), atomic_output(target) as tmp:
        tmp.write_bytes(b"ours")
        target.write_bytes(b"someone else's")
    assert target.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def _input(tmp_path: Path) -> Path:
    src = tmp_path / "in.h5"
    src.write_bytes(b"input")
    return src


def _alias(src: Path, how: str) -> Path:
    """Another path to the file ``src``: itself, through ``sub/..``, a symlink, a hard link, or a
    symlinked folder (made next to it)."""
    folder = src.parent
    (folder / "sub").mkdir()
    if how == "same":
        return src
    if how == "relative":
        return folder / "sub" / ".." / src.name
    if how == "symlinked_folder":
        (folder / "alias").symlink_to(folder, target_is_directory=True)
        return folder / "alias" / src.name
    target = folder / f"{how}{src.suffix}"
    if how == "symlink":
        target.symlink_to(src)
    else:
        os.link(src, target)
    return target


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink", "symlinked_folder"])
def test_output_is_never_the_input(tmp_path: Path, how: str) -> None:
    src = _input(tmp_path)
    target = _alias(src, how)
    assert same_file(target, src)
    for force in (False, True):
        with pytest.raises(OutputError, match="is the input file"):
            check_output(target, force=force, inputs=[src])
        with pytest.raises(OutputError, match="is the input file"), atomic_output(target, force=force, inputs=[src]):
            pass
    assert src.read_bytes() == b"input"


def test_companion_files_move_with_the_output(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    with atomic_output(target, companions=["m.onnx.data"]) as tmp:
        tmp.write_bytes(b"graph")
        (tmp.parent / "m.onnx.data").write_bytes(b"weights")
    assert (tmp_path / "m.onnx.data").read_bytes() == b"weights"
    (tmp_path / "m.onnx").unlink()
    with pytest.raises(OutputError, match=r"m.onnx.data: already exists"), atomic_output(target, companions=["m.onnx.data"]):
        pass


def test_nothing_written_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="produced no file"), atomic_output(tmp_path / "x.h5"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder), pytest.raises(OutputError, match="cannot write in"), atomic_output(folder / "x.h5") as tmp:
        tmp.write_bytes(b"x")
    assert list(folder.iterdir()) == []


def test_missing_folder_and_folder_target(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "nowhere" / "x.h5")
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path)


# -- every command that writes -------------------------------------------------------------------


def _writers() -> dict[str, tuple[str, list[str]]]:
    """command -> (output suffix, arguments with IN and OUT placeholders)."""
    table = {
        "fold": (".keras", ["fold", "IN", "-o", "OUT", "--no-check"]),
        "export": (".onnx", ["export", "IN", "-o", "OUT", "--no-check"]),
    }
    if importlib.util.find_spec("matplotlib") is not None:
        table["inspect --plot"] = (".png", ["inspect", "IN", "--plot", "OUT"])
    return {k: v for k, v in table.items() if k.split()[0] in main.commands}


WRITERS = _writers()


def _argv(name: str, src: Path, out: Path, *extra: str) -> list[str]:
    return [str(src) if a == "IN" else str(out) if a == "OUT" else a for a in WRITERS[name][1]] + list(extra)


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "in" / SOURCE
    src.parent.mkdir()
    shutil.copy(fixture_file(SOURCE), src)
    return src


@pytest.mark.parametrize("name", WRITERS)
def test_writes_and_keeps_existing_output_without_force(name: str, source: Path, tmp_path: Path) -> None:
    out = tmp_path / ("out" + WRITERS[name][0])
    first = CliRunner().invoke(main, _argv(name, source, out))
    assert first.exit_code == 0, first.output
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["in", out.name]
    out.write_bytes(b"keep me")
    again = CliRunner().invoke(main, _argv(name, source, out))
    assert again.exit_code == 2 and out.name in _one_line(again)
    assert out.read_bytes() == b"keep me"
    forced = CliRunner().invoke(main, _argv(name, source, out, "--force"))
    assert forced.exit_code == 0, forced.output
    assert out.read_bytes() != b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", out.name]


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink"])
@pytest.mark.parametrize("name", WRITERS)
def test_output_is_never_the_input_for_commands(name: str, how: str, source: Path) -> None:
    folder = source.parent
    target = _alias(source, how)
    before = folder_state(folder)
    for extra in ([], ["--force"]):
        result = CliRunner().invoke(main, _argv(name, source, target, *extra))
        assert result.exit_code == 2, result.output
        _one_line(result)
        assert folder_state(folder) == before


@pytest.mark.parametrize("name", WRITERS)
def test_read_only_output_folder(name: str, source: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / ("out" + WRITERS[name][0])
    with read_only(folder):
        result = CliRunner().invoke(main, _argv(name, source, out))
        assert result.exit_code == 2, result.output
        line = _one_line(result)
        assert out.name in line or str(folder) in line
        assert list(folder.iterdir()) == []


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))  # no file can grow past 2 KB: a "full disk"
from bnconvert.cli import main
sys.argv = ["bnconvert", *sys.argv[1:]]
main()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize("name", WRITERS)
def test_full_disk(name: str, source: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / ("out" + WRITERS[name][0])
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, *_argv(name, source, out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: error: ") and out.name in lines[0], done.stderr[-2000:]
    assert list(out_dir.iterdir()) == []


# -- only regular files are replaced -------------------------------------------------------------


def _not_regular(folder: Path, how: str, name: str) -> Path:
    """A non-regular file named ``name`` in ``folder``: a character device (``mknod`` as root,
    else a symlink to /dev/null), a symlink to /dev/null, or a named pipe."""
    target = folder / name
    if how == "device":
        try:
            os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers
        except (OSError, AttributeError):
            target.symlink_to(os.devnull)
    elif how == "symlink_to_device":
        target.symlink_to(os.devnull)
    else:
        os.mkfifo(target)
    assert not stat.S_ISREG(os.stat(target).st_mode)
    return target


NOT_REGULAR = ["device", "symlink_to_device", "fifo"] if hasattr(os, "mkfifo") and os.path.exists(os.devnull) else []


@pytest.mark.parametrize("how", NOT_REGULAR)
def test_only_regular_files_are_replaced(tmp_path: Path, how: str) -> None:
    target = _not_regular(tmp_path, how, "out.h5")
    for force in (False, True):
        with pytest.raises(OutputError, match="exists and is not a regular file; refused even with --force"):
            check_output(target, force=force)
        with pytest.raises(OutputError, match="not a regular file"), atomic_output(target, force=force):
            pass
    assert not stat.S_ISREG(os.stat(target).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


@pytest.mark.parametrize("how", NOT_REGULAR)
@pytest.mark.parametrize("name", WRITERS)
def test_commands_replace_only_regular_files(name: str, how: str, source: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = _not_regular(out_dir, how, "out" + WRITERS[name][0])
    result = CliRunner().invoke(main, _argv(name, source, target, "--force"))
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert line == f"bnconvert: error: {target}: exists and is not a regular file; refused even with --force"
    assert not stat.S_ISREG(os.stat(target).st_mode) and [p.name for p in out_dir.iterdir()] == [target.name]


# -- no output is ever any input: --config, every file of a folder run ----------------------------


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink", "symlinked_folder"])
def test_input_set_knows_a_file_by_any_of_its_names(tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a.h5", tmp_path / "b.json"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    inputs = InputSet([a, None, b])
    assert len(inputs) == 2
    alias = _alias(b, how)
    assert inputs.find(alias) == b and alias in inputs
    assert inputs.find(tmp_path / "c.h5") is None and (tmp_path / "a.h5x") not in inputs
    monkeypatch.chdir(tmp_path)
    assert inputs.find("a.h5") == a  # a relative path from the current folder
    assert InputSet(["b.json"]).find(b) == Path("b.json")


@pytest.fixture
def weights_and_config(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    weights, config = folder / "weights.h5", folder / "arch.json"
    shutil.copy(fixture_file("k2_weights.h5"), weights)
    shutil.copy(fixture_file("k2_weights.json"), config)
    return weights, config


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink"])
@pytest.mark.parametrize("command", ["fold", "export"])
def test_output_is_never_the_config(command: str, how: str, weights_and_config: tuple[Path, Path]) -> None:
    weights, config = weights_and_config
    target = _alias(config, how)
    before = folder_state(config.parent)
    for extra in ([], ["--force"]):
        result = CliRunner().invoke(main, [command, str(weights), "--config", str(config), "-o", str(target),
                                           "--no-check", *extra])
        assert result.exit_code == 2, result.output
        assert "is the input file" in _one_line(result) and str(target) in _one_line(result)
        assert folder_state(config.parent) == before


def test_config_run_still_writes(weights_and_config: tuple[Path, Path], tmp_path: Path) -> None:
    weights, config = weights_and_config
    out = tmp_path / "w.onnx"
    result = CliRunner().invoke(main, ["export", str(weights), "--config", str(config), "-o", str(out), "--no-check"])
    assert result.exit_code == 0, result.output
    assert out.is_file()


needs_plot = pytest.mark.skipif("inspect --plot" not in WRITERS, reason="matplotlib is not installed")


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A folder run's input: a model under an image's name, one in a subfolder, a weights-only
    file with its companion architecture."""
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(fixture_file(SOURCE), folder / "model.png")
    shutil.copy(fixture_file("k3_chain.keras"), folder / "sub" / "deep.svg")
    shutil.copy(fixture_file("k2_weights.h5"), folder / "w.h5")
    shutil.copy(fixture_file("k2_weights.json"), folder / "w.json")
    return folder


@needs_plot
@pytest.mark.parametrize("target", ["model.png", "sub/deep.svg", "hardlink", "symlink"])
def test_plot_is_never_a_file_of_the_folder_run(target: str, model_folder: Path, tmp_path: Path) -> None:
    if target == "hardlink":
        path = tmp_path / "plot.png"
        os.link(model_folder / "model.png", path)
    elif target == "symlink":
        path = tmp_path / "plot.pdf"
        path.symlink_to(model_folder / "sub" / "deep.svg")
    else:
        path = model_folder / target
    before = folder_state(model_folder)
    result = CliRunner().invoke(main, ["inspect", str(model_folder), "-r", "--plot", str(path), "--force"])
    assert result.exit_code == 2, result.output
    assert "is the input file" in _one_line(result)
    assert folder_state(model_folder) == before


@needs_plot
def test_plot_beside_a_folder_run_is_written(model_folder: Path) -> None:
    result = CliRunner().invoke(main, ["inspect", str(model_folder), "-r", "--plot", str(model_folder / "bn.png")])
    assert result.exit_code == 0, result.output
    assert (model_folder / "bn.png").is_file()


def test_verify_writes_nothing(tmp_path: Path) -> None:
    """``verify`` writes no file, so its inputs (A, B, --inputs) cannot be overwritten: nothing to check
    but that the folder is left as it was."""
    shutil.copy(fixture_file(SOURCE), tmp_path / SOURCE)
    before = folder_state(tmp_path)
    result = CliRunner().invoke(main, ["verify", str(tmp_path / SOURCE), str(tmp_path / SOURCE)])
    assert result.exit_code in (0, 2), result.output
    assert folder_state(tmp_path) == before


# -- SIGTERM, SIGHUP and Ctrl-C while the check runs ----------------------------------------------


_SLOW_CHECK = """
import os, sys, time
import bnconvert.check
import bnconvert.pipeline as pipeline

def slow_check(*args, **kwargs):  # the check starts: say so, then take "forever"
    open(os.environ["BNCONVERT_TEST_MARKER"], "w").close()
    time.sleep(300)

pipeline._check_written = slow_check            # fold's check
pipeline._check_export = slow_check             # export's check
bnconvert.check.start_reference = lambda *a, **k: None
from bnconvert.cli import main
sys.argv = ["bnconvert", *sys.argv[1:]]
main()
"""

_SIGNALS = [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("signame", "code"), [s for s in _SIGNALS if hasattr(signal, s[0])])
@pytest.mark.parametrize("command", ["fold", "export"])
def test_signal_during_the_check_leaves_nothing(command: str, signame: str, code: int, source: Path,
                                                tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / ("out.keras" if command == "fold" else "out.onnx")
    marker = tmp_path / "check-started"
    env = {**os.environ, "BNCONVERT_TEST_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CHECK, command, str(source), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the check never started"
            time.sleep(0.05)
        assert next(p.name for p in out_dir.iterdir()).startswith(".bnconvert-tmp-")  # written, unchecked
        proc.send_signal(getattr(signal, signame))
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr[-2000:]
    assert list(out_dir.iterdir()) == [], "a temporary or unchecked output was left behind"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnconvert: "), stderr[-2000:]
    assert "Traceback" not in stderr


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_signal_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Terminated) as info, terminate_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert info.value.exit_code == 143 and isinstance(info.value, KeyboardInterrupt)
    assert {s: signal.getsignal(s) for s in before} == before


def test_signal_handlers_only_in_the_main_thread() -> None:
    seen = []

    def run() -> None:
        with terminate_on_signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]


def test_terminated_unwinds_atomic_output(tmp_path: Path) -> None:
    with pytest.raises(Terminated), atomic_output(tmp_path / "out.keras") as tmp:
        tmp.write_bytes(b"complete but unchecked")
        raise Terminated(signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []
