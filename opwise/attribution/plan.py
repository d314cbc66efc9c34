"""Compile a Graph once into a relevance module: the forward is the model, its autograd backward is LRP.

Every input-dependent node with a rule becomes a call of `_RuleFunction`, an autograd.Function whose
forward is the op and whose backward applies the node's rule to the incoming relevance. Routing ops stay
plain ATen calls (their own vjp moves relevance exactly). Autograd sums the relevance of all consumers of
a value before that value's backward runs, so a rule never sees partial relevance, and every rule is a
tensor operation over the whole batch. Activations reach the rules through promises (`promise.py`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from opwise.attribution.promise import ActivationStore, Promise, memory_policy
from opwise.errors import UnsupportedOperation
from opwise.rules import ROUTING, Composite, Constant, coverage, rule_for
from opwise.rules.linear_ops import needs_output
from opwise.rules.registry import relevance_paths
from opwise.tracing.graph import Graph

EMBEDDING = "aten.embedding.default"


class OpCall:
    """What a rule sees of one node: its arguments and output (through promises), the rule chosen for it."""

    __slots__ = ("node", "target", "args", "kwargs", "explained", "rule", "cache", "_output", "_store")

    def __init__(self, node: "NodeRule", args: tuple, kwargs: dict):
        self.node, self.target, self.rule, self.explained = node.name, node.op, node.rule, node.explained
        self.args, self.kwargs, self.cache, self._store = args, kwargs, node.cache, node.store
        self._output = node.store.promise(node.name)

    def constant(self, index: int) -> bool:
        """Whether argument `index` is a constant of the graph (a parameter or buffer, or not a tensor)."""
        value = self.args[index]
        return not isinstance(value, Promise) or value.name in self._store.constants

    def arg(self, index: int) -> Any:
        value = self.args[index]
        if isinstance(value, (list, tuple)):  # a list of tensors (index_put's indices)
            return [v.resolve() if isinstance(v, Promise) else v for v in value]
        return value.resolve() if isinstance(value, Promise) else value

    @property
    def output(self) -> Any:
        return self._output.resolve()


class _RuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, node: "NodeRule", kwargs: dict, *args: Any) -> Any:
        ctx.node, ctx.count = node, len(args)
        return node.op(*args, **kwargs)

    @staticmethod
    def backward(ctx, *relevance: torch.Tensor) -> tuple:
        node = ctx.node
        result = list(node.handler(node.call(), relevance[0]))
        node.store.done(node.name)
        result += [None] * (ctx.count - len(result))
        return (None, None, *(r if e else None for r, e in zip(result, node.explained)))


class NodeRule:
    """The callable that replaces one node's ATen target in the compiled module."""

    def __init__(self, node: fx.Node, dependent: set[str], handler, rule, store: ActivationStore):
        self.name, self.op, self.handler, self.rule, self.store = node.name, node.target, handler, rule, store
        self.explained = tuple(isinstance(a, fx.Node) and a.name in dependent for a in node.args)
        self.promised_args = tuple(fx.node.map_arg(a, lambda n: store.promise(n.name)) for a in node.args)
        self.kwargs = dict(node.kwargs)
        self.cache: dict = {}  # modified parameters of the rule, built once (see LinearOp.cached)
        self.__name__ = f"rule_{node.name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _RuleFunction.apply(self, kwargs, *args)

    def call(self) -> OpCall:
        return OpCall(self, self.promised_args, self.kwargs)


class _Keep:
    """Side-effect node: hand a forward value to the store (the memory policy chose to keep it)."""

    def __init__(self, store: ActivationStore, name: str):
        self.store, self.name, self.__name__ = store, name, f"keep_{name}"

    def __call__(self, value: Any) -> None:
        self.store.put(self.name, value)


class _Tap:
    """Record a value whose relevance is requested; `source` makes it a leaf (token embeddings)."""

    def __init__(self, taps: dict, name: str, source: bool):
        self.taps, self.name, self.source, self.__name__ = taps, name, source, f"tap_{name}"

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        if self.source:
            value = value.detach().requires_grad_()
        self.taps[self.name] = value
        return value


class Plan:
    """A Graph compiled for relevance under one composite and memory policy; reused across calls.

    >>> import torch, opwise
    >>> from opwise.rules import get_composite
    >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.randn(1, 3))
    >>> plan = Plan(graph, get_composite("epsilon"))
    >>> plan.embeddings
    []
    """

    def __init__(self, graph: Graph, composite: Composite, model: torch.nn.Module | None = None, keep="all"):
        for canonizer in composite.canonizers:
            graph = canonizer(graph)
        report = coverage(graph)
        if report.missing:
            name, op = report.missing[0]
            node = next(n for n in graph.call_nodes() if n.name == name)
            raise UnsupportedOperation(
                name, op, graph.info(node).module_path, engine="relevance",
                hint=f"register one with @relevance_rule({op!r}) (opwise.rules); {report}",
            )
        self.graph = graph
        #: whether the graph's output has been compared with the model's once (explain's fidelity check)
        self.fidelity_checked = False
        self.rules = composite.assign(graph, model)
        self.dependent = _relevance_paths(graph, self.rules)
        wrapped = [
            n for n in graph.call_nodes()
            if (n.name in self.dependent and rule_for(graph.info(n).op) != ROUTING)
            or isinstance(self.rules.get(n.name), Constant)
        ]
        reads = {}
        for node in wrapped:
            needs = () if isinstance(self.rules.get(node.name), Constant) else getattr(
                rule_for(graph.info(node).op), "needs", ())
            reads[node.name] = {a.name for a in node.all_input_nodes if a.op != "get_attr"} if "inputs" in needs else set()
            if "output" in needs or ("linear" in needs and needs_output(self.rules.get(node.name))):
                reads[node.name].add(node.name)
        needed = set().union(*reads.values())
        kept, segments = memory_policy(graph, keep, needed)
        self.store = ActivationStore(graph, kept, segments, needed)
        self.store.track(reads)
        self.embeddings = [n.name for n in wrapped if graph.info(n).op == EMBEDDING]
        self.taps: dict[str, torch.Tensor] = {}
        self._modules: dict[frozenset, fx.GraphModule] = {}
        self._wrapped = {n.name for n in wrapped}

    def module(self, observe: frozenset = frozenset()) -> fx.GraphModule:
        """The compiled relevance module, tapping the nodes in `observe` (built once per set)."""
        if observe not in self._modules:
            self._modules[observe] = self._compile(observe)
        return self._modules[observe]

    def _compile(self, observe: frozenset) -> fx.GraphModule:
        graph, store = self.graph, self.store
        copy = graph.module.graph.__deepcopy__()
        originals = {n.name: n for n in graph.module.graph.nodes}
        for node in list(copy.nodes):
            if node.op == "call_function" and node.name in self._wrapped:
                original = originals[node.name]
                rule = self.rules.get(node.name)
                handler = _no_relevance if isinstance(rule, Constant) else rule_for(graph.info(original).op)
                node.target = NodeRule(original, self.dependent, handler, rule, store)
            if node.op in ("placeholder", "call_function") and node.name in store.kept:
                with copy.inserting_after(node):
                    copy.call_function(_Keep(store, node.name), (node,))
            if node.name in self.embeddings or node.name in observe:
                with copy.inserting_after(node):
                    tap = copy.call_function(_Tap(self.taps, node.name, node.name in self.embeddings), (node,))
                node.replace_all_uses_with(tap, delete_user_cb=lambda user: user is not tap and not _is_keep(user))
        return fx.GraphModule(graph.module, copy)

    def run(self, inputs: list[torch.Tensor], observe: frozenset = frozenset()) -> torch.Tensor:
        """Forward through the compiled module (activations kept per policy); returns the output."""
        self.store.clear()
        self.taps.clear()
        return self.module(observe)(*inputs)


def _relevance_paths(graph: Graph, rules: dict) -> set[str]:
    """Names of the nodes relevance flows through: input-dependent and not behind a `Constant` rule."""
    return relevance_paths(graph, lambda node: isinstance(rules.get(node.name), Constant))


def _no_relevance(call: OpCall, relevance: torch.Tensor) -> list[None]:
    return [None] * len(call.args)


def _is_keep(node: fx.Node) -> bool:
    return isinstance(node.target, _Keep)
