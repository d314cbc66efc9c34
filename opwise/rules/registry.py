"""The relevance-rule registry: operator key -> how relevance crosses that operator.

Keyed like PyTorch's decomposition table: `@relevance_rule("aten.convolution.default")` registers an
op rule; lookup tries the overload key, then the packet key (`aten.add`). An op rule is either
`ROUTING` (the op only moves values, so its own vector-Jacobian product moves relevance exactly and the
engine leaves it to autograd) or a function `(call: OpCall, relevance) -> list[Tensor | None]` giving
the relevance of each tensor argument.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from torch import fx

from opwise.tracing.graph import Graph, op_packet_key

ROUTING = "routing"

_RULES: dict[str, object] = {}


def relevance_rule(*keys: str, needs: tuple[str, ...] = ("inputs", "output")) -> Callable:
    """Register `function` for operator keys; `needs` says which activations it asks for ("inputs", "output").

    The engine keeps only the activations some rule needs, so rules that need none (identity) cost no memory.

    >>> @relevance_rule("mylib.scale.default")
    ... def scale(call, relevance):
    ...     return [relevance]
    >>> rule_for("mylib.scale.default") is scale
    True
    """

    def register(function: Callable) -> Callable:
        function.needs = needs
        for key in keys:
            _RULES[key] = function
        return function

    return register


def register_routing(*keys: str) -> None:
    """Mark operators that only move values: relevance follows them through their own vjp.

    >>> register_routing("mylib.shuffle.default"); rule_for("mylib.shuffle.default")
    'routing'
    """
    for key in keys:
        _RULES[key] = ROUTING


def rule_for(key: str) -> object | None:
    """The op rule for `key` (overload first, then packet), or None.

    >>> import opwise.rules
    >>> rule_for("aten.view.default")
    'routing'
    """
    if key in _RULES:
        return _RULES[key]
    return _RULES.get(op_packet_key(key))


@dataclasses.dataclass(frozen=True)
class Coverage:
    """How many input-dependent operation nodes have a relevance rule, and which do not."""

    covered: int
    total: int
    missing: tuple[tuple[str, str], ...]

    @property
    def fraction(self) -> float:
        return self.covered / self.total if self.total else 1.0

    def __str__(self) -> str:
        text = f"relevance rules cover {self.covered}/{self.total} input-dependent operations ({self.fraction:.0%})"
        if self.missing:
            text += "; missing: " + ", ".join(sorted({op for _, op in self.missing}))
        return text


def computes_indices(graph: Graph, node: fx.Node) -> bool:
    """Whether `node` computes an integer or boolean result (positions counted from token ids, masks) rather
    than routing one: such values index or select, they are no contribution, so relevance does not enter them.

    >>> import torch, opwise
    >>> class Positions(torch.nn.Module):
    ...     def forward(self, ids):
    ...         return ids[:, 1:].ne(0).cumsum(1)
    >>> graph = opwise.trace(Positions(), torch.ones(1, 4, dtype=torch.long))
    >>> [(graph.info(n).op, computes_indices(graph, n)) for n in graph.call_nodes()]
    [('aten.slice.Tensor', False), ('aten.ne.Scalar', True), ('aten.cumsum.default', True)]
    """
    import opwise.rules  # noqa: F401 - fills the registry

    info = graph.info(node)
    numeric = info.dtype is None or info.dtype.is_floating_point or info.dtype.is_complex
    return not numeric and rule_for(info.op) != ROUTING


def relevance_paths(graph: Graph, stops: Callable[[fx.Node], bool] = lambda node: False) -> set[str]:
    """Names of the nodes relevance flows through: those reached from an explained input, not through a node
    that `stops` (a `Constant` rule) nor one that `computes_indices`."""
    dependent = {n.name for n, e in zip(graph.input_nodes, graph.explained) if e}
    for node in graph.call_nodes():
        if any(a.name in dependent for a in node.all_input_nodes) and not stops(node) and not computes_indices(
                graph, node):
            dependent.add(node.name)
    return dependent


def dependent_operations(graph: Graph) -> list[fx.Node]:
    """The call nodes relevance flows through (see `relevance_paths`)."""
    names = relevance_paths(graph)
    return [n for n in graph.call_nodes() if n.name in names]


def coverage(graph: Graph) -> Coverage:
    """Say what fraction of the input-dependent operations have a rule (`opwise trace` prints it).

    >>> import torch, opwise
    >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()), torch.randn(1, 3))
    >>> print(coverage(graph))
    relevance rules cover 2/2 input-dependent operations (100%)
    """
    import opwise.rules  # noqa: F401 - fills the registry

    nodes = dependent_operations(graph)
    missing = tuple((n.name, graph.info(n).op) for n in nodes if rule_for(graph.info(n).op) is None)
    return Coverage(covered=len(nodes) - len(missing), total=len(nodes), missing=missing)


def rule_name(graph: Graph, node: fx.Node) -> str:
    """A short label of the rule handling `node`, for tables (`-` when none is needed or known).

    >>> import torch, opwise
    >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.randn(1, 3))
    >>> [rule_name(graph, n) for n in graph.call_nodes()]
    ['linear']
    """
    import opwise.rules  # noqa: F401 - fills the registry

    if not graph.depends_on_input(node) or computes_indices(graph, node):
        return "-"
    rule = rule_for(graph.info(node).op)
    if rule is None:
        return "MISSING"
    return ROUTING if rule == ROUTING else getattr(rule, "__name__", type(rule).__name__)
