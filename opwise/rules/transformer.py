"""Op rules for attention and normalizers, after AttnLRP (Achtibat et al., ICML 2024).

softmax: deep Taylor decomposition at the input (Prop. 3.1): R_x = x ⊙ (R − s ⊙ Σ R).
matmul/bmm of two explained tensors: epsilon rule, then uniform split between the factors (Prop. 3.3).
layer norm: epsilon rule through (x − mean)/σ·w + b with σ held constant (identity on 1/σ, Prop. 3.4);
the composite may give it an `Epsilon` to set ε.
"""

from __future__ import annotations

import torch

from opwise.rules.linear import Epsilon, LinearOp, stabilize
from opwise.rules.linear_ops import _apply
from opwise.rules.registry import relevance_rule

aten = torch.ops.aten
MATMUL_EPSILON = 1e-6


@relevance_rule("aten._softmax.default", "aten.softmax.int")
def softmax(call, relevance):
    x, dim = call.arg(0), call.args[1]
    x = torch.where(torch.isneginf(x), torch.zeros_like(x), x)
    return [x * (relevance - call.output * relevance.sum(dim, keepdim=True)), None, None][: len(call.args)]


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


@relevance_rule("aten.layer_norm.default", "aten.native_layer_norm.default")
def layer_norm(call, relevance):
    x, shape = call.arg(0), call.args[1]
    weight, bias = call.arg(2), call.arg(3)
    eps = call.args[4] if len(call.args) > 4 else 1e-5
    output = call.output[0] if isinstance(call.output, (tuple, list)) else call.output
    relevance = relevance[0] if isinstance(relevance, (tuple, list)) else relevance
    source = x.detach().requires_grad_()
    with torch.enable_grad():
        y = _layer_norm_std_constant(source, shape, weight, bias, eps)
    epsilon = call.rule.epsilon if isinstance(call.rule, Epsilon) else MATMUL_EPSILON
    grad = torch.autograd.grad(y, source, relevance / stabilize(output, epsilon))[0]
    return [x * grad] + [None] * (len(call.args) - 1)
