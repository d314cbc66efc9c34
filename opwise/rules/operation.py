"""`LinearOp`: one call of an operation linear in its explained input, as the linear rules see it.

Besides the op's forward and input vjp it offers what makes the rules cheap (issue 4, "speed by design"):
modified weights built once per node and parameter version (`cached`), x ⊙ grad in place (`times_x`),
and the stabilized division `R / (z ± ε)` in a single temporary (`stabilized_ratio`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

Tensor = torch.Tensor


def stabilize(value: Tensor, epsilon: float) -> Tensor:
    """Push `value` away from zero by `epsilon` in its own sign (zero counts as positive).

    >>> stabilize(torch.tensor([-1.0, 0.0, 2.0]), 0.5)
    tensor([-1.5000,  0.5000,  2.5000])
    """
    return value + torch.where(value >= 0, epsilon, -epsilon)


def stabilized_ratio(relevance: Tensor, z: Tensor, epsilon: float) -> Tensor:
    """`relevance / stabilize(z, epsilon)` (same bits) with one temporary instead of three; z is left alone.

    >>> stabilized_ratio(torch.tensor([1.0, 1.0]), torch.tensor([-1.0, 0.0]), 1.0)
    tensor([-0.5000,  1.0000])
    """
    denominator = torch.empty_like(z)
    torch.ge(z, 0, out=denominator)
    denominator.mul_(2 * epsilon).sub_(epsilon).add_(z)
    if relevance.shape != denominator.shape:
        return relevance / denominator
    return torch.div(relevance, denominator, out=denominator)


def _stamp(tensor: Tensor | None) -> tuple | None:
    return None if tensor is None else (tensor.data_ptr(), tensor._version, tuple(tensor.shape), tensor.dtype)


@dataclasses.dataclass
class LinearOp:
    """One call of a linear operation: `forward(x, weight, bias)` with the call's other arguments bound.

    `input_vjp(weight, grad)` is the vector-Jacobian product with respect to `x` (independent of `x`'s values
    because the op is linear in it); ops that know a cheaper form than autograd pass it in (`fast_vjp(weight,
    grad, x)`, `owns_vjp` when that form returns a new tensor a rule may overwrite). `input_axes` = (axis of
    x, axis of the weight) holding the input channels, for ops that accept more of them in one call (two
    inputs side by side meeting two weight sets: the rules' x⁺ and x⁻); `output_axes` the same for the output
    channels (two vjps Aᵀg + Bᵀh as one, of [A; B] against [g; h]). `cache` is a per-node dict for modified
    parameters, given only when weight and bias are constants of the graph; `layout` is a memory order (as
    for `torch.empty_permuted`) for x ⊙ grad when x's own would iterate badly (a sum over a small trailing
    axis).

    >>> op = LinearOp(lambda x, w, b: x @ w.T, torch.eye(2), None, torch.tensor([[1.0, 2.0]]), input_axes=(-1, 1))
    >>> op.times_x(op.input_vjp(2 * torch.eye(2), torch.ones(1, 2)))
    tensor([[2., 4.]])
    """

    forward: Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
    weight: Tensor | None
    bias: Tensor | None
    x: Tensor
    fast_vjp: Callable[[Tensor | None, Tensor, Tensor], Tensor] | None = None
    owns_vjp: bool = False
    input_axes: tuple[int, int] | None = None
    output_axes: tuple[int, int] | None = None
    cache: dict | None = None
    layout: tuple[int, ...] | None = None

    def input_vjp(self, weight: Tensor | None, grad: Tensor, x: Tensor | None = None) -> Tensor:
        if self.fast_vjp is not None:
            return self.fast_vjp(weight, grad, self.x if x is None else x)
        source = (self.x if x is None else x).detach().requires_grad_()
        with torch.enable_grad():
            out = self.forward(source, weight, None)
        return torch.autograd.grad(out, source, grad)[0]

    def part(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        return self.forward(x, weight, bias)

    def times_x(self, grad: Tensor) -> Tensor:
        """x ⊙ grad, in place in `grad` when the vjp handed it over as a new tensor."""
        if self.owns_vjp and grad.shape == self.x.shape:
            return grad.mul_(self.x)
        if self.layout is not None:
            out = torch.empty_permuted(self.x.shape, self.layout, dtype=self.x.dtype, device=self.x.device)
            return torch.mul(self.x, grad, out=out)
        return self.x * grad

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """`build()`, computed once per node while weight, bias and input shape stay the same."""
        if self.cache is None:
            return build()
        stamp = (_stamp(self.weight), _stamp(self.bias), tuple(self.x.shape), self.x.dtype)
        hit = self.cache.get(key)
        if hit is None or hit[0] != stamp:
            hit = self.cache[key] = (stamp, build())
        return hit[1]

    def nonnegative(self) -> bool:
        """Whether x has no negative entry (after a ReLU): the rules' negative-input parts vanish."""
        return self.x.numel() == 0 or bool(self.x.min() >= 0)
