"""Reductions: ReduceMean / ReduceSum / ReduceMax / ReduceMin to aten.mean.dim, sum.dim_IntList, amax, amin;
ReduceL1 / ReduceL2 / ReduceSumSquare / ReduceLogSumExp from abs, pow, sqrt, exp, log and those; CumSum to
aten.cumsum (with flips for `reverse`); TopK to aten.topk (values and indices).

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


def _axes(builder, node, x, axes) -> list[int] | None:
    """The reduced axes, sorted and non-negative (every axis when none are given); None for a no-op (no axes
    and noop_with_empty_axes)."""
    rank = len(builder.shape(x))
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    if isinstance(x, torch.fx.Node):
        builder.require_batch_kept(axes, rank, node.op_type)
    return axes


def _reduce(builder, node, x, axes):
    axes = _axes(builder, node, x, axes)
    return x if axes is None else builder.call(_REDUCTIONS[node.op_type], x, axes, bool(node.attr("keepdims", 1)))


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


def _norm_reduction(builder, node, x, axes):
    """ReduceL1 = Σ|x|, ReduceL2 = √Σx², ReduceSumSquare = Σx², ReduceLogSumExp = m + log Σ exp(x − m) with m the
    maximum over the axes (exact, and finite where exp(x) alone would overflow)."""
    axes = _axes(builder, node, x, axes)
    if axes is None:
        return x
    keep = bool(node.attr("keepdims", 1))
    if node.op_type == "ReduceLogSumExp":
        peak = builder.call(aten.amax.default, x, axes, True)
        summed = builder.call(aten.sum.dim_IntList, builder.call(aten.exp.default, builder.call(aten.sub.Tensor, x, peak)), axes, keep)
        return builder.call(aten.add.Tensor, builder.call(aten.log.default, summed), peak if keep else builder.call(aten.squeeze.dims, peak, axes))
    if node.op_type == "ReduceL1":
        return builder.call(aten.sum.dim_IntList, builder.call(aten.abs.default, x), axes, keep)
    squares = builder.call(aten.sum.dim_IntList, builder.call(aten.pow.Tensor_Scalar, x, 2), axes, keep)
    return builder.call(aten.sqrt.default, squares) if node.op_type == "ReduceL2" else squares


_NORM_REDUCTIONS = ("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp")


@converter(*_NORM_REDUCTIONS, since=1)
def _norm_reduction_attribute(builder, node, x):
    return _norm_reduction(builder, node, x, node.attr("axes"))


@converter(*_NORM_REDUCTIONS, since=18)
def _norm_reduction_input(builder, node, x, axes=None):
    return _norm_reduction(builder, node, x, constant_ints(node, axes, "axes"))


@converter("CumSum", since=11)
def _cumulative_sum(builder, node, x, axis):
    """Running sums along `axis`; `reverse` sums from the end, `exclusive` leaves out the element itself."""
    dim = constant_ints(node, axis, "axis")[0] % len(builder.shape(x))
    if isinstance(x, torch.fx.Node):
        builder.require_batch_kept([dim], len(builder.shape(x)), "CumSum")
    reverse = bool(node.attr("reverse", 0))
    source = builder.call(aten.flip.default, x, [dim]) if reverse else x
    summed = builder.call(aten.cumsum.default, source, dim)
    if node.attr("exclusive", 0):
        summed = builder.call(aten.sub.Tensor, summed, source)
    return builder.call(aten.flip.default, summed, [dim]) if reverse else summed
