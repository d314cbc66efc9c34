"""erfinv, lgamma and digamma: special functions of probit layers (Gaussian quantiles from probabilities), of
count and Bayesian likelihoods (log Γ) and of their gradients (ψ = (log Γ)').

Each is finite on part of the line and has one curvature change at most there, so `LimitedDomainRelaxation`
lines it and says what happens outside (unbounded lines and ranges, never NaN):

- erfinv on (−1, 1): increasing, concave on (−1, 0] and convex on [0, 1), infinite at ±1;
- lgamma on (0, ∞): convex (its second derivative ψ' = Σ_k 1/(x + k)² is positive), decreasing then increasing
  with its minimum at x* ≈ 1.4616, infinite at 0;
- digamma on (0, ∞): increasing and concave (ψ'' = −2 Σ_k 1/(x + k)³ < 0), −∞ at 0.

Both Γ functions are also finite between the poles at 0, −1, −2, ...; intervals there are treated as outside
the domain (unbounded lines): a sound answer, though a loose one (shift the input above 0 in the model).

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lgamma = relaxation_for("aten.lgamma.default")
>>> low, high = lgamma.image(torch.tensor([0.5, 3.0]), torch.tensor([2.0, 4.0]))
>>> [round(v, 4) for v in low.tolist()], [round(v, 4) for v in high.tolist()]  # the first holds the minimum
([-0.1215, 0.6931], [0.5724, 1.7918])
"""

from __future__ import annotations

import math

import torch

from opwise.bounds.relaxations.limited_domain import LimitedDomainRelaxation
from opwise.bounds.relaxations.registry import register_relaxation

#: where lgamma is smallest on (0, ∞): the positive root of digamma
LGAMMA_MINIMUM = 1.4616321449683622


class ErfinvRelaxation(LimitedDomainRelaxation):
    """erfinv' = (√π / 2) · exp(erfinv(x)²) on (−1, 1); concave below the inflection at 0, convex above."""

    name = "erfinv"
    low, high = -1.0, 1.0
    open_ends = True
    inflection_points = (0.0,)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erfinv(x)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        return math.sqrt(math.pi) / 2 * torch.exp(torch.erfinv(x) ** 2)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x >= 0


class LgammaRelaxation(LimitedDomainRelaxation):
    """log Γ(x) on (0, ∞): convex, with slope digamma; not monotone, so its range takes the minimum at x*."""

    name = "lgamma"
    low = 0.0
    open_ends = True

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(x)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        return torch.digamma(x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x, dtype=torch.bool)

    def image(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact range: the larger end value above, f at x* clamped into [l, u] below (convex); the whole line
        where the interval leaves (0, ∞)."""
        inside = self.inside(lower, upper)
        lower, upper = self._clamped(lower, upper)
        low = self.value(torch.minimum(torch.maximum(torch.full_like(lower, LGAMMA_MINIMUM), lower), upper))
        high = torch.maximum(self.value(lower), self.value(upper))
        infinite = torch.full_like(low, math.inf)
        return torch.where(inside, low, -infinite), torch.where(inside, high, infinite)


class DigammaRelaxation(LimitedDomainRelaxation):
    """ψ(x) on (0, ∞): increasing and concave, with slope trigamma ψ' = polygamma(1, x)."""

    name = "digamma"
    low = 0.0
    open_ends = True

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.digamma(x)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        return torch.polygamma(1, x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x, dtype=torch.bool)


@register_relaxation("aten.erfinv.default")
def erfinv(args, kwargs) -> ErfinvRelaxation:
    """The erfinv relaxation (no arguments)."""
    return ErfinvRelaxation()


@register_relaxation("aten.lgamma.default")
def lgamma(args, kwargs) -> LgammaRelaxation:
    """The lgamma relaxation (no arguments)."""
    return LgammaRelaxation()


@register_relaxation("aten.digamma.default")
def digamma(args, kwargs) -> DigammaRelaxation:
    """The digamma relaxation (no arguments)."""
    return DigammaRelaxation()
