"""Tangent, secant and support lines for elementwise functions whose convex and concave pieces are known.

Every smooth family (sigmoid, tanh, sin, GELU, SiLU, exp, pow, ...) is relaxed the same way; a family
only says where its curvature changes. Per element, by the number of inflection points inside (l, u):

- none: f is convex (or concave) on [l, u]; the secant bounds it from above (below) and the tangent at
  α in [l, u] from below (above). α starts at the midpoint, which minimises the area between the lines.
- one (an S shape, as sigmoid around 0): on each side, the line through the far endpoint that touches
  the other piece (CROWN, DeepPoly). α is the tangent point; every point between the touching point d and
  the interval's end on that piece keeps the line sound, and α starts at the midpoint when it lies in
  that range, else at d (auto_LiRPA's CROWN choice). Where no such tangent exists the secant is sound and used.
- more: support lines. The slope α may be anything; the intercept is the exact min / max of f(x) - αx on
  [l, u], taken at the endpoints and at the roots of f'(x) = α on each piece where f' is monotone.
  α starts at the secant slope.

Lines are computed in float64 and returned in the input's dtype.
"""

from __future__ import annotations

import dataclasses

import torch

from opwise.bounds.relaxations.base import AlphaPair, LinearRelaxation

TANGENT, SECANT, SUPPORT = 0, 1, 2
BISECTION_STEPS = 40


def bisect(predicate, bad: torch.Tensor, good: torch.Tensor, steps: int = BISECTION_STEPS) -> torch.Tensor:
    """The end of a shrinking bracket [bad, good] (either order) where `predicate` holds, elementwise.

    >>> bisect(lambda x: x * x >= 2.0, torch.tensor([0.0]), torch.tensor([2.0])).item() >= 2 ** 0.5
    True
    """
    for _ in range(steps):
        middle = (bad + good) / 2
        holds = predicate(middle)
        good = torch.where(holds, middle, good)
        bad = torch.where(holds, bad, middle)
    return good


@dataclasses.dataclass
class SidePlan:
    """How one side's line is built per element: mode (TANGENT/SECANT/SUPPORT), α range and initial α."""

    mode: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    init: torch.Tensor


class CurvatureRelaxation:
    """Base class of the smooth families; subclasses give f, f', where f is convex, and its inflections.

    `inflection_points` lists every point where the curvature changes (a finite list; families with
    infinitely many, like sin, override `inflections` and `support_offsets`).
    """

    inflection_points: tuple[float, ...] = ()
    # True when f is increasing on its domain: the engine then takes IBP bounds as [f(l), f(u)]
    monotone: bool = False
    #: the family's GenBaB split-point table (opwise/bounds/tables/<name>.npz, built by
    #: scripts/build_split_tables.py); None: branch-and-bound does not split this function's input
    split_table: str | None = None

    @classmethod
    def tabled_variants(cls) -> list["CurvatureRelaxation"]:
        """The instances of this class whose split-point tables are built and shipped (one per table):
        the class itself when it declares a table of its own, else none."""
        return [cls()] if cls.__dict__.get("split_table") else []

    def function(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        """True where f'' >= 0 at x (x strictly inside a piece)."""
        raise NotImplementedError

    def check_domain(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        """Raise an OpwiseError when [l, u] leaves the set where f is finite (default: all reals)."""

    def tangent_floor(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """The smallest tangent point allowed (default l); families with f'(l) infinite lift it."""
        return lower

    def tangent_ceiling(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """The largest tangent point allowed (default u); families with f'(u) infinite lower it."""
        return upper

    def inflections(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(how many inflection points lie strictly inside (l, u), the smallest of them or l if none)."""
        count = torch.zeros_like(lower, dtype=torch.long)
        first = upper.clone()
        for point in reversed(self.inflection_points):
            inside = (lower < point) & (point < upper)
            count = count + inside.long()
            first = torch.where(inside, torch.full_like(first, point), first)
        return count, torch.where(count > 0, first, lower)

    def support_offsets(self, lower: torch.Tensor, upper: torch.Tensor, slope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) of f(x) - slope * x over [l, u]; differentiable in `slope` (envelope theorem)."""
        edges = [lower, *[torch.full_like(lower, p).clamp(lower, upper) for p in self.inflection_points], upper]
        starts, ends = torch.stack(edges[:-1]), torch.stack(edges[1:])
        slope_value = slope.detach()
        gap_start = self.derivative(starts) - slope_value
        gap_end = self.derivative(ends) - slope_value
        roots = bisect(lambda x: (self.derivative(x) - slope_value) * gap_end >= 0, starts, ends)
        roots = torch.where(gap_start * gap_end <= 0, roots, starts)
        points = torch.cat([torch.stack([lower, upper]), roots]).detach()
        values = self.function(points) - slope * points
        return values.min(dim=0).values, values.max(dim=0).values

    def secant_slope(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        width = upper - lower
        quotient = (self.function(upper) - self.function(lower)) / torch.where(width > 0, width, torch.ones_like(width))
        at_point = torch.nan_to_num(self.derivative(lower), nan=0.0, posinf=0.0, neginf=0.0)
        return torch.where(width > 0, quotient, at_point)

    def _endpoint_tangents(self, endpoint, near, far, sign) -> tuple[torch.Tensor, torch.Tensor]:
        """(whether the tangent at `far` passes above (sign 1) / below (sign -1) the point (e, f(e)),
        the touching point d between `near` and `far`), for both sides stacked on the first dimension."""
        f_endpoint = self.function(endpoint)

        def sound(t):
            return sign * (self.function(t) + self.derivative(t) * (endpoint - t) - f_endpoint) >= 0

        return sound(far), bisect(sound, near.expand_as(far), far)

    def plan(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[SidePlan, SidePlan]:
        """Per element and side: which line is used, its α range and CROWN's initial α (float64)."""
        self.check_domain(lower, upper)
        count, first = self.inflections(lower, upper)
        floor = self.tangent_floor(lower, upper)
        top = self.tangent_ceiling(lower, upper)
        ceiling = torch.maximum(top, floor)
        middle = (lower + upper) / 2
        convex = self.convex_at(middle)
        convex_left = self.convex_at((lower + first) / 2)
        secant = self.secant_slope(lower, upper)
        derivative_low = torch.nan_to_num(self.derivative(floor), nan=0.0, posinf=0.0, neginf=0.0)
        slopes = torch.stack([derivative_low, self.derivative(top), secant])
        slope_low, slope_high = slopes.min(dim=0).values, slopes.max(dim=0).values

        # one inflection: each side's tangent lies on the piece away from the endpoint it must pass.
        tangent_on_right = torch.stack([~convex_left, convex_left])
        endpoint = torch.where(tangent_on_right, lower, upper)
        far = torch.where(tangent_on_right, top, floor)
        exists, touch = torch.zeros_like(far, dtype=torch.bool), far.clone()
        one = count == 1
        if bool(one.any()):
            # only intervals across exactly one inflection need the search (usually a few of them)
            sign = torch.tensor([[-1.0], [1.0]], dtype=lower.dtype, device=lower.device)
            exists[:, one], touch[:, one] = self._endpoint_tangents(endpoint[:, one], first[one], far[:, one], sign)

        plans = []
        for side, above in enumerate((False, True)):
            s_shape_low, s_shape_high = torch.minimum(touch[side], far[side]), torch.maximum(touch[side], far[side])
            tangent_in_piece = convex != above
            mode = torch.where(tangent_in_piece, TANGENT, SECANT)
            mode = torch.where(count == 1, torch.where(exists[side], TANGENT, SECANT), mode)
            mode = torch.where(count > 1, SUPPORT, mode)
            low = torch.where(count > 1, slope_low, torch.where(one, s_shape_low, floor))
            high = torch.where(count > 1, slope_high, torch.where(one, s_shape_high, ceiling))
            # across one inflection: the midpoint's tangent where it is sound (as auto_LiRPA's CROWN), else the
            # sound point nearest to it
            s_shape_init = torch.minimum(torch.maximum(middle, s_shape_low), s_shape_high)
            one_piece_init = torch.minimum(torch.maximum(middle, floor), ceiling)
            init = torch.where(count > 1, secant, torch.where(one, s_shape_init, one_piece_init))
            plans.append(SidePlan(mode, low, high, init))
        return plans[0], plans[1]

    def _line(self, plan: SidePlan, alpha, lower, upper, secant, above: bool):
        if alpha is not None and alpha.shape != lower.shape:
            # α-CROWN keeps one α per specification: leading dimensions broadcast over the interval
            shape = torch.broadcast_shapes(alpha.shape, lower.shape)
            lower, upper, secant = lower.expand(shape), upper.expand(shape), secant.expand(shape)
            plan = SidePlan(*(part.expand(shape) for part in (plan.mode, plan.low, plan.high, plan.init)))
        alpha = plan.init if alpha is None else torch.maximum(torch.minimum(alpha.to(lower.dtype), plan.high), plan.low)
        tangent_point = torch.where(plan.mode == TANGENT, alpha, plan.init)
        tangent_slope = self.derivative(tangent_point)
        tangent_intercept = self.function(tangent_point) - tangent_slope * tangent_point
        secant_intercept = self.function(lower) - secant * lower
        slope = torch.where(plan.mode == TANGENT, tangent_slope, secant)
        intercept = torch.where(plan.mode == TANGENT, tangent_intercept, secant_intercept)
        support = plan.mode == SUPPORT
        if bool(support.any()):
            support_slope = alpha[support]
            low_offset, high_offset = self.support_offsets(lower[support], upper[support], support_slope)
            slope = slope.masked_scatter(support, support_slope)
            intercept = intercept.masked_scatter(support, high_offset if above else low_offset)
        return slope, intercept

    def prepared(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, SidePlan, SidePlan, torch.Tensor]:
        """(l, u in float64, the two side plans, the secant slope), remembered for the last (l, u) seen:
        α-CROWN relaxes the same intervals at every step, and the plan depends on them alone."""
        key = (lower, upper, lower._version, upper._version)
        last = getattr(self, "_last_prepared", None)
        if last is not None and last[0][0] is key[0] and last[0][1] is key[1] and last[0][2:] == key[2:]:
            return last[1]
        # the plan (modes, α ranges) is fixed per interval; the lines' endpoints and secant keep autograd, so
        # α-CROWN's gradient reaches the α that produced an intermediate interval
        lower64, upper64 = lower.double(), upper.double()
        result = (lower64, upper64, *self.plan(lower64.detach(), upper64.detach()), self.secant_slope(lower64, upper64))
        self._last_prepared = (key, result)
        return result

    def relax(self, lower: torch.Tensor, upper: torch.Tensor, alpha: AlphaPair | None = None) -> LinearRelaxation:
        """Lower and upper lines valid on [lower, upper]; α (tangent points or slopes) clamped to its range."""
        lower64, upper64, lower_plan, upper_plan, secant = self.prepared(lower, upper)
        lower_line = self._line(lower_plan, None if alpha is None else alpha.lower, lower64, upper64, secant, False)
        upper_line = self._line(upper_plan, None if alpha is None else alpha.upper, lower64, upper64, secant, True)
        return LinearRelaxation(*(part.to(lower.dtype) for part in (*lower_line, *upper_line)))

    def init_alpha(self, lower: torch.Tensor, upper: torch.Tensor) -> AlphaPair:
        """CROWN's choice: midpoint tangents, endpoint-touching tangents, secant slopes."""
        _, _, lower_plan, upper_plan, _ = self.prepared(lower, upper)
        return AlphaPair(lower_plan.init.to(lower.dtype), upper_plan.init.to(lower.dtype))

    def clamp_alpha(self, alpha: AlphaPair, lower: torch.Tensor, upper: torch.Tensor) -> AlphaPair:
        """Project α into the range where every line stays sound (in place)."""
        _, _, lower_plan, upper_plan, _ = self.prepared(lower, upper)
        with torch.no_grad():
            for value, plan in ((alpha.lower, lower_plan), (alpha.upper, upper_plan)):
                if value is not None:
                    value.copy_(torch.maximum(torch.minimum(value.double(), plan.high), plan.low).to(value.dtype))
        return alpha
