"""Fold every computation that no graph input reaches into one constant (`get_attr`) node.

Causal masks built from `arange`, rotary cos/sin tables, T5's relative-position buckets and transposed
weights depend on no input; folded, they stop being operations the engines must have rules for, and
`graph.constant(node)` hands engines their values. Computations on non-explained inputs (attention
masks) are kept: the graph must still accept another mask.
"""

from __future__ import annotations

import torch
from torch import fx


def _fetch(module: fx.GraphModule, target: str) -> torch.Tensor:
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def fold_constants(module: fx.GraphModule, sources: dict[str, str]) -> fx.GraphModule:
    """Fold in place; a folded constant derived from exactly one named constant inherits its source.

    A fold that is a view of a parameter (GPT-2's transposed weights) shares its storage, as the
    unfolded constants do, so folding costs no copy of the weights.

    >>> import torch, opwise
    >>> class Shifted(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x + torch.arange(3.0).exp()
    >>> graph = opwise.trace(Shifted(), torch.zeros(3))
    >>> [graph.info(n).op for n in graph.call_nodes()]
    ['aten.add.Tensor']
    """
    graph = module.graph
    values: dict[fx.Node, object] = {}
    origins: dict[fx.Node, set[str]] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            values[node] = _fetch(module, node.target)
            origins[node] = {sources[node.target]} if node.target in sources else set()
        elif node.op == "call_function" and all(n in values for n in node.all_input_nodes):
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
            with torch.no_grad():
                values[node] = node.target(*args, **kwargs)
            origins[node] = set().union(set(), *(origins[n] for n in node.all_input_nodes))
    taken = {name for name, _ in module.named_buffers()} | {name for name, _ in module.named_parameters()}
    for node in list(graph.nodes):
        if node.op != "call_function" or not isinstance(values.get(node), torch.Tensor):
            continue
        if not any(user not in values for user in node.users):
            continue
        name = f"c_folded_{node.name}"
        while name in taken:
            name += "_"
        taken.add(name)
        module.register_buffer(name, values[node].detach())
        with graph.inserting_before(node):
            constant = graph.get_attr(name)
        constant.meta = dict(node.meta)
        if len(origins[node]) == 1:
            sources[name] = next(iter(origins[node]))
        node.replace_all_uses_with(constant)
    graph.eliminate_dead_code()
    module.recompile()
    return module
