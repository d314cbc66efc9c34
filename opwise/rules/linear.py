"""LRP rules for operations linear in the explained input, named and parameterized as in Zennit.

Every rule is `x' ⊙ vjp(op with modified weights)(R / stabilized z')` summed over a few parts, so one
implementation serves convolution, linear, batch norm, pooling and means (see `LinearOp`). Rules are tiny
objects; write your own by subclassing `LinearRule` and overriding `relevance`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

Tensor = torch.Tensor


def stabilize(value: Tensor, epsilon: float) -> Tensor:
    """Push `value` away from zero by `epsilon` in its own sign (zero counts as positive).

    >>> stabilize(torch.tensor([-1.0, 0.0, 2.0]), 0.5)
    tensor([-1.5000,  0.5000,  2.5000])
    """
    return value + torch.where(value >= 0, epsilon, -epsilon)


@dataclasses.dataclass
class LinearOp:
    """One call of a linear operation: `forward(x, weight, bias)` with the call's other arguments bound.

    `input_vjp(weight, grad)` is the vector-Jacobian product with respect to `x` (independent of `x`
    because the op is linear in it); ops that know a cheaper form than autograd pass it in.
    """

    forward: Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
    weight: Tensor | None
    bias: Tensor | None
    x: Tensor
    fast_vjp: Callable[[Tensor | None, Tensor], Tensor] | None = None

    def input_vjp(self, weight: Tensor | None, grad: Tensor, x: Tensor | None = None) -> Tensor:
        if self.fast_vjp is not None:
            return self.fast_vjp(weight, grad)
        source = (self.x if x is None else x).detach().requires_grad_()
        with torch.enable_grad():
            out = self.forward(source, weight, None)
        return torch.autograd.grad(out, source, grad)[0]

    def part(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        return self.forward(x, weight, bias)


def _signed_parts(x: Tensor) -> tuple[Tensor, Tensor | None]:
    """x⁺ and x⁻; x⁻ is None when x has no negative entry (after a ReLU), which skips half the work."""
    if bool(x.min() >= 0):
        return x, None
    return x.clamp(min=0), x.clamp(max=0)


def _mod(param: Tensor | None, function: Callable[[Tensor], Tensor]) -> Tensor | None:
    return None if param is None else function(param)


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
        return op.x * op.input_vjp(op.weight, relevance / stabilize(output, self.epsilon))


class Norm(Epsilon):
    """Epsilon with a fixed tiny stabilizer, for ops without parameters (pooling, means, sums)."""

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__(epsilon=stabilizer)


class ZPlus(LinearRule):
    """Only positive contributions (x⁺W⁺ + x⁻W⁻), as Zennit's ZPlus (= AlphaBeta(1, 0))."""

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        xp, xn = _signed_parts(op.x)
        wp, wn = _mod(op.weight, lambda w: w.clamp(min=0)), _mod(op.weight, lambda w: w.clamp(max=0))
        z = op.part(xp, wp, _mod(op.bias, lambda b: b.clamp(min=0)))
        if xn is None:
            return xp * op.input_vjp(wp, relevance / stabilize(z, self.stabilizer), xp)
        scaled = relevance / stabilize(z + op.part(xn, wn, None), self.stabilizer)
        return xp * op.input_vjp(wp, scaled, xp) + xn * op.input_vjp(wn, scaled, xn)


class AlphaBeta(LinearRule):
    """α times the positive minus β times the negative contributions, each normalized on its own."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6):
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}")
        self.alpha, self.beta, self.stabilizer = alpha, beta, stabilizer

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        xp, xn = op.x.clamp(min=0), op.x.clamp(max=0)
        wp, wn = _mod(op.weight, lambda w: w.clamp(min=0)), _mod(op.weight, lambda w: w.clamp(max=0))
        bp, bn = _mod(op.bias, lambda b: b.clamp(min=0)), _mod(op.bias, lambda b: b.clamp(max=0))
        positive = relevance / stabilize(op.part(xp, wp, bp) + op.part(xn, wn, None), self.stabilizer)
        negative = relevance / stabilize(op.part(xp, wn, bn) + op.part(xn, wp, None), self.stabilizer)
        return self.alpha * (xp * op.input_vjp(wp, positive, xp) + xn * op.input_vjp(wn, positive, xn)) - self.beta * (
            xp * op.input_vjp(wn, negative, xp) + xn * op.input_vjp(wp, negative, xn)
        )


class Gamma(LinearRule):
    """Favor contributions of the output's sign by γ (generalized to negative inputs, as in Zennit 0.5)."""

    uses_output = True

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6):
        self.gamma, self.stabilizer = gamma, stabilizer

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        g = self.gamma
        xp, xn = op.x.clamp(min=0), op.x.clamp(max=0)
        up = _mod(op.weight, lambda w: w + g * w.clamp(min=0))
        un = _mod(op.weight, lambda w: w + g * w.clamp(max=0))
        bp, bn = _mod(op.bias, lambda b: b + g * b.clamp(min=0)), _mod(op.bias, lambda b: b + g * b.clamp(max=0))
        positive = (output > 0) * relevance / stabilize(op.part(xp, up, bp) + op.part(xn, un, None), self.stabilizer)
        negative = (output < 0) * relevance / stabilize(op.part(xp, un, bn) + op.part(xn, up, None), self.stabilizer)
        return (
            xp * op.input_vjp(up, positive, xp)
            + xn * op.input_vjp(un, positive, xn)
            + xp * op.input_vjp(un, negative, xp)
            + xn * op.input_vjp(up, negative, xn)
        )


class Flat(LinearRule):
    """Spread relevance uniformly over each output's receptive field (inputs and weights one, bias zero)."""

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = stabilizer

    def _weights(self, weight: Tensor | None) -> Tensor | None:
        return _mod(weight, torch.ones_like)

    def _bias(self, bias: Tensor | None) -> Tensor | None:
        return None

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        ones = torch.ones_like(op.x)
        weight, bias = self._weights(op.weight), self._bias(op.bias)
        z = op.part(ones, weight, bias)
        return op.input_vjp(weight, relevance / stabilize(z, self.stabilizer), ones)


class WSquare(Flat):
    """Spread relevance in proportion to squared weights (and squared bias), independent of the input."""

    def _weights(self, weight: Tensor | None) -> Tensor | None:
        return _mod(weight, torch.square)

    _bias = _weights


class ZBox(LinearRule):
    """For bounded inputs (pixels in [low, high]): the z^B rule of deep Taylor decomposition."""

    def __init__(self, low: float | Tensor, high: float | Tensor, stabilizer: float = 1e-6):
        self.low, self.high, self.stabilizer = low, high, stabilizer

    def relevance(self, op: LinearOp, output: Tensor, relevance: Tensor) -> Tensor:
        low = torch.as_tensor(self.low, dtype=op.x.dtype).expand_as(op.x)
        high = torch.as_tensor(self.high, dtype=op.x.dtype).expand_as(op.x)
        wp, wn = _mod(op.weight, lambda w: w.clamp(min=0)), _mod(op.weight, lambda w: w.clamp(max=0))
        bp, bn = _mod(op.bias, lambda b: b.clamp(min=0)), _mod(op.bias, lambda b: b.clamp(max=0))
        z = op.part(op.x, op.weight, op.bias) - op.part(low, wp, bp) - op.part(high, wn, bn)
        scaled = relevance / stabilize(z, self.stabilizer)
        return (
            op.x * op.input_vjp(op.weight, scaled)
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
