"""Op rules for operators linear in their explained input: they apply the composite's `LinearRule`.

Each builds a `LinearOp` (the op with its weight and bias exposed) from the call and hands it to the
rule chosen for the node (`call.rule`, default `Epsilon()` for weighted ops and `Norm()` otherwise).
"""

from __future__ import annotations

import math

import torch

from opwise.errors import UnsupportedOperation
from opwise.rules.linear import Epsilon, LinearOp, LinearRule, Norm
from opwise.rules.registry import relevance_rule

aten = torch.ops.aten


def _apply(call, op: LinearOp, relevance: torch.Tensor, default: LinearRule) -> torch.Tensor:
    rule = call.rule if isinstance(call.rule, LinearRule) else default
    return rule.relevance(op, call.output if rule.uses_output else None, relevance)


def _cache(call, *indices: int) -> dict | None:
    """The node's cache for modified parameters, when the arguments at `indices` are graph constants."""
    constant = getattr(call, "constant", None)
    if constant is None or not all(constant(i) for i in indices if i < len(call.args)):
        return None
    return call.cache


def needs_output(rule: object) -> bool:
    """Whether a linear op under `rule` (None: the default Epsilon/Norm) reads its forward output."""
    return getattr(rule, "uses_output", True)


@relevance_rule("aten.linear.default", needs=("inputs", "linear"))
def linear(call, relevance):
    x, weight = call.arg(0), call.arg(1)
    bias = call.arg(2) if len(call.args) > 2 else None

    def fast_vjp(w, grad, x):
        return grad @ w

    op = LinearOp(lambda x, w, b: aten.linear(x, w, b), weight, bias, x, fast_vjp, owns_vjp=True, input_axes=(-1, 1),
                  output_axes=(-1, 0), cache=_cache(call, 1, 2))
    return [_apply(call, op, relevance, Epsilon()), None, None][: len(call.args)]


@relevance_rule("aten.convolution.default", needs=("inputs", "linear"))
def convolution(call, relevance):
    x, weight, bias = call.arg(0), call.arg(1), call.arg(2)
    rest = call.args[3:]

    def forward(x, w, b):
        return aten.convolution(x, w, b, *rest)

    def fast_vjp(w, grad, x):
        stride, padding, dilation, transposed, output_padding, groups = rest
        return aten.convolution_backward(
            grad, x, w, None, stride, padding, dilation, transposed, output_padding, groups, [True, False, False]
        )[0]

    transposed, groups = rest[3], rest[5]
    # groups interleave their channels, so only ungrouped convolutions take more of them in one call
    inputs, outputs = ((1, 0 if transposed else 1), (1, 1 if transposed else 0)) if groups == 1 else (None, None)
    op = LinearOp(forward, weight, bias, x, fast_vjp, owns_vjp=True, input_axes=inputs, output_axes=outputs,
                  cache=_cache(call, 1, 2))
    return [_apply(call, op, relevance, Epsilon())] + [None] * (len(call.args) - 1)


@relevance_rule("aten.addmm.default", needs=("inputs", "linear"))
def addmm(call, relevance):
    bias, x, weight = call.arg(0), call.arg(1), call.arg(2)
    op = LinearOp(lambda x, w, b: x @ w if b is None else torch.addmm(b, x, w), weight, bias, x, lambda w, g, x: g @ w.T,
                  owns_vjp=True, input_axes=(-1, 0), output_axes=(-1, 1), cache=_cache(call, 0, 2))
    return [None, _apply(call, op, relevance, Epsilon()), None]


@relevance_rule(
    "aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default", needs=("inputs", "linear")
)
def batch_norm(call, relevance):
    """Eval-mode batch norm is a per-channel affine map: y = x·scale + shift."""
    x, weight, bias, mean, var = (call.arg(i) for i in range(5))
    eps = call.args[7] if call.target == aten.batch_norm.default else call.args[6]
    scale = torch.rsqrt(var + eps) * (1 if weight is None else weight)
    shift = (0 if bias is None else bias) - mean * scale
    shape = (1, -1) + (1,) * (x.dim() - 2)

    def forward(x, s, b):
        return x * s.view(shape) + (0 if b is None else b.view(shape))

    op = LinearOp(forward, scale, shift, x, lambda s, g, x: g * s.view(shape), owns_vjp=True)
    return [_apply(call, op, relevance, Epsilon())] + [None] * (len(call.args) - 1)


def _parameterless(call, relevance):
    """Pooling, reductions and linear resizing: no weights, so only the stabilized z-rule (`Norm`) applies by
    default."""
    rest, kwargs, x = call.args[1:], call.kwargs, call.arg(0)
    reduction, layout = _reduction_vjp(call.target, x, rest, kwargs)
    op = LinearOp(lambda x, w, b: call.target(x, *rest, **kwargs), None, None, x, reduction, layout=layout)
    return [_apply(call, op, relevance, Norm())] + [None] * (len(call.args) - 1)


def _reduction_vjp(target, x: torch.Tensor, rest: tuple, kwargs: dict):
    """vjp of sum/mean over dims (the gradient broadcast back) instead of autograd re-running the op, and a
    memory order putting the reduced dims outermost when they are few trailing ones (a stacked residual sum)."""
    if target not in (aten.sum.dim_IntList, aten.sum.default, aten.mean.dim, aten.mean.default):
        return None, None
    dims = rest[0] if rest and rest[0] is not None else []
    dims = sorted(d % x.dim() for d in dims) if len(dims) else list(range(x.dim()))
    keepdim = (rest[1] if len(rest) > 1 else kwargs.get("keepdim", False)) and target in (
        aten.sum.dim_IntList, aten.mean.dim)
    count = math.prod(x.shape[d] for d in dims) if target in (aten.mean.dim, aten.mean.default) else 1

    def vjp(weight, grad, source):
        if not keepdim:
            grad = grad.reshape([1 if d in dims else size for d, size in enumerate(x.shape)])
        return (grad / count if count != 1 else grad).expand(x.shape)

    trailing = dims == list(range(x.dim() - len(dims), x.dim())) and math.prod(x.shape[d] for d in dims) <= 8
    layout = tuple(dims) + tuple(range(x.dim() - len(dims))) if trailing and len(dims) < x.dim() else None
    return vjp, layout


relevance_rule(
    "aten.avg_pool3d.default",
    "aten.avg_pool2d.default",
    "aten.avg_pool1d.default",
    "aten.adaptive_avg_pool2d.default",
    "aten._adaptive_avg_pool2d.default",
    "aten.adaptive_avg_pool1d.default",
    "aten.mean.dim",
    "aten.mean.default",
    "aten.sum.dim_IntList",
    "aten.sum.default",
    "aten.cumsum.default",
    "aten.upsample_linear1d.vec",
    "aten.upsample_bilinear2d.vec",
    "aten.upsample_trilinear3d.vec",
    "aten.upsample_linear1d.default",
    "aten.upsample_bilinear2d.default",
    "aten.upsample_trilinear3d.default",
    "aten.upsample_bicubic2d.vec",
    "aten.upsample_bicubic2d.default",
    needs=("inputs", "linear"),
)(_parameterless)


@relevance_rule("aten._embedding_bag.default", "aten._embedding_bag_forward_only.default", needs=("inputs", "output"))
def embedding_bag(call, relevance):
    """nn.EmbeddingBag explained through its per-sample weights w (bag = Σ_i w_i · E[id_i], linear in w): the epsilon
    rule, R_w = w ⊙ ∂bag/∂w · R/(bag ± ε). Token ids as the explained input are refused (no per-token read-out yet)."""
    weights_position = 6
    if len(call.args) <= weights_position or not call.explained[weights_position]:
        raise UnsupportedOperation(call.node, "aten._embedding_bag.default", None, engine="relevance",
                                   hint="nn.EmbeddingBag is explained through its per_sample_weights; pass them as the "
                                        "explained input (token ids are constants)")
    args = [call.arg(i) for i in range(len(call.args))]
    x = args[weights_position]

    def bag(value, weight, bias):
        return call.target(*args[:weights_position], value, *args[weights_position + 1:])[0]

    result = [None] * len(call.args)
    result[weights_position] = Epsilon().relevance(LinearOp(bag, None, None, x), call.output[0], relevance)
    return result
