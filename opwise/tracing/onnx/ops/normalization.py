"""Normalizations beyond conv.py's: LRN, GroupNormalization, MeanVarianceNormalization, LpNormalization,
RMSNormalization.

- LRN: x / (bias + alpha/size · Σ x² over a window of `size` channels)^beta, the window sum as an average pool of
  the squares (the channel axis padded with zeros, as ONNX clips the window) and the power `pow(·, −beta)`;
- GroupNormalization: `aten.native_group_norm` (which the bound engine rewrites into bounded pieces); opset 18's
  scale and bias are per group and are repeated over each group's channels, opset 21's are per channel;
- MeanVarianceNormalization: (x − mean) / (√(mean((x − mean)²)) + 1e-9) over `axes` (default [0, 2, 3]), ONNX's
  own definition with the variance computed from the centred values (equal, and never negative by rounding);
- LpNormalization: x / Σ|x| (p=1) or x / √Σx² (p=2) along `axis`; other p are refused;
- RMSNormalization (opset 23, what `nn.RMSNorm` exports to): `aten.rms_norm` over the axes from `axis` on (bounded
  and explained as the composite it is); computed in the `stash_type` precision (float32 by default) and cast back,
  as ONNX says; a scale of higher rank than the normalized axes multiplies afterwards.

Each is built from ops with bound and LRP rules (pow, avg_pool2d, sum, mean, sqrt, abs, mul, div).
"""

from __future__ import annotations

import math
import operator

import torch
from torch import fx

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.ops.constants import cast_to, onnx_dtype
from opwise.tracing.onnx.ops.conv import layer_norm
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


@converter("LRN", since=1)
def _local_response_norm(builder, node, x):
    """The window over channels c − ⌊(size−1)/2⌋ .. c + ⌈(size−1)/2⌉: an average pool with kernel (size, 1)
    over the squares viewed as [N, 1, C, rest], after padding the channel axis with zeros (so it divides by
    size)."""
    shape = builder.shape(x)
    if len(shape) < 2:
        raise ModelLoadError(f"LRN '{node.name}': input of shape {shape} has no channel axis; opwise imports LRN of "
                             "[N, C, ...] inputs")
    size = int(node.attr("size"))
    alpha, beta, bias = float(node.attr("alpha", 1e-4)), float(node.attr("beta", 0.75)), float(node.attr("bias", 1.0))
    batch, channels, rest = shape[0], shape[1], math.prod(shape[2:])
    squares = builder.view(builder.call(aten.pow.Tensor_Scalar, x, 2), [batch, 1, channels, rest])
    padded = builder.call(aten.constant_pad_nd.default, squares, [0, 0, (size - 1) // 2, size // 2], 0.0)
    window = builder.call(aten.avg_pool2d.default, padded, [size, 1], [1, 1], [0, 0], False, True, None)
    denominator = builder.call(aten.add.Tensor, builder.call(aten.mul.Tensor, builder.view(window, shape), alpha), bias)
    return builder.call(aten.mul.Tensor, x, builder.call(aten.pow.Tensor_Scalar, denominator, -beta))


def _group_norm(builder, node, x, scale, bias, per_group: bool):
    shape = builder.shape(x)
    groups = int(node.attr("num_groups"))
    channels = shape[1] if len(shape) > 1 else 0
    if len(shape) < 3 or channels % groups:
        raise ModelLoadError(f"GroupNormalization '{node.name}': input of shape {shape} with num_groups {groups}; "
                             "opwise imports [N, C, ...] inputs whose C is a multiple of num_groups")
    if per_group:  # opset 18: one scale and bias per group, shared by its channels
        scale, bias = (builder.view(builder.expand(builder.view(v, [groups, 1]), [groups, channels // groups]),
                                    [channels]) for v in (scale, bias))
    both = builder.call(aten.native_group_norm.default, x, scale, bias, shape[0], channels, math.prod(shape[2:]),
                        groups, float(node.attr("epsilon", 1e-5)))
    return builder.call(operator.getitem, both, 0)


@converter("GroupNormalization", since=18)
def _group_norm_per_group(builder, node, x, scale, bias):
    return _group_norm(builder, node, x, scale, bias, per_group=True)


@converter("GroupNormalization", since=21)
def _group_norm_per_channel(builder, node, x, scale, bias):
    return _group_norm(builder, node, x, scale, bias, per_group=False)


@converter("MeanVarianceNormalization", since=9)
def _mean_variance_norm(builder, node, x):
    shape = builder.shape(x)
    axes = sorted(a % len(shape) for a in node.attr("axes", [0, 2, 3]))
    if isinstance(x, fx.Node):
        builder.require_batch_kept(axes, len(shape), "MeanVarianceNormalization")
    centred = builder.call(aten.sub.Tensor, x, builder.call(aten.mean.dim, x, axes, True))
    variance = builder.call(aten.mean.dim, builder.call(aten.pow.Tensor_Scalar, centred, 2), axes, True)
    deviation = builder.call(aten.add.Tensor, builder.call(aten.sqrt.default, variance), 1e-9)
    return builder.call(aten.div.Tensor, centred, deviation)


@converter("LpNormalization", since=1)
def _lp_norm(builder, node, x):
    shape = builder.shape(x)
    axis = node.attr("axis", -1) % len(shape)
    p = int(node.attr("p", 2))
    if p not in (1, 2):
        raise ModelLoadError(f"LpNormalization '{node.name}': p={p}; ONNX defines (and opwise imports) p 1 and 2")
    if isinstance(x, fx.Node):
        builder.require_batch_kept([axis], len(shape), "LpNormalization")
    if p == 1:
        norm = builder.call(aten.sum.dim_IntList, builder.call(aten.abs.default, x), [axis], True)
    else:
        squares = builder.call(aten.pow.Tensor_Scalar, x, 2)
        norm = builder.call(aten.sqrt.default, builder.call(aten.sum.dim_IntList, squares, [axis], True))
    return builder.call(aten.div.Tensor, x, norm)


@converter("RMSNormalization", since=23)
def _rms_norm(builder, node, x, scale):
    """x / √(mean(x²) + epsilon) · scale over the axes from `axis` (default −1) on, in `stash_type`'s precision."""
    dtype = builder.example(x).dtype
    stash = onnx_dtype(int(node.attr("stash_type", 1)))
    x = cast_to(builder, x, stash)
    epsilon, axis = float(node.attr("epsilon", 1e-5)), int(node.attr("axis", -1))
    normalized = len(builder.shape(x)) - axis % len(builder.shape(x))
    scale_shape = builder.shape(scale)
    if len(scale_shape) > normalized and all(size == 1 for size in scale_shape[:-normalized]):
        scale = builder.view(scale, scale_shape[-normalized:])
    if len(builder.shape(scale)) <= normalized:
        y = layer_norm(builder, x, cast_to(builder, scale, stash), None, axis, epsilon, node.op_type, rms=True)
        return cast_to(builder, y, dtype)
    ones = torch.ones(builder.shape(x)[-normalized:], dtype=stash)
    y = cast_to(builder, layer_norm(builder, x, ones, None, axis, epsilon, node.op_type, rms=True), dtype)
    return builder.call(aten.mul.Tensor, y, scale)
