"""Promises: handles to node activations a rule needs, resolved from the forward store or recomputed.

The forward pass stores the values of the nodes chosen by the memory policy (`keep`). A rule asks for an
input or output of its node through a `Promise`; the `ActivationStore` resolves it from what was kept,
or recomputes the whole segment that contains it from the nearest kept values (its checkpoints), so the
promises of one segment are resolved together by one recomputation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import fx

from opwise.errors import InputError
from opwise.tracing.graph import Graph


class Promise:
    """The value of graph node `name`, available once `resolve()` is called."""

    __slots__ = ("store", "name")

    def __init__(self, store: "ActivationStore", name: str):
        self.store, self.name = store, name

    def resolve(self) -> Any:
        return self.store.resolve(self.name)

    def __repr__(self) -> str:
        return f"Promise({self.name!r})"


class ActivationStore:
    """Forward values by node name, under a memory policy, with segment recomputation for the rest.

    `segments` partitions the input-dependent operations in graph order; `kept` names the values the
    forward pass stores: with keep="all" every value a rule may need, with keep="checkpoints" only values
    that cross a segment boundary (plus inputs and input-independent values), from which any segment can be
    recomputed on its own.
    """

    def __init__(self, graph: Graph, kept: set[str], segments: list[list[fx.Node]]):
        self.graph, self.kept, self.segments = graph, kept, segments
        self.segment_of = {node.name: index for index, segment in enumerate(segments) for node in segment}
        self.constants = {n.name: n for n in graph.module.graph.nodes if n.op == "get_attr"}
        self.values: dict[str, Any] = {}
        self._recomputed: tuple[int, dict[str, Any]] | None = None
        self.recomputations = 0

    def put(self, name: str, value: Any) -> None:
        self.values[name] = _detach(value)

    def clear(self) -> None:
        self.values.clear()
        self._recomputed = None

    def promise(self, name: str) -> Promise:
        return Promise(self, name)

    def resolve(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        if name in self.constants:
            return self.graph.constant(self.constants[name]).detach()
        index = self.segment_of.get(name)
        if index is None:
            raise KeyError(f"activation of node {name!r} was neither kept nor recomputable")
        if self._recomputed is None or self._recomputed[0] != index:
            self._recomputed = (index, self._recompute(index))
        return self._recomputed[1][name]

    def _recompute(self, index: int) -> dict[str, Any]:
        """Run one segment again from its checkpoints (no autograd), returning all its values."""
        self.recomputations += 1
        env: dict[str, Any] = {}

        def lookup(node: fx.Node) -> Any:
            return env[node.name] if node.name in env else self.resolve(node.name)

        with torch.no_grad():
            for node in self.segments[index]:
                args = fx.node.map_arg(node.args, lookup)
                kwargs = fx.node.map_arg(node.kwargs, lookup)
                env[node.name] = _detach(node.target(*args, **kwargs))
        return env


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    return value


def memory_policy(graph: Graph, keep: str | int, needed: set[str]) -> tuple[set[str], list[list[fx.Node]]]:
    """Decide what the forward pass stores: (kept names, segments of the input-dependent operations).

    keep="all" stores every needed value; "checkpoints" cuts the operations into about √n segments and
    stores only values crossing a segment boundary; an int is a byte budget: all when the needed values
    fit in it, checkpoints otherwise.
    """
    operations = [n for n in graph.call_nodes() if graph.depends_on_input(n)]
    if isinstance(keep, bool) or not (keep in ("all", "checkpoints") or isinstance(keep, int)):
        raise InputError(f"keep must be 'all', 'checkpoints' or a number of bytes, got {keep!r}")
    if isinstance(keep, int):
        keep = "all" if sum(_bytes(graph, n) for n in operations if n.name in needed) <= keep else "checkpoints"
    if keep == "all" or not operations:
        return set(needed), [operations]
    size = max(1, math.ceil(math.sqrt(len(operations))))
    segments = [operations[i : i + size] for i in range(0, len(operations), size)]
    segment_of = {n.name: i // size for i, n in enumerate(operations)}
    kept = {n.name for n in graph.input_nodes}
    for node in graph.call_nodes():
        if not graph.depends_on_input(node):
            kept.add(node.name)
            continue
        if any(segment_of.get(user.name, -1) > segment_of[node.name] for user in node.users):
            kept.add(node.name)
    return kept, segments


def _bytes(graph: Graph, node: fx.Node) -> int:
    info = graph.info(node)
    if info.shape is None or info.dtype is None:
        return 0
    return math.prod(info.shape) * torch.empty((), dtype=info.dtype).element_size()
