"""sin and cos: non-monotone, with curvature changing every π; sound on intervals of any width.

cos(x) = sin(x + π/2), so one class with a phase serves both. Inside one convex or concave piece and
across one inflection point the tangent/secant lines of `curvature` apply; across more, support lines
whose offsets come from the closed-form critical points of sin(y) - s·y (cos y = s).

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lines = relaxation_for("aten.sin.default").relax(torch.tensor([-10.0]), torch.tensor([10.0]))
>>> bool((lines.upper_slope * 1.5708 + lines.upper_intercept >= 1.0).all())
True
"""

from __future__ import annotations

import math

import torch

from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.relaxations.registry import register_relaxation


class SineRelaxation(CurvatureRelaxation):
    """f(x) = sin(x + phase); phase π/2 gives cos."""

    def __init__(self, phase: float = 0.0):
        self.phase = phase
        # sin and cos have a split-point table each; other phases have none
        self.split_table = {0.0: "sin", math.pi / 2: "cos"}.get(phase)

    @classmethod
    def tabled_variants(cls) -> list["SineRelaxation"]:
        """sin and cos (phase π/2), one table each."""
        return [cls(), cls(phase=math.pi / 2)]

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x + self.phase)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cos(x + self.phase)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x + self.phase) <= 0

    def image(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact range of the function on [lower, upper] (what interval propagation uses)."""
        return sine_extremes(lower + self.phase, upper + self.phase)

    def inflections(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inflections are the zeros kπ of sin(x + phase)."""
        first_index = torch.floor((lower + self.phase) / math.pi) + 1
        count = (torch.ceil((upper + self.phase) / math.pi) - first_index).clamp_min(0).long()
        first = first_index * math.pi - self.phase
        return count, torch.where(count > 0, first, lower)

    def support_offsets(self, lower: torch.Tensor, upper: torch.Tensor, slope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Critical points of sin(y) - s·y are ±arccos(s) + 2kπ; along k their values move linearly, so
        only the first and last inside the interval can be extreme."""
        low_y, high_y = lower + self.phase, upper + self.phase
        angle = torch.arccos(slope.detach().clamp(-1.0, 1.0))
        candidates = [low_y, high_y]
        for base in (angle, -angle):
            first = torch.ceil((low_y - base) / (2 * math.pi))
            last = torch.floor((high_y - base) / (2 * math.pi))
            exists = first <= last
            for k in (first, last):
                candidates.append(torch.where(exists, (base + 2 * math.pi * k).clamp(low_y, high_y), low_y))
        points = torch.stack(candidates).detach()
        values = torch.sin(points) - slope * (points - self.phase)
        return values.min(dim=0).values, values.max(dim=0).values


def sine_extremes(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact (min, max) of sin over [lower, upper], elementwise (support lines of slope 0).

    >>> sine_extremes(torch.tensor([0.0]), torch.tensor([4.0]))
    (tensor([-0.7568]), tensor([1.]))
    """
    zero = torch.zeros_like(lower, dtype=torch.float64)
    low, high = SineRelaxation().support_offsets(lower.double(), upper.double(), zero)
    return low.to(lower.dtype), high.to(lower.dtype)


@register_relaxation("aten.sin.default")
def sin(args, kwargs) -> SineRelaxation:
    """The sin relaxation (no arguments)."""
    return SineRelaxation()


@register_relaxation("aten.cos.default")
def cos(args, kwargs) -> SineRelaxation:
    """The cos relaxation: sin shifted by π/2."""
    return SineRelaxation(phase=math.pi / 2)
