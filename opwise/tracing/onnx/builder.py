"""The state of one ONNX import: the fx graph being built, its constants, and the batch bookkeeping.

Converters call `builder.call(aten_op, *args)`. When no argument depends on a graph input the op runs
at once and its tensor is returned (this is how shape subgraphs fold to constants); otherwise an fx
node is added, constant tensors become `get_attr` nodes on the root module, and the node's
`meta["val"]` is computed from the example values of its arguments, so converters always know shapes.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import fx

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.registry import OnnxNode

aten = torch.ops.aten

Value = Any  # torch.Tensor (constant), fx.Node (input-dependent) or None (omitted optional input)


class GraphBuilder:
    """Builds the fx graph of one imported model; see the module docstring."""

    def __init__(self, batch_size: int, declared_batch: int | None):
        self.root = torch.nn.Module()
        self.graph = fx.Graph()
        self.batch_size = batch_size
        self.declared_batch = declared_batch
        self.constant_sources: dict[str, str] = {}
        self._sources: dict[int, str] = {}
        self._alive: list[torch.Tensor] = []
        self._attributes: dict[int, fx.Node] = {}
        self.current: OnnxNode | None = None
        self.use_counts: dict[str, int] = {}  # ONNX value name -> readers (nodes and the graph output)
        self.reading_nodes: dict[str, list[Any]] = {}  # ONNX value name -> NodeProtos reading it (None: the output)
        # converts a subgraph (a GraphProto: an If branch, a Scan or Loop body with its inputs bound) into this graph
        # and returns its outputs: `inline(subgraph, inputs=())`; set by the importer
        self.inline: Any = None
        # only evaluates converters on constants (fixed.py): ops run at once, no initializer names are kept
        self.evaluating = False

    # ----------------------------------------------------------------- values
    @property
    def rebatched(self) -> bool:
        """True when importing with another batch size than the model declares (fixed leading dim)."""
        return self.declared_batch is not None and self.batch_size != self.declared_batch

    def placeholder(self, name: str, example: torch.Tensor) -> fx.Node:
        node = self.graph.placeholder(_identifier(name, "input"))
        node.meta["val"] = example
        return node

    def initializer(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Remember that `tensor` is the ONNX initializer `name` (its get_attr nodes will say so)."""
        self._remember(tensor, name)
        return tensor

    def inherit_source(self, result: torch.Tensor, origin: Value) -> torch.Tensor:
        """Let the constant `result`, computed from the constant `origin`, name the initializer `origin` came from."""
        source = self._sources.get(id(origin)) if isinstance(origin, torch.Tensor) else None
        if source is not None:
            self._remember(result, source)
        return result

    def example(self, value: Value) -> Any:
        """The example value behind `value`: the node's `meta["val"]`, or the constant itself."""
        return value.meta["val"] if isinstance(value, fx.Node) else value

    def shape(self, value: Value) -> list[int]:
        return list(self.example(value).shape)

    def call(self, target: Any, *args: Any, **kwargs: Any) -> Value:
        """Apply the ATen op `target`: folded now if nothing depends on an input, else an fx node."""
        if self.evaluating:
            return target(*args, **kwargs)
        if not _contains_node((args, kwargs)):
            result = target(*args, **kwargs)
            source = self._source_of((args, kwargs))
            if source is not None and isinstance(result, torch.Tensor):
                self._remember(result, source)
            return result
        node_args = fx.node.map_aggregate(args, self._argument)
        node_kwargs = fx.node.map_aggregate(kwargs, self._argument)
        node = self.graph.call_function(target, node_args, node_kwargs)
        node.meta["val"] = target(*fx.node.map_aggregate(args, self.example), **fx.node.map_aggregate(kwargs, self.example))
        if self.current is not None:
            node.meta["nn_module_stack"] = {self.current.name: (self.current.name, f"onnx.{self.current.op_type}")}
            node.meta["onnx_node"] = self.current.name
        return node

    def constant_node(self, tensor: torch.Tensor) -> fx.Node:
        """A `get_attr` node for `tensor` (one per distinct tensor), registered as a root buffer."""
        key = id(tensor)
        if key in self._attributes:
            return self._attributes[key]
        source = self._sources.get(key)
        name = _identifier(source or "constant", "constant")
        unique, count = name, 1
        while hasattr(self.root, unique):
            unique, count = f"{name}_{count}", count + 1
        self.root.register_buffer(unique, tensor.detach().clone() if not tensor.is_contiguous() else tensor)
        node = self.graph.get_attr(unique)
        node.meta["val"] = getattr(self.root, unique)
        if source is not None:
            self.constant_sources[unique] = source
        self._attributes[key] = node
        self._alive.append(tensor)
        return node

    def view(self, value: Value, shape: list[int]) -> Value:
        """`aten.view` to `shape` (no node when the shape is unchanged); copies first if strides forbid a view."""
        if self.shape(value) == list(shape):
            return value
        try:
            self.example(value).view(shape)
        except RuntimeError:
            value = self.call(aten.clone.default, value, memory_format=torch.contiguous_format)
        return self.call(aten.view.default, value, list(shape))

    def expand(self, value: Value, shape: list[int]) -> Value:
        """`aten.expand` to `shape` (no node when the shape is unchanged)."""
        if self.shape(value) == list(shape):
            return value
        return self.call(aten.expand.default, value, list(shape))

    # ----------------------------------------------------------------- batch checks
    def require_batch_kept(self, axes: list[int], rank: int, what: str) -> None:
        """Refuse an op that would act across samples when importing with another batch size."""
        if self.rebatched and any(axis % rank == 0 for axis in axes if rank):
            raise self.batch_error(f"{what} acts on axis 0, the batch axis")

    def batch_error(self, reason: str) -> ModelLoadError:
        node = self.current
        where = f"node '{node.name}' ({node.op_type})" if node else "the model"
        return ModelLoadError(
            f"cannot import with batch_size={self.batch_size}: {where}: {reason}, so samples would mix; "
            f"import with batch_size={self.declared_batch} (the batch size the model declares) and run "
            "samples one batch at a time"
        )

    # ----------------------------------------------------------------- internals
    def _argument(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self.constant_node(value)
        return value

    def _remember(self, tensor: torch.Tensor, source: str) -> None:
        self._sources[id(tensor)] = source
        self._alive.append(tensor)

    def _source_of(self, arguments: Any) -> str | None:
        found: list[str] = []

        def visit(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and id(value) in self._sources:
                found.append(self._sources[id(value)])
            return value

        fx.node.map_aggregate(arguments, visit)
        return found[0] if len(set(found)) == 1 else None


def _contains_node(arguments: Any) -> bool:
    found = []
    fx.node.map_aggregate(arguments, lambda value: found.append(value) if isinstance(value, fx.Node) else value)
    return bool(found)


def _identifier(name: str, fallback: str) -> str:
    text = re.sub(r"\W", "_", name).strip("_") or fallback
    return f"_{text}" if text[0].isdigit() else text
