"""Fuzz: mutated fixture and corpus files must load and audit, or fail with a clean BnconvertError.

Never any other exception, never a hang, never a crash. Bytes of whole files are mutated
(flip/insert/delete/truncate/zero/splice), and so is the JSON config inside ``.keras`` zips and
``.h5`` files (structure: deleted keys, values of the wrong kind, deep nesting, copies; and bytes).
The library is called in-process for speed (``load`` + ``audit``); a few mutated files also go
through the real CLI.

Bounded for CI: ``BNCONVERT_FUZZ_EXAMPLES`` examples per test (default 150), derandomized (the
same cases every run) unless ``BNCONVERT_FUZZ_RANDOM`` is set. A long run, with statistics::

    BNCONVERT_FUZZ_EXAMPLES=5000 BNCONVERT_FUZZ_RANDOM=1 \\
        python -m pytest tests/hostile/test_fuzz.py -q -p no:cacheprovider --hypothesis-show-statistics

An example that runs longer than ``BNCONVERT_FUZZ_TIMEOUT`` seconds (default 60) is a hang: the
run is killed (``faulthandler``; a loop inside libhdf5 cannot be interrupted any other way), with
the tracebacks in ``$TMPDIR/bnconvert-fuzz-<pid>/hang-traceback.txt`` and the case that hung
beside it (``bytes.h5``, ``config.keras``...; ``BNCONVERT_FUZZ_DIR`` moves the folder). The folder
is removed after a run that finishes.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import bnconvert
from bnconvert.errors import BnconvertError, InternalError

from ..conftest import FIXTURES, corpus_dir, require_corpus
from .conftest import folder_state
from .mutate import BYTE_OPS, config_of, mutate_bytes, mutate_json, with_config

EXAMPLES = int(os.environ.get("BNCONVERT_FUZZ_EXAMPLES", "150"))
TIMEOUT = float(os.environ.get("BNCONVERT_FUZZ_TIMEOUT", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("BNCONVERT_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_MAX_BYTES = 5_000_000  # corpus files above this are left out (slow to mutate, nothing new)


def _sources() -> list[Path]:
    files = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".h5", ".keras"))
    corpus = corpus_dir()
    if corpus.is_dir():
        files += sorted(p for p in corpus.iterdir()
                        if p.suffix in (".h5", ".hdf5", ".keras") and p.stat().st_size <= _MAX_BYTES)
    return files


SOURCES = _sources()
WITH_CONFIG = [p for p in SOURCES if config_of(p) is not None]
_DATA = {p: p.read_bytes() for p in SOURCES}
_CONFIGS = {p: config_of(p) for p in WITH_CONFIG}


#: where each case is written before it is read: after a hang, the case that hung is still there
FUZZ_DIR = Path(os.environ.get("BNCONVERT_FUZZ_DIR") or tempfile.gettempdir()) / f"bnconvert-fuzz-{os.getpid()}"


@pytest.fixture(scope="module")
def fuzz_dir() -> Iterator[Path]:
    FUZZ_DIR.mkdir(parents=True, exist_ok=True)
    yield FUZZ_DIR
    shutil.rmtree(FUZZ_DIR, ignore_errors=True)  # a run killed by a hang never gets here


@pytest.fixture(autouse=True)
def _hang_log(fuzz_dir: Path):
    """Where :func:`_outcome`'s watchdog writes its tracebacks (pytest captures stderr)."""
    global _LOG
    with open(fuzz_dir / "hang-traceback.txt", "w") as _LOG:
        yield
    _LOG = None


_LOG = None


def _note(text: str) -> None:
    """``hypothesis.event`` inside a property test; nothing outside one."""
    try:
        event(text)
    except InvalidArgument:
        pass


def _how(exc: BnconvertError) -> str:
    """How a refusal came about: a bnconvert check, a library error translated by the readers, or
    the readers' last-resort catch of an exception raised in bnconvert's own code (worth a look)."""
    context = exc.__context__
    if context is None or isinstance(context, BnconvertError):
        return "refused (bnconvert's own check)"
    frames = traceback.extract_tb(context.__traceback__)
    last = frames[-1] if frames else None
    if last is not None and "bnconvert" in Path(last.filename).parts:
        return f"refused by the catch-all: {type(context).__name__} at {Path(last.filename).name}:{last.lineno}"
    return f"refused ({type(context).__name__} from a library)"


def _outcome(path: Path) -> str:
    """Load and audit; 'ok' or 'refused', and any other exception propagates (the test fails)."""
    faulthandler.dump_traceback_later(TIMEOUT, exit=True, file=_LOG or sys.stderr)  # per example
    try:
        bnconvert.audit(bnconvert.load(path)).to_dict()
    except InternalError:
        raise  # a bug of bnconvert's (also one in the isolated reader child) is never a clean refusal
    except BnconvertError as exc:
        message = str(exc)
        assert message.strip(), "an empty error message"
        assert str(path) in message, f"the message does not name the file: {message}"
        _note(_how(exc))
        return "refused"
    finally:
        faulthandler.cancel_dump_traceback_later()
    _note("ok")
    return "ok"


def test_sources_are_there() -> None:
    assert len(SOURCES) >= 20 and len(WITH_CONFIG) >= 10, (len(SOURCES), len(WITH_CONFIG))


def test_corpus_is_fuzzed_too() -> None:
    """The real-world files are mutated as well (skipped without the corpus, failed under CI)."""
    folder = require_corpus()
    assert sum(1 for p in SOURCES if p.parent == folder) >= 15


@FUZZ
@given(source=st.sampled_from(SOURCES), op=st.sampled_from(BYTE_OPS), seed=st.integers(0, 2**32 - 1))
def test_mutated_bytes(source: Path, op: str, seed: int, fuzz_dir: Path) -> None:
    data, _ = mutate_bytes(_DATA[source], random.Random(seed), op)
    path = fuzz_dir / f"bytes{source.suffix}"
    path.write_bytes(data)
    kind = "zip" if data[:2] == b"PK" else "hdf5" if data[:4] == b"\x89HDF" else "other"
    event(f"mutated file is {kind}")
    _outcome(path)


@FUZZ
@given(source=st.sampled_from(WITH_CONFIG), seed=st.integers(0, 2**32 - 1),
       edits=st.integers(1, 5), text_op=st.sampled_from([None, None, None, *BYTE_OPS]))
def test_mutated_config(source: Path, seed: int, edits: int, text_op: str | None, fuzz_dir: Path) -> None:
    rng = random.Random(seed)
    config = _CONFIGS[source]
    for _ in range(edits):
        config, _ = mutate_json(config, rng)
    text = json.dumps(config)
    if text_op is not None:
        raw, _ = mutate_bytes(text.encode(), rng, text_op)
        text = raw.decode("utf-8", "replace")
    path = fuzz_dir / f"config{source.suffix}"
    try:
        with_config(source, path, text)
    except (OSError, ValueError):  # h5py cannot store this attribute (too large): not a case
        event("not writable")
        return
    _outcome(path)


def test_zip_inside_mutated_weights(fuzz_dir: Path) -> None:
    """The HDF5 inside a .keras zip gets the byte mutations too (the zip itself stays valid)."""
    import io
    import zipfile

    zips = [p for p in SOURCES if _DATA[p][:2] == b"PK"]
    rng = random.Random(0)
    for i in range(max(EXAMPLES // 3, 20)):
        source = rng.choice(zips)
        with zipfile.ZipFile(io.BytesIO(_DATA[source])) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        members["model.weights.h5"], _ = mutate_bytes(members["model.weights.h5"], rng)
        path = fuzz_dir / f"inner{i % 4}.keras"
        with zipfile.ZipFile(path, "w") as zf:
            for name, body in members.items():
                zf.writestr(name, body)
        _outcome(path)


def test_cli_on_mutated_files(tmp_path: Path) -> None:
    """A few mutated files through the real CLI: exit 0 or 2, one line, nothing left behind."""
    rng = random.Random(1)
    cases = 0
    for i in range(8):
        source = rng.choice(SOURCES)
        data, _ = mutate_bytes(_DATA[source], rng)
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        path = folder / f"m{source.suffix}"
        path.write_bytes(data)
        for args in (["inspect", str(path)], ["fold", str(path), "--no-check"],
                     ["export", str(path), "-o", str(folder / "m.onnx"), "--no-check"]):
            before = folder_state(folder)
            done = subprocess.run([sys.executable, "-c", "from bnconvert.cli import main; main()", *args],
                                  check=False, capture_output=True, text=True, timeout=300)
            assert done.returncode in (0, 2), (args, done.returncode, done.stderr[-3000:])
            assert "Traceback" not in done.stderr, done.stderr[-3000:]
            if done.returncode == 2:
                errors = [line for line in done.stderr.splitlines() if line.startswith("bnconvert: error: ")]
                assert len(errors) == 1, done.stderr
                assert folder_state(folder) == before, "a refused command left something behind"
            cases += 1
    assert cases == 24
