"""The operation-level Graph both engines run on.

A `Graph` wraps an `fx.GraphModule` in one canonical form, whatever front-end produced it:

- one `placeholder` per traced input, in order (`graph.input_nodes`); `graph.explained` says which of
  them are explained/bounded (the others, e.g. attention masks, are constants for both engines);
- one `get_attr` per constant tensor (parameters, buffers, lifted constants); `graph.constant(node)`;
- `call_function` nodes whose targets are ATen operator overloads (plus `operator.getitem` on the
  few multi-output operators kept whole);
- one `output` node returning a single tensor.

Per-node facts live in `node.meta["opwise"]` as a `NodeInfo`, filled by the passes in `passes/`.
"""

from __future__ import annotations

import dataclasses
import operator
from collections import Counter
from typing import Any, Callable, Iterator

import torch
from torch import fx


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    """What an engine needs to know about one node without looking at the model."""

    op: str
    shape: tuple[int, ...] | None
    dtype: torch.dtype | None
    module_path: str | None
    source: str | None
    depends_on_input: bool


def op_key(node: fx.Node) -> str:
    """Canonical operator key: `aten.convolution.default`, `getitem`, `input`, `constant`, `output`."""
    if node.op == "placeholder":
        return "input"
    if node.op == "get_attr":
        return "constant"
    if node.op == "output":
        return "output"
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._opname}.{target._overloadname}"
    if target is operator.getitem:
        return "getitem"
    return getattr(target, "__name__", str(target))


def op_packet_key(key: str) -> str:
    """`aten.add.Tensor` -> `aten.add`: the fallback key for registries (overload, then packet)."""
    parts = key.split(".")
    return ".".join(parts[:2]) if len(parts) == 3 else key


class Graph:
    """A traced model as one graph of ATen operations.

    Build it with `opwise.trace`; call it like the model (positional inputs, in traced order).

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> graph = opwise.trace(model, torch.randn(2, 4))
    >>> [graph.info(n).op for n in graph.call_nodes()]
    ['aten.linear.default', 'aten.relu.default']
    >>> torch.allclose(graph(torch.ones(2, 4)), model(torch.ones(2, 4)))
    True
    """

    def __init__(
        self,
        module: fx.GraphModule,
        explained: list[bool],
        strategy: str,
        retrace: Callable[..., "Graph"] | None = None,
    ):
        self.module = module
        self.input_nodes = [n for n in module.graph.nodes if n.op == "placeholder"]
        if len(explained) != len(self.input_nodes):
            raise ValueError("explained must have one flag per placeholder")
        self.explained = list(explained)
        self.strategy = strategy
        self._retrace = retrace
        self.output_node = next(n for n in reversed(module.graph.nodes) if n.op == "output")

    # ----------------------------------------------------------------- running
    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.module(*inputs)

    def retrace(self, *inputs: Any, **kwargs: Any) -> "Graph":
        """Trace the same model again for inputs of another shape (graphs are shape-specialized)."""
        if self._retrace is None:
            raise RuntimeError("this Graph was not built from a model and cannot be retraced")
        return self._retrace(*inputs, **kwargs)

    # ----------------------------------------------------------------- structure
    @property
    def nodes(self) -> list[fx.Node]:
        return list(self.module.graph.nodes)

    def call_nodes(self) -> Iterator[fx.Node]:
        """The operation nodes in topological order."""
        return (n for n in self.module.graph.nodes if n.op == "call_function")

    @property
    def output(self) -> fx.Node:
        """The node whose value the graph returns."""
        return self.output_node.args[0]

    @property
    def explained_inputs(self) -> list[fx.Node]:
        return [n for n, e in zip(self.input_nodes, self.explained) if e]

    def info(self, node: fx.Node) -> NodeInfo:
        return node.meta["opwise"]

    def constant(self, node: fx.Node) -> torch.Tensor:
        """The tensor behind a `get_attr` node."""
        value: Any = self.module
        for part in node.target.split("."):
            value = getattr(value, part)
        return value

    def depends_on_input(self, node: fx.Node) -> bool:
        return self.info(node).depends_on_input

    def op_counts(self) -> Counter:
        return Counter(self.info(n).op for n in self.call_nodes())

    def __len__(self) -> int:
        return len(self.module.graph.nodes)

    def __repr__(self) -> str:
        dependent = sum(self.depends_on_input(n) for n in self.call_nodes())
        return (
            f"Graph({sum(1 for _ in self.call_nodes())} operations, {len(self.op_counts())} distinct, "
            f"{dependent} input-dependent, strategy={self.strategy!r})"
        )
