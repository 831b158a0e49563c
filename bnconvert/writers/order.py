"""The order in which Keras lists a functional model's layers, which is the order it loads weights in.

Keras does not keep a functional model's layers in the order its config lists them: every
generation (Keras 1 and 2 ``Container``, tf.keras ``_map_graph_network``, Keras 3
``keras/src/ops/function.py map_graph``) recomputes ``model.layers`` from the graph, by *depth*
(longest path to an output, inputs first) and, among layers of equal depth, by the order a
depth-first walk from the outputs first met them. An ``.h5`` is loaded by zipping that order
with the file's ``layer_names``, and a ``.keras`` names its weight groups by it
(``layers/conv2d_3``). A file Keras saved lists its layers in that order already; a fold that
removes a BatchNormalization shortens its branch, which can move layers of that branch past
layers of another (a Concatenate of a branch with BN and one without), so the writers put the
folded model's layers in the order Keras will compute for it.
"""

from __future__ import annotations

from ..model import Layer, Model, TensorRef

__all__ = ["in_keras_order", "keras_order"]

#: one call of one layer: (layer name, call index); an InputLayer's node is (name, 0)
_Node = tuple[str, int]


def _parents(model: Model, node: _Node) -> list[_Node]:
    """The nodes whose outputs ``node`` reads, in the order Keras lists its arguments' tensors
    (positional inputs, then keyword tensors, the ``mask=`` ones included)."""
    layer = model[node[0]]
    if node[1] >= len(layer.calls):  # an InputLayer's own node
        return []
    refs: list[TensorRef] = list(layer.calls[node[1]]) + layer.given_mask(node[1])
    return [(ref.layer, ref.node) for ref in refs if ref.layer in model]


def keras_order(model: Model) -> list[str]:
    """The names of ``model``'s layers in the order Keras lists them (``model.layers``) for this
    graph: a Sequential in its own order, a Functional by ``map_graph`` (see the module
    docstring). Layers no output depends on, which Keras would not list, come last."""
    if model.kind != "Functional":
        return [layer.name for layer in model.layers]
    indices: dict[str, int] = {}
    finished: set[_Node] = set()
    decreasing: list[_Node] = []  # nodes from the inputs to the outputs
    for out in model.outputs:
        start = (out.layer, out.node)
        if start in finished or out.layer not in model:
            continue
        indices.setdefault(start[0], len(indices))
        stack = [(start, list(reversed(_parents(model, start))))]
        in_progress = {start}
        while stack:
            node, todo = stack[-1]
            while todo and todo[-1] in finished:
                todo.pop()
            if todo:
                parent = todo.pop()
                if parent not in in_progress:  # a cycle cannot occur: the reader refuses one
                    in_progress.add(parent)
                    indices.setdefault(parent[0], len(indices))
                    stack.append((parent, list(reversed(_parents(model, parent)))))
                continue
            stack.pop()
            in_progress.discard(node)
            finished.add(node)
            decreasing.append(node)
    node_depth: dict[_Node, int] = {}
    layer_depth: dict[str, int] = {}
    for node in reversed(decreasing):
        depth = max(node_depth.setdefault(node, 0), layer_depth.get(node[0], 0))
        layer_depth[node[0]] = node_depth[node] = depth
        for parent in _parents(model, node):
            node_depth[parent] = max(depth + 1, node_depth.get(parent, 0))
    for ref in model.inputs:
        if ref.layer not in layer_depth:  # an input no output depends on
            layer_depth[ref.layer], indices[ref.layer] = 0, -1
    listed = sorted(layer_depth, key=lambda name: (-layer_depth[name], indices[name]))
    return listed + [layer.name for layer in model.layers if layer.name not in layer_depth]


def in_keras_order(model: Model) -> Model:
    """``model`` with its layers, and those of every nested model, in :func:`keras_order`."""
    layers: list[Layer] = []
    for layer in model.layers:
        if layer.model is not None:
            inner = in_keras_order(layer.model)
            layer = layer.copy(model=inner) if inner is not layer.model else layer
        layers.append(layer)
    by_name = {layer.name: layer for layer in layers}
    ordered = [by_name[name] for name in keras_order(model)]
    if all(a is b for a, b in zip(ordered, model.layers)):
        return model
    return model.with_layers(ordered)
