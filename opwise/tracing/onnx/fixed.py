"""Input elements known at import time: values computed only from them fold to constants.

A VNN-LIB property may fix some input elements (lower bound == upper bound): a network may read a control value,
a slice start or a gather index from them, an argument the importer needs constant. On the property's box those
elements take one value, so every value that depends on no other input element is one constant there.
`FixedFolding` follows, per ONNX value and element, whether it may depend on a free input element, alongside the
import: a node whose outputs depend on fixed elements only is evaluated by its own converter and enters the graph
as constants; the other nodes are imported as usual. (cctsdb_yolo 2023 fixes its image and box but not the patch
position the network slices at: elements it reads only through integer casts, which cases.py enumerates.)

Which elements a value depends on is over-approximated, so the folding is sound: elementwise operators combine
their inputs' elements position by position (broadcasting), operators that only move elements (Slice, Gather,
Reshape, Concat, ScatterND, ...) are run on a 0/1 indicator of the free elements in place of their data, and
every other operator depends on all of its inputs (any free element makes every output element free).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from opwise.errors import InputError, OpwiseError
from opwise.tracing.onnx.builder import GraphBuilder
from opwise.tracing.onnx.registry import OnnxNode, lookup

#: operators whose output element i reads the input elements at i, broadcast (ONNX's numpy-style broadcasting)
_ELEMENTWISE = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "Asin", "Asinh", "Atan", "Atanh", "BitShift", "Cast", "CastLike", "Ceil",
    "Celu", "Clip", "Cos", "Cosh", "Div", "Elu", "Equal", "Erf", "Exp", "Floor", "Greater", "GreaterOrEqual",
    "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log", "Max",
    "Mean", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "Reciprocal", "Relu", "Round", "Selu",
    "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu",
    "Where", "Xor",
})

#: operators whose outputs are copies of elements of the inputs at these positions (None: every input) or
#: constants; every other input (starts, shapes, indices, pads) must be known
_ROUTING = {
    "Compress": (0,), "Concat": None, "DepthToSpace": (0,), "Expand": (0,), "Flatten": (0,), "Gather": (0,),
    "GatherElements": (0,), "GatherND": (0,), "Pad": (0,), "Reshape": (0,), "Scatter": (0, 2), "ScatterElements": (0, 2),
    "ScatterND": (0, 2), "Slice": (0,), "SpaceToDepth": (0,), "Split": (0,), "Squeeze": (0,), "Tile": (0,),
    "Transpose": (0,), "Unsqueeze": (0,),
}

#: operators whose output depends on their input's shape only (known at import)
_SHAPE_ONLY = frozenset({"Shape", "Size"})

#: operators whose dependence on single elements the analysis follows
FOLLOWED_OPS = _ELEMENTWISE | set(_ROUTING) | _SHAPE_ONLY


@dataclasses.dataclass(frozen=True)
class FixedElements:
    """The elements of one model input that take one known value: `mask` is True there, and `values` holds
    that value (elsewhere a point of the input set, e.g. the box centre, only used to evaluate).

    Both have the input's shape, or as many elements (flat, as VNN-LIB numbers X_i); for a model with a batch
    axis, one sample's elements stand for every sample.

    >>> fixed = FixedElements(torch.tensor([False, True]), torch.tensor([0.5, 3.0]))
    >>> fixed.count
    1
    """

    mask: torch.Tensor
    values: torch.Tensor
    #: elements not fixed but evaluated at `values` as well, which the network must read only through casts to
    #: int32 or int64 (`FixedFolding.misuses` says where it does not): on a cell where every such cast is one
    #: integer, the network is then the network at `values` (see opwise/tracing/onnx/cases.py)
    discrete: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return int(self.mask.sum())


class _Tracked:
    """A value computed from fixed input elements: its value where `free` is False (elsewhere a stand-in of the
    right shape and dtype); `free` None when no element depends on a free input element. `raw` marks the elements
    that are discrete input elements not yet cast to an integer, `case` those that depend on a discrete element at
    all (known only once their cell is; None: none does)."""

    __slots__ = ("value", "free", "raw", "case")

    def __init__(self, value: torch.Tensor, free: torch.Tensor | None, raw: torch.Tensor | None = None,
                 case: torch.Tensor | None = None):
        self.value = value
        self.free, self.raw, self.case = (mask if mask is not None and bool(mask.any()) else None
                                          for mask in (free, raw, case))


class FixedFolding:
    """The fixed-element analysis of one import; `fold(node, env)` is asked before each top-level node."""

    def __init__(self, builder: GraphBuilder, tracked: dict[str, _Tracked]):
        self.shadow = GraphBuilder(builder.batch_size, builder.declared_batch)  # evaluates converters on constants
        self.shadow.use_counts, self.shadow.reading_nodes = builder.use_counts, builder.reading_nodes
        self.shadow.evaluating = True
        self.tracked = tracked
        self.inputs = set(tracked)
        self.nodes: list[OnnxNode] = []  # every top-level node asked about, in order
        self.env: dict[str, Any] = {}
        self.misuses: list[str] = []  # nodes that read a discrete element other than through an integer cast
        self.discrete = any(state.raw is not None for state in tracked.values())
        self.output = ""  # the graph output's name

    @classmethod
    def of_inputs(cls, builder: GraphBuilder, fixed: dict[Any, FixedElements], inputs: list[tuple[str, list[int],
                  torch.dtype]]) -> "FixedFolding":
        """The analysis starting from `fixed` (keyed by input name or position) on the inputs (name, dims at the
        imported batch size, dtype)."""
        names = [name for name, _, _ in inputs]
        tracked = {}
        for key, elements in fixed.items():
            index = key if isinstance(key, int) else (names.index(key) if key in names else None)
            if index is None or not 0 <= index < len(inputs):
                raise InputError(f"fixed elements are given for input {key!r}, but the model's inputs are {names}")
            name, dims, dtype = inputs[index]
            mask = _batched(elements.mask.to(torch.bool), dims, name)
            values = _batched(elements.values.to(dtype), dims, name)
            discrete = None if elements.discrete is None else _batched(elements.discrete.to(torch.bool), dims, name)
            tracked[name] = _Tracked(values, ~mask if discrete is None else ~mask & ~discrete, discrete, discrete)
        return cls(builder, tracked)

    def fold(self, node: OnnxNode, env: dict[str, Any]) -> bool:
        """Put the node's outputs into `env` as constants when they depend on fixed input elements only (True);
        else note what is known of them and leave the node to the importer (False)."""
        self.nodes.append(node)
        self.env = env
        if self.discrete and _has_subgraph(node):  # its subgraphs may read a discrete element by name
            return self._misused(node, True)
        if not any(name in self.tracked for name in node.inputs):
            return False  # nothing read from a fixed input: constants fold in the importer, the rest is free
        states = [self._state(name, env) for name in node.inputs]
        known = [state for state in states if state is not None and state is not _FREE]
        raw = any(state.raw is not None for state in known)
        cased = any(state.case is not None for state in known)  # not followed here, its outputs' cases are unknown
        if any(state is _FREE for state in states) or _has_subgraph(node):
            return self._misused(node, cased)
        partly_free = any(state.free is not None or state.raw is not None for state in known)
        if partly_free and node.op_type not in FOLLOWED_OPS:
            return self._misused(node, cased)  # every output element may depend on a free one: not worth evaluating
        values = self.evaluate(node, [None if state is None else state.value for state in states])
        if values is None:
            return self._misused(node, cased)
        frees = self._followed(node, states, values, "free")
        if _integer_cast(node):
            raws = [None]
        elif raw and node.op_type not in _ROUTING and node.op_type not in _SHAPE_ONLY and node.op_type != "Identity":
            return self._misused(node, True)
        else:
            raws = self._followed(node, states, values, "raw")
        if frees is None or raws is None:
            return self._misused(node, cased)
        cases = self._followed(node, states, values, "case")
        if cases is None:  # an operator not followed: every element of the outputs depends on any it reads
            cases = [torch.ones(value.shape, dtype=torch.bool) if value is not None else None for value in values]
        for name, value, free, raw_elements, case in zip(node.outputs, values, frees, raws, cases):
            if name:
                self.tracked[name] = _Tracked(value, free, raw_elements, case)
        if any(self.tracked[name].free is not None for name in node.outputs if name):
            return False
        env.update((name, value) for name, value in zip(node.outputs, values) if name)
        return True

    def _misused(self, node: OnnxNode, discrete: bool) -> bool:
        """Not folded; where it reads `discrete` elements (or values computed from them), they are read other than
        through an integer cast, or in a way this analysis does not follow."""
        if discrete:
            self.misuses.append(f"node '{node.name}' ({node.op_type})")
        return False

    def _state(self, name: str, env: dict[str, Any]) -> "_Tracked | object | None":
        if not name:
            return None
        if name in self.tracked:
            return self.tracked[name]
        value = env[name]
        return _Tracked(value, None) if isinstance(value, torch.Tensor) else _FREE

    def evaluate(self, node: OnnxNode, arguments: list[Any]) -> tuple[torch.Tensor, ...] | None:
        """The node's outputs computed by its converter on constants, or None where it cannot say."""
        function = lookup(node.op_type, node.opset)
        if function is None:
            return None
        self.shadow.current = node
        try:
            results = function(self.shadow, node, *arguments)
        except (OpwiseError, RuntimeError, IndexError, TypeError, ValueError):
            return None  # the importer converts the node and says what is wrong
        results = results if isinstance(results, tuple) else (results,)
        named = [result for name, result in zip(node.outputs, results) if name]
        if len(results) < len(node.outputs) or not all(isinstance(result, torch.Tensor) for result in named):
            return None
        return results

    def _followed(self, node: OnnxNode, states: list, values: tuple, which: str) -> list[torch.Tensor | None] | None:
        """Per output, where it may depend on a free input element (`which` "free"; "raw": on a discrete element
        not yet cast) (None: nowhere); None when not followed."""
        states = [None if state is None else _Tracked(state.value, getattr(state, which)) for state in states]
        if all(state is None or state.free is None for state in states):
            return [None] * len(values)
        if node.op_type in _SHAPE_ONLY:  # a shape is static, but one that depends on the cell is not the same in each
            return None if which == "case" else [None] * len(values)
        if node.op_type in _ELEMENTWISE and len(values) == 1:
            free = torch.zeros(values[0].shape, dtype=torch.bool)
            for state in states:
                if state is not None and state.free is not None:
                    try:
                        free = free | torch.broadcast_to(state.free, free.shape)
                    except RuntimeError:
                        return None
            return [free]
        if node.op_type not in _ROUTING or node.attr("reduction", "none") not in ("none", "add"):
            return None
        data = _ROUTING[node.op_type] or range(len(states))
        if any(state is not None and state.free is not None for index, state in enumerate(states) if index not in data):
            return None
        arguments = [_indicator(state) if index in data and state is not None else (None if state is None else state.value)
                     for index, state in enumerate(states)]
        routed = self.evaluate(node, arguments)
        if routed is None:
            return None
        return [None if result is None else (result != 0) for result in routed]


_FREE = object()  # a value some element of which may depend on a free input element, its value not followed


def _integer_cast(node: OnnxNode) -> bool:
    """Cast to int32 or int64 (truncation toward zero): constant on each cell between integers."""
    return node.op_type == "Cast" and node.attr("to") in (6, 7)


def _indicator(state: _Tracked) -> torch.Tensor:
    """1 where the value may depend on a free input element, 0 elsewhere, in the value's dtype (so the routing
    operator reads it as it reads the value: a copy moves a 1 where it moves a free element)."""
    if state.free is None:
        return torch.zeros_like(state.value)
    return torch.broadcast_to(state.free, state.value.shape).to(state.value.dtype)


def _has_subgraph(node: OnnxNode) -> bool:
    """If, Loop, Scan: their subgraphs read outer values by name, which this analysis does not follow."""
    return any(hasattr(value, "node") or (isinstance(value, list) and any(hasattr(v, "node") for v in value))
               for value in node.attributes.values())


def _batched(tensor: torch.Tensor, dims: list[int], name: str) -> torch.Tensor:
    """`tensor` in the input's shape: as many elements, or one sample's repeated over the batch axis."""
    count = tensor.numel()
    total = 1
    for dim in dims:
        total *= dim
    if count == total:
        return tensor.reshape(dims)
    if dims and count * dims[0] == total:
        return tensor.reshape([1, *dims[1:]]).expand(dims).contiguous()
    raise InputError(f"fixed elements for input '{name}' have {count} elements; the input {dims} has {total}")


def refusal_hint(folding: FixedFolding | None, node: OnnxNode, env: dict[str, Any]) -> str:
    """What to do about an argument of `node` that the importer needs known and that depends on the model input."""
    if folding is None:
        return ("if the property fixes the input elements it is computed from (lower bound == upper bound), import "
                "with load_onnx(..., fixed={input: FixedElements(mask, values)}) (the VNN-COMP runner passes the "
                "elements its VNN-LIB box fixes) and it folds to a constant")
    unknown = [name for name in node.inputs if name and not isinstance(env.get(name), torch.Tensor)
               and not (name in folding.tracked and folding.tracked[name].free is None)]
    free = {name: int(state.free.sum()) for name, state in folding.tracked.items() if name in folding.inputs
            and state.free is not None}
    return (f"its input(s) {unknown} are computed from input elements that are not fixed ({free} free per input), "
            "or through an operator whose dependence on single elements opwise does not follow, so they cannot "
            "fold to constants: fix those input elements in the property (lower bound == upper bound) or export "
            "the network with this argument constant")
