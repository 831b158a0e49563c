"""``load(..., lazy=True)``: large uncompressed HDF5 weights are read-only views of the mapped file.

What ``inspect`` uses so that an audit never reads the kernels. The model must be the same as
an eager read, small weights (the BN vectors an audit reads) must be ordinary arrays, and
storage that is not one contiguous run in the file must still be read normally.
"""

from __future__ import annotations

import mmap
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from bnconvert.audit import audit, audit_file
from bnconvert.readers import h5guard, load

from ..conftest import fixture_file


def _mapped(arr: np.ndarray) -> bool:
    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    return isinstance(base, mmap.mmap)


def _weights(model):  # noqa: ANN001, ANN202
    return {(path, key): w for path, layer, _ in model.walk() for key, w in layer.weights.items()}


@pytest.mark.parametrize("name", ["k3_chain.h5", "tfk_chain.h5", "k1_th_model.h5"])
def test_lazy_model_equals_eager_model_and_maps_only_large_weights(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h5guard, "MAP_FROM", 2048)  # the fixtures are small: map anything from 2 KiB
    path = fixture_file(name)
    eager, lazy = _weights(load(path)), _weights(load(path, lazy=True))
    assert eager.keys() == lazy.keys()
    mapped = 0
    for key, w in lazy.items():
        np.testing.assert_array_equal(w, eager[key], err_msg=str(key))
        assert w.dtype == eager[key].dtype
        if _mapped(w):
            mapped += 1
            assert w.nbytes >= 2048 and not w.flags.writeable
        else:
            assert w.nbytes < 2048 or name.startswith("k1_")  # Keras 1 upgrades may copy (transposes, flips)
    assert mapped > 0
    assert not any(_mapped(w) for w in eager.values())


def test_compressed_datasets_are_read_not_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h5guard, "MAP_FROM", 2048)
    path = tmp_path / "gz.h5"
    shutil.copy(fixture_file("k3_chain.h5"), path)
    target = "model_weights/dense/chain/dense/kernel"
    with h5py.File(path, "r+") as f:
        data = f[target][()]
        del f[target]
        f.create_dataset(target, data=data, compression="gzip")
    model = load(path, lazy=True)
    kernels = [w for (p, k), w in _weights(model).items() if p.endswith("dense") and k == "kernel"]
    assert kernels and all(not _mapped(w) for w in kernels)
    np.testing.assert_array_equal(kernels[0], data)


def test_audit_file_reads_lazily_and_reports_what_an_eager_audit_does() -> None:
    path = fixture_file("k3_bn_variants.h5")
    assert audit_file(path) == audit(load(path)).to_dict()
