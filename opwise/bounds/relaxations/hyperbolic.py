"""atan, asinh, sinh and cosh: the total inverse-trigonometric and hyperbolic functions control and physics
models use (angles from coordinates, stretched activations). Each has one curvature change at most:

- atan and asinh: increasing, convex below 0 and concave above (the S shape of tanh);
- sinh: increasing, concave below 0 and convex above (the mirrored S, as x³);
- cosh: convex everywhere, smallest (1) at 0.

The functions defined on part of the line (asin, acos, atanh, acosh, tan) are in limited_domain.py.

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lines = relaxation_for("aten.atan.default").relax(torch.tensor([-1.0]), torch.tensor([2.0]))
>>> bool((lines.lower_slope * 0.5 + lines.lower_intercept <= torch.atan(torch.tensor(0.5))).all())
True
"""

from __future__ import annotations

import torch

from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.relaxations.registry import register_relaxation


class AtanRelaxation(CurvatureRelaxation):
    """atan' = 1 / (1 + x²); convex below the inflection at 0."""

    inflection_points = (0.0,)
    monotone = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return 1 / (1 + x * x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x <= 0


class AsinhRelaxation(AtanRelaxation):
    """asinh' = 1 / √(1 + x²); convex below the inflection at 0."""

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asinh(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(1 + x * x)


class SinhRelaxation(CurvatureRelaxation):
    """sinh' = cosh; convex above the inflection at 0."""

    inflection_points = (0.0,)
    monotone = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sinh(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cosh(x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x >= 0


class CoshRelaxation(CurvatureRelaxation):
    """cosh' = sinh; convex everywhere, decreasing below 0 and increasing above."""

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cosh(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sinh(x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x, dtype=torch.bool)

    def image(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact range: 1 where the interval holds 0, else the nearer end's value; the farther end's above."""
        at_lower, at_upper = torch.cosh(lower), torch.cosh(upper)
        low = torch.where((lower < 0) & (upper > 0), torch.ones_like(lower), torch.minimum(at_lower, at_upper))
        return low, torch.maximum(at_lower, at_upper)


@register_relaxation("aten.atan.default")
def atan(args, kwargs) -> AtanRelaxation:
    """The atan relaxation (no arguments)."""
    return AtanRelaxation()


@register_relaxation("aten.asinh.default")
def asinh(args, kwargs) -> AsinhRelaxation:
    """The asinh relaxation (no arguments)."""
    return AsinhRelaxation()


@register_relaxation("aten.sinh.default")
def sinh(args, kwargs) -> SinhRelaxation:
    """The sinh relaxation (no arguments)."""
    return SinhRelaxation()


@register_relaxation("aten.cosh.default")
def cosh(args, kwargs) -> CoshRelaxation:
    """The cosh relaxation (no arguments)."""
    return CoshRelaxation()
