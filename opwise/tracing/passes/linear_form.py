"""Rewrite matrix products with a constant weight into `aten.linear`, and splits into slices.

GPT-2's `Conv1D` exports as `addmm(bias, x, weight)` and Mamba's projections as `mm(x, weight^T)`;
as `linear(x, weight^T, bias)` they reach the same relevance rule and bound transfer as every other
dense layer. `getitem(split_with_sizes(x, sizes, dim), i)` becomes `slice(x, dim, start, end)`, so no
multi-output operator remains on the input-dependent path.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

aten = torch.ops.aten

_SPLITS = {aten.split_with_sizes.default, aten.split.Tensor}


def _is_constant(node: fx.Node) -> bool:
    """True when no placeholder feeds `node` (a parameter, buffer or a computation on them only)."""
    pending, seen = [node], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "placeholder":
            return False
        pending.extend(current.all_input_nodes)
    return True


def _default_scaling(node: fx.Node) -> bool:
    return node.kwargs.get("beta", 1) == 1 and node.kwargs.get("alpha", 1) == 1


def _as_linear(graph: fx.Graph, node: fx.Node, x: fx.Node, weight: fx.Node, bias: fx.Node | None) -> None:
    with graph.inserting_before(node):
        transposed = graph.call_function(aten.permute.default, (weight, [1, 0]))
        transposed.meta = {"val": weight.meta["val"].permute(1, 0), **_stack(node)}
        linear = graph.call_function(aten.linear.default, (x, transposed, bias))
    linear.meta = dict(node.meta)
    node.replace_all_uses_with(linear)
    graph.erase_node(node)


def _stack(node: fx.Node) -> dict:
    return {"nn_module_stack": node.meta["nn_module_stack"]} if "nn_module_stack" in node.meta else {}


def _split_bounds(node: fx.Node) -> list[tuple[int, int]]:
    source, sizes = node.args[0], node.args[1]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    if isinstance(sizes, int):
        length = source.meta["val"].shape[dim]
        sizes = [min(sizes, length - start) for start in range(0, length, sizes)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [(start, start + size) for start, size in zip(starts, sizes)]


def _split_as_slices(graph: fx.Graph, node: fx.Node) -> None:
    users = list(node.users)
    if any(user.target is not operator.getitem for user in users):
        return
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    bounds = _split_bounds(node)
    for user in users:
        start, end = bounds[user.args[1]]
        with graph.inserting_before(user):
            piece = graph.call_function(aten.slice.Tensor, (node.args[0], dim, start, end))
        piece.meta = dict(user.meta)
        piece.meta.update(_stack(node))
        user.replace_all_uses_with(piece)
        graph.erase_node(user)
    graph.erase_node(node)


def rewrite_linear_forms(module: fx.GraphModule) -> fx.GraphModule:
    """Apply both rewrites in place (see the module docstring).

    >>> import torch, opwise
    >>> class Conv1D(torch.nn.Module):  # GPT-2's dense layer: x @ W + b
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.weight, self.bias = torch.nn.Parameter(torch.randn(4, 6)), torch.nn.Parameter(torch.randn(6))
    ...     def forward(self, x):
    ...         return torch.addmm(self.bias, x, self.weight).split(3, dim=1)[1]
    >>> graph = opwise.trace(Conv1D(), torch.randn(2, 4))
    >>> [graph.info(n).op for n in graph.call_nodes()]
    ['aten.linear.default', 'aten.slice.Tensor']
    """
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is aten.addmm.default and _default_scaling(node) and _is_constant(node.args[2]):
            _as_linear(graph, node, node.args[1], node.args[2], node.args[0])
        elif node.target is aten.mm.default and _is_constant(node.args[1]) and not _is_constant(node.args[0]):
            _as_linear(graph, node, node.args[0], node.args[1], None)
        elif node.target in _SPLITS:
            _split_as_slices(graph, node)
    graph.lint()
    module.recompile()
    return module
