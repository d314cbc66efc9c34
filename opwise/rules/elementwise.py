"""Op rules for routing, elementwise nonlinearities, sums and products of explained tensors.

Routing ops keep their own vjp (relevance goes where the values went, exactly); logcumsumexp is routing too, a soft
running max: its vjp hands R(y_k) to x_j (j <= k) in the shares exp(x_j − y_k), which sum to 1. Elementwise
nonlinearities pass relevance unchanged. Sums split relevance in proportion to each explained term's
contribution; constants (terms that do not depend on the explained input) take none, so `x - c` and
`x + c` conserve relevance. Products: a constant factor is a scale (identity to the other factor); a
factor that broadcasts (a normalizer's 1/rms, a gate per channel) is treated as a constant scale too;
two full-size explained factors share relevance uniformly (AttnLRP, Prop. 3.2), as atan2's two explained
coordinates do. The same holds for products of more factors: cumprod's y_k = x_0 ⋯ x_k gives each factor 1/(k + 1)
of R_k; _trilinear (nn.Bilinear's x1ᵀ W x2) takes the epsilon rule over its terms, then splits each term's share
uniformly among its explained factors.
"""

from __future__ import annotations

import torch

from opwise.rules.linear import stabilize
from opwise.rules.registry import register_routing, relevance_rule

aten = torch.ops.aten
SUM_EPSILON = 1e-6

register_routing(
    "aten.view", "aten._unsafe_view", "aten.reshape", "aten.permute", "aten.transpose", "aten.t", "aten.expand",
    "aten.slice", "aten.select", "aten.cat", "aten.stack", "aten.split", "aten.split_with_sizes", "aten.unbind",
    "aten.chunk", "aten.unsqueeze", "aten.squeeze", "aten.flatten", "aten.contiguous", "aten.clone", "aten.alias",
    "aten.index", "aten.gather", "aten.constant_pad_nd", "aten.pad", "aten.where", "aten.masked_fill",
    "aten.max_pool2d", "aten.max_pool1d", "aten.max_pool2d_with_indices", "aten.adaptive_max_pool2d",
    "aten.amax", "aten.max", "aten.roll", "aten.flip", "aten.repeat", "aten.narrow", "aten.unfold",
    "aten.index_select", "aten.detach", "aten._to_copy", "aten.to", "aten.lift_fresh_copy", "aten.dropout",
    "aten.native_dropout", "aten.slice_scatter", "aten.select_scatter", "aten.pixel_shuffle", "aten.sort", "aten.topk",
    "aten.min.dim", "aten.min.default", "aten.kthvalue", "aten.median.dim", "aten.diagonal",
    "aten.logcumsumexp", "aten.upsample_nearest1d", "aten.upsample_nearest2d", "aten.upsample_nearest3d", "aten._upsample_nearest_exact1d",
    "aten._upsample_nearest_exact2d", "aten._upsample_nearest_exact3d", "aten.minimum", "aten.maximum",
    "getitem",
)


@relevance_rule(
    "aten.relu", "aten.gelu", "aten.silu", "aten.sigmoid", "aten.tanh", "aten.leaky_relu", "aten.hardtanh",
    "aten.elu", "aten.celu", "aten.softplus", "aten.mish", "aten.hardswish", "aten.hardsigmoid", "aten.exp", "aten.log",
    "aten.log1p", "aten.expm1", "aten._prelu_kernel", "aten.threshold", "aten.hardshrink", "aten.softshrink",
    "aten.log_sigmoid_forward",
    "aten.sqrt", "aten.rsqrt", "aten.pow", "aten.reciprocal", "aten.abs", "aten.neg", "aten.sin", "aten.cos",
    "aten.erf", "aten.atan", "aten.asinh", "aten.sinh", "aten.cosh", "aten.tan",
    "aten.asin", "aten.acos", "aten.atanh", "aten.acosh", "aten.clamp", "aten.clamp_min", "aten.clamp_max", "aten.rms_norm",
    "aten.floor", "aten.ceil", "aten.round", "aten.trunc", "aten.erfinv", "aten.lgamma", "aten.digamma",
    "aten.add.Scalar", "aten.sub.Scalar", "aten.rsub.Scalar", "aten.mul.Scalar", "aten.div.Scalar",
    needs=(),
)
def identity(call, relevance):
    """Pass: the explained (first) argument receives the output relevance unchanged."""
    return [relevance if call.explained[0] else None] + [None] * (len(call.args) - 1)


def _to_shape(relevance: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return relevance if relevance.shape == shape else relevance.sum_to_size(shape)


@relevance_rule("aten.add.Tensor", "aten.sub.Tensor", "aten.rsub.Tensor")
def add(call, relevance):
    """Proportional split over explained terms: R_i = z_i R / (Σ_explained z_j ± ε)."""
    explained = [call.explained[i] for i in range(2)]
    if explained.count(True) == 1:
        which = explained.index(True)
        shape = call.arg(which).shape
        return [_to_shape(relevance, shape) if i == which else None for i in range(2)]
    alpha = call.kwargs.get("alpha", 1)
    sign = -1 if "sub" in call.target.__name__ else 1
    first, second = call.arg(0), call.arg(1) * (sign * alpha)
    if "rsub" in call.target.__name__:
        first, second = -call.arg(0) * alpha, call.arg(1)
    scaled = relevance / stabilize(first + second, SUM_EPSILON)
    return [_to_shape(first * scaled, call.arg(0).shape), _to_shape(second * scaled, call.arg(1).shape)]


@relevance_rule("aten.mul.Tensor", "aten.div.Tensor")
def multiply(call, relevance):
    """Constant or broadcast factor: a scale. Two full-size explained factors: uniform split."""
    shapes = [call.arg(i).shape if isinstance(call.arg(i), torch.Tensor) else None for i in range(2)]
    full = [call.explained[i] and shapes[i] == call.output.shape for i in range(2)]
    if call.target.__name__.startswith("div"):
        full[1] = False
    if all(full):
        return [relevance / 2, relevance / 2]
    receivers = [i for i in range(2) if full[i]] or [i for i in range(2) if call.explained[i]][:1]
    return [_to_shape(relevance, shapes[i]) if i in receivers else None for i in range(2)]


@relevance_rule("aten.atan2.default", needs=("inputs",))
def angle(call, relevance):
    """atan2(y, x): explained coordinates share the angle's relevance uniformly (conservative). The angle does not
    change when both coordinates scale (y·∂/∂y + x·∂/∂x = 0), so gradient × input gives them opposite shares that
    cancel; neither coordinate alone makes the angle, as neither factor of a product does.

    >>> from types import SimpleNamespace
    >>> call = SimpleNamespace(explained=(True, True), arg=lambda i: torch.ones(2))
    >>> angle(call, torch.tensor([1.0, 3.0]))
    [tensor([0.5000, 1.5000]), tensor([0.5000, 1.5000])]
    """
    receivers = [i for i in range(2) if call.explained[i]]
    share = relevance / len(receivers)
    return [_to_shape(share, call.arg(i).shape) if i in receivers else None for i in range(2)]


@relevance_rule("aten.cumprod.default")
def cumulative_product(call, relevance):
    """R(x_i) = Σ_{k >= i} R(y_k) / (k + 1): y_k's relevance shared uniformly by its k + 1 factors (conservative).

    >>> from types import SimpleNamespace
    >>> cumulative_product(SimpleNamespace(args=(None, 1)), torch.tensor([[1.0, 2.0, 3.0]]))[0]  # 1 + 1 + 1, 1 + 1, 1
    tensor([[3., 2., 1.]])
    """
    dim = call.args[1] % relevance.dim()
    shape = [1] * relevance.dim()
    shape[dim] = relevance.shape[dim]
    shared = relevance / torch.arange(1, relevance.shape[dim] + 1, dtype=relevance.dtype, device=relevance.device).view(shape)
    return [shared.flip(dim).cumsum(dim).flip(dim)] + [None] * (len(call.args) - 1)


@relevance_rule("aten._trilinear.default")
def trilinear(call, relevance):
    """Σ over sum dims of a·b·c (multilinear): R_i = x_i ⊙ ∂y/∂x_i · R/(y ± ε) / (explained factors), by Euler's
    theorem each term z's share z·R/y once per factor, so the factors' relevance sums to R up to ε."""
    factors = [call.arg(i) for i in range(3)]
    explained = [i for i in range(3) if call.explained[i]]
    rest = call.args[3:]
    sources = [f.detach().requires_grad_(i in explained) for i, f in enumerate(factors)]
    with torch.enable_grad():
        output = aten._trilinear.default(*sources, *rest)
        ratio = relevance / stabilize(output.detach(), SUM_EPSILON)
        gradients = torch.autograd.grad(output, [sources[i] for i in explained], ratio)
    result = [None] * len(call.args)
    for i, gradient in zip(explained, gradients):
        result[i] = factors[i] * gradient / len(explained)
    return result


@relevance_rule("aten.embedding.default", needs=())
def embedding(call, relevance):
    """Token relevance is read at the embedding output (summed over features); nothing flows further."""
    return [None] * len(call.args)


@relevance_rule(
    "aten.eq", "aten.ne", "aten.lt", "aten.le", "aten.gt", "aten.ge", "aten.logical_not", "aten.logical_and",
    "aten.logical_or", "aten.logical_xor", "aten.bitwise_not", "aten.bitwise_and", "aten.bitwise_or",
    "aten.bitwise_xor", "aten.any", "aten.all", "aten.isnan", "aten.isinf", "aten.isfinite",
    "aten.full_like", "aten.zeros_like",
    "aten.ones_like", "aten.empty_like", "aten.argmax", "aten.argmin", "aten.sign",
    needs=(),
)
def no_relevance(call, relevance):
    """Predicates, indices and fills: their values do not carry the input's contribution; relevance stops."""
    return [None] * len(call.args)
