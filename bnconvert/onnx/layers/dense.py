"""Dense: ``y = x @ kernel + bias`` over Keras' last axis, then the activation.

Rank 2 becomes one Gemm. On a rank 3-5 tensor the graph already holds channels-first (a Dense
after convolutions, as in ConvNeXt), the same product is a 1x1 Conv, which keeps that layout
and needs no Transpose; otherwise MatMul + Add in Keras' layout.
"""

from __future__ import annotations

import numpy as np

from ..builder import Builder, Call, Tensor
from ..layout import channels_first, identity
from ..registry import converts, refuse
from .activations import fused, pre_activation_name

__all__ = ["dense"]


@converts("Dense")
def dense(b: Builder, call: Call) -> list[Tensor]:
    kernel = call.layer.weights.get("kernel")
    if kernel is None or kernel.ndim != 2:
        raise refuse(call, "no 2-D kernel weight")
    bias = call.layer.weights.get("bias")
    x, rank = call.x, call.x.rank
    out = pre_activation_name(call)
    if rank == 2:
        inputs = [b.view(x, identity(2)), b.const(f"{call.name}/kernel", kernel)]
        if bias is not None:
            inputs.append(b.const(f"{call.name}/bias", np.asarray(bias).reshape(-1)))
        return fused(b, call, b.node("Gemm", inputs, name=call.name, out=out), identity(2))
    perm, _ = b.native(x)
    if 3 <= rank <= 5 and perm == channels_first(rank):
        w = np.transpose(kernel, (1, 0)).reshape(kernel.shape[1], kernel.shape[0], *([1] * (rank - 2)))
        inputs = [b.view(x, perm), b.const(f"{call.name}/kernel", w)]
        if bias is not None:
            inputs.append(b.const(f"{call.name}/bias", np.asarray(bias).reshape(-1)))
        return fused(b, call, b.node("Conv", inputs, name=call.name, out=out, kernel_shape=[1] * (rank - 2)), perm)
    keras = identity(rank)
    product = [b.view(x, keras), b.const(f"{call.name}/kernel", kernel)]
    if bias is None:
        return fused(b, call, b.node("MatMul", product, name=call.name, out=out), keras)
    y = b.node("MatMul", product, name=f"{call.name}/matmul")
    y = b.node("Add", [y, b.const(f"{call.name}/bias", np.asarray(bias).reshape(-1))], name=call.name, out=out)
    return fused(b, call, y, keras)
