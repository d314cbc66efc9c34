"""sign: a step from −1 to 1 (0 at 0), as in binarized networks (VNN-COMP's traffic-sign nets).

Monotone, so intervals take sign(l), sign(u). Lines: on an interval that does not cross 0 the step is
constant; across 0 a constant bound wastes the side where the step is far from it, so each bound picks,
as CROWN does for ReLU, between its constant and the line through its far corner: the upper line through
(l, −1) and (0, 1) where the interval reaches further below 0 than above, else 1; the lower line through
(0, −1) and (u, 1) where it reaches further above, else −1.

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lines = relaxation_for("aten.sign.default").relax(torch.tensor([-3.0]), torch.tensor([1.0]))
>>> lines.upper_slope, lines.upper_intercept, lines.lower_slope, lines.lower_intercept
(tensor([0.6667]), tensor([1.]), tensor([0.]), tensor([-1.]))
"""

from __future__ import annotations

import torch

from opwise.bounds.relaxations.base import LinearRelaxation
from opwise.bounds.relaxations.registry import register_relaxation


class SignRelaxation:
    """Constant or corner lines for sign (no α: the choice is discrete)."""

    monotone = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x)

    def relax(self, lower: torch.Tensor, upper: torch.Tensor, alpha=None) -> LinearRelaxation:
        crossing = (lower < 0) & (upper > 0)
        below = crossing & (-lower > upper)  # upper line through (l, −1) and (0, 1)
        above = crossing & ~below  # lower line through (0, −1) and (u, 1)
        zero = torch.zeros_like(lower)
        safe_lower = torch.where(below, lower, -torch.ones_like(lower))
        safe_upper = torch.where(above, upper, torch.ones_like(upper))
        upper_slope = torch.where(below, -2 / safe_lower, zero)
        lower_slope = torch.where(above, 2 / safe_upper, zero)
        upper_intercept = torch.where(below, torch.ones_like(lower), torch.sign(upper))
        lower_intercept = torch.where(above, -torch.ones_like(lower), torch.sign(lower))
        return LinearRelaxation(lower_slope, lower_intercept, upper_slope, upper_intercept)


@register_relaxation("aten.sign.default")
def sign(args, kwargs) -> SignRelaxation:
    """The sign relaxation (no arguments)."""
    return SignRelaxation()
