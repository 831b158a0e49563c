"""Shared test helpers: where the corpus and the fixtures are, and how to skip without them.

The corpus (real third-party Keras files) is used in place from ``$BNCONVERT_CORPUS``
(default ``../shared/corpus`` beside the checkout). Tests that need it skip when it is absent,
except under CI (``CI`` set), where a missing corpus is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def corpus_dir() -> Path:
    """The corpus ``files`` folder (may not exist)."""
    base = Path(os.environ.get("BNCONVERT_CORPUS", ROOT.parent / "shared" / "corpus"))
    return base / "files" if (base / "files").is_dir() else base


def require_corpus() -> Path:
    """The corpus folder; skip the test when it is absent, fail under CI."""
    path = corpus_dir()
    if not path.is_dir():
        message = f"corpus not found at {path} (set BNCONVERT_CORPUS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def corpus_file(name: str) -> Path:
    """One corpus file by (a unique prefix of) its name."""
    folder = require_corpus()
    matches = sorted(p for p in folder.iterdir() if p.name.startswith(name))
    if not matches:
        pytest.fail(f"corpus file {name!r} not found in {folder}")
    return matches[0]


def fixture_file(name: str) -> Path:
    """A bundled fixture; fails (not skips) when missing: fixtures are part of the repo."""
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"fixture {name} missing: run python fixtures/make_fixtures.py")
    return path


def sequence_corpus_dir() -> Path:
    """The sequence corpus ``files`` folder (may not exist): ``$BNCONVERT_SEQUENCE_CORPUS``,
    default ``../shared/sequence-corpus`` beside the checkout."""
    base = Path(os.environ.get("BNCONVERT_SEQUENCE_CORPUS", ROOT.parent / "shared" / "sequence-corpus"))
    return base / "files" if (base / "files").is_dir() else base


def sequence_corpus_file(name: str) -> Path:
    """One sequence-corpus file by (a unique prefix of) its name; skips when the folder is
    absent, fails under CI."""
    folder = sequence_corpus_dir()
    if not folder.is_dir():
        message = f"sequence corpus not found at {folder} (set BNCONVERT_SEQUENCE_CORPUS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    matches = sorted(p for p in folder.iterdir() if p.name.startswith(name))
    if not matches:
        pytest.fail(f"sequence corpus file {name!r} not found in {folder}")
    return matches[0]


@pytest.fixture
def corpus() -> Path:
    return require_corpus()
