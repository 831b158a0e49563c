"""Hostile and broken *containers*: random bytes, truncated files, zip-slip and zip bombs, HDF5
links, external storage, plugin filters, shape bombs, attributes that lie, malformed JSON.

Each builder writes one file into ``folder`` (from the bundled fixtures) and returns its path.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from ..conftest import fixture_file

# -- helpers -----------------------------------------------------------------------------------


def _copy(name: str, folder: Path, as_name: str | None = None) -> Path:
    dst = folder / (as_name or name)
    shutil.copy(fixture_file(name), dst)
    return dst


def _edit_h5(name: str, folder: Path, edit: Callable[[h5py.File], None], as_name: str | None = None) -> Path:
    path = _copy(name, folder, as_name)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _set_config(f: h5py.File, change: Callable[[dict], None]) -> None:
    config = json.loads(f.attrs["model_config"])
    change(config)
    f.attrs["model_config"] = json.dumps(config).encode()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _members(name: str) -> dict[str, bytes]:
    with zipfile.ZipFile(fixture_file(name)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _edit_keras(name: str, folder: Path, *, config: Callable[[dict], None] | None = None,
                weights: Callable[[h5py.File], None] | None = None, as_name: str | None = None) -> Path:
    members = _members(name)
    if config is not None:
        cfg = json.loads(members["config.json"])
        config(cfg)
        members["config.json"] = json.dumps(cfg).encode()
    if weights is not None:
        buf = io.BytesIO(members["model.weights.h5"])
        with h5py.File(buf, "r+") as f:
            weights(f)
        members["model.weights.h5"] = buf.getvalue()
    return _zip(folder / (as_name or name), members)




def random_bytes(folder: Path) -> Path:
    path = folder / "random.h5"
    path.write_bytes(np.random.default_rng(7).bytes(4096))
    return path


def empty(folder: Path) -> Path:
    path = folder / "empty.keras"
    path.write_bytes(b"")
    return path


def hdf5_magic_then_garbage(folder: Path) -> Path:
    path = folder / "magic_garbage.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + np.random.default_rng(8).bytes(2048))
    return path


def zip_magic_then_garbage(folder: Path) -> Path:
    path = folder / "magic_garbage.keras"
    path.write_bytes(b"PK\x03\x04" + np.random.default_rng(9).bytes(2048))
    return path


def truncated_h5(folder: Path) -> Path:
    data = fixture_file("k3_educba.h5").read_bytes()
    path = folder / "truncated.h5"
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_keras(folder: Path) -> Path:
    data = fixture_file("k3_educba.keras").read_bytes()
    path = folder / "truncated.keras"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def zip_slip(folder: Path) -> Path:
    members = _members("k3_dense_tanh.keras")
    members["../../evil.txt"] = b"escaped"
    return _zip(folder / "zip_slip.keras", members)


def zip_absolute(folder: Path) -> Path:
    members = _members("k3_dense_tanh.keras")
    members["/tmp/evil.txt"] = b"escaped"
    return _zip(folder / "zip_absolute.keras", members)


def zip_duplicate(folder: Path) -> Path:
    path = folder / "zip_duplicate.keras"
    members = _members("k3_dense_tanh.keras")
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("config.json", b'{"class_name": "Sequential"}')  # a second, different config.json
    return path


def _deflated_zeros(megabytes: int) -> bytes:
    """A raw deflate stream of ``megabytes`` MiB of zeros, built in milliseconds (full-flush blocks repeat)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * megabytes + c.flush()


def _raw_zip(path: Path, entries: list[tuple[str, bytes, int, int, int]], flags: int = 0) -> Path:
    """A zip written by hand: ``(name, data, method, declared size, crc)`` per entry."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, size, crc in entries:
        offset = out.tell()
        raw = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0, crc, len(data), size, len(raw), 0)
                  + raw + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, method, 0, 0, crc, len(data), size,
                                  len(raw), 0, 0, 0, 0, 0, offset) + raw)
    cd = central.getvalue()
    start = out.tell()
    out.write(cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(cd), start, 0))
    path.write_bytes(out.getvalue())
    return path


def _stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return (name, data, 0, len(data), zlib.crc32(data))


def zip_bomb(folder: Path) -> Path:
    """model.weights.h5 inflates to 3 GiB from 3 MB (declared honestly in the directory)."""
    members = _members("k3_dense_tanh.keras")
    bomb = _deflated_zeros(3072)
    return _raw_zip(folder / "zip_bomb.keras", [
        _stored("metadata.json", members["metadata.json"]), _stored("config.json", members["config.json"]),
        ("model.weights.h5", bomb, 8, 3 << 30, 0)])


def zip_bomb_lying(folder: Path) -> Path:
    """The directory says 100 KB; the deflate stream inflates to 2 GiB."""
    members = _members("k3_dense_tanh.keras")
    bomb = _deflated_zeros(2048)
    return _raw_zip(folder / "zip_bomb_lying.keras", [
        _stored("metadata.json", members["metadata.json"]), _stored("config.json", members["config.json"]),
        ("model.weights.h5", bomb, 8, 100_000, 0)])


def zip_config_bomb(folder: Path) -> Path:
    members = _members("k3_dense_tanh.keras")
    return _raw_zip(folder / "zip_config_bomb.keras", [
        _stored("metadata.json", members["metadata.json"]), ("config.json", _deflated_zeros(1024), 8, 1 << 30, 0),
        _stored("model.weights.h5", members["model.weights.h5"])])


def zip_encrypted(folder: Path) -> Path:
    members = _members("k3_dense_tanh.keras")
    return _raw_zip(folder / "encrypted.keras", [_stored(n, d) for n, d in members.items()], flags=0x1)


def h5_external_link(folder: Path) -> Path:
    secret = folder / "secret.h5"
    with h5py.File(secret, "w") as s:
        s["kernel"] = np.arange(120, dtype="float32").reshape(10, 12)

    def edit(f: h5py.File) -> None:
        group = f["model_weights/dense/dense_tanh/dense"]
        del group["kernel"]
        group["kernel"] = h5py.ExternalLink(str(secret), "/kernel")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "external_link.h5")


def h5_external_group(folder: Path) -> Path:
    secret = folder / "secret_group.h5"
    with h5py.File(secret, "w") as s:
        s.create_group("g")

    def edit(f: h5py.File) -> None:
        del f["model_weights/dense"]
        f["model_weights/dense"] = h5py.ExternalLink(str(secret), "/g")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "external_group.h5")


def h5_soft_link(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        group = f["model_weights/dense_1/dense_tanh/dense_1"]
        del group["kernel"]
        group["kernel"] = h5py.SoftLink("/model_weights/dense_2/dense_tanh/dense_2/kernel")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "soft_link.h5")


def h5_soft_link_inside_path(folder: Path) -> Path:
    """The *intermediate* group of a weight path is a soft link (``dense_tanh`` -> elsewhere)."""
    def edit(f: h5py.File) -> None:
        del f["model_weights/dense_1/dense_tanh"]
        f["model_weights/dense_1/dense_tanh"] = h5py.SoftLink("/model_weights/dense_2/dense_tanh")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "soft_link_path.h5")


def h5_external_storage(folder: Path) -> Path:
    raw = folder / "raw_kernel.bin"
    raw.write_bytes(np.ones((10, 12), dtype="<f4").tobytes())

    def edit(f: h5py.File) -> None:
        group = f["model_weights/dense/dense_tanh/dense"]
        del group["kernel"]
        group.create_dataset("kernel", shape=(10, 12), dtype="<f4", external=[(str(raw), 0, 480)])
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "external_storage.h5")


def h5_plugin_filter(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        group = f["model_weights/dense/dense_tanh/dense"]
        del group["kernel"]
        d = group.create_dataset("kernel", shape=(10, 12), dtype="<f4", chunks=(10, 12), compression=32001,
                                 allow_unknown_filter=True)
        d.id.write_direct_chunk((0, 0), np.ones((10, 12), dtype="<f4").tobytes())
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "plugin_filter.h5")


def h5_shape_bomb(folder: Path) -> Path:
    """A kernel declared 4 TB (never written: the file stays small)."""
    def edit(f: h5py.File) -> None:
        group = f["model_weights/dense/dense_tanh/dense"]
        del group["kernel"]
        group.create_dataset("kernel", shape=(2**20, 2**20), dtype="<f4")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "shape_bomb.h5")


def h5_compressed_shape_bomb(folder: Path) -> Path:
    """A gzip-chunked kernel declared 1 GiB, stored as nothing (every chunk is the fill value)."""
    def edit(f: h5py.File) -> None:
        group = f["model_weights/dense/dense_tanh/dense"]
        del group["kernel"]
        group.create_dataset("kernel", shape=(2**14, 2**14), dtype="<f4", chunks=(1024, 1024), compression="gzip")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "compressed_bomb.h5")


def h5_repeated_weight(folder: Path) -> Path:
    """One kernel listed 1000 times in weight_names (reading each would take 10x the file's size)."""
    def edit(f: h5py.File) -> None:
        group = f["model_weights/dense"]
        group.attrs["weight_names"] = np.array(["dense_tanh/dense/kernel"] * 1000, dtype="S")
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "repeated_weight.h5")


def h5_config_not_string(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        f.attrs["model_config"] = np.arange(5)
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "config_not_string.h5")


def h5_layer_names_not_strings(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        f["model_weights"].attrs["layer_names"] = np.arange(5.0)
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "layer_names_numbers.h5")


def h5_weight_name_absolute(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        f["model_weights/dense"].attrs["weight_names"] = np.array(
            [b"/model_weights/dense_1/dense_tanh/dense_1/kernel", b"dense_tanh/dense/bias"])
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "weight_name_absolute.h5")


def h5_weight_name_parent(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        f["model_weights/dense"].attrs["weight_names"] = np.array([b"../dense_1/dense_tanh/dense_1/kernel", b"dense_tanh/dense/bias"])
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "weight_name_parent.h5")


def malformed_json_h5(folder: Path) -> Path:
    def edit(f: h5py.File) -> None:
        f.attrs["model_config"] = b'{"class_name": "Sequential", "config": {"layers": [}'
    return _edit_h5("k3_dense_tanh.h5", folder, edit, "malformed_json.h5")


def malformed_json_keras(folder: Path) -> Path:
    members = _members("k3_dense_tanh.keras")
    members["config.json"] = b"{'single quotes': not json"
    return _zip(folder / "malformed_json.keras", members)


def deep_json_keras(folder: Path) -> Path:
    members = _members("k3_dense_tanh.keras")
    members["config.json"] = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return _zip(folder / "deep_json.keras", members)


def json_root_not_object(folder: Path) -> Path:
    members = _members("k3_dense_tanh.keras")
    members["config.json"] = b"[1, 2, 3]"
    return _zip(folder / "json_list.keras", members)


def h5_global_heap_loop(folder: Path) -> Path:
    """The first object of the global heap (where ``model_config`` lives) zeroed: index 0, size 0.
    libhdf5 1.14 walks such a collection forever; the reader must refuse it before."""
    data = bytearray(fixture_file("k3_dense_tanh.h5").read_bytes())
    at = data.find(b"GCOL\x01")
    assert at > 0, "the fixture has no global heap"
    data[at + 16 : at + 32] = bytes(16)
    path = folder / "heap_loop.h5"
    path.write_bytes(bytes(data))
    return path
