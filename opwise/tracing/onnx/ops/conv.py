"""Convolutions, normalizations and pooling: to `aten.convolution`, `aten.batch_norm`, `aten.layer_norm`,
`aten.native_group_norm` (InstanceNormalization), pools. LpPool and GlobalLpPool are (Σ_window |x|^p)^(1/p): the
window sums a convolution of |x|^p with ones per channel (zero padding adds nothing, dilations as Conv's), the
powers `aten.abs` for p = 1, `aten.pow` 2 and `aten.sqrt` for p = 2, `aten.pow` otherwise; LpPool's ceil_mode is
refused.

ONNX pads are `[begin_1..begin_n, end_1..end_n]`; torch pads symmetrically, so uneven pads become an
explicit `aten.constant_pad_nd` before the op (or a slice after a transposed convolution).
"""

from __future__ import annotations

import math
import operator

import torch

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


def _pads(node, spatial: list[int], kernel: list[int], strides: list[int], dilations: list[int]):
    """(begin, end) pads per spatial axis, resolving auto_pad SAME_UPPER / SAME_LOWER / VALID."""
    rank = len(spatial)
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(node.attr("pads", [0] * 2 * rank))
        return pads[:rank], pads[rank:]
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins, ends


def _pad_input(builder, x, begins, ends, value=0.0):
    """Pad the spatial axes explicitly with `aten.constant_pad_nd` (torch lists the last axis first)."""
    torch_pads = []
    for begin, end in reversed(list(zip(begins, ends))):
        torch_pads += [begin, end]
    return builder.call(aten.constant_pad_nd.default, x, torch_pads, value)


def _geometry(builder, node, x, kernel):
    rank = len(kernel)
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    begins, ends = _pads(node, builder.shape(x)[2:], kernel, strides, dilations)
    return strides, dilations, begins, ends


@converter("Conv", since=1)
def convolution(builder, node, x, weight, bias=None):
    """Conv's attributes (pads, auto_pad, strides, dilations, group) read from `node`; QLinearConv and ConvInteger,
    which share them, call this too."""
    kernel = list(node.attr("kernel_shape", builder.shape(weight)[2:]))
    strides, dilations, begins, ends = _geometry(builder, node, x, kernel)
    if begins != ends:
        x, begins = _pad_input(builder, x, begins, ends), [0] * len(kernel)
    return builder.call(
        aten.convolution.default, x, weight, bias, strides, begins, dilations, False, [0] * len(kernel), node.attr("group", 1)
    )


@converter("ConvTranspose", since=1)
def _conv_transpose(builder, node, x, weight, bias=None):
    kernel = list(node.attr("kernel_shape", builder.shape(weight)[2:]))
    rank = len(kernel)
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    output_padding = list(node.attr("output_padding", [0] * rank))
    spatial = builder.shape(x)[2:]
    full = [s * (n - 1) + p + (k - 1) * d + 1 for n, s, p, k, d in zip(spatial, strides, output_padding, kernel, dilations)]
    output_shape = node.attr("output_shape")
    if output_shape is None and node.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [n * s for n, s in zip(spatial, strides)]
    if output_shape is not None:
        totals = [f - o for f, o in zip(full, list(output_shape)[-rank:])]
        if any(total < 0 for total in totals):
            raise ModelLoadError(f"ConvTranspose '{node.name}': output_shape {output_shape} is larger than the kernel allows")
        upper = node.attr("auto_pad", "NOTSET") == "SAME_UPPER"
        begins = [t // 2 if upper else t - t // 2 for t in totals]
        ends = [t - b for t, b in zip(totals, begins)]
    else:
        pads = list(node.attr("pads", [0] * 2 * rank))
        begins, ends = pads[:rank], pads[rank:]
    common = [min(b, e) for b, e in zip(begins, ends)]
    result = builder.call(
        aten.convolution.default, x, weight, bias, strides, common, dilations, True, output_padding, node.attr("group", 1)
    )
    for axis, (begin, end, shared) in enumerate(zip(begins, ends, common)):
        if begin != end:
            size = builder.shape(result)[2 + axis]
            result = builder.call(aten.slice.Tensor, result, 2 + axis, begin - shared, size - (end - shared))
    return result


@converter("BatchNormalization", since=1)
def _batch_norm(builder, node, x, scale, bias, mean, variance):
    if node.attr("training_mode", 0) or any(node.outputs[1:]):
        raise ModelLoadError(
            f"BatchNormalization '{node.name}' is in training mode (it outputs running statistics); "
            "export the model in eval mode"
        )
    momentum = 1.0 - node.attr("momentum", 0.9)
    return builder.call(aten.batch_norm.default, x, scale, bias, mean, variance, False, momentum, node.attr("epsilon", 1e-5), False)


@converter("LayerNormalization", since=17)
def _layer_norm(builder, node, x, scale, bias=None):
    if any(node.outputs[1:]):
        raise ModelLoadError(f"LayerNormalization '{node.name}' also outputs its statistics, which opwise does not import")
    return layer_norm(builder, x, scale, bias, node.attr("axis", -1), node.attr("epsilon", 1e-5), "LayerNormalization")


def layer_norm(builder, x, scale, bias, axis: int, epsilon: float, what: str, rms: bool = False):
    """`aten.layer_norm` over the axes from `axis` on, scale and bias broadcast to them; with `rms`, `aten.rms_norm`
    (x / √(mean(x²) + epsilon) · scale, no centring and no bias). `what` names the op in a batch refusal."""
    shape = builder.shape(x)
    axis %= len(shape)
    if isinstance(x, torch.fx.Node):
        builder.require_batch_kept([axis], len(shape), what)
    normalized = shape[axis:]
    scale = builder.expand(scale, normalized)
    if rms:
        return builder.call(aten.rms_norm.default, x, normalized, scale, float(epsilon))
    bias = None if bias is None else builder.expand(bias, normalized)
    return builder.call(aten.layer_norm.default, x, normalized, scale, bias, epsilon)


@converter("InstanceNormalization", since=1)
def _instance_norm(builder, node, x, scale, bias):
    """Each sample's channel normalized over its spatial axes, then scaled and shifted per channel: a group norm
    with one channel per group."""
    shape = builder.shape(x)
    channels, spatial = shape[1], math.prod(shape[2:])
    both = builder.call(aten.native_group_norm.default, x, scale, bias, shape[0], channels, spatial, channels,
                        node.attr("epsilon", 1e-5))
    return builder.call(operator.getitem, both, 0)


_MAX_POOLS = {1: aten.max_pool1d.default, 2: aten.max_pool2d.default, 3: aten.max_pool3d.default}
_AVG_POOLS = {1: aten.avg_pool1d.default, 2: aten.avg_pool2d.default, 3: aten.avg_pool3d.default}


@converter("MaxPool", since=1)
def _max_pool(builder, node, x):
    if len(node.outputs) > 1 and node.outputs[1]:
        raise ModelLoadError(f"MaxPool '{node.name}' also outputs indices, which opwise does not import")
    kernel = list(node.attr("kernel_shape"))
    strides, dilations, begins, ends = _geometry(builder, node, x, kernel)
    if begins != ends or any(2 * b > k for b, k in zip(begins, kernel)):
        dtype = builder.example(x).dtype  # padding no window's maximum can be: -inf, or an integer type's least
        lowest = float("-inf") if dtype.is_floating_point else torch.iinfo(dtype).min
        x, begins = _pad_input(builder, x, begins, ends, lowest), [0] * len(kernel)
    return builder.call(_MAX_POOLS[len(kernel)], x, kernel, strides, begins, dilations, bool(node.attr("ceil_mode", 0)))


@converter("AveragePool", since=1)
def average_pool(builder, node, x):
    kernel = list(node.attr("kernel_shape"))
    strides, _, begins, ends = _geometry(builder, node, x, kernel)
    include_pad = bool(node.attr("count_include_pad", 0))
    if begins != ends:
        if not include_pad and any(begins + ends):
            raise ModelLoadError(
                f"AveragePool '{node.name}' has uneven pads {begins + ends} with count_include_pad=0, which torch "
                "pooling cannot express; re-export with even padding"
            )
        x, begins = _pad_input(builder, x, begins, ends), [0] * len(kernel)
    args = [x, kernel, strides, begins, bool(node.attr("ceil_mode", 0)), include_pad]
    if len(kernel) > 1:
        args.append(None)
    return builder.call(_AVG_POOLS[len(kernel)], *args)


@converter("GlobalAveragePool", "GlobalMaxPool", since=1)
def _global_pool(builder, node, x):
    axes = list(range(2, len(builder.shape(x))))
    if node.op_type == "GlobalAveragePool":
        return builder.call(aten.mean.dim, x, axes, True)
    return builder.call(aten.amax.default, x, axes, True)


def _lp_power(builder, node, x, p: float):
    """|x|^p: abs for p = 1, x² for p = 2 (no abs needed), pow(|x|, p) otherwise."""
    if p <= 0:
        raise ModelLoadError(f"ONNX node '{node.name}' ({node.op_type}, opset {node.opset}): p={p}; ONNX's Lp pools "
                             "take p >= 1")
    if p == 2:
        return builder.call(aten.pow.Tensor_Scalar, x, 2)
    magnitude = builder.call(aten.abs.default, x)
    return magnitude if p == 1 else builder.call(aten.pow.Tensor_Scalar, magnitude, p)


def _lp_root(builder, sums, p: float):
    if p == 1:
        return sums
    if p == 2:
        return builder.call(aten.sqrt.default, sums)
    return builder.call(aten.pow.Tensor_Scalar, sums, 1.0 / p)


@converter("LpPool", since=1)
def _lp_pool(builder, node, x):
    """(Σ |x|^p over each window)^(1/p), p 2 by default; the window sums a grouped convolution with ones."""
    if node.attr("ceil_mode", 0):
        raise ModelLoadError(f"ONNX node '{node.name}' ({node.op_type}, opset {node.opset}): ceil_mode=1, which opwise "
                             "does not import for LpPool; export with ceil_mode=0 (pad the input instead)")
    kernel = list(node.attr("kernel_shape"))
    p = float(node.attr("p", 2))
    strides, dilations, begins, ends = _geometry(builder, node, x, kernel)
    powered = _lp_power(builder, node, x, p)
    if begins != ends:
        powered, begins = _pad_input(builder, powered, begins, ends), [0] * len(kernel)
    channels = builder.shape(x)[1]
    ones = torch.ones([channels, 1, *kernel], dtype=builder.example(x).dtype)
    sums = builder.call(aten.convolution.default, powered, ones, None, strides, begins, dilations, False,
                        [0] * len(kernel), channels)
    return _lp_root(builder, sums, p)


@converter("GlobalLpPool", since=1)
def _global_lp_pool(builder, node, x):
    """(Σ |x|^p over all spatial positions)^(1/p) per sample and channel, p 2 by default."""
    p = float(node.attr("p", 2))
    axes = list(range(2, len(builder.shape(x))))
    return _lp_root(builder, builder.call(aten.sum.dim_IntList, _lp_power(builder, node, x, p), axes, True), p)
