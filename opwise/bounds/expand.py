"""Rewrite composite operators into primitives that have relaxations, before bounding.

- softmax(x)_i = 1 / (1 + Σ_{j≠i} exp(x_j − x_i)) (the shift-invariant form): every exp sees a difference of two
  scores, which CROWN bounds tightly (the shared part of the scores cancels) and which stays small where the
  scores themselves are large; the denominator is at least 1, so every bound lies in [0, 1] and stays finite
  even when IBP's score intervals are wide (exp of a raw score overflows: NaN bounds). The differences are
  capped at MAX_EXPONENT, which moves a softmax value by less than exp(−MAX_EXPONENT) ≈ 2e-22 (a term that large
  makes the value 0 either way) and keeps exp finite where a key is masked with the dtype's most negative
  value (differences of ±3e38). One extra axis of the row's length: n² exp terms per row instead of n.
- layer_norm(x) = clamp((x − mean) · rsqrt(var + eps), ±√(n − 1)) · w + b with var = mean((x − mean)²): the
  normalised value never leaves ±√(n − 1) (so the clamp changes no value), but where the variance's lower
  bound reaches 0, rsqrt's bound is 1/√eps and the product's bounds reach hundreds; the clamp caps them.
- log_softmax(x) = (x − max x) − log(Σ exp(x − max x)), as torch computes it: the max is shared by the row, so
  a margin between two log-probabilities is the margin between their scores, exactly, under CROWN too.
- prelu(x, w) = w·x + (1 − w)·relu(x) with w a constant: ReLU's relaxation (and branch-and-bound's ReLU splits).
- minimum(a, b) = a − relu(a − b), maximum(a, b) = b + relu(a − b) (equal up to rounding where a and b differ);
  clamp with tensor limits = minimum(maximum(x, low), high).
- rms_norm(x) = x · rsqrt(mean(x²) + eps) · w, clamped to ±√n (as layer norm's normalised value);
- group norm = layer norm over each group's channels, instance norm (batch norm with the batch's own statistics)
  = the same over every dim but the channels, then the per-channel affine; variance and standard deviation
  from their definitions; vector norms as √Σx², Σ|x|, max |x| or (Σ|x|^p)^(1/p).
- _trilinear (nn.Bilinear's x1ᵀ W x2) = Σ over its sum dims of the three factors unsqueezed and multiplied, the
  constant factor first (a linear map), then the product of two bounded tensors (McCormick planes);
- cumprod along a dim = a chain of products of two bounded slices (y_k = y_(k−1) · x_k);
- logcumsumexp along a dim = the chain y_k = y_(k−1) + softplus(x_k − y_(k−1)) (log(e^a + e^b) = a + softplus(b − a)),
  as torch scans it: no exp of a raw value (which overflows) and no log of a sum whose lower bound may reach 0;
- where(p > q, a, b) with the condition computed from the input (a binarization `Where(Greater(x, 0), 1, -1)`, a
  threshold) = a·s + b·(1 − s), s the step as sign and relu of p − q: relu(sign(p − q)) for >, 1 − relu(sign(q − p))
  for >=, (<, <= mirrored), 1 − |sign(p − q)| for ==, |sign(p − q)| for !=. s is exactly 0 or 1 (p − q is 0 only
  where p == q, in floats too), so the values are the model's; sign's constant lines bound it on each side of 0,
  with sign(0) = 0 at the boundary. A condition that does not depend on the input (a mask) stays as it is. A
  comparison cast to floats (`Cast(Greater(x, 0), float)`, the other binarization) is that step, s itself.
- x / y with y bounded = x · reciprocal(y); a matrix product of two bounded tensors (attention's q·kᵀ and p·v)
  = Σ_k of elementwise products, each bounded by McCormick planes.

The engine then bounds each piece with its own transfer (exp, reciprocal, rsqrt, pow, clamp from the relaxation
registry; products of two bounded tensors bilinearly). The rewrite computes the
same values as the model and works on a copy; the caller's Graph is unchanged.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import fx

from opwise.bounds.transfers.nonlinear import has_relaxation
from opwise.tracing.graph import Graph

aten = torch.ops.aten

#: the cap on softmax's score differences (see the module docstring)
MAX_EXPONENT = 50.0
#: the normalised value's clamp at ±√(n − 1) is widened by this, so that rounding never makes the clamp bite
#: (the rewrite must compute the model's values)
NORMALISED_LIMIT_SCALE = 1 + 1e-5


class _Rewriter:
    """Adds nodes to the module's graph (being rewritten), and constant tensors as buffers with `get_attr` nodes."""

    def __init__(self, module: fx.GraphModule):
        self.module, self.graph, self.count = module, module.graph, 0

    def call(self, target, *args) -> fx.Node:
        return self.graph.call_function(target, args)

    def constant(self, value: torch.Tensor) -> fx.Node:
        name = f"_opwise_expand_constant_{self.count}"
        self.count += 1
        self.module.register_buffer(name, value)
        return self.graph.get_attr(name)


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["val"].shape)


def _softmax(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    x, dim = node.args[0], node.args[1]
    shape = _shape(node)
    dim = dim % len(shape)
    length = shape[dim]
    # differences[..., i, j, ...] = x_j − x_i over a new axis next to the softmax axis
    others = rewriter.call(aten.unsqueeze.default, x, dim)
    own = rewriter.call(aten.unsqueeze.default, x, dim + 1)
    differences = rewriter.call(aten.clamp_max.default, rewriter.call(aten.sub.Tensor, others, own), MAX_EXPONENT)
    off_diagonal = 1 - torch.eye(length, device=node.meta["val"].device)
    off_diagonal = off_diagonal.reshape(length, length, *[1] * (len(shape) - dim - 1))
    terms = rewriter.call(aten.mul.Tensor, rewriter.call(aten.exp.default, differences), rewriter.constant(off_diagonal))
    total = rewriter.call(aten.add.Tensor, rewriter.call(aten.sum.dim_IntList, terms, [dim + 1]), 1.0)
    return rewriter.call(aten.reciprocal.default, total)


def _log_softmax(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    x, dim = node.args[0], node.args[1]
    top = rewriter.call(aten.amax.default, x, [dim], True)
    shifted = rewriter.call(aten.sub.Tensor, x, top)
    total = rewriter.call(aten.sum.dim_IntList, rewriter.call(aten.exp.default, shifted), [dim], True)
    # Σ exp(x − max) >= exp(0) = 1 exactly (the max is one of the x): the clamp changes no value, and keeps log's
    # input interval above 0 where every exp's lower bound underflows
    log_total = rewriter.call(aten.log.default, rewriter.call(aten.clamp_min.default, total, 1.0))
    return rewriter.call(aten.sub.Tensor, shifted, log_total)


def _prelu(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    x, weight = node.args[0], node.args[1]
    positive = rewriter.call(aten.relu.default, x)
    # x for x > 0, w·x below: w·x + (1 − w)·relu(x), with w a constant (per channel)
    keep = rewriter.call(aten.rsub.Scalar, weight, 1.0)
    return rewriter.call(aten.add.Tensor, rewriter.call(aten.mul.Tensor, x, weight),
                         rewriter.call(aten.mul.Tensor, positive, keep))


def _minimum_or_maximum(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    return _extremum(rewriter, node.target, node.args[0], node.args[1])


def _extremum(rewriter: _Rewriter, target, first, second) -> fx.Node:
    difference = rewriter.call(aten.relu.default, rewriter.call(aten.sub.Tensor, first, second))
    if target is aten.minimum.default:  # min(a, b) = a − relu(a − b)
        return rewriter.call(aten.sub.Tensor, first, difference)
    return rewriter.call(aten.add.Tensor, second, difference)  # max(a, b) = b + relu(a − b)


def _clamp_by_tensors(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    """clamp(x, low, high) with tensor limits = minimum(maximum(x, low), high), as torch applies them (high wins)."""
    arguments = dict(zip(("self", "min", "max"), node.args)) | node.kwargs
    out = arguments["self"]
    if arguments.get("min") is not None:
        out = _extremum(rewriter, aten.maximum.default, out, arguments["min"])
    if arguments.get("max") is not None:
        out = _extremum(rewriter, aten.minimum.default, out, arguments["max"])
    return out


#: comparisons as (difference whose sign decides, whether s = 1 − relu(sign(·)) or 1 − |sign(·)|, ...): see _step
_COMPARISONS = {"gt": ("p-q", False), "ge": ("q-p", True), "lt": ("q-p", False), "le": ("p-q", True),
                "eq": ("abs", True), "ne": ("abs", False)}
_COMPARISON_OPS = {getattr(getattr(aten, name), overload): name for name in _COMPARISONS for overload in ("Scalar", "Tensor")}


def _step(rewriter: _Rewriter, condition: fx.Node) -> fx.Node:
    """The comparison `condition` (p op q) as a float tensor of 0 and 1: relu(sign(d)), 1 − relu(sign(d)), |sign(d)|
    or 1 − |sign(d)| for the difference d of p and q that _COMPARISONS names."""
    p, q = condition.args[0], condition.args[1]
    form, complement = _COMPARISONS[_COMPARISON_OPS[condition.target]]
    if form == "q-p" and not isinstance(q, fx.Node):  # q − p with q a number: −(p − q)
        difference = rewriter.call(aten.neg.default, rewriter.call(aten.sub.Tensor, p, q))
    else:
        first, second = (q, p) if form == "q-p" else (p, q)
        difference = rewriter.call(aten.sub.Tensor, first, second)
    sign = rewriter.call(aten.sign.default, difference)
    step = rewriter.call(aten.abs.default if form == "abs" else aten.relu.default, sign)
    return rewriter.call(aten.rsub.Scalar, step, 1.0) if complement else step


def _where_of_comparison(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    condition, a, b = node.args[0], node.args[1], node.args[2]
    step = _step(rewriter, condition)
    taken = rewriter.call(aten.mul.Tensor, step, a)
    others = rewriter.call(aten.mul.Tensor, rewriter.call(aten.rsub.Scalar, step, 1.0), b)
    return rewriter.call(aten.add.Tensor, taken, others)


def _cast_comparison(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    step = _step(rewriter, node.args[0])
    if node.args[0].args[0].meta["val"].dtype == node.kwargs["dtype"]:
        return step
    return rewriter.graph.call_function(aten._to_copy.default, (step,), {"dtype": node.kwargs["dtype"]})


def _finite_constants(values, module: fx.GraphModule) -> bool:
    """Whether every constant among `values` (numbers, folded tensors) is finite: a difference with an infinite one
    (nan_to_num's h == inf) is infinite, and sign's lines times it NaN; such a comparison stays a comparison, which
    its interval decides."""
    for value in values:
        if isinstance(value, fx.Node):
            if value.op != "get_attr":
                continue
            value = getattr(module, value.target, None)
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return False
        elif not math.isfinite(float(value)):
            return False
    return True


def _steppable_comparison(condition, dependent: set[fx.Node], module: fx.GraphModule) -> bool:
    """A comparison of two operands computed from the input (or one and a finite constant) that `_step` can write as a
    step of their difference. Not a value compared with itself (isfinite traces to x == x): its difference is 0 for
    every number, so the step's bounds were exactly 1, while the model gives 0 where the value is NaN, which an
    unbounded value may be; the comparison's own rule decides it only where the interval says it is a number."""
    return (isinstance(condition, fx.Node) and condition in dependent and condition.target in _COMPARISON_OPS
            and len(condition.args) == 2 and not condition.kwargs and condition.args[0] is not condition.args[1]
            and _finite_constants(condition.args, module))


def _is_cast_comparison(node: fx.Node, dependent: set[fx.Node], module: fx.GraphModule) -> bool:
    """A comparison of floats computed from the input, cast to a float dtype (0 and 1)."""
    if node.target is not aten._to_copy.default or len(node.args) != 1 or set(node.kwargs) != {"dtype"}:
        return False
    condition, dtype = node.args[0], node.kwargs["dtype"]
    if not (_steppable_comparison(condition, dependent, module) and isinstance(dtype, torch.dtype)
            and dtype.is_floating_point):
        return False
    operand = condition.args[0].meta.get("val") if isinstance(condition.args[0], fx.Node) else None
    return isinstance(operand, torch.Tensor) and operand.dtype.is_floating_point


def _is_where_of_comparison(node: fx.Node, dependent: set[fx.Node], module: fx.GraphModule) -> bool:
    """where(comparison computed from the input, a, b) with a float result, and a and b finite where they are
    constants (an infinite one would make a·0 NaN)."""
    if node.target is not aten.where.self or len(node.args) != 3:
        return False
    condition = node.args[0]
    if not _steppable_comparison(condition, dependent, module):
        return False
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
        return False
    for branch in node.args[1:]:
        if isinstance(branch, fx.Node) and branch.op == "get_attr":
            constant = getattr(module, branch.target, None)
            if not isinstance(constant, torch.Tensor) or not bool(torch.isfinite(constant).all()):
                return False
        elif not isinstance(branch, fx.Node) and not math.isfinite(float(branch)):
            return False
    return True


def _normalized(rewriter: _Rewriter, x: fx.Node, dims: list[int], count: int, eps: float) -> fx.Node:
    """(x − mean) · rsqrt(var + eps) over `dims` (`count` elements), clamped to ±√(count − 1)."""
    mean = rewriter.call(aten.mean.dim, x, dims, True)
    centered = rewriter.call(aten.sub.Tensor, x, mean)
    variance = rewriter.call(aten.mean.dim, _square(rewriter, centered), dims, True)
    scale = rewriter.call(aten.rsqrt.default, rewriter.call(aten.add.Tensor, variance, eps))
    out = rewriter.call(aten.mul.Tensor, centered, scale)
    if count > 1:
        # c_i = −Σ_{j≠i} c_j, so c_i² <= (n − 1)·Σ_{j≠i} c_j² (Cauchy–Schwarz), i.e. c_i² <= (n − 1)·var, and
        # |c_i| / √(var + eps) < √(n − 1): a bound that holds however loose the variance's interval is
        limit = math.sqrt(count - 1) * NORMALISED_LIMIT_SCALE
        out = rewriter.call(aten.clamp.default, out, -limit, limit)
    return out


def _square(rewriter: _Rewriter, x: fx.Node) -> fx.Node:
    if has_relaxation("aten.pow.Tensor_Scalar"):
        return rewriter.call(aten.pow.Tensor_Scalar, x, 2)
    return rewriter.call(aten.mul.Tensor, x, x)


def _layer_norm(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    x, normalized_shape = node.args[0], node.args[1]
    weight = node.args[2] if len(node.args) > 2 else None
    bias = node.args[3] if len(node.args) > 3 else None
    eps = node.args[4] if len(node.args) > 4 else 1e-5
    dims = list(range(-len(normalized_shape), 0))
    out = _normalized(rewriter, x, dims, math.prod(normalized_shape), eps)
    if weight is not None:
        out = rewriter.call(aten.mul.Tensor, out, weight)
    if bias is not None:
        out = rewriter.call(aten.add.Tensor, out, bias)
    return out


def _rms_norm(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    """x · rsqrt(mean(x²) + eps) · w, clamped to ±√n: x_i² <= Σ x_j² = n · mean(x²), whatever the intervals."""
    x, normalized_shape = node.args[0], node.args[1]
    weight = node.args[2] if len(node.args) > 2 else node.kwargs.get("weight")
    eps = node.args[3] if len(node.args) > 3 else node.kwargs.get("eps")
    eps = torch.finfo(node.meta["val"].dtype).eps if eps is None else eps
    dims = list(range(-len(normalized_shape), 0))
    count = math.prod(normalized_shape)
    mean_square = rewriter.call(aten.mean.dim, _square(rewriter, x), dims, True)
    out = rewriter.call(aten.mul.Tensor, x, rewriter.call(aten.rsqrt.default, rewriter.call(aten.add.Tensor, mean_square, eps)))
    limit = math.sqrt(count) * NORMALISED_LIMIT_SCALE
    out = rewriter.call(aten.clamp.default, out, -limit, limit)
    return out if weight is None else rewriter.call(aten.mul.Tensor, out, weight)


def _group_norm(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    """getitem(native_group_norm(x, w, b, N, C, HxW, groups, eps), 0): layer norm over each group's channels."""
    x, weight, bias, _, channels, _, groups, eps = node.args[0].args
    shape = _shape(node.args[0].args[0])
    per_group = math.prod(shape[1:]) // groups
    # reshape, not view: the operator takes any layout (a channels-last map permuted back is not contiguous)
    grouped = rewriter.call(aten.reshape.default, x, [-1, groups, per_group])
    out = rewriter.call(aten.view.default, _normalized(rewriter, grouped, [-1], per_group, eps), [-1, *shape[1:]])
    return _per_channel_affine(rewriter, out, weight, bias, [channels] + [1] * (len(shape) - 2))


def _per_channel_affine(rewriter: _Rewriter, out: fx.Node, weight, bias, per_channel: list[int]) -> fx.Node:
    """out · w + b with w and b (each may be None) viewed as `per_channel` (channels first, ones after)."""
    if weight is not None:
        out = rewriter.call(aten.mul.Tensor, out, rewriter.call(aten.view.default, weight, per_channel))
    if bias is not None:
        out = rewriter.call(aten.add.Tensor, out, rewriter.call(aten.view.default, bias, per_channel))
    return out


def _batch_statistics_norm(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    """getitem(_native_batch_norm_legit.no_stats(x, w, b, training, momentum, eps), 0): normalised over every dim
    but the channels with the batch's own statistics (how instance norm runs), then the per-channel affine."""
    x, weight, bias, _, _, eps = node.args[0].args
    shape = _shape(x)
    dims = [0, *range(2, len(shape))]
    out = _normalized(rewriter, x, dims, math.prod(shape[d] for d in dims), eps)
    return _per_channel_affine(rewriter, out, weight, bias, [shape[1]] + [1] * (len(shape) - 2))


#: normalisations traced as one operator with several outputs, rewritten where their first output is read
_FIRST_OUTPUT_REWRITES = {aten.native_group_norm.default: _group_norm,
                          aten._native_batch_norm_legit.no_stats: _batch_statistics_norm}


def _reduced_dims(node: fx.Node, dim) -> list[int]:
    rank = len(_shape(node.args[0]))
    return list(range(rank)) if dim is None or dim == [] else [d % rank for d in ([dim] if isinstance(dim, int) else dim)]


def _vector_norm(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    """‖x‖_p over dims: √Σx² (p = 2), Σ|x| (1), max |x| (inf), (Σ|x|^p)^(1/p) otherwise."""
    x = node.args[0]
    order = node.kwargs.get("ord", node.args[1] if len(node.args) > 1 else 2)
    dims = _reduced_dims(node, node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else None))
    keepdim = node.kwargs.get("keepdim", node.args[3] if len(node.args) > 3 else False)
    if order == math.inf:
        return rewriter.call(aten.amax.default, rewriter.call(aten.abs.default, x), dims, keepdim)
    if order == 2:
        return rewriter.call(aten.sqrt.default, rewriter.call(aten.sum.dim_IntList, _square(rewriter, x), dims, keepdim))
    magnitude = rewriter.call(aten.abs.default, x)
    if order == 1:
        return rewriter.call(aten.sum.dim_IntList, magnitude, dims, keepdim)
    powered = rewriter.call(aten.pow.Tensor_Scalar, magnitude, float(order))
    return rewriter.call(aten.pow.Tensor_Scalar, rewriter.call(aten.sum.dim_IntList, powered, dims, keepdim), 1.0 / order)


def _variance(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    """var (std) = Σ(x − mean)² / (n − correction) over dims (its square root)."""
    x = node.args[0]
    dims = _reduced_dims(node, node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None))
    correction = node.kwargs.get("correction", 1)
    correction = 1 if correction is None else correction
    keepdim = node.kwargs.get("keepdim", False)
    count = math.prod(_shape(x)[d] for d in dims)
    centered = rewriter.call(aten.sub.Tensor, x, rewriter.call(aten.mean.dim, x, dims, True))
    total = rewriter.call(aten.sum.dim_IntList, _square(rewriter, centered), dims, keepdim)
    variance = rewriter.call(aten.mul.Tensor, total, 1.0 / (count - correction) if count > correction else math.nan)
    return rewriter.call(aten.sqrt.default, variance) if node.target is aten.std.correction else variance


def _divide(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    return rewriter.call(aten.mul.Tensor, node.args[0], rewriter.call(aten.reciprocal.default, node.args[1]))


def _matrix_product(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    """[.., i, k] @ [.., k, j] as sum over k of the broadcast elementwise product [.., i, k, j]."""
    left, right = node.args[0], node.args[1]
    rows, inner = _shape(left)[-2:]
    columns = _shape(right)[-1]
    full = list(_shape(left)[:-2]) + [rows, inner, columns]
    left = rewriter.call(aten.expand.default, rewriter.call(aten.unsqueeze.default, left, -1), full)
    right = rewriter.call(aten.expand.default, rewriter.call(aten.unsqueeze.default, right, -3), full)
    return rewriter.call(aten.sum.dim_IntList, rewriter.call(aten.mul.Tensor, left, right), [-2])


def _trilinear(rewriter: _Rewriter, node: fx.Node, dependent: set[fx.Node]) -> fx.Node:
    """_trilinear(a, b, c, expand_a, expand_b, expand_c, sum_dims): Σ_sum_dims of a·b·c, each unsqueezed at its
    expand dims (ascending); the factors multiply constants first, so that at most one product is bilinear."""
    factors = []
    for factor, dims in zip(node.args[:3], node.args[3:6]):
        for dim in sorted(dims):
            factor = rewriter.call(aten.unsqueeze.default, factor, dim)
        factors.append((factor, isinstance(node.args[len(factors)], fx.Node) and node.args[len(factors)] in dependent))
    factors.sort(key=lambda pair: pair[1])  # constants first
    product = factors[0][0]
    for factor, _ in factors[1:]:
        product = rewriter.call(aten.mul.Tensor, product, factor)
    sum_dims = list(node.args[6])
    return rewriter.call(aten.sum.dim_IntList, product, sum_dims) if sum_dims else product


def _cumulative_product(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    """cumprod(x, dim) as y_0 = x_0, y_k = y_(k−1) · x_k over slices along dim, stacked back."""
    x, dim = node.args[0], node.args[1]
    length = _shape(x)[dim % len(_shape(x))]
    running = rewriter.call(aten.slice.Tensor, x, dim, 0, 1)
    pieces = [running]
    for index in range(1, length):
        running = rewriter.call(aten.mul.Tensor, running, rewriter.call(aten.slice.Tensor, x, dim, index, index + 1))
        pieces.append(running)
    return rewriter.call(aten.cat.default, pieces, dim) if len(pieces) > 1 else running


def _log_cumulative_sum_exp(rewriter: _Rewriter, node: fx.Node) -> fx.Node:
    """logcumsumexp(x, dim) as y_0 = x_0, y_k = y_(k−1) + softplus(x_k − y_(k−1)) over slices along dim, stacked
    back (softplus with torch's defaults: z itself above 20, where log1p(e^z) rounds to z)."""
    x, dim = node.args[0], node.args[1]
    length = _shape(x)[dim % len(_shape(x))]
    running = rewriter.call(aten.slice.Tensor, x, dim, 0, 1)
    pieces = [running]
    for index in range(1, length):
        step = rewriter.call(aten.sub.Tensor, rewriter.call(aten.slice.Tensor, x, dim, index, index + 1), running)
        running = rewriter.call(aten.add.Tensor, running, rewriter.call(aten.softplus.default, step, 1, 20))
        pieces.append(running)
    return rewriter.call(aten.cat.default, pieces, dim) if len(pieces) > 1 else running


def _rewrite_for(node: fx.Node, dependent: set[fx.Node], module: fx.GraphModule):
    if node.op != "call_function" or node not in dependent:
        return None
    if _is_where_of_comparison(node, dependent, module):
        return _where_of_comparison
    if _is_cast_comparison(node, dependent, module):
        return _cast_comparison
    if node.target is aten._softmax.default:
        return _softmax
    if node.target in (aten.layer_norm.default,):
        return _layer_norm
    if node.target is aten.rms_norm.default:
        return _rms_norm
    if node.target is aten._log_softmax.default:
        return _log_softmax
    if (node.target is operator.getitem and node.args[1] == 0 and isinstance(node.args[0], fx.Node)
            and node.args[0].target in _FIRST_OUTPUT_REWRITES):
        return _FIRST_OUTPUT_REWRITES[node.args[0].target]
    if node.target is aten.linalg_vector_norm.default:
        return _vector_norm
    if node.target in (aten.var.correction, aten.std.correction):
        return _variance
    if node.target in (aten.minimum.default, aten.maximum.default):
        return _minimum_or_maximum
    if node.target is aten.clamp.Tensor:
        return _clamp_by_tensors
    if node.target is aten._prelu_kernel.default and node.args[1] not in dependent:
        return _prelu
    if node.target is aten.div.Tensor and isinstance(node.args[1], fx.Node) and node.args[1] in dependent:
        return _divide
    if node.target in (aten.bmm.default, aten.mm.default) and all(arg in dependent for arg in node.args[:2]):
        return _matrix_product
    if node.target is aten._trilinear.default:
        return lambda rewriter, node: _trilinear(rewriter, node, dependent)
    if node.target is aten.cumprod.default and not node.kwargs.get("dtype"):
        return _cumulative_product
    if node.target is aten.logcumsumexp.default:
        return _log_cumulative_sum_exp
    return None


def expand_for_bounds(graph: Graph, example: torch.Tensor | None = None) -> Graph:
    """A Graph with softmax, layer norm and division by bounded tensors expanded (the same Graph if none).
    `example` is not needed any more (kept for callers that pass it).

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Softmax(-1))
    >>> graph = opwise.trace(model, torch.zeros(1, 3))
    >>> expanded = expand_for_bounds(graph)
    >>> [expanded.info(n).op.split(".")[1] for n in expanded.call_nodes()][1:]
    ['unsqueeze', 'unsqueeze', 'sub', 'clamp_max', 'exp', 'mul', 'sum', 'add', 'reciprocal']
    >>> x = torch.randn(2, 3); torch.allclose(expanded(x), model(x))
    True
    """
    def expand(module: fx.GraphModule) -> bool:
        dependent = {n for n in module.graph.nodes if graph.info(n).depends_on_input}
        known, changed = set(module.graph.nodes), False
        rewriter = _Rewriter(module)
        for node in list(module.graph.nodes):
            rewrite = _rewrite_for(node, dependent, module)
            if rewrite is None:
                continue
            changed = True
            with module.graph.inserting_before(node):
                replacement = rewrite(rewriter, node)
            # a later rewrite may read the replaced node's shape, and must know its result depends on the input
            replacement.meta["val"] = node.meta.get("val")
            node.replace_all_uses_with(replacement)
            module.graph.erase_node(node)
            for source in node.all_input_nodes:  # a multi-output composite (group norm) read through getitem
                if source.op == "call_function" and source.target is not operator.getitem and not source.users \
                        and isinstance(source.meta.get("val"), (tuple, list)):
                    module.graph.erase_node(source)
                elif source.op == "call_function" and source.target in _COMPARISON_OPS and not source.users:
                    module.graph.erase_node(source)  # a where's condition, now read as a step
            for created in set(module.graph.nodes) - known:  # the pieces stand where the composite stood
                created.meta.setdefault("nn_module_stack", node.meta.get("nn_module_stack", {}))
                if created.op == "call_function":
                    dependent.add(created)
            known = set(module.graph.nodes)
        return changed

    return graph.rewrite(expand)
