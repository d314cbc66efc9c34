"""asin, acos, atanh, acosh and tan: functions defined on part of the line, whose slope (or value) is infinite
at the ends of that part. Control, geometry and physics models use them (angles from ratios, rapidities).

Each is one curvature change at most on its domain, so `CurvatureRelaxation` lines it; what differs is the
domain:

- asin and acos on [−1, 1], with an infinite slope at both ends: tangent points stay a hair inside them
  (`tangent_floor` / `tangent_ceiling`), where any tangent still bounds the piece it touches;
- atanh on (−1, 1) and tan on each branch (kπ − π/2, kπ + π/2), infinite at the ends: an interval must lie
  strictly inside (tan: inside one branch, relaxed as the principal branch shifted by kπ);
- acosh on [1, ∞), with an infinite slope at 1.

An element whose interval leaves the domain gets unbounded lines (−inf below, +inf above; IBP: the whole
line), never lines through NaN: the model itself is NaN or unbounded there, so no bound can hold, and the
engine reports such bounds as unbounded instead of a number. Clamp the function's input in the model (as
`torch.asin(x.clamp(-1, 1))`) or take a smaller ε to get finite bounds.

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lines = relaxation_for("aten.asin.default").relax(torch.tensor([0.2, 0.5]), torch.tensor([1.0, 1.5]))
>>> lines.upper_intercept.isinf().tolist()  # [0.5, 1.5] leaves asin's domain
[False, True]
"""

from __future__ import annotations

import math
import warnings

import torch

from opwise.bounds.relaxations.base import LinearRelaxation
from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.relaxations.registry import register_relaxation

#: how far inside a domain end (relative to the interval's width, at least `LIFT_FLOOR`) tangent points stay where
#: the slope there is infinite
LIFT = 1e-6
LIFT_FLOOR = 1e-12


class LimitedDomainRelaxation(CurvatureRelaxation):
    """A function finite on [low, high] (`open_ends`: only strictly inside); intervals leaving it get unbounded
    lines. `steep_ends`: the ends where the slope is infinite, which tangent points keep away from."""

    name = "function"
    low, high = -math.inf, math.inf
    open_ends = False
    steep_ends: tuple[bool, bool] = (False, False)
    decreasing = False

    def within(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Where [lower, upper] lies in the domain."""
        if self.open_ends:
            return (lower > self.low) & (upper < self.high)
        return (lower >= self.low) & (upper <= self.high)

    def inside(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """`within`, with a warning (once per message) where some interval leaves the domain."""
        inside = self.within(lower, upper)
        if not bool(inside.all()):
            left, right = "()" if self.open_ends else "[]"
            warnings.warn(f"{self.name}: an input interval leaves its domain {left}{self.low:g}, {self.high:g}{right}; "
                          "the bounds that depend on it are unbounded (clamp its input in the model, or take a "
                          "smaller eps)", RuntimeWarning, stacklevel=3)
        return inside

    def _clamped(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The interval pulled into the domain (identical tensors where nothing leaves it, which keeps the
        plan's cache): only to compute finite lines that the outside elements then drop."""
        inside = self.within(lower, upper)
        if bool(inside.all()):
            return lower, upper
        margin = 1e-3 if self.open_ends else 0.0
        low, high = self.low + margin, self.high - margin
        lower = torch.where(inside, lower, lower.clamp(low, high))
        return lower, torch.where(inside, upper, torch.maximum(upper.clamp(low, high), lower))

    def relax(self, lower: torch.Tensor, upper: torch.Tensor, alpha=None) -> LinearRelaxation:
        inside = self.inside(lower, upper)
        lines = super().relax(*self._clamped(lower, upper), alpha)
        if bool(inside.all()):
            return lines
        flat, infinite = torch.zeros_like(lines.lower_slope), torch.full_like(lines.lower_slope, math.inf)
        inside = inside.expand_as(flat)
        return LinearRelaxation(torch.where(inside, lines.lower_slope, flat),
                                torch.where(inside, lines.lower_intercept, -infinite),
                                torch.where(inside, lines.upper_slope, flat),
                                torch.where(inside, lines.upper_intercept, infinite))

    def init_alpha(self, lower: torch.Tensor, upper: torch.Tensor):
        return super().init_alpha(*self._clamped(lower, upper))

    def clamp_alpha(self, alpha, lower: torch.Tensor, upper: torch.Tensor):
        return super().clamp_alpha(alpha, *self._clamped(lower, upper))

    def plan(self, lower: torch.Tensor, upper: torch.Tensor):
        return super().plan(*self._clamped(lower, upper))

    def image(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact range of a monotone function (decreasing ones swap the ends); the whole line where the
        interval leaves the domain."""
        inside = self.inside(lower, upper)
        clamped_lower, clamped_upper = self._clamped(lower, upper)
        ends = self.function(clamped_lower), self.function(clamped_upper)
        low, high = (ends[1], ends[0]) if self.decreasing else ends
        infinite = torch.full_like(low, math.inf)
        return torch.where(inside, low, -infinite), torch.where(inside, high, infinite)

    def tangent_floor(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        return self._inside_steep_ends(lower, lower, upper)

    def tangent_ceiling(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        return self._inside_steep_ends(upper, lower, upper)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """f' a hair inside the steep ends (finite, as is its own gradient); exact everywhere else."""
        return self.slope(self._inside_steep_ends(x, x, x) if any(self.steep_ends) else x)

    def function(self, x: torch.Tensor) -> torch.Tensor:
        """f(x), exact; its gradient at a steep end is taken a hair inside (`_inside_steep_ends`). The secant
        runs through f at the interval's ends, and α-CROWN's gradient reaches those ends: an infinite
        derivative there would turn every α before it into NaN."""
        if not (x.requires_grad and any(self.steep_ends)):
            return self.value(x)
        fixed = x.detach()
        return self.value(fixed) + (x - fixed) * self.derivative(fixed)

    def _inside_steep_ends(self, point: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """`point` moved a hair inside each steep end it reaches (a point interval at an end included): the tangent
        there is finite, and as any tangent it bounds the convex or concave piece it touches."""
        lift = ((upper - lower) * LIFT).clamp_min(LIFT_FLOOR)
        if self.steep_ends[0]:
            point = torch.maximum(point, self.low + lift)
        if self.steep_ends[1]:
            point = torch.minimum(point, self.high - lift)
        return point


class AsinRelaxation(LimitedDomainRelaxation):
    """asin' = 1 / √(1 − x²); concave below the inflection at 0, convex above."""

    name = "asin"
    low, high = -1.0, 1.0
    steep_ends = (True, True)
    inflection_points = (0.0,)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asin(x)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(1 - x * x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x >= 0


class AcosRelaxation(AsinRelaxation):
    """acos = π/2 − asin: decreasing, convex below 0 and concave above."""

    name = "acos"
    decreasing = True

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.acos(x)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.rsqrt(1 - x * x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x <= 0


class AtanhRelaxation(LimitedDomainRelaxation):
    """atanh' = 1 / (1 − x²) on (−1, 1); concave below 0, convex above."""

    name = "atanh"
    low, high = -1.0, 1.0
    open_ends = True
    inflection_points = (0.0,)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atanh(x)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        return 1 / (1 - x * x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x >= 0


class AcoshRelaxation(LimitedDomainRelaxation):
    """acosh' = 1 / √(x² − 1) on [1, ∞): concave and increasing."""

    name = "acosh"
    low = 1.0
    steep_ends = (True, False)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.acosh(x)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(x * x - 1)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x, dtype=torch.bool)


class PrincipalTanRelaxation(LimitedDomainRelaxation):
    """tan on (−π/2, π/2): tan' = 1 + tan², concave below 0 and convex above."""

    name = "tan (on the branch of its interval's midpoint)"
    low, high = -math.pi / 2, math.pi / 2
    open_ends = True
    inflection_points = (0.0,)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tan(x)

    def slope(self, x: torch.Tensor) -> torch.Tensor:
        return 1 + torch.tan(x) ** 2

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x >= 0


class TanRelaxation:
    """tan on any interval inside one branch (kπ − π/2, kπ + π/2): the principal branch's lines moved by kπ,
    the branch of the interval's midpoint. Elsewhere (across a pole) unbounded, as the function is."""

    def __init__(self):
        self.principal = PrincipalTanRelaxation()

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tan(x)

    def _shift(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """kπ per element: the multiple of π nearest the interval's midpoint."""
        return torch.round((lower + upper) / (2 * math.pi)) * math.pi

    def relax(self, lower: torch.Tensor, upper: torch.Tensor, alpha=None) -> LinearRelaxation:
        shift = self._shift(lower, upper)
        lines = self.principal.relax(lower - shift, upper - shift, alpha)
        # a line a·(x − kπ) + b in the input's own coordinate
        return LinearRelaxation(lines.lower_slope, lines.lower_intercept - lines.lower_slope * shift,
                                lines.upper_slope, lines.upper_intercept - lines.upper_slope * shift)

    def init_alpha(self, lower: torch.Tensor, upper: torch.Tensor):
        shift = self._shift(lower, upper)
        return self.principal.init_alpha(lower - shift, upper - shift)

    def clamp_alpha(self, alpha, lower: torch.Tensor, upper: torch.Tensor):
        shift = self._shift(lower, upper)
        return self.principal.clamp_alpha(alpha, lower - shift, upper - shift)

    def image(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift = self._shift(lower, upper)
        return self.principal.image(lower - shift, upper - shift)


@register_relaxation("aten.asin.default")
def asin(args, kwargs) -> AsinRelaxation:
    """The asin relaxation (no arguments)."""
    return AsinRelaxation()


@register_relaxation("aten.acos.default")
def acos(args, kwargs) -> AcosRelaxation:
    """The acos relaxation (no arguments)."""
    return AcosRelaxation()


@register_relaxation("aten.atanh.default")
def atanh(args, kwargs) -> AtanhRelaxation:
    """The atanh relaxation (no arguments)."""
    return AtanhRelaxation()


@register_relaxation("aten.acosh.default")
def acosh(args, kwargs) -> AcoshRelaxation:
    """The acosh relaxation (no arguments)."""
    return AcoshRelaxation()


@register_relaxation("aten.tan.default")
def tan(args, kwargs) -> TanRelaxation:
    """The tan relaxation (no arguments)."""
    return TanRelaxation()
