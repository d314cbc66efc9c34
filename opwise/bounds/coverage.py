"""Which input-dependent operations of a Graph the bound engine can bound (for `opwise trace`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import operator

from torch import fx

from opwise.bounds.transfers import transfer_for
from opwise.bounds.transfers.nonlinear import has_relaxation
from opwise.tracing.graph import Graph

#: composite operators bounded after expand.py rewrites them, and the relaxations the pieces need
EXPANDED = {
    "aten._softmax.default": ("aten.exp.default", "aten.reciprocal.default"),
    "aten.layer_norm.default": ("aten.rsqrt.default",),
    "aten._log_softmax.default": ("aten.exp.default", "aten.log.default"),
    "aten._prelu_kernel.default": ("aten.relu.default",),
    "aten.minimum.default": ("aten.relu.default",),
    "aten.maximum.default": ("aten.relu.default",),
    "aten.native_group_norm.default": ("aten.rsqrt.default",),
    "aten.rms_norm.default": ("aten.rsqrt.default",),
    "aten._native_batch_norm_legit.no_stats": ("aten.rsqrt.default",),
    "aten.linalg_vector_norm.default": ("aten.sqrt.default", "aten.abs.default"),
    "aten.var.correction": ("aten.pow.Tensor_Scalar",),
    "aten.std.correction": ("aten.pow.Tensor_Scalar", "aten.sqrt.default"),
    "aten._trilinear.default": (),
    "aten.cumprod.default": (),
}


@dataclasses.dataclass
class Coverage:
    """`supported[node name]` for every input-dependent operation; `missing` lists (node, op) without a transfer."""

    supported: dict[str, bool]
    missing: list[tuple[str, str]]

    @property
    def fraction(self) -> float:
        return sum(self.supported.values()) / max(len(self.supported), 1)


def _bilinear_available() -> bool:
    return importlib.util.find_spec("opwise.bounds.relaxations.bilinear") is not None


def _operator(graph: Graph, node: fx.Node) -> str:
    """The node's operator; for getitem of a multi-output operator, that operator (bounded together)."""
    if node.target is operator.getitem and graph.info(node.args[0]).shape is None:
        return graph.info(node.args[0]).op
    return graph.info(node).op


def _supported(op: str) -> bool:
    if op in EXPANDED:
        return all(has_relaxation(piece) for piece in EXPANDED[op]) and _bilinear_available()
    return transfer_for(op) is not None or has_relaxation(op)


def coverage(graph: Graph) -> Coverage:
    """Bound coverage of the input-dependent operations (multi-output ops count through their getitems).

    >>> import torch, opwise
    >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), torch.zeros(1, 2))
    >>> coverage(graph).fraction
    1.0
    """
    supported, missing = {}, []
    for node in graph.call_nodes():
        info = graph.info(node)
        if not info.depends_on_input or info.shape is None:
            continue
        op = _operator(graph, node)
        supported[node.name] = _supported(op)
        if not supported[node.name]:
            missing.append((node.name, op))
    return Coverage(supported, missing)
