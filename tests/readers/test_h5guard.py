"""``h5guard.find_all``: the C library's ``memmem`` (what the global-heap pre-check scans whole
files with) finds exactly what ``bytes.find`` finds."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnconvert.readers import h5guard

from ..conftest import fixture_file


def _plain(data, needle: bytes) -> list[int]:  # noqa: ANN001
    found, at = [], data.find(needle)
    while at != -1:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


def test_the_c_library_search_is_the_one_used_here() -> None:
    if h5guard._libc_memmem() is None:
        pytest.skip("no memmem in this C library: bytes.find is used")
    assert h5guard._memmem is not None


@settings(max_examples=300, derandomize=True, deadline=None)
@given(data=st.binary(max_size=80).map(lambda b: bytes(c % 6 + 0x41 for c in b)),  # few letters: many hits
       needle=st.binary(min_size=1, max_size=5).map(lambda b: bytes(c % 6 + 0x41 for c in b)))
def test_find_all_matches_bytes_find(data: bytes, needle: bytes) -> None:
    assert list(h5guard.find_all(data, needle)) == _plain(data, needle)


def test_find_all_on_a_mapped_file(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(fixture_file("k3_chain.h5").read_bytes() + b"GCOL\x01GCOL\x01")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        found = list(h5guard.find_all(data, b"GCOL\x01"))
        assert found == _plain(data, b"GCOL\x01") and len(found) >= 2
        assert found[-1] == len(data) - 5
