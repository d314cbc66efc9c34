"""LRP rules for operations linear in the explained input, named and parameterized as in Zennit.

Every rule is `x' ⊙ vjp(op with modified weights)(R / stabilized z')` summed over a few parts, so one
implementation serves convolution, linear, batch norm, pooling and means (see `LinearOp`). Rules are tiny
objects; write your own by subclassing `LinearRule` and overriding `relevance`.

Speed: when the input has no negative entry (after a ReLU, the common case) the sign-split rules (ZPlus,
AlphaBeta, Gamma) drop their negative-input parts and make one extra call of the op each: the second
pre-activation AlphaBeta and Gamma need follows from the forward output (their two weight sets sum to a
multiple of W), and Gamma's second one only matters where relevance sits on a negative output, which a
following ReLU rules out. Where a rule needs two vjps (AlphaBeta; Gamma where relevance meets negative
outputs) they are one, of both weight sets stacked along the output channels (`_vjp_pair`). The vjps divide
and multiply in place; modified weights, and whatever does not depend on the input (Flat's and ZBox's
reference terms), are built once per node.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from opwise.rules.operation import LinearOp, stabilize, stabilized_ratio

Tensor = torch.Tensor

__all__ = ["LinearOp", "stabilize", "LinearRule", "Epsilon", "Norm", "ZPlus", "AlphaBeta", "Gamma", "Flat", "WSquare",
           "ZBox", "Pass", "Constant"]


def _clamp(param: Tensor | None, low: float | None = None, high: float | None = None) -> Tensor | None:
    return None if param is None else param.clamp(min=low, max=high)


def _signed_parameters(op: LinearOp) -> tuple:
    """W⁺, W⁻, b⁺, b⁻ of the op (built once per node)."""
    return op.cached("signed", lambda: (_clamp(op.weight, 0), _clamp(op.weight, None, 0),
                                        _clamp(op.bias, 0), _clamp(op.bias, None, 0)))


class LinearRule:
    """Base of the linear rules: `relevance(op, output, relevance) -> input relevance`.

    `uses_output` says whether the rule reads the op's forward output (else the engine need not keep it).
    """

    uses_output = False

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Epsilon(LinearRule):
    """R_x = x ⊙ Wᵀ(R / (z ± ε)); ε→0 is LRP-0. The bias keeps its share (not conservative with biases).

    >>> op = LinearOp(lambda x, w, b: x @ w.T + (0 if b is None else b), torch.eye(2), None, torch.tensor([[1., 3.]]))
    >>> Epsilon(epsilon=0.0).relevance(op, op.x, torch.tensor([[2., 2.]]))
    tensor([[2., 2.]])
    """

    def __init__(self, epsilon: float = 1e-6, zero_bias: bool = False):
        self.epsilon, self.zero_bias = epsilon, zero_bias

    @property
    def uses_output(self) -> bool:
        return not self.zero_bias

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        if self.zero_bias and op.bias is not None:
            output = op.part(op.x, op.weight, None)
        return op.times_x(op.input_vjp(op.weight, stabilized_ratio(relevance, output, self.epsilon)))


class Norm(Epsilon):
    """Epsilon with a fixed tiny stabilizer, for ops without parameters (pooling, means, sums)."""

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__(epsilon=stabilizer)


def _accumulate(op: LinearOp, total: Tensor, more: Tensor) -> Tensor:
    """total + more, in place when `total` is a vjp result the op handed over."""
    return total.add_(more) if op.owns_vjp else total + more


def _shifted_part(op: LinearOp, x: Tensor, weight: Tensor, bias: Tensor | None, shift: float) -> Tensor:
    """W'x + b' + shift, a new tensor (the shift folded into the bias when there is one)."""
    z = op.part(x, weight, None if bias is None else bias + shift)
    return z.add_(shift) if bias is None else z


def relevance_off_positive(output: Tensor, relevance: Tensor) -> bool:
    """Whether any relevance arrives where the op's output is not positive: never behind a ReLU, whose
    zeroed outputs pass no relevance on (the next rule multiplies by them).

    >>> relevance_off_positive(torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0]))
    False
    >>> relevance_off_positive(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0]))
    True
    """
    return bool(torch.logical_and(output <= 0, relevance != 0).any())


@dataclasses.dataclass
class _SignSplit:
    """A sign-split rule's two parts as one call each: part A applies `first` to x⁺ and `second` to x⁻,
    part B the other way round. For x ≥ 0 that is x itself with `first` / `second`; otherwise x⁺ and x⁻
    are stacked along the input channels (`x`) and meet [first, second] / [second, first], and `finish`
    adds x ⊙ grad over the two halves."""

    x: Tensor
    first: Tensor
    second: Tensor
    finish: Callable[[Tensor], Tensor]
    stacked: bool = False


def _sign_split(op: LinearOp, first: Tensor, second: Tensor, key: Any) -> _SignSplit | None:
    """The split for this op's input, or None when x has negative entries and the op cannot stack inputs."""
    if op.weight is None:
        return None
    if op.nonnegative():
        return _SignSplit(op.x, first, second, op.times_x)
    if op.input_axes is None or not op.owns_vjp:
        return None
    axis, weight_axis = op.input_axes
    stacked = torch.cat([op.x.clamp(min=0), op.x.clamp(max=0)], axis)
    pair = op.cached(key, lambda: (torch.cat([first, second], weight_axis), torch.cat([second, first], weight_axis)))

    def finish(grad: Tensor) -> Tensor:
        positive, negative = grad.mul_(stacked).chunk(2, axis)
        return positive.add(negative)

    return _SignSplit(stacked, pair[0], pair[1], finish, stacked=True)


@dataclasses.dataclass
class _VjpPair:
    """Two vjps Aᵀg + Bᵀh as one, of [A; B] against [g; h] stacked along the output channels: one product
    with twice the reduction length instead of two products and a sum of their input-sized results. The
    rules write g and h straight into the halves `first` and `second` of `grads`."""

    weight: Tensor
    grads: Tensor
    first: Tensor
    second: Tensor


def _vjp_pair(op: LinearOp, like: Tensor, key: Any, build: Callable[[], tuple[Tensor, Tensor]]) -> _VjpPair | None:
    """The pair for outputs shaped like `like`, A and B from `build()` (stacked once per node); None when the
    op cannot stack its output channels."""
    if op.output_axes is None or not op.owns_vjp or op.weight is None:
        return None
    axis, weight_axis = op.output_axes
    weight = op.cached(key, lambda: torch.cat(build(), weight_axis))
    shape = list(like.shape)
    shape[axis] *= 2
    grads = like.new_empty(shape)
    return _VjpPair(weight, grads, *grads.chunk(2, axis))


#: z⁺ = z − z⁻ is trusted where z⁺ ≥ |z⁻| / CANCELLATION: at most log2(64) = 6 bits of z⁺ lost to cancellation
CANCELLATION = 64.0


def _cancels(positive: Tensor, negative: Tensor, relevance: Tensor) -> bool:
    """Whether relevance arrives where z⁺ (from z − z⁻) is below |z⁻| / CANCELLATION, too small for the
    subtraction to be trusted.

    >>> _cancels(torch.tensor([1e-3, 1.0]), torch.tensor([-1.0, -1.0]), torch.tensor([0.0, 1.0]))
    False
    >>> _cancels(torch.tensor([1e-3, 1.0]), torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]))
    True
    """
    # z⁻ < 0 (it carries −stabilizer), so z⁺ < |z⁻| / C is z⁻ + C·z⁺ < 0. Such outputs are rare (none on a
    # random ResNet50), so a sign test of the smallest z⁻ + C·z⁺ (two passes) settles most calls; only
    # where some exist does the relevance mask decide
    margin = torch.add(negative, positive, alpha=CANCELLATION)
    if margin.numel() == 0 or not bool(margin.min() < 0):
        return False
    return bool(torch.logical_and(margin < 0, relevance != 0).any())


def _alpha_beta_split(op: LinearOp, output: Tensor | None, relevance: Tensor, alpha: float, beta: float,
                      stabilizer: float) -> Tensor | None:
    """α·Aᵀ(R/z⁺) − β·Bᵀ(R/z⁻), A = (W⁺ on x⁺, W⁻ on x⁻), B = (W⁻ on x⁺, W⁺ on x⁻), z⁺ = Ax + b⁺ + s,
    z⁻ = Bx + b⁻ − s; None when the op cannot be split (see `_sign_split`).

    As A + B = W and b⁺ + b⁻ = b, z⁺ = z − z⁻ with z the forward output, so one call of the op (for z⁻)
    suffices. The subtraction's error is a few ulps of |z| + |z⁻|: as accurate as a call wherever z ≥ 0
    (there z⁺ ≥ |z| and z⁺ ≥ |z⁻|), and within `CANCELLATION` times a call's where z < 0 but z⁺ is no
    smaller than |z⁻| / CANCELLATION (convs feeding a residual sum, whose negative outputs get relevance).
    Where relevance meets a z⁺ smaller than that, z⁺ gets its own call. β = 0 (ZPlus) needs neither.
    """
    wp, wn, bp, bn = _signed_parameters(op)
    split = _sign_split(op, wp, wn, "alpha-beta-split")
    if split is None:
        return None
    if beta:
        negative = _shifted_part(op, split.x, split.second, bn, -stabilizer)
        pair = _vjp_pair(op, negative, ("alpha-beta-pair", alpha, beta, split.stacked),
                         lambda: (split.first * alpha, split.second * -beta))
        positive = torch.sub(output, negative, out=None if pair is None else pair.first).clamp_(min=stabilizer)
        if _cancels(positive, negative, relevance):
            direct = _shifted_part(op, split.x, split.first, bp, stabilizer)
            positive = direct if pair is None else positive.copy_(direct)
        if pair is not None:  # α and −β sit in the pair's weights
            torch.div(relevance, positive, out=positive)
            torch.div(relevance, negative, out=pair.second)
            return split.finish(op.input_vjp(pair.weight, pair.grads, split.x))
    else:
        positive = _shifted_part(op, split.x, split.first, bp, stabilizer)
    torch.div(relevance, positive, out=positive)
    grad = op.input_vjp(split.first, positive.mul_(alpha) if alpha != 1 else positive, split.x)
    if beta:
        torch.div(relevance, negative, out=negative)
        grad = _accumulate(op, grad, op.input_vjp(split.second, negative.mul_(-beta), split.x))
    return split.finish(grad)


class AlphaBeta(LinearRule):
    """α times the positive minus β times the negative contributions, each normalized on its own."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6):
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}")
        self.alpha, self.beta, self.stabilizer = alpha, beta, stabilizer

    @property
    def uses_output(self) -> bool:
        return bool(self.beta)

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        split = _alpha_beta_split(op, output, relevance, self.alpha, self.beta, self.stabilizer)
        if split is not None:
            return split
        xp, xn = op.x.clamp(min=0), op.x.clamp(max=0)
        wp, wn, bp, bn = _signed_parameters(op)
        positive = relevance / stabilize(op.part(xp, wp, bp) + op.part(xn, wn, None), self.stabilizer)
        negative = relevance / stabilize(op.part(xp, wn, bn) + op.part(xn, wp, None), self.stabilizer)
        return self.alpha * (xp * op.input_vjp(wp, positive, xp) + xn * op.input_vjp(wn, positive, xn)) - self.beta * (
            xp * op.input_vjp(wn, negative, xp) + xn * op.input_vjp(wp, negative, xn)
        )


class ZPlus(LinearRule):
    """Only positive contributions (x⁺W⁺ + x⁻W⁻), as Zennit's ZPlus (= AlphaBeta(1, 0))."""

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        split = _alpha_beta_split(op, None, relevance, 1.0, 0.0, self.stabilizer)
        if split is not None:
            return split
        wp, wn, bp, _ = _signed_parameters(op)
        xp, xn = op.x.clamp(min=0), op.x.clamp(max=0)
        scaled = relevance / stabilize(op.part(xp, wp, bp) + op.part(xn, wn, None), self.stabilizer)
        return xp * op.input_vjp(wp, scaled, xp) + xn * op.input_vjp(wn, scaled, xn)


class Gamma(LinearRule):
    """Favor contributions of the output's sign by γ (generalized to negative inputs, as in Zennit 0.5).

    R_x = x ⊙ (A↑ᵀ(R/z↑ where z > 0) + A↓ᵀ(R/z↓ where z < 0)), A↑ = W + γW⁺, A↓ = W + γW⁻, z↑ = A↑x + b↑,
    z↓ = A↓x + b↓. On ops it can split (`_sign_split`) it costs one extra call of the op and one vjp behind a
    ReLU, one call and two vjps elsewhere (see `_split`).
    """

    uses_output = True

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6):
        self.gamma, self.stabilizer = gamma, stabilizer

    def _parameters(self, op: LinearOp) -> tuple:
        """(W + γW⁺, W + γW⁻, b + γb⁺, b + γb⁻)."""
        g = self.gamma
        wp, wn, bp, bn = _signed_parameters(op)
        up = None if wp is None else op.weight + g * wp
        un = None if wn is None else op.weight + g * wn
        return up, un, None if bp is None else op.bias + g * bp, None if bn is None else op.bias + g * bn

    def _split(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor | None:
        """z↑ from one call (A↑ on x⁺, A↓ on x⁻, see `_sign_split`); z↓ = (2 + γ)z − z↑ from the forward
        output z (the two parts sum to (2 + γ)W, and the same for the biases), needed only when some relevance
        sits where z ≤ 0 — never behind a ReLU, whose zeroed outputs pass no relevance on, so there one call
        and one vjp suffice. z↑ counts only where z > 0, where z↑ ≥ z > 0, and z↓ only where z < 0, where
        z↓ ≤ z < 0, so the stabilizer is a bias (and a clamp keeps the unused entries finite). The
        subtraction's error, a few ulps of (2 + γ)|W||x| + |A↑||x|, is within a small factor of a direct
        call's (A↓ mixes signs too). None when the op cannot be split."""
        up, un, bu, _ = op.cached(("gamma", id(self)), lambda: self._parameters(op))
        split = _sign_split(op, up, un, ("gamma-split", id(self)))
        if split is None:
            return None
        z_up = _shifted_part(op, split.x, split.first, bu, self.stabilizer)
        downward = relevance_off_positive(output, relevance)
        if downward:
            z_down = torch.mul(output, 2 + self.gamma).sub_(z_up).clamp_(max=-self.stabilizer)
        z_up.clamp_(min=self.stabilizer)
        if not downward:
            return split.finish(op.input_vjp(split.first, torch.div(relevance, z_up, out=z_up), split.x))
        pair = _vjp_pair(op, z_up, ("gamma-pair", id(self), split.stacked), lambda: (split.first, split.second))
        up = torch.div(relevance, z_up, out=z_up if pair is None else pair.first).masked_fill_(output <= 0, 0)
        down = torch.div(relevance, z_down, out=z_down if pair is None else pair.second).masked_fill_(output >= 0, 0)
        if pair is not None:
            return split.finish(op.input_vjp(pair.weight, pair.grads, split.x))
        grad = op.input_vjp(split.first, up, split.x)
        return split.finish(_accumulate(op, grad, op.input_vjp(split.second, down, split.x)))

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        split = self._split(op, output, relevance)
        if split is not None:
            return split
        up, un, bp, bn = op.cached(("gamma", id(self)), lambda: self._parameters(op))
        xp, xn = op.x.clamp(min=0), op.x.clamp(max=0)
        positive = (output > 0) * relevance / stabilize(op.part(xp, up, bp) + op.part(xn, un, None), self.stabilizer)
        negative = (output < 0) * relevance / stabilize(op.part(xp, un, bn) + op.part(xn, up, None), self.stabilizer)
        return (
            xp * op.input_vjp(up, positive, xp)
            + xn * op.input_vjp(un, positive, xn)
            + xp * op.input_vjp(un, negative, xp)
            + xn * op.input_vjp(up, negative, xn)
        )


class Flat(LinearRule):
    """Spread relevance uniformly over each output's receptive field (inputs and weights one, bias zero).

    The denominator does not depend on the input, so it is computed once per node and input shape.
    """

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer

    def _weights(self, weight: Tensor | None) -> Tensor | None:
        return None if weight is None else torch.ones_like(weight)

    def _bias(self, bias: Tensor | None) -> Tensor | None:
        return None

    def _reference(self, op: LinearOp) -> tuple[Tensor | None, Tensor, Tensor]:
        ones = torch.ones_like(op.x)
        weight = self._weights(op.weight)
        return weight, ones, stabilize(op.part(ones, weight, self._bias(op.bias)), self.stabilizer)

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        weight, ones, denominator = op.cached((type(self).__name__, id(self)), lambda: self._reference(op))
        return op.input_vjp(weight, relevance / denominator, ones)


class WSquare(Flat):
    """Spread relevance in proportion to squared weights (and squared bias), independent of the input."""

    def _weights(self, weight: Tensor | None) -> Tensor | None:
        return None if weight is None else torch.square(weight)

    _bias = _weights


class ZBox(LinearRule):
    """For bounded inputs (pixels in [low, high]): the z^B rule of deep Taylor decomposition.

    z = Wx + b − (W⁺low + b⁺) − (W⁻high + b⁻): the first term is the forward output, the others depend
    only on the bounds and are computed once per node. On ops that stack inputs, the three vjps
    x ⊙ Wᵀs − low ⊙ W⁺ᵀs − high ⊙ W⁻ᵀs are one vjp of [W, W⁺, W⁻] against [x; −low; −high].
    """

    uses_output = True

    def __init__(self, low: float | Tensor, high: float | Tensor, stabilizer: float = 1e-6):
        self.low, self.high, self.stabilizer = low, high, stabilizer

    def _bounds(self, op: LinearOp) -> tuple:
        low = torch.as_tensor(self.low, dtype=op.x.dtype, device=op.x.device).expand_as(op.x)
        high = torch.as_tensor(self.high, dtype=op.x.dtype, device=op.x.device).expand_as(op.x)
        wp, wn, bp, bn = _signed_parameters(op)
        stacked = None
        if op.input_axes is not None and op.owns_vjp:
            axis, weight_axis = op.input_axes
            stacked = torch.cat([op.weight, wp, wn], weight_axis), torch.cat([-low, -high], axis)
        return low, high, wp, wn, op.part(low, wp, bp), op.part(high, wn, bn), stacked

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        low, high, wp, wn, z_low, z_high, stacked = op.cached(("zbox", id(self)), lambda: self._bounds(op))
        scaled = stabilized_ratio(relevance, output - z_low - z_high, self.stabilizer)
        if stacked is not None:
            weights, bounds = stacked
            axis = op.input_axes[0]
            sources = torch.cat([op.x, bounds], axis)
            at_x, at_low, at_high = op.input_vjp(weights, scaled, sources).mul_(sources).chunk(3, axis)
            return at_x.add(at_low).add_(at_high)
        return (
            op.times_x(op.input_vjp(op.weight, scaled))
            - low * op.input_vjp(wp, scaled, low)
            - high * op.input_vjp(wn, scaled, high)
        )


class Pass:
    """Identity: relevance passes unchanged (elementwise nonlinearities, normalizer scales)."""

    def __repr__(self) -> str:
        return "Pass()"


class Constant:
    """Treat the node's output as a constant: no relevance flows into it (CP-LRP's attention weights)."""

    def __repr__(self) -> str:
        return "Constant()"
