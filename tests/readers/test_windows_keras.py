""".keras archives saved on Windows: Keras built the weight group paths with ``os.path.join``
(keras-team/keras#18528), so ``model.weights.h5`` holds root groups named ``layers\\conv1d``.
The file is made by Keras' own saving code with Windows' ``join`` (``ntpath.join``) in place of
the platform's, which is what ran on Windows before the fix."""

from __future__ import annotations

import io
import ntpath
import types
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import bnconvert
from bnconvert.fold import fold_model
from bnconvert.writers import write_model


class _WindowsPath(str):
    """A path as Windows' ``os.path.join`` made it, which the fixed Keras' ``.replace("\\\\", "/")``
    did not exist to normalise."""

    def replace(self, old: str, new: str, count: int = -1) -> str:  # type: ignore[override]
        return self


def _save_as_on_windows(model: object, path: Path) -> None:
    from keras.src.saving import saving_lib

    real = saving_lib.file_utils
    proxy = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
    proxy.join = lambda *parts: _WindowsPath(ntpath.join(*parts))
    saving_lib.file_utils = proxy
    try:
        model.save(path)  # type: ignore[attr-defined]
    finally:
        saving_lib.file_utils = real


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    import keras

    L = keras.layers
    rng = np.random.default_rng(0)
    x = keras.Input((6, 2))
    y = L.BatchNormalization(name="bn0")(L.Conv1D(3, 2, name="conv")(x))
    inner = keras.Sequential([L.Dense(4, name="dense"), L.BatchNormalization(name="bn1")], name="inner")
    model = keras.Model(x, inner(L.Flatten(name="flat")(y)))
    for layer in [model.get_layer("bn0"), inner.get_layer("bn1")]:
        n = layer.get_weights()[0].shape
        layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(size=n), rng.normal(size=n), rng.uniform(0.5, 2, n)])
    out = tmp_path_factory.mktemp("windows")
    model.save(out / "linux.keras")
    _save_as_on_windows(model, out / "windows.keras")
    return out / "linux.keras", out / "windows.keras", model


def test_the_file_is_laid_out_as_on_windows(models: tuple[Path, Path, object]) -> None:
    import keras

    _, windows, _ = models
    with zipfile.ZipFile(windows) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        assert "layers\\conv1d" in f and "layers\\sequential\\layers\\dense" in f and "layers" not in f
    with pytest.raises(ValueError, match="could not be loaded"):
        keras.models.load_model(windows)


def test_windows_archive_reads_folds_and_writes_the_usual_layout(models: tuple[Path, Path, object],
                                                                    tmp_path: Path) -> None:
    import keras

    linux, windows, original = models
    before = windows.read_bytes()
    a, b = bnconvert.load(linux), bnconvert.load(windows)
    for (path, la, _), (_, lb, _) in zip(a.walk(), b.walk()):
        assert la.weights.keys() == lb.weights.keys(), path
        for k in la.weights:
            np.testing.assert_array_equal(la.weights[k], lb.weights[k])
    folded, _ = fold_model(b)
    write_model(folded, tmp_path / "folded.keras", original=b)
    assert windows.read_bytes() == before
    x = np.random.default_rng(1).uniform(size=(3, 6, 2)).astype("float32")
    want = original.predict(x, verbose=0)  # type: ignore[attr-defined]
    got = keras.models.load_model(tmp_path / "folded.keras").predict(x, verbose=0)
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-5


def test_a_windows_name_that_cannot_be_placed_is_one_format_error() -> None:
    """A dataset where the '/' path needs a group: refused in one line; a file that has both
    layouts keeps its own '/' groups."""
    from bnconvert.errors import FormatError
    from bnconvert.readers.keras_zip import open_weights

    blob = io.BytesIO()
    with h5py.File(blob, "w") as f:
        f.create_dataset("layers", data=[1])
        f.create_group("layers\\conv1d").create_group("vars")
    with pytest.raises(FormatError, match=r"'layers\\conv1d' cannot be placed at 'layers/conv1d'"), \
            open_weights(blob.getvalue()):
        pass
    blob = io.BytesIO()
    with h5py.File(blob, "w") as f:
        f["layers/conv1d/vars/0"] = [1.0]
        f.create_group("layers\\conv1d").create_group("vars")
    with open_weights(blob.getvalue()) as f:
        assert list(f["layers/conv1d/vars"]) == ["0"]
