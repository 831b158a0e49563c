"""The public API: README examples run as written, everything public is documented and typed,
and a Keras 1 legacy BN list folded by hand through the API matches Keras 3."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import bnconvert

from .conftest import FIXTURES, ROOT

SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_api_examples() -> None:
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for optional in ("dask", "pyspark"):  # cluster examples: run only where those are installed
        if re.search(rf"^\s*(import|from) {optional}\b", SNIPPETS[index], flags=re.M):
            pytest.importorskip(optional)
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    monkeypatch.chdir(tmp_path)
    exec(compile(SNIPPETS[index], f"README.md snippet {index}", "exec"), {"__name__": "__readme__"})  # noqa: S102


def test_public_names_exist_documented_and_typed() -> None:
    for name in bnconvert.__all__:
        if name == "__version__":
            continue
        obj = getattr(bnconvert, name)
        assert inspect.getdoc(obj), f"{name} has no docstring"
        if inspect.isfunction(obj):
            sig = inspect.signature(obj)
            assert sig.return_annotation is not inspect.Signature.empty, f"{name} has no return annotation"
            for param in sig.parameters.values():
                if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                    assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) is not annotated"


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, bnconvert; print(sorted(m for m in ('onnx', 'onnxruntime', 'tensorflow', 'keras', 'h5py') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['h5py']"


def test_keras1_legacy_list_folded_by_hand_matches_keras3() -> None:
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(7)
    c_in, c_out, eps = 3, 5, 1e-3
    kernel = rng.normal(size=(3, 3, c_in, c_out)).astype("float32")
    gamma = rng.uniform(0.5, 1.5, c_out) * np.where(rng.random(c_out) < 0.3, -1, 1)
    beta, mean = rng.normal(0, 0.5, c_out), rng.normal(0, 0.5, c_out)
    running_std = rng.uniform(0.3, 2.0, c_out)  # Keras 1.0.8+: holds the variance
    legacy = [a.astype("float32") for a in (gamma, beta, mean, running_std)]

    inputs = keras.Input((8, 8, c_in))
    conv = keras.layers.Conv2D(c_out, 3, use_bias=False)
    bn = keras.layers.BatchNormalization(epsilon=eps)
    reference = keras.Model(inputs, bn(conv(inputs)))
    conv.set_weights([kernel])
    bn.set_weights(legacy)  # Keras 3 order [gamma, beta, moving_mean, moving_variance]

    params = bnconvert.BNParams.from_keras1(legacy, epsilon=eps, running_std="variance")
    folded = bnconvert.fold_bn("Conv2D", {"kernel": kernel}, params)
    plain = keras.layers.Conv2D(c_out, 3, use_bias=True)
    candidate = keras.Sequential([keras.Input((8, 8, c_in)), plain])
    plain.set_weights([folded["kernel"], folded["bias"]])

    x = rng.uniform(0, 1, (2, 8, 8, c_in)).astype("float32")
    want = np.asarray(reference(x, training=False))
    got = np.asarray(candidate(x))
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5
