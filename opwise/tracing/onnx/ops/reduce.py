"""Reductions: ReduceMean / ReduceSum / ReduceMax / ReduceMin to aten.mean.dim, sum.dim_IntList, amax, amin;
TopK to aten.topk (values and indices).

`axes` is an attribute until opset 13 (ReduceSum) or 18 (the others), an input after.
"""

from __future__ import annotations

import operator

import torch

from opwise.tracing.onnx.ops.shape import constant_ints
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten

_REDUCTIONS = {
    "ReduceMean": aten.mean.dim,
    "ReduceSum": aten.sum.dim_IntList,
    "ReduceMax": aten.amax.default,
    "ReduceMin": aten.amin.default,
}


def _reduce(builder, node, x, axes):
    rank = len(builder.shape(x))
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    if isinstance(x, torch.fx.Node):
        builder.require_batch_kept(axes, rank, node.op_type)
    return builder.call(_REDUCTIONS[node.op_type], x, axes, bool(node.attr("keepdims", 1)))


@converter(*_REDUCTIONS, since=1)
def _reduce_attribute(builder, node, x):
    return _reduce(builder, node, x, node.attr("axes"))


@converter("ReduceSum", since=13)
@converter("ReduceMean", "ReduceMax", "ReduceMin", since=18)
def _reduce_input(builder, node, x, axes=None):
    return _reduce(builder, node, x, constant_ints(node, axes, "axes"))


@converter("TopK", since=1)
def _top_k_attribute(builder, node, x):
    return _top_k(builder, node, x, int(node.attr("k")))


@converter("TopK", since=10)
def _top_k_input(builder, node, x, k):
    return _top_k(builder, node, x, constant_ints(node, k, "k")[0])


def _top_k(builder, node, x, count: int):
    """(values, indices) of the `count` largest (smallest with largest=0) along `axis`, sorted unless sorted=0."""
    axis = node.attr("axis", -1) % len(builder.shape(x))
    if isinstance(x, torch.fx.Node):
        builder.require_batch_kept([axis], len(builder.shape(x)), node.op_type)
    both = builder.call(aten.topk.default, x, count, axis, bool(node.attr("largest", 1)), bool(node.attr("sorted", 1)))
    return builder.call(operator.getitem, both, 0), builder.call(operator.getitem, both, 1)
