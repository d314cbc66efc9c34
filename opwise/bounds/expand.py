"""Rewrite composite operators into primitives that have relaxations, before bounding.

softmax(x) = exp(x) · 1/Σexp(x); layer_norm(x) = (x − mean) · rsqrt(mean((x − mean)²) + eps) · w + b;
x / y with y bounded = x · reciprocal(y); a matrix product of two bounded tensors (attention's q·kᵀ and
p·v) = Σ_k of elementwise products, each bounded by McCormick planes. The engine then bounds each piece with its own transfer
(exp, reciprocal, rsqrt, pow from the relaxation registry; products of two bounded tensors bilinearly).
The rewrite works on a copy; the caller's Graph is unchanged.
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.bounds.transfers.nonlinear import has_relaxation
from opwise.tracing.graph import Graph

aten = torch.ops.aten


def _softmax(graph: fx.Graph, node: fx.Node) -> fx.Node:
    x, dim = node.args[0], node.args[1]
    exp = graph.call_function(aten.exp.default, (x,))
    total = graph.call_function(aten.sum.dim_IntList, (exp, [dim], True))
    return graph.call_function(aten.mul.Tensor, (exp, graph.call_function(aten.reciprocal.default, (total,))))


def _layer_norm(graph: fx.Graph, node: fx.Node) -> fx.Node:
    x, normalized_shape = node.args[0], node.args[1]
    weight = node.args[2] if len(node.args) > 2 else None
    bias = node.args[3] if len(node.args) > 3 else None
    eps = node.args[4] if len(node.args) > 4 else 1e-5
    dims = list(range(-len(normalized_shape), 0))
    mean = graph.call_function(aten.mean.dim, (x, dims, True))
    centered = graph.call_function(aten.sub.Tensor, (x, mean))
    if has_relaxation("aten.pow.Tensor_Scalar"):
        square = graph.call_function(aten.pow.Tensor_Scalar, (centered, 2))
    else:
        square = graph.call_function(aten.mul.Tensor, (centered, centered))
    variance = graph.call_function(aten.mean.dim, (square, dims, True))
    scale = graph.call_function(aten.rsqrt.default, (graph.call_function(aten.add.Tensor, (variance, eps)),))
    out = graph.call_function(aten.mul.Tensor, (centered, scale))
    if weight is not None:
        out = graph.call_function(aten.mul.Tensor, (out, weight))
    if bias is not None:
        out = graph.call_function(aten.add.Tensor, (out, bias))
    return out


def _divide(graph: fx.Graph, node: fx.Node) -> fx.Node:
    reciprocal = graph.call_function(aten.reciprocal.default, (node.args[1],))
    return graph.call_function(aten.mul.Tensor, (node.args[0], reciprocal))


def _matrix_product(graph: fx.Graph, node: fx.Node) -> fx.Node:
    """[.., i, k] @ [.., k, j] as sum over k of the broadcast elementwise product [.., i, k, j]."""
    left, right = node.args[0], node.args[1]
    rows, inner = left.meta["val"].shape[-2:]
    columns = right.meta["val"].shape[-1]
    leading = list(left.meta["val"].shape[:-2])
    full = leading + [rows, inner, columns]
    left = graph.call_function(aten.expand.default, (graph.call_function(aten.unsqueeze.default, (left, -1)), full))
    right = graph.call_function(aten.expand.default, (graph.call_function(aten.unsqueeze.default, (right, -3)), full))
    product = graph.call_function(aten.mul.Tensor, (left, right))
    return graph.call_function(aten.sum.dim_IntList, (product, [-2]))


def _rewrite_for(node: fx.Node, dependent: set[fx.Node]):
    if node.op != "call_function" or node not in dependent:
        return None
    if node.target is aten._softmax.default:
        return _softmax
    if node.target in (aten.layer_norm.default,):
        return _layer_norm
    if node.target is aten.div.Tensor and isinstance(node.args[1], fx.Node) and node.args[1] in dependent:
        return _divide
    if node.target in (aten.bmm.default, aten.mm.default) and all(arg in dependent for arg in node.args[:2]):
        return _matrix_product
    return None


def expand_for_bounds(graph: Graph, example: torch.Tensor | None = None) -> Graph:
    """A Graph with softmax, layer norm and division by bounded tensors expanded (the same Graph if none).
    `example` is not needed any more (kept for callers that pass it).

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Softmax(-1))
    >>> graph = opwise.trace(model, torch.zeros(1, 3))
    >>> expanded = expand_for_bounds(graph)
    >>> [expanded.info(n).op for n in expanded.call_nodes()][1:]
    ['aten.exp.default', 'aten.sum.dim_IntList', 'aten.reciprocal.default', 'aten.mul.Tensor']
    >>> x = torch.randn(2, 3); torch.allclose(expanded(x), model(x))
    True
    """
    def expand(module: fx.GraphModule) -> bool:
        dependent = {n for n in module.graph.nodes if graph.info(n).depends_on_input}
        known, changed = set(module.graph.nodes), False
        for node in list(module.graph.nodes):
            rewrite = _rewrite_for(node, dependent)
            if rewrite is None:
                continue
            changed = True
            with module.graph.inserting_before(node):
                replacement = rewrite(module.graph, node)
            node.replace_all_uses_with(replacement)
            module.graph.erase_node(node)
            for created in set(module.graph.nodes) - known:  # the pieces stand where the composite stood
                created.meta.setdefault("nn_module_stack", node.meta.get("nn_module_stack", {}))
                dependent.add(created)
            known = set(module.graph.nodes)
        return changed

    return graph.rewrite(expand)
