"""The catalog's fold roles and Keras 1 spellings agree with the code that reads them."""

from __future__ import annotations

import numpy as np
import pytest

from bnconvert.catalog import catalog, fold_role, identity_classes
from bnconvert.catalog.legacy import REQUIRED
from bnconvert.fold import kernels as K
from bnconvert.onnx.registry import handlers
from bnconvert.readers.keras1 import KERAS1_ONLY, keras1_classes, upgrade_layer

# Keras layouts (fold.kernels' table) for a 3x3 kernel, 4 input and 6 output channels
_LAYOUT = {
    "Dense": {"kernel": (4, 6)},
    "Conv2D": {"kernel": (3, 3, 4, 6)},
    "Conv2DTranspose": {"kernel": (3, 3, 6, 4)},
    "DepthwiseConv2D": {"depthwise_kernel": (3, 3, 4, 1)},  # depth_multiplier 1: 4 outputs
    "SeparableConv2D": {"depthwise_kernel": (3, 3, 4, 2), "pointwise_kernel": (1, 1, 8, 6)},
}


def _outputs(cls: str) -> int:
    return 4 if cls == "DepthwiseConv2D" else 6


def test_identities_are_identity_roles_and_onnx_identities() -> None:
    table = catalog()
    roles = {name for name, record in table.items() if record.fold.kind == "identity"}
    assert roles == set(identity_classes()) - {"InputLayer"}
    assert fold_role("InputLayer").kind == "input"
    identity_handler = handlers()["Dropout"]
    assert {name for name, h in handlers().items() if h is identity_handler} == set(identity_classes())


@pytest.mark.parametrize("cls", sorted(_LAYOUT))
def test_fold_kernels_follow_the_role(cls: str) -> None:
    role = fold_role(cls)
    assert role.producer
    rng = np.random.default_rng(0)
    w = {k: rng.normal(size=shape).astype(np.float32) for k, shape in _LAYOUT[cls].items()}
    n = _outputs(cls)
    out = K.fold_backward(cls, w, rng.uniform(0.5, 2, n), rng.normal(size=n), config={"use_bias": False})
    assert out["bias"].shape == (n,) and role.out[0] in out
    if role.consumer:
        out = K.fold_forward(cls, w, rng.uniform(0.5, 2, 4), np.zeros(4), config={"use_bias": False})
        assert role.into[0] in out
    else:
        with pytest.raises(Exception, match="cannot fold a BN forward"):
            K.fold_forward(cls, w, np.ones(4), np.zeros(4), config={})


def test_every_keras1_name_upgrades_to_its_record() -> None:
    """Each Keras 1 name (a record's aliases, or its own name) upgrades to that record's class,
    given only the arguments Keras 1 required."""
    seen: dict[str, str] = {}
    for name, record in catalog().items():
        names = list(record.aliases) + ([name] if record.keras1 else [])
        for old in names:
            assert old not in seen, f"{old} is a Keras 1 name of {seen[old]} and {name}"
            seen[old] = name
            cfg = {"name": "l", "nb_row": 3, "nb_col": 3, "kernel_dim1": 1, "kernel_dim2": 1, "kernel_dim3": 1}
            cfg.update({a.keras1: 2 for a in record.keras1_args if a.default is REQUIRED})
            new_class, new_cfg = upgrade_layer(old, cfg)
            assert new_class == name
            for arg in record.keras1_args:
                assert arg.name in new_cfg or arg.name == "dilation_rate", (old, arg)
    assert set(seen.values()) - KERAS1_ONLY == set(keras1_classes())  # Keras-1-only classes: no Keras 2 config
