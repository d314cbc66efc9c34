"""Promises: handles to node activations a rule needs, resolved from the forward store or recomputed.

The forward pass stores the values of the nodes chosen by the memory policy (`keep`). A rule asks for an
input or output of its node through a `Promise`; the `ActivationStore` resolves it from what was kept,
or recomputes the whole segment that contains it from the nearest kept values (its checkpoints), so the
promises of one segment are resolved together by one recomputation. During the relevance pass a stored
value is dropped as soon as the last rule that reads it (directly or through a recomputation) has run,
so memory shrinks as the backward pass proceeds, as autograd's own saved tensors do.
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

    def __init__(self, graph: Graph, kept: set[str], segments: list[list[fx.Node]], needed: set[str] | None = None):
        self.graph, self.kept, self.segments, self.needed = graph, kept, segments, needed
        self.segment_of = {node.name: index for index, segment in enumerate(segments) for node in segment}
        self.constants = {n.name: n for n in graph.module.graph.nodes if n.op == "get_attr"}
        self.values: dict[str, Any] = {}
        self._recomputed: tuple[int, dict[str, Any]] | None = None
        self.recomputations = 0
        self._releases: dict[str, list[tuple[str, Any]]] = {}
        self._uses: dict[tuple[str, Any], int] = {}
        self._pending: dict[tuple[str, Any], int] = {}

    def track(self, reads: dict[str, set[str]]) -> None:
        """Learn which values each rule node reads, so that `done(node)` can drop what no later rule needs.

        A rule reading a value that was not kept also reads the checkpoints its segment is recomputed from.
        Inputs and input-independent values are never dropped (the caller holds them, or they are small).
        """
        droppable = {n.name for n in self.graph.call_nodes() if self.graph.depends_on_input(n)} & self.kept
        self._releases, self._uses = {}, {}
        for rule, names in reads.items():
            keys = [("value", name) for name in names if name in droppable]
            for index in sorted({self.segment_of[n] for n in names if n not in self.kept and n in self.segment_of}):
                keys.append(("segment", index))
                keys += [("value", name) for name in self._checkpoints(index) if name in droppable]
            self._releases[rule] = keys
            for key in keys:
                self._uses[key] = self._uses.get(key, 0) + 1
        self._pending = dict(self._uses)

    def _checkpoints(self, index: int) -> set[str]:
        inside = {node.name for node in self.segments[index]}
        return {a.name for node in self.segments[index] for a in node.all_input_nodes if a.name not in inside}

    def done(self, rule: str) -> None:
        """Rule node `rule` has run: drop the values and recomputed segments no pending rule reads."""
        for key in self._releases.get(rule, ()):
            self._pending[key] -= 1
            if self._pending[key]:
                continue
            kind, what = key
            if kind == "value":
                self.values.pop(what, None)
            elif self._recomputed is not None and self._recomputed[0] == what:
                self._recomputed = None

    def put(self, name: str, value: Any) -> None:
        self.values[name] = _detach(value)

    def clear(self) -> None:
        self.values.clear()
        self._recomputed = None
        self._pending = dict(self._uses)

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
            self._recomputed = None
            self._recomputed = (index, self._recompute(index))
        return self._recomputed[1][name]

    def _recompute(self, index: int) -> dict[str, Any]:
        """Run one segment again from its checkpoints (no autograd); its values a rule may read.

        A value is freed inside the segment once its last user there has run, unless a rule reads it.
        """
        self.recomputations += 1
        segment = self.segments[index]
        last_use = {a.name: position for position, node in enumerate(segment) for a in node.all_input_nodes}
        env: dict[str, Any] = {}

        def lookup(node: fx.Node) -> Any:
            return env[node.name] if node.name in env else self.resolve(node.name)

        with torch.no_grad():
            for position, node in enumerate(segment):
                args = fx.node.map_arg(node.args, lookup)
                kwargs = fx.node.map_arg(node.kwargs, lookup)
                env[node.name] = _detach(node.target(*args, **kwargs))
                if self.needed is not None:
                    for arg in node.all_input_nodes:
                        if last_use.get(arg.name) == position and arg.name in env and arg.name not in self.needed:
                            del env[arg.name]
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
    fit in it, else the checkpoints plus, smallest first, the needed values of whole segments while they
    fit (a segment whose needed values are all kept is never recomputed).
    """
    operations = [n for n in graph.call_nodes() if graph.depends_on_input(n)]
    if isinstance(keep, bool) or not (keep in ("all", "checkpoints") or isinstance(keep, int)):
        raise InputError(f"keep must be 'all', 'checkpoints' or a number of bytes, got {keep!r}")
    budget = keep if isinstance(keep, int) else None
    if budget is not None:
        keep = "all" if needed_bytes(graph, needed) <= budget else "checkpoints"
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
    if budget is not None:
        spent = needed_bytes(graph, kept)
        extras = [{n.name for n in segment if n.name in needed} - kept for segment in segments]
        for extra in sorted(extras, key=lambda names: needed_bytes(graph, names)):
            cost = needed_bytes(graph, extra)
            if spent + cost <= budget:
                kept |= extra
                spent += cost
    return kept, segments


def needed_bytes(graph: Graph, names: set[str]) -> int:
    """Bytes of the input-dependent values among `names` (what a forward pass stores for them).

    >>> import torch, opwise
    >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.randn(4, 3))
    >>> needed_bytes(graph, {n.name for n in graph.call_nodes()})
    32
    """
    return sum(_bytes(graph, n) for n in graph.call_nodes() if n.name in names and graph.depends_on_input(n))


def _bytes(graph: Graph, node: fx.Node) -> int:
    info = graph.info(node)
    if info.shape is None or info.dtype is None:
        return 0
    return math.prod(info.shape) * torch.empty((), dtype=info.dtype).element_size()
