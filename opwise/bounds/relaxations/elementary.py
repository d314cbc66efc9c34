"""exp, expm1, log, log1p, abs and powers (pow with a scalar exponent, reciprocal, sqrt, rsqrt): tangent + secant lines.

Each is convex or concave on its domain, except odd powers (concave below 0, convex above). An interval
outside the domain (log of x <= 0, 1/x across 0, sqrt of x < 0) cannot be bounded by lines and raises
an OpwiseError; a division by a bounded tensor reaches here as a reciprocal.

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lines = relaxation_for("aten.pow.Tensor_Scalar", (2,)).relax(torch.tensor([-1.0]), torch.tensor([3.0]))
>>> lines.upper_slope, lines.upper_intercept
(tensor([2.]), tensor([3.]))
"""

from __future__ import annotations

import torch

from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.relaxations.registry import register_relaxation
from opwise.errors import OpwiseError


class ExpRelaxation(CurvatureRelaxation):
    """exp is convex everywhere."""

    split_table = "exp"

    monotone = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x, dtype=torch.bool)


class Expm1Relaxation(ExpRelaxation):
    """exp(x) − 1: exp's shape one lower, so exp's split-point table serves it (torch computes it exactly
    near 0)."""

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.expm1(x)


class LogRelaxation(CurvatureRelaxation):
    """log(x + shift) is concave on x > −shift (log: shift 0; log1p: shift 1)."""

    monotone = True

    def __init__(self, shift: float = 0.0, name: str = "log"):
        self.shift, self.name = shift, name

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log1p(x) if self.shift == 1.0 else torch.log(x + self.shift)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return 1 / (x + self.shift)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x, dtype=torch.bool)

    def check_domain(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        if bool((lower <= -self.shift).any()):
            raise OpwiseError(
                f"{self.name} needs an input interval above {-self.shift:g}, got a lower bound of "
                f"{lower.min().item():.4g}; tighten the bounds of its input (a smaller ε, or clamp the input "
                "away from that point in the model)"
            )


class AbsRelaxation(CurvatureRelaxation):
    """|x| is convex; its range on an interval across 0 starts at 0."""

    #: branch-and-bound splits the input at 0 only: on either side |x| is linear and its lines are exact
    split_kink = 0.0

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x, dtype=torch.bool)

    def image(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.where((lower < 0) & (upper > 0), torch.zeros_like(lower), torch.minimum(lower.abs(), upper.abs()))
        return low, torch.maximum(lower.abs(), upper.abs())


class PowerRelaxation(CurvatureRelaxation):
    """x ** p for a scalar p: integer powers on all reals (negative ones away from 0), others on x >= 0."""

    def __init__(self, exponent: float, name: str = "pow"):
        self.exponent, self.name = float(exponent), name
        self.integer = self.exponent == round(self.exponent)
        odd = self.integer and int(self.exponent) % 2 != 0
        self.inflection_points = (0.0,) if odd and self.exponent >= 3 else ()
        self.monotone = self.exponent > 0 and (odd or not self.integer)

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.pow(x, self.exponent)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        if self.exponent == 0:
            return torch.zeros_like(x)
        return self.exponent * torch.pow(x, self.exponent - 1)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        """Sign of p (p - 1) x^(p - 2)."""
        curvature = self.exponent * (self.exponent - 1)
        if self.integer and int(self.exponent) % 2 != 0:
            return (x >= 0) == (curvature >= 0)
        return torch.full_like(x, curvature >= 0, dtype=torch.bool)

    def image(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact range on [lower, upper]: x ** p is monotone on each side of 0, and an even positive power
        reaches 0 inside an interval that straddles 0 (so a sum of squares is never bounded below 0)."""
        self.check_domain(lower, upper)
        at_lower, at_upper = self.function(lower), self.function(upper)
        low, high = torch.minimum(at_lower, at_upper), torch.maximum(at_lower, at_upper)
        if self.integer and self.exponent > 0 and int(self.exponent) % 2 == 0:
            low = torch.where((lower < 0) & (upper > 0), torch.zeros_like(low), low)
        return low, high

    def check_domain(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        if self.integer and self.exponent < 0:
            across = (lower <= 0) & (upper >= 0)
            if bool(across.any()):
                raise OpwiseError(
                    f"{self.name} (x ** {self.exponent:g}) is unbounded on an input interval containing 0 "
                    f"(e.g. [{lower[across][0].item():.4g}, {upper[across][0].item():.4g}]); bound propagation "
                    "cannot pass through it: tighten the input bounds or keep the denominator away from 0"
                )
        elif not self.integer:
            outside = lower < 0 if self.exponent > 0 else lower <= 0
            if bool(outside.any()):
                raise OpwiseError(
                    f"{self.name} (x ** {self.exponent:g}) needs an input interval with lower bound "
                    f"{'>= 0' if self.exponent > 0 else '> 0'}, got {lower.min().item():.4g}; "
                    "tighten the bounds of its input"
                )

    def tangent_floor(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """x ** p with 0 < p < 1 has an infinite slope at 0: tangents start just above it."""
        if not self.integer and 0 < self.exponent < 1:
            return torch.where(lower > 0, lower, (upper * 1e-6).clamp_min(1e-30))
        return lower


@register_relaxation("aten.exp.default")
def exp(args, kwargs) -> ExpRelaxation:
    """The exp relaxation (no arguments)."""
    return ExpRelaxation()


@register_relaxation("aten.log.default")
def log(args, kwargs) -> LogRelaxation:
    """The log relaxation (no arguments)."""
    return LogRelaxation()


@register_relaxation("aten.log1p.default")
def log1p(args, kwargs) -> LogRelaxation:
    """log(1 + x) for x > −1."""
    return LogRelaxation(1.0, "log1p")


@register_relaxation("aten.expm1.default")
def expm1(args, kwargs) -> Expm1Relaxation:
    """exp(x) − 1 (no arguments)."""
    return Expm1Relaxation()


@register_relaxation("aten.abs.default")
def absolute(args, kwargs) -> AbsRelaxation:
    """|x| (no arguments)."""
    return AbsRelaxation()


@register_relaxation("aten.pow.Tensor_Scalar")
def power(args, kwargs) -> PowerRelaxation:
    """x ** exponent; the exponent is the node's first argument after the input."""
    return PowerRelaxation(kwargs.get("exponent", args[0] if args else None))


@register_relaxation("aten.reciprocal.default")
def reciprocal(args, kwargs) -> PowerRelaxation:
    """1 / x, for intervals entirely below or entirely above 0."""
    return PowerRelaxation(-1.0, "reciprocal")


@register_relaxation("aten.sqrt.default")
def sqrt(args, kwargs) -> PowerRelaxation:
    """√x for x >= 0."""
    return PowerRelaxation(0.5, "sqrt")


@register_relaxation("aten.rsqrt.default")
def rsqrt(args, kwargs) -> PowerRelaxation:
    """1 / √x for x > 0."""
    return PowerRelaxation(-0.5, "rsqrt")
