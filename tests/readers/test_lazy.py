"""``load(..., lazy=True)``: large uncompressed HDF5 weights are read from the file only when used.

What ``inspect`` uses so that an audit never reads the kernels. The model must be the same as
an eager read, small weights (the BN vectors an audit reads) must be ordinary arrays, and
storage that is not one contiguous run in the file must still be read normally.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from bnconvert.audit import audit, audit_file
from bnconvert.errors import FormatError
from bnconvert.readers import h5guard, isolated, load
from bnconvert.readers.isolated import DeferredArray

from ..conftest import fixture_file


def _mapped(arr: np.ndarray) -> bool:  # "deferred": read from the file on first use
    return isinstance(arr, DeferredArray)


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
        deferred = _mapped(w) and not w.loaded
        assert w.dtype == eager[key].dtype and w.shape == eager[key].shape
        np.testing.assert_array_equal(w, eager[key], err_msg=str(key))
        if _mapped(w):
            mapped += 1
            assert deferred and w.loaded and w.nbytes >= 2048 and not w.flags.writeable
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


def _libhdf5_weights(path: Path) -> dict[str, np.ndarray]:
    """Every dataset under model_weights as h5py itself reads it."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(lambda name, obj: out.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return out


def _rewrite(src: Path, dst: Path, layouts: dict[str, str]) -> None:
    """``src`` copied object by object into ``dst``, some datasets stored compact (inside their
    object header), chunked or big-endian."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        b.attrs.update(a.attrs)
        for key in a:
            a.copy(a[key], b, name=key)
        for target, how in layouts.items():
            data = b[target][()]
            del b[target]
            if how == "compact":
                plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                plist.set_layout(h5py.h5d.COMPACT)
                space = h5py.h5s.create_simple(data.shape)
                h5py.h5d.create(b.id, target.encode(), h5py.h5t.py_create(data.dtype), space, dcpl=plist).write(
                    h5py.h5s.ALL, h5py.h5s.ALL, data)
            elif how == "chunked":
                b.create_dataset(target, data=data, chunks=True)
            else:  # big-endian
                b.create_dataset(target, data=data.astype(data.dtype.newbyteorder(">")))


@pytest.mark.parametrize("lazy", [False, True])
def test_weights_are_what_libhdf5_reads_whatever_the_storage(tmp_path: Path, lazy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # contiguous data is copied (or mapped) straight from the file's bytes at the offset libhdf5
    # gives, never for other layouts; byte order as stored
    monkeypatch.setattr(h5guard, "MAP_FROM", 2048)
    src = fixture_file("k3_chain.h5")
    names = list(_libhdf5_weights(src))
    vectors = [n for n in names if n.endswith(("gamma", "moving_variance"))]
    kernels = [n for n in names if n.endswith("kernel")]
    layouts = {f"model_weights/{vectors[0]}": "compact", f"model_weights/{kernels[0]}": "chunked",
               f"model_weights/{kernels[1]}": "big-endian", f"model_weights/{vectors[1]}": "big-endian"}
    path = tmp_path / "stored.h5"
    _rewrite(src, path, layouts)
    expected = _libhdf5_weights(path)
    with h5py.File(path, "r") as f:
        assert f[f"model_weights/{vectors[0]}"].id.get_create_plist().get_layout() == h5py.h5d.COMPACT
    model, original = load(path, lazy=lazy), load(src)
    got = {(p, k): w for (p, k), w in _weights(model).items()}
    assert got.keys() == _weights(original).keys()
    for key, w in _weights(original).items():
        np.testing.assert_array_equal(got[key], w, err_msg=str(key))
    big = [w for w in got.values() if w.dtype.byteorder == ">"]
    assert len(big) == 2  # read as stored, not converted on the way
    for target in layouts:  # each rewritten dataset is in the model as libhdf5 reads it
        want = expected[target.removeprefix("model_weights/")]
        assert any(w.dtype == want.dtype and np.array_equal(w, want) for w in got.values()), target


def test_a_deferred_weight_of_a_file_truncated_since_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no memory map: a file that shrinks under a lazily read model is an error naming it, not SIGBUS
    monkeypatch.setattr(h5guard, "MAP_FROM", 2048)
    path = tmp_path / "shrinks.h5"
    shutil.copy(fixture_file("k3_chain.h5"), path)
    model = load(path, lazy=True)
    deferred = [w for w in _weights(model).values() if _mapped(w)]
    assert deferred
    os.truncate(path, 4096)
    with pytest.raises(FormatError, match=r"shrinks\.h5: the file was truncated while being read"):
        np.asarray(deferred[-1])
    assert isolated.after_answer is None
