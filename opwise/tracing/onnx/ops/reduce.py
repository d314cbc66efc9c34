"""Reductions: ReduceMean / ReduceSum / ReduceMax / ReduceMin to aten.mean.dim, sum.dim_IntList, amax, amin;
ReduceL1 / ReduceL2 / ReduceSumSquare / ReduceLogSumExp / ReduceLogSum from abs, pow, sqrt, exp, log and those;
ReduceProd as a tree of elementwise products (`aten.mul.Tensor`, which the bound engine bounds for two bounded
factors; `aten.prod` has no bound rule); CumSum to aten.cumsum and CumProd (opset 26) to aten.cumprod (with flips for
`reverse`, and for `exclusive` the input shifted by one behind a 1; the bound engine bounds cumprod as a chain of
products); TopK to aten.topk
(values and indices); ArgMax / ArgMin to aten.argmax / argmin (flipped for `select_last_index`) and Hardmax to
the one-hot rows of argmax. The indices of ArgMax / ArgMin (and TopK's) are integer-valued and discontinuous:
the bound engine bounds each by the positions that can hold it (bounds/transfers/position.py), with constant
lines; Hardmax's rows compare the index with the positions (aten.eq), which it refuses.

`axes` is an attribute until opset 13 (ReduceSum) or 18 (the others), an input after.
"""

from __future__ import annotations

import math
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
    maximum over the axes (exact, and finite where exp(x) alone would overflow), ReduceLogSum = log Σx,
    ReduceProd = Πx."""
    axes = _axes(builder, node, x, axes)
    if axes is None:
        return x
    keep = bool(node.attr("keepdims", 1))
    if node.op_type == "ReduceLogSumExp":
        peak = builder.call(aten.amax.default, x, axes, True)
        summed = builder.call(aten.sum.dim_IntList, builder.call(aten.exp.default, builder.call(aten.sub.Tensor, x, peak)), axes, keep)
        return builder.call(aten.add.Tensor, builder.call(aten.log.default, summed), peak if keep else builder.call(aten.squeeze.dims, peak, axes))
    if node.op_type == "ReduceLogSum":
        return builder.call(aten.log.default, builder.call(aten.sum.dim_IntList, x, axes, keep))
    if node.op_type == "ReduceProd":
        return _product(builder, x, axes, keep)
    if node.op_type == "ReduceL1":
        return builder.call(aten.sum.dim_IntList, builder.call(aten.abs.default, x), axes, keep)
    squares = builder.call(aten.sum.dim_IntList, builder.call(aten.pow.Tensor_Scalar, x, 2), axes, keep)
    return builder.call(aten.sqrt.default, squares) if node.op_type == "ReduceL2" else squares


_NORM_REDUCTIONS = ("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum", "ReduceProd")


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


@converter("CumProd", since=26)
def _cumulative_product(builder, node, x, axis):
    """Running products along `axis`; `reverse` multiplies from the end, `exclusive` leaves out the element itself
    (a product over nothing is 1)."""
    shape = builder.shape(x)
    dim = constant_ints(node, axis, "axis")[0] % len(shape)
    if isinstance(x, torch.fx.Node):
        builder.require_batch_kept([dim], len(shape), "CumProd")
    reverse = bool(node.attr("reverse", 0))
    source = builder.call(aten.flip.default, x, [dim]) if reverse else x
    if node.attr("exclusive", 0):
        ones = torch.ones([1 if axis == dim else size for axis, size in enumerate(shape)],
                          dtype=builder.example(x).dtype)
        source = builder.call(aten.cat.default, [ones, builder.call(aten.slice.Tensor, source, dim, 0, shape[dim] - 1)],
                              dim)
    product = builder.call(aten.cumprod.default, source, dim)
    return builder.call(aten.flip.default, product, [dim]) if reverse else product


def _product(builder, x, axes: list[int], keep: bool):
    """Πx over `axes`: the reduced axes moved last and flattened, then halves multiplied pairwise until one element
    is left (log₂ n products of two bounded tensors, each bounded by McCormick planes)."""
    shape = builder.shape(x)
    others = [axis for axis in range(len(shape)) if axis not in axes]
    if others + axes != list(range(len(shape))):
        x = builder.call(aten.permute.default, x, others + axes)
    count = math.prod(shape[axis] for axis in axes)
    flat = builder.view(x, [shape[axis] for axis in others] + [count])
    last = len(others)
    while count > 1:
        half = count // 2
        product = builder.call(aten.mul.Tensor, builder.call(aten.slice.Tensor, flat, last, 0, half),
                               builder.call(aten.slice.Tensor, flat, last, half, 2 * half))
        if count % 2:
            odd = builder.call(aten.slice.Tensor, flat, last, 2 * half, count)
            product = builder.call(aten.cat.default, [product, odd], last)
        flat, count = product, half + count % 2
    kept = [1 if axis in axes else size for axis, size in enumerate(shape)] if keep else [shape[a] for a in others]
    return builder.view(flat, kept)


@converter("ArgMax", "ArgMin", since=1)
def _arg_extreme(builder, node, x):
    """The index of the first maximum (minimum) along `axis`, of the last with select_last_index=1 (the input
    flipped along the axis, the index mirrored back)."""
    shape = builder.shape(x)
    axis = node.attr("axis", 0) % len(shape)
    keep = bool(node.attr("keepdims", 1))
    if isinstance(x, torch.fx.Node):
        builder.require_batch_kept([axis], len(shape), node.op_type)
    op = aten.argmax.default if node.op_type == "ArgMax" else aten.argmin.default
    if not node.attr("select_last_index", 0):
        return builder.call(op, x, axis, keep)
    index = builder.call(op, builder.call(aten.flip.default, x, [axis]), axis, keep)
    return builder.call(aten.rsub.Scalar, index, shape[axis] - 1)


def _hardmax(builder, node, x, axis: int):
    """1 at the first maximum along `axis`, 0 elsewhere: argmax's index compared with the positions."""
    shape = builder.shape(x)
    index = builder.call(aten.argmax.default, x, axis, True)
    positions = torch.arange(shape[axis]).reshape([shape[axis]] + [1] * (len(shape) - 1 - axis))
    hot = builder.call(aten.eq.Tensor, index, positions)
    return builder.call(aten._to_copy.default, hot, dtype=builder.example(x).dtype)


@converter("Hardmax", since=1)
def _hardmax_2d(builder, node, x):
    """Before opset 13 the input is flattened to 2-D at `axis` (default 1) and rows are hardmaxed."""
    shape = builder.shape(x)
    axis = node.attr("axis", 1) % len(shape)
    if isinstance(x, torch.fx.Node):
        builder.require_batch_kept([0] if axis == 0 else [], len(shape), "Hardmax with axis=0")
    flat = builder.view(x, [math.prod(shape[:axis]), math.prod(shape[axis:])])
    return builder.view(_hardmax(builder, node, flat, 1), shape)


@converter("Hardmax", since=13)
def _hardmax_axis(builder, node, x):
    shape = builder.shape(x)
    axis = node.attr("axis", -1) % len(shape)
    if isinstance(x, torch.fx.Node):
        builder.require_batch_kept([axis], len(shape), "Hardmax")
    return _hardmax(builder, node, x, axis)
