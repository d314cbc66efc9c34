"""The operation-level Graph both engines run on.

A `Graph` wraps an `fx.GraphModule` in one canonical form, whatever front-end produced it:

- one `placeholder` per traced input, in order (`graph.input_nodes`); `graph.explained` says which of
  them are explained/bounded (the others, e.g. attention masks, are constants for both engines);
- one `get_attr` per constant tensor (parameters, buffers, lifted constants); `graph.constant(node)`;
- `call_function` nodes whose targets are ATen operator overloads (plus `operator.getitem` on the
  few multi-output operators kept whole);
- one `output` node returning a single tensor.

Per-node facts live in `node.meta["opwise"]` as a `NodeInfo`, filled by the passes in `passes/`; code
outside `tracing/` reads them through `graph.info(node)`, finds nodes with `graph.node(name)`, changes a
graph only through `graph.rewrite(fn)` and gets it for another batch size with `graph.for_batch(n)`.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
from collections import Counter
from typing import Any, Callable, Iterator, Sequence

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
        *,
        input_names: Sequence[str] | None = None,
        layout: Any = None,
        opset: int | None = None,
        rebatch: Callable[[int], "Graph"] | None = None,
    ):
        self.module = module
        self.input_nodes = [n for n in module.graph.nodes if n.op == "placeholder"]
        #: per leading size other than `batch_size`: whether the module ran at it as it is (`__call__`)
        self._runs_as_is: dict[int, bool] = {}
        if len(explained) != len(self.input_nodes):
            raise ValueError("explained must have one flag per placeholder")
        self.explained = list(explained)
        self.strategy = strategy
        #: the inputs' names as the user knows them (keyword names, ONNX input names)
        self.input_names = list(input_names) if input_names is not None else [n.name for n in self.input_nodes]
        #: how model(*args, **kwargs) maps to the placeholders (traced graphs; None for ONNX imports)
        self.layout = layout
        #: the ONNX opset an imported graph was read with (None for traced graphs)
        self.opset = opset
        self._retrace = retrace
        self._rebatch = rebatch
        self._batches: dict[int, Graph] = {}
        self.output_node = next(n for n in reversed(module.graph.nodes) if n.op == "output")

    def _rebatched(self, derive: Callable[["Graph"], "Graph"]) -> Callable[[int], "Graph"]:
        """How a graph derived from this one (a rewrite, a move) gets another batch size: this graph's, derived again."""
        def rebatch(batch: int) -> Graph:
            specialized = self.for_batch(batch)
            if specialized is self:
                raise CannotRebatch(batch)
            return derive(specialized)

        return rebatch

    def _derived(self, module: fx.GraphModule, retrace=None, rebatch=None) -> "Graph":
        """A Graph over another module with this one's declared fields."""
        return Graph(module, self.explained, self.strategy, retrace, input_names=self.input_names,
                     layout=self.layout, opset=self.opset, rebatch=rebatch)

    # ----------------------------------------------------------------- running
    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The model on `inputs`. A module specialized to its batch size (a view to [1, 144] after a Flatten) fails
        on inputs of another leading size: those then run through `map_batches` (specialized or chunked) instead of
        ending in a shape error. A module that runs at their size as it is keeps doing so (padding a graph that mixes
        samples would change its result).

        >>> import torch, opwise
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 3))
        >>> graph = opwise.trace(model, torch.zeros(1, 1, 4, 4))
        >>> x = torch.rand(5, 1, 4, 4)
        >>> bool(torch.allclose(graph(x), model(x)))
        True
        """
        leading = next((int(v.shape[0]) for v in inputs if isinstance(v, torch.Tensor) and v.dim()), self.batch_size)
        if leading == self.batch_size or self._runs_as_is.get(leading, True):
            try:
                return self.module(*inputs)
            except RuntimeError:
                if leading == self.batch_size:
                    raise
                self._runs_as_is[leading] = False  # remembered: a loop calling at this size fails once, not every call
        return self.map_batches(lambda graph, *chunks: graph.module(*chunks), *inputs)

    def retrace(self, *inputs: Any, **kwargs: Any) -> "Graph":
        """Trace the same model again for inputs of another shape (graphs are shape-specialized)."""
        if self._retrace is None:
            raise RuntimeError("this Graph was not built from a model and cannot be retraced")
        return self._retrace(*inputs, **kwargs)

    @property
    def batch_size(self) -> int:
        """The leading dimension of the first explained input, which the graph is specialized to."""
        shape = self.info(self.explained_inputs[0]).shape
        return int(shape[0]) if shape else 1

    def for_batch(self, batch: int) -> "Graph":
        """This graph for `batch` samples (re-traced or re-imported once, then cached; rewrites re-applied).

        A graph that cannot be specialized to another batch size (a model file that moves axis 0, a graph
        built by hand) is returned as it is, at its own batch size: `map_batches` then runs it chunk by
        chunk. Check `result.batch_size`.

        >>> import torch, opwise
        >>> graph = opwise.trace(torch.nn.Linear(3, 2), torch.zeros(1, 3))
        >>> graph.for_batch(4).batch_size, graph.for_batch(4) is graph.for_batch(4)
        (4, True)
        """
        if batch == self.batch_size:
            return self
        if batch not in self._batches:
            self._batches[batch] = self._specialize(batch)
        return self._batches[batch]

    def _specialize(self, batch: int) -> "Graph":
        from opwise.errors import OpwiseError

        if self._rebatch is not None:
            try:
                return self._rebatch(batch)
            except (OpwiseError, CannotRebatch):
                return self
        if self._retrace is None or self.layout is None:
            return self
        args, kwargs = self.layout.with_batch(batch)
        try:
            return self.retrace(*args, **kwargs)
        except OpwiseError:  # the model runs at one batch size only (a program exported without a dynamic batch)
            return self

    def map_batches(self, run: Callable[..., Any], *tensors: Any, max_batch: int = 1024) -> Any:
        """`run(graph, *chunks)` over the batch of `tensors` (batch-first; None passes through), with the
        graph specialized to a power-of-two batch (at most `max_batch`, so a search whose batch changes
        every round re-traces a few times, not every round) or, where it cannot be, to its own batch size.
        Chunks are padded by repeating their last row; the results (a tensor, a tuple or named tuple of
        tensors or None) are cut back and joined. Batches are padded and chunked here and nowhere else (other
        item lists, e.g. branch-and-bound's domains, take their chunks from `batching.padded_chunks`).

        >>> import torch, opwise
        >>> graph = opwise.trace(torch.nn.Linear(3, 2), torch.zeros(1, 3))
        >>> graph.map_batches(lambda g, x: g(x), torch.ones(5, 3)).shape
        torch.Size([5, 2])
        """
        from opwise.tracing.batching import map_batches

        return map_batches(self, run, tensors, max_batch)

    def positions_for(self, count: int, max_batch: int = 1024) -> int:
        """How many positions `map_batches` runs `count` samples at, padding included: a search can fill them
        with real work at no extra cost (a batch of 130 runs at 256 positions, or at 1024 where the graph is
        already specialized to 1024).

        >>> import torch, opwise
        >>> graph = opwise.trace(torch.nn.Linear(3, 2), torch.zeros(1, 3))
        >>> graph.positions_for(5), graph.positions_for(1), graph.positions_for(3000)
        (8, 1, 3072)
        """
        from opwise.tracing.batching import positions_for

        return positions_for(self, count, max_batch)

    def rewrite(self, transform: Callable[[fx.GraphModule], bool]) -> "Graph":
        """A new Graph: `transform` edits a copy of the module (graph copied, parameters shared; it may
        register buffers) and returns whether it changed anything (if not, this Graph is returned). Every
        node is then re-annotated (shapes by running zeros through the copy, input dependence from the
        explained inputs, operator keys), and `for_batch` of the result re-applies the transform.

        >>> import torch, opwise
        >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()), torch.zeros(1, 3))
        >>> def drop_relu(module):
        ...     relu = next(n for n in module.graph.nodes if n.target is torch.ops.aten.relu.default)
        ...     relu.replace_all_uses_with(relu.args[0]); module.graph.erase_node(relu); return True
        >>> [graph.rewrite(drop_relu).info(n).op for n in graph.rewrite(drop_relu).call_nodes()]
        ['aten.linear.default']
        """
        from opwise.tracing.passes.metadata import reannotate

        module = fx.GraphModule(self.module, copy.deepcopy(self.module.graph))
        if not transform(module):
            return self
        module.graph.eliminate_dead_code()
        module.recompile()
        reannotate(module, self.explained)
        return self._derived(module, rebatch=self._rebatched(lambda specialized: specialized.rewrite(transform)))

    def to(self, device: torch.device | str) -> "Graph":
        """The graph with its constants on `device` (a copy of the module; the model's own parameters stay
        where they are); `for_batch` of the result is on `device` too.

        >>> import torch, opwise
        >>> graph = opwise.trace(torch.nn.Linear(3, 2), torch.zeros(1, 3)).to("cpu")
        >>> graph(torch.zeros(1, 3)).device.type
        'cpu'
        """
        device = torch.device(device)
        if device == self.device:
            return self
        return self._derived(_moved(self.module, device), rebatch=self._rebatched(lambda specialized: specialized.to(device)))

    @property
    def device(self) -> torch.device:
        """Where the graph's constants live (the CPU for a graph without any)."""
        for tensor in (*self.module.parameters(), *self.module.buffers()):
            return tensor.device
        return torch.device("cpu")

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

    def node(self, name: str) -> fx.Node:
        """The node called `name` (KeyError naming the graph's nodes when there is none).

        >>> import torch, opwise
        >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), torch.zeros(1, 2))
        >>> graph.node(graph.output.name) is graph.output
        True
        """
        if not hasattr(self, "_by_name") or self._by_name_size != len(self.module.graph.nodes):
            self._by_name = {node.name: node for node in self.module.graph.nodes}
            self._by_name_size = len(self._by_name)
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no node {name!r} in this graph ({len(self._by_name)} nodes)") from None

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


def model_device(model: Any, default: torch.device | str = "cpu") -> torch.device:
    """Where a model computes: a Graph's constants' device, a module's parameters' (or buffers') device, else
    `default` (a model without any tensors of its own, or a plain function).

    >>> model_device(torch.nn.Linear(2, 1)), model_device(torch.nn.ReLU(), "cpu")
    (device(type='cpu'), device(type='cpu'))
    """
    if isinstance(model, Graph):
        return model.device
    if isinstance(model, torch.nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device(default)


class CannotRebatch(Exception):
    """A graph cannot be specialized to this batch size (it then runs at its own, in chunks)."""


def _moved(module: fx.GraphModule, device: torch.device) -> fx.GraphModule:
    """A GraphModule running the same graph with copies of every parameter and buffer on `device`."""
    moved = fx.GraphModule(module, module.graph)
    for name, tensor in list(moved.named_parameters()) + list(moved.named_buffers()):
        owner_path, _, leaf = name.rpartition(".")
        owner = moved.get_submodule(owner_path) if owner_path else moved
        copy_ = tensor.detach().to(device)
        if isinstance(tensor, torch.nn.Parameter):
            owner._parameters[leaf] = torch.nn.Parameter(copy_, requires_grad=tensor.requires_grad)
        else:
            owner._buffers[leaf] = copy_
    return moved
