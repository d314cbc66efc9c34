"""Piecewise-linear functions with jumps: threshold, hardshrink, softshrink (and ONNX's Shrink through them).

f is linear on each piece between fixed breakpoints and may jump at a breakpoint. On [l, u], f(x) − s·x is
linear on every piece, so its extremes lie at the ends l, u or at a one-sided limit at a breakpoint the interval
reaches (limits, not values: the closure of the graph, a superset of the values, so nothing is lost at a jump). That
gives, for any slope s, the valid lower line s·x + min_k (v_k − s·p_k) over those candidate points (p_k, v_k),
and the upper line with max. The slope is chosen to minimise the gap: the line's mean over [l, u] is
φ(s) = min_k (v_k + s·(m − p_k)) (m the midpoint), a concave function of s whose maximum is where two of its terms
cross, at the slope between two candidates; every such slope (and 0) is tried and the best is kept. The
interval image is the candidates' range. No α: every slope is valid, the chosen one is already optimal for the
interval's mean. Branch-and-bound splits at a breakpoint (`split_at`).

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> shrink = relaxation_for("aten.hardshrink.default", (0.5,))
>>> shrink.image(torch.tensor([-0.2]), torch.tensor([2.0]))
(tensor([0.]), tensor([2.]))
>>> lines = shrink.relax(torch.tensor([-0.2]), torch.tensor([2.0]))
>>> lines.lower_slope, lines.lower_intercept  # through (0.5, 0) and (2, 2), below the jump's foot
(tensor([1.3333]), tensor([-0.6667]))
>>> lines.upper_slope, lines.upper_intercept  # the chord from (−0.2, 0) to (2, 2)
(tensor([0.9091]), tensor([0.1818]))
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from opwise.bounds.relaxations.base import LinearRelaxation
from opwise.bounds.relaxations.registry import register_relaxation


@dataclasses.dataclass
class PiecewiseLinearRelaxation:
    """f(x) = slopes[i]·x + intercepts[i] on the i-th piece, pieces split at increasing `breakpoints`
    (len(slopes) = len(breakpoints) + 1); `function` is the operator itself (its convention at a breakpoint)."""

    function: Callable[[torch.Tensor], torch.Tensor]
    breakpoints: tuple[float, ...]
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]

    def _candidates(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Points (p, v) stacked on a new first axis: the ends (their values), and at each breakpoint b the left
        limit where the interval reaches left of b (l < b <= u) and the right limit where it reaches right of it
        (l <= b < u); the value at b is an end or one of those limits. A limit not taken repeats the lower end, which
        changes no min or max. So an interval that ends at a jump (a branch-and-bound split there) is relaxed
        without the far side of the jump."""
        points, values = [lower, upper], [self.function(lower), self.function(upper)]
        for index, breakpoint in enumerate(self.breakpoints):
            reaches = ((lower < breakpoint) & (breakpoint <= upper), (lower <= breakpoint) & (breakpoint < upper))
            for piece, taken in zip((index, index + 1), reaches):
                limit = self.slopes[piece] * breakpoint + self.intercepts[piece]
                points.append(torch.where(taken, torch.full_like(lower, breakpoint), lower))
                values.append(torch.where(taken, torch.full_like(lower, limit), values[0]))
        return torch.stack(points), torch.stack(values)

    def split_at(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Where branch-and-bound splits [l, u]: the breakpoint inside closest to the midpoint (both halves are then
        one piece fewer); NaN (not split) where none is inside.

        >>> hardshrink((0.5,), {}).split_at(torch.tensor([-1.0, 0.0]), torch.tensor([0.6, 0.2]))
        tensor([-0.5000,     nan])
        """
        return breakpoint_nearest_middle(self.breakpoints, lower, upper)

    def image(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, values = self._candidates(lower, upper)
        return values.amin(0), values.amax(0)

    def relax(self, lower: torch.Tensor, upper: torch.Tensor, alpha=None) -> LinearRelaxation:
        points, values = self._candidates(lower, upper)
        count = points.shape[0]
        first, second = torch.triu_indices(count, count, 1, device=points.device)
        run, rise = points[second] - points[first], values[second] - values[first]
        # every slope between two candidates at distinct points, and 0: [pairs + 1, ...]
        distinct = run != 0
        slopes = torch.cat([torch.where(distinct, rise / torch.where(distinct, run, 1.0), 0.0),
                            torch.zeros_like(lower)[None]])
        offsets = values[None] - slopes[:, None] * points[None]  # v_k − s·p_k: [slopes, candidates, ...]
        low_intercepts, high_intercepts = offsets.amin(1), offsets.amax(1)
        middle = (lower + upper) / 2
        best_low = (slopes * middle + low_intercepts).argmax(0, keepdim=True)
        best_high = (slopes * middle + high_intercepts).argmin(0, keepdim=True)
        pick = lambda tensor, index: tensor.gather(0, index)[0]  # noqa: E731
        return LinearRelaxation(pick(slopes, best_low), pick(low_intercepts, best_low),
                                pick(slopes, best_high), pick(high_intercepts, best_high))


def breakpoint_nearest_middle(breakpoints: tuple[float, ...], lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Per interval, the breakpoint strictly inside [l, u] closest to its midpoint (ties: the first): a split there
    leaves each half with one breakpoint fewer (a piecewise-linear family's split point). NaN where none is
    inside: f is one piece there, so no split could tighten its lines, and branch-and-bound skips it.

    >>> breakpoint_nearest_middle((-1.0, 1.0), torch.tensor([-2.0, 0.0, -3.0]), torch.tensor([2.0, 0.5, 1.5]))
    tensor([-1., nan, -1.])
    """
    middle = (lower + upper) / 2
    best, distance = torch.full_like(middle, float("nan")), torch.full_like(middle, float("inf"))
    for breakpoint in breakpoints:
        inside = (lower < breakpoint) & (breakpoint < upper)
        gap = torch.where(inside, (middle - breakpoint).abs(), torch.full_like(middle, float("inf")))
        closer = gap < distance
        best, distance = torch.where(closer, torch.full_like(middle, breakpoint), best), torch.minimum(gap, distance)
    return best


@register_relaxation("aten.threshold.default")
def threshold(args, kwargs) -> PiecewiseLinearRelaxation:
    """threshold(x, t, v) = x where x > t, else v: a jump at t (none when v = t)."""
    limit, value = float(args[0]), float(args[1])
    return PiecewiseLinearRelaxation(lambda x: F.threshold(x, limit, value), (limit,), (0.0, 1.0), (value, 0.0))


@register_relaxation("aten.hardshrink.default")
def hardshrink(args, kwargs) -> PiecewiseLinearRelaxation:
    """hardshrink(x, λ) = x where |x| > λ, else 0: jumps at ±λ."""
    lambd = float(kwargs.get("lambd", args[0] if args else 0.5))
    return PiecewiseLinearRelaxation(lambda x: F.hardshrink(x, lambd), (-lambd, lambd), (1.0, 0.0, 1.0), (0.0, 0.0, 0.0))


@register_relaxation("aten.softshrink.default")
def softshrink(args, kwargs) -> PiecewiseLinearRelaxation:
    """softshrink(x, λ) = x − λ·sign(x) where |x| > λ, else 0: continuous, kinks at ±λ."""
    lambd = float(kwargs.get("lambd", args[0] if args else 0.5))
    return PiecewiseLinearRelaxation(lambda x: F.softshrink(x, lambd), (-lambd, lambd), (1.0, 0.0, 1.0),
                                     (lambd, 0.0, -lambd))
