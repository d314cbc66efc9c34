"""Gemm and MatMul: to `aten.linear` when the right side is a constant weight, else mm/bmm with views.

`aten.linear` with a constant weight is the form relevance rules and bound transfers know best, so
transposes and `alpha`/`beta` are folded into the weight and bias constants at import time.
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


@converter("Gemm", since=1)
def gemm(builder, node, a, b, c=None):
    """Y = alpha * op(A) @ op(B) + beta * C, op transposing when transA / transB is set."""
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    if node.attr("transA", 0):
        a = _transpose_2d(builder, a)
    if isinstance(b, torch.Tensor) and isinstance(a, fx.Node):
        weight = b if node.attr("transB", 0) else builder.call(aten.t.default, b)
        if alpha != 1.0:
            weight = builder.call(aten.mul.Tensor, weight, alpha)
        bias, rest = _split_bias(builder, c, beta, weight.shape[0])
        result = builder.call(aten.linear.default, a, weight, bias)
    else:
        if node.attr("transB", 0):
            b = _transpose_2d(builder, b)
        builder.require_batch_kept([0] if isinstance(b, fx.Node) else [], 2, "Gemm with an input-dependent B")
        result = builder.call(aten.mm.default, a, b)
        if alpha != 1.0:
            result = builder.call(aten.mul.Tensor, result, alpha)
        rest = c if c is None or beta == 1.0 else builder.call(aten.mul.Tensor, c, beta)
    return result if rest is None else builder.call(aten.add.Tensor, result, rest)


def _split_bias(builder, c, beta, features):
    """(bias vector for aten.linear, remainder to add after it): a row-broadcast constant C is a bias."""
    if c is None:
        return None, None
    if beta != 1.0:
        c = builder.call(aten.mul.Tensor, c, beta)
    if isinstance(c, torch.Tensor) and c.numel() in (1, features) and (c.dim() < 2 or c.shape[0] == 1):
        if c.numel() == 1:
            return builder.call(aten.mul.Tensor, torch.ones(features, dtype=c.dtype), c.reshape(())), None
        return builder.call(aten.view.default, c, [features]), None
    return None, c


def _transpose_2d(builder, value):
    builder.require_batch_kept([0] if isinstance(value, fx.Node) else [], 2, "a transpose of the batch axis")
    return builder.call(aten.permute.default, value, [1, 0])


@converter("MatMul", since=1)
def _matmul(builder, node, a, b):
    return matmul(builder, a, b)


def matmul(builder, a, b):
    """numpy-style matmul: 1-D operands get a unit axis that is dropped again, batch axes broadcast; a constant 2-D
    right side becomes an `aten.linear` weight."""
    a_shape, b_shape = builder.shape(a), builder.shape(b)
    if isinstance(b, torch.Tensor) and b.dim() == 2 and isinstance(a, fx.Node):
        builder.require_batch_kept([0] if len(a_shape) == 1 else [], 1, "MatMul of a 1-D input")
        return builder.call(aten.linear.default, a, builder.call(aten.t.default, b))
    if isinstance(b, fx.Node) and len(b_shape) <= 2:
        builder.require_batch_kept([0], len(b_shape), "MatMul contracting an input-dependent right side")
    # a 1-D operand contributes no axis to the result: a_shape[-2:-1] is then [], and so is the N axis
    out_shape = list(torch.broadcast_shapes(a_shape[:-2], b_shape[:-2])) + a_shape[-2:-1]
    if len(b_shape) > 1:
        out_shape += b_shape[-1:]
    if len(a_shape) == 1:
        a = builder.view(a, [1] + a_shape)
    if len(b_shape) == 1:
        b = builder.view(b, b_shape + [1])
    a_shape, b_shape = builder.shape(a), builder.shape(b)
    if len(a_shape) == 2 and len(b_shape) == 2:
        result = builder.call(aten.mm.default, a, b)
    else:
        batch = list(torch.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
        a = builder.view(builder.expand(a, batch + a_shape[-2:]), [-1] + a_shape[-2:])
        b = builder.view(builder.expand(b, batch + b_shape[-2:]), [-1] + b_shape[-2:])
        result = builder.call(aten.bmm.default, a, b)
    return builder.view(result, out_shape)


def fuse_bias(builder, node, a, b):
    """`Add(MatMul(x, W), bias)` as one `aten.linear(x, W^T, bias)`, the form Gemm gives; None if it does not fit.

    Fits when the MatMul became a bias-free `aten.linear`, nothing else reads its output, and the
    constant has one value per output feature without widening the result.
    """
    names = list(node.inputs)
    if isinstance(a, torch.Tensor) and isinstance(b, fx.Node):
        a, b, names = b, a, names[::-1]
    if not (isinstance(a, fx.Node) and isinstance(b, torch.Tensor)):
        return None
    if a.target is not aten.linear.default or len(a.args) != 2 or builder.use_counts.get(names[0]) != 1:
        return None
    features = builder.shape(a)[-1]
    if b.numel() != features or b.dim() > len(builder.shape(a)) or (b.dim() and b.shape[-1] != features):
        return None
    x, weight = a.args
    fused = builder.call(aten.linear.default, x, weight, builder.call(aten.view.default, b, [features]))
    builder.graph.erase_node(a)
    return fused
