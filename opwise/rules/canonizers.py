"""Canonizers: graph rewrites that give a model an LRP-friendly but equivalent form.

`MergeBatchNorm` folds an eval-mode batch norm into the convolution or linear node before it (when that
node feeds nothing else), so the linear rule sees the effective weights, as Zennit's
SequentialMergeBatchNorm does on modules.
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.tracing.graph import Graph

aten = torch.ops.aten
_MERGEABLE = ("aten.convolution.default", "aten.linear.default")


class MergeBatchNorm:
    """Rewrite `batch_norm(conv(x, W, b))` into `conv(x, W', b')` on a copy of the graph's module.

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).eval()
    >>> x = torch.randn(1, 1, 5, 5)
    >>> merged = MergeBatchNorm()(opwise.trace(model, x))
    >>> [merged.info(n).op for n in merged.call_nodes()]
    ['aten.convolution.default']
    >>> torch.allclose(merged(x), model(x), atol=1e-6)
    True
    """

    def __call__(self, graph: Graph) -> Graph:
        def merge(module: fx.GraphModule) -> bool:
            merged = 0
            for norm in list(module.graph.nodes):
                if norm.op != "call_function" or norm.target != aten.batch_norm.default:
                    continue
                layer = norm.args[0]
                if not isinstance(layer, fx.Node) or not _mergeable(graph, layer):
                    continue
                weight, bias = _fold(graph, layer, norm)
                names = [f"_merged_{merged}_weight", f"_merged_{merged}_bias"]
                module.register_buffer(names[0], weight)
                module.register_buffer(names[1], bias)
                merged += 1
                with module.graph.inserting_before(layer):
                    new_weight, new_bias = (module.graph.get_attr(n) for n in names)
                args = list(layer.args) + [None] * (3 - len(layer.args))
                args[1], args[2] = new_weight, new_bias
                layer.args = tuple(args)
                norm.replace_all_uses_with(layer)
                module.graph.erase_node(norm)
            return merged > 0

        return graph.rewrite(merge)


def _mergeable(graph: Graph, layer: fx.Node) -> bool:
    """A non-transposed convolution or a linear node, with constant weights, feeding only the norm."""
    op = graph.info(layer).op
    if op not in _MERGEABLE or len(layer.users) != 1:
        return False
    parameters = [a for a in layer.args[1:3] if a is not None]
    if not all(isinstance(a, fx.Node) and a.op == "get_attr" for a in parameters):
        return False
    return not (op == "aten.convolution.default" and layer.args[6])


def _constant(graph: Graph, value) -> torch.Tensor | None:
    return graph.constant(value) if isinstance(value, fx.Node) else value


def _fold(graph: Graph, layer: fx.Node, norm: fx.Node) -> tuple[torch.Tensor, torch.Tensor]:
    weight = graph.constant(layer.args[1]).detach()
    bias = _constant(graph, layer.args[2] if len(layer.args) > 2 else None)
    gamma, beta, mean, var = (_constant(graph, a) for a in norm.args[1:5])
    eps = norm.args[7]
    scale = torch.rsqrt(var + eps) * (1 if gamma is None else gamma)
    shift = (0 if beta is None else beta) - mean * scale
    new_weight = weight * scale.view((-1,) + (1,) * (weight.dim() - 1))
    new_bias = shift + (0 if bias is None else bias.detach()) * scale
    return new_weight.detach(), new_bias.detach()
