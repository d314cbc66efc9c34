"""Op rules for attention and normalizers, after AttnLRP (Achtibat et al., ICML 2024).

softmax: deep Taylor decomposition at the input (Prop. 3.1): R_x = x ⊙ (R − s ⊙ Σ R).
log_softmax: the same decomposition, x ⊙ Jᵀ(R / y) with y = log_softmax(x) and J its Jacobian: R_x = x ⊙ (R/y − s Σ R/y).
For the explained output alone (R = y_t at t) both give x ⊙ (e_t − s) up to the factor s_t: the logit t against the
softmax-weighted logits.
matmul/bmm of two explained tensors: epsilon rule, then uniform split between the factors (Prop. 3.3).
layer norm, group norm and instance norm: epsilon rule through (x − mean)/σ·w + b with σ held constant (identity on 1/σ,
Prop. 3.4); the composite may give them an `Epsilon` to set ε.
vector norm ‖x‖_p = Σ|x_i|^p / ‖x‖_p^(p−1): each entry gets the share |x_i|^p / Σ|x_j|^p (conservative);
variance and standard deviation: the share (x_i − mean)² / Σ(x_j − mean)² (conservative).
"""

from __future__ import annotations

import torch

from opwise.rules.linear import Epsilon, LinearOp, stabilize
from opwise.rules.linear_ops import _apply
from opwise.rules.registry import relevance_rule

aten = torch.ops.aten
MATMUL_EPSILON = 1e-6
#: keeps R / log_softmax(x) finite where a log-probability is 0 (a certain prediction); tiny, so that R / y stays
#: 1 for the explained output even when y is -1e-8
LOG_SOFTMAX_EPSILON = 1e-30


@relevance_rule("aten._softmax.default", "aten.softmax.int")
def softmax(call, relevance):
    x, dim = call.arg(0), call.args[1]
    x = torch.where(torch.isneginf(x), torch.zeros_like(x), x)
    return [x * (relevance - call.output * relevance.sum(dim, keepdim=True)), None, None][: len(call.args)]


@relevance_rule("aten._log_softmax.default", "aten.log_softmax.int")
def log_softmax(call, relevance):
    x, dim = call.arg(0), call.args[1]
    x = torch.where(torch.isneginf(x), torch.zeros_like(x), x)
    ratio = relevance / stabilize(call.output, LOG_SOFTMAX_EPSILON)
    return [x * (ratio - call.output.exp() * ratio.sum(dim, keepdim=True)), None, None][: len(call.args)]


def _matmul_rule(call, relevance, multiply, transpose):
    a, b = call.arg(0), call.arg(1)
    if call.explained[0] and call.explained[1]:
        scaled = relevance / stabilize(2 * call.output, MATMUL_EPSILON)
        return [multiply(scaled, transpose(b)) * a, multiply(transpose(a), scaled) * b]
    if call.explained[0]:
        op = LinearOp(lambda x, w, _: multiply(x, w), b, None, a, lambda w, g, x: multiply(g, transpose(w)))
        return [_apply(call, op, relevance, Epsilon()), None]
    op = LinearOp(lambda x, w, _: multiply(w, x), a, None, b, lambda w, g, x: multiply(transpose(w), g))
    return [None, _apply(call, op, relevance, Epsilon())]


@relevance_rule("aten.bmm.default", "aten.matmul.default")
def bmm(call, relevance):
    return _matmul_rule(call, relevance, torch.matmul, lambda t: t.transpose(-1, -2))


@relevance_rule("aten.mm.default")
def mm(call, relevance):
    return _matmul_rule(call, relevance, torch.mm, lambda t: t.t())


def _layer_norm_std_constant(x, normalized_shape, weight, bias, eps):
    dims = tuple(range(-len(normalized_shape), 0))
    mean = x.mean(dims, keepdim=True)
    std = torch.sqrt(x.var(dims, keepdim=True, unbiased=False) + eps).detach()
    y = (x - mean) / std
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def _group_norm_std_constant(x, groups, weight, bias, eps):
    grouped = x.reshape(x.shape[0], groups, -1)
    mean = grouped.mean(-1, keepdim=True)
    std = torch.sqrt(grouped.var(-1, keepdim=True, unbiased=False) + eps).detach()
    y = ((grouped - mean) / std).reshape(x.shape)
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    y = y if weight is None else y * weight.reshape(shape)
    return y if bias is None else y + bias.reshape(shape)


def _batch_statistics_std_constant(x, weight, bias, eps):
    """Batch norm with the batch's own statistics (instance norm runs as this): over every dim but channels."""
    dims = (0, *range(2, x.dim()))
    mean = x.mean(dims, keepdim=True)
    std = torch.sqrt(x.var(dims, keepdim=True, unbiased=False) + eps).detach()
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    y = (x - mean) / std
    y = y if weight is None else y * weight.reshape(shape)
    return y if bias is None else y + bias.reshape(shape)


def _std_constant_rule(call, relevance, normalize) -> list:
    """x ⊙ vjp of `normalize` (σ detached) at R / (y ± ε): the epsilon rule through the normalizer."""
    x = call.arg(0)
    output = call.output[0] if isinstance(call.output, (tuple, list)) else call.output
    relevance = relevance[0] if isinstance(relevance, (tuple, list)) else relevance
    source = x.detach().requires_grad_()
    with torch.enable_grad():
        y = normalize(source)
    epsilon = call.rule.epsilon if isinstance(call.rule, Epsilon) else MATMUL_EPSILON
    grad = torch.autograd.grad(y, source, relevance / stabilize(output, epsilon))[0]
    return [x * grad] + [None] * (len(call.args) - 1)


@relevance_rule("aten.layer_norm.default", "aten.native_layer_norm.default")
def layer_norm(call, relevance):
    shape, weight, bias = call.args[1], call.arg(2), call.arg(3)
    eps = call.args[4] if len(call.args) > 4 else 1e-5
    return _std_constant_rule(call, relevance, lambda x: _layer_norm_std_constant(x, shape, weight, bias, eps))


@relevance_rule("aten._native_batch_norm_legit.no_stats")
def batch_statistics_norm(call, relevance):
    """_native_batch_norm_legit.no_stats(x, weight, bias, training, momentum, eps): σ held constant."""
    weight, bias, eps = call.arg(1), call.arg(2), call.args[5]
    return _std_constant_rule(call, relevance, lambda x: _batch_statistics_std_constant(x, weight, bias, eps))


@relevance_rule("aten.native_group_norm.default", "aten.group_norm.default")
def group_norm(call, relevance):
    """native_group_norm(x, weight, bias, N, C, HxW, groups, eps); group_norm(x, groups, weight, bias, eps)."""
    if call.target == aten.native_group_norm.default:
        weight, bias, groups, eps = call.arg(1), call.arg(2), call.args[6], call.args[7]
    else:
        groups = call.args[1]
        weight, bias = (call.arg(i) if len(call.args) > i else None for i in (2, 3))
        eps = call.args[4] if len(call.args) > 4 else 1e-5
    return _std_constant_rule(call, relevance, lambda x: _group_norm_std_constant(x, groups, weight, bias, eps))


@relevance_rule("aten.linalg_vector_norm.default")
def vector_norm(call, relevance):
    """Share |x_i|^p / Σ|x_j|^p of each norm's relevance (p = ∞: the largest entries, ties split evenly)."""
    x = call.arg(0)
    order = call.args[1] if len(call.args) > 1 else call.kwargs.get("ord", 2)
    dims = call.args[2] if len(call.args) > 2 else call.kwargs.get("dim")
    keepdim = call.args[3] if len(call.args) > 3 else call.kwargs.get("keepdim", False)
    dims = [dims] if isinstance(dims, int) else dims
    dims = tuple(range(x.dim())) if not dims else tuple(d % x.dim() for d in dims)  # None or (): all of x
    magnitude = x.abs()
    if order == float("inf"):
        weight = (magnitude == magnitude.amax(dims, keepdim=True)).to(x.dtype)
    elif order > 0:
        weight = magnitude.pow(order)
    else:
        from opwise.errors import UnsupportedOperation

        raise UnsupportedOperation(call.node, "aten.linalg_vector_norm.default", engine="relevance",
                                   hint=f"ord={order} has no relevance rule (finite ord > 0 and inf have)")
    if not keepdim:
        for d in sorted(dims):
            relevance = relevance.unsqueeze(d)
    return [_shared(weight, dims, relevance)] + [None] * (len(call.args) - 1)


def _shared(weight: torch.Tensor, dims: tuple[int, ...], relevance: torch.Tensor) -> torch.Tensor:
    """Each reduced entry's share weight / Σ weight of its reduction's relevance (relevance kept-dim)."""
    total = weight.sum(dims, keepdim=True)
    return weight / torch.where(total > 0, total, torch.ones_like(total)) * relevance  # a zero vector: no share, not NaN


@relevance_rule("aten.var.correction", "aten.std.correction")
def variance(call, relevance):
    """Share (x_i − mean)² / Σ(x_j − mean)² of the variance's (standard deviation's) relevance."""
    x = call.arg(0)
    dims = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
    dims = [dims] if isinstance(dims, int) else dims
    dims = tuple(range(x.dim())) if not dims else tuple(d % x.dim() for d in dims)
    if not call.kwargs.get("keepdim", False):
        for d in sorted(dims):
            relevance = relevance.unsqueeze(d)
    return [_shared((x - x.mean(dims, keepdim=True)).square(), dims, relevance)] + [None] * (len(call.args) - 1)
