"""Piecewise-linear activations: relu, leaky_relu, hardtanh, clamp.

Each is a chain of linear pieces joined at kinks. On an interval containing one kink the function is
convex (slope grows) or concave (slope shrinks): the chord bounds it on one side, and any line through
the kink with a slope between the two piece slopes bounds it on the other; that slope is α (the
triangle relaxation of Ehlers 2017 / CROWN, Zhang et al. 2018). An interval containing both kinks of
hardtanh (an S shape) gets a line through each kink whose slope α keeps it below/above the far end.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch

from opwise.bounds.relaxations.base import AlphaPair, LinearRelaxation
from opwise.bounds.relaxations.piecewise import breakpoint_nearest_middle
from opwise.bounds.relaxations.registry import register_relaxation


@dataclasses.dataclass
class _Ramp:
    """f(x) = min(max(x, low), high) blended with slope `leak` outside: a kink at `low` and/or at `high`.

    relu is (low=0, high=inf, leak=0); leaky_relu (0, inf, slope); hardtanh/clamp (min, max, 0).
    leaky_relu with slope > 1 is handled by the same formulas: the kink is then concave.
    """

    low: float
    high: float
    leak: float = 0.0
    monotone: bool = True
    #: α is a slope between the pieces' slopes (α-CROWN steps it at `AlphaOptions.slope_learning_rate`)
    piecewise_linear: ClassVar[bool] = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        clamped = x.clamp(self.low, self.high)
        return clamped + self.leak * (x - clamped)

    @property
    def split_kink(self) -> float | None:
        """Where branch-and-bound splits the input: the one kink (None with two kinks: `split_at` picks one).

        >>> _Ramp(0.0, float("inf")).split_kink, _Ramp(-1.0, 1.0).split_kink
        (0.0, None)
        """
        finite = [end for end in (self.low, self.high) if abs(end) != float("inf")]
        return finite[0] if len(finite) == 1 else None

    def split_at(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Where branch-and-bound splits [l, u] with two kinks (hardtanh, clamp): at the kink inside closest to the
        midpoint, so each half holds one kink fewer (an S-shaped neuron needs two splits to become exact); NaN
        (not split) where the interval holds no kink.

        >>> _Ramp(0.0, 1.0).split_at(torch.tensor([-1.0, 0.5, 0.2, -0.1]), torch.tensor([3.0, 2.0, 0.8, 0.1]))
        tensor([1., 1., nan, 0.])
        """
        finite = tuple(end for end in (self.low, self.high) if not math.isinf(end))
        return breakpoint_nearest_middle(finite, lower, upper)

    @property
    def lower_through_origin(self) -> bool:
        """Whether every lower line has intercept zero (relu and leaky relu with a convex kink at 0: each piece
        and each line through the kink passes through the origin), so a backward pass skips its bias.

        >>> _Ramp(0.0, float("inf")).lower_through_origin, _Ramp(-1.0, 1.0).lower_through_origin
        (True, False)
        """
        return self.low == 0 and self.high == float("inf") and self.leak <= 1.0

    @property
    def alpha_sides(self) -> tuple[bool, bool]:
        """Which of α's two tensors the lines use: the lower one sets the slope through the kink at `low`, the
        upper one the slope through the kink at `high`; a ramp without that kink never reads it.

        >>> _Ramp(0.0, float("inf")).alpha_sides, _Ramp(-1.0, 1.0).alpha_sides
        ((True, False), (True, True))
        """
        return not math.isinf(self.low), not math.isinf(self.high)

    def needs_refinement(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Neurons whose lines depend on [l, u]: those whose interval contains a kink (the others are exact)."""
        low_only, high_only, both = self._cases(lower, upper)
        return low_only | high_only | both

    # --------------------------------------------------------------- the α ranges per neuron
    def _cases(self, lower: torch.Tensor, upper: torch.Tensor):
        crosses_low = (lower < self.low) & (upper > self.low)
        crosses_high = (lower < self.high) & (upper > self.high)
        both = crosses_low & crosses_high
        return crosses_low & ~both, crosses_high & ~both, both

    def _alpha_range(self, lower, upper):
        """(min, max) of the lower line's slope and of the upper line's slope, per neuron."""
        low_only, high_only, both = self._cases(lower, upper)
        small, large = min(self.leak, 1.0), max(self.leak, 1.0)
        zero = torch.zeros_like(lower)
        span_low = (self.high - self.low) / (upper - self.low).clamp_min(1e-12)
        span_high = (self.high - self.low) / (self.high - lower).clamp_min(1e-12)
        # an S-shaped neuron (both kinks): the line through a kink may not cross the far piece
        lower_min = torch.where(both, zero + self.leak, zero + small)
        lower_max = torch.where(both, self.leak + (1 - self.leak) * span_low.clamp(max=1.0), zero + large)
        upper_max = torch.where(both, self.leak + (1 - self.leak) * span_high.clamp(max=1.0), zero + large)
        return lower_min, lower_max, lower_min.clone(), upper_max, (low_only, high_only, both)

    def init_alpha(self, lower: torch.Tensor, upper: torch.Tensor) -> AlphaPair:
        """CROWN's adaptive choice: the steeper slope where the interval is mostly on the steep side."""
        lower_min, lower_max, upper_min, upper_max, (low_only, high_only, both) = self._alpha_range(lower, upper)
        mid = 0.5 * (lower + upper)
        at_low = torch.where(mid > self.low, lower_max, lower_min)
        at_high = torch.where(mid < self.high, upper_max, upper_min)
        return AlphaPair(at_low.detach().clone(), at_high.detach().clone())

    def clamp_alpha(self, alpha: AlphaPair, lower: torch.Tensor, upper: torch.Tensor) -> AlphaPair:
        with torch.no_grad():
            sides = [part for part in (alpha.lower, alpha.upper) if part is not None]  # a sparse α keeps the read ones
            if math.isinf(self.low) or math.isinf(self.high):  # one kink: the range is the piece slopes, everywhere
                small, large = min(self.leak, 1.0), max(self.leak, 1.0)
                for part in sides:
                    part.clamp_(small, large)
                return alpha
            lower_min, lower_max, upper_min, upper_max, _ = self._alpha_range(lower, upper)
            if alpha.lower is not None:
                alpha.lower.copy_(torch.max(torch.min(alpha.lower, lower_max), lower_min))
            if alpha.upper is not None:
                alpha.upper.copy_(torch.max(torch.min(alpha.upper, upper_max), upper_min))
        return alpha

    # --------------------------------------------------------------- the lines
    def relax(self, lower: torch.Tensor, upper: torch.Tensor, alpha: AlphaPair | None = None) -> LinearRelaxation:
        if alpha is None:
            alpha = self.init_alpha(lower, upper)
        return self.with_alpha(self.fixed_lines(lower, upper), alpha)

    def fixed_lines(self, lower: torch.Tensor, upper: torch.Tensor) -> RampLines:
        """The part of the lines on [l, u] that α does not move (pieces and chords), and where α enters.

        α-CROWN steps α many times on the same interval: the engine keeps this part per interval and
        applies each step's α with `with_alpha`, which touches only the lines through a kink.

        >>> ramp = _Ramp(0.0, float("inf"))
        >>> part = ramp.fixed_lines(torch.tensor([-1.0, 1.0]), torch.tensor([3.0, 2.0]))
        >>> ramp.with_alpha(part, AlphaPair(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]))).lower_slope.tolist()
        [0.5, 1.0]
        """
        low_only, high_only, both = self._cases(lower, upper)
        f_lower, f_upper = self.function(lower), self.function(upper)
        width = upper - lower
        chord_slope = torch.where(width > 0, (f_upper - f_lower) / width.clamp_min(1e-12), torch.ones_like(width))
        # outside every kink the function is one linear piece: slope 1, or `leak` beyond a kink
        piece_slope = torch.where((upper <= self.low) | (lower >= self.high), torch.full_like(lower, self.leak), torch.ones_like(lower))
        piece_intercept = f_lower - piece_slope * lower
        chord_intercept = f_lower - chord_slope * lower
        ls, li, us, ui = piece_slope, piece_intercept, piece_slope, piece_intercept
        # one kink: the chord on the far side of it (a line through it with slope α on the near side: `with_alpha`)
        for mask, convex, _, _ in self._kinks(low_only, high_only):
            if convex:
                us, ui = torch.where(mask, chord_slope, us), torch.where(mask, chord_intercept, ui)
            else:
                ls, li = torch.where(mask, chord_slope, ls), torch.where(mask, chord_intercept, li)
        return RampLines(LinearRelaxation(ls, li, us, ui), low_only, high_only, both)

    def _kinks(self, low_only: torch.Tensor, high_only: torch.Tensor) -> list[tuple[torch.Tensor, bool, float, str]]:
        """(mask, convex, kink, α side) of each finite kink, `low`'s first: the kink at `low` turns up (convex)
        unless leak > 1, and its line's slope is α's lower part (the kink at `high`: α's upper part)."""
        convex_low = self.leak <= 1.0
        kinks = []
        if not math.isinf(self.low):
            kinks.append((low_only, convex_low, self.low, "lower"))
        if not math.isinf(self.high):
            kinks.append((high_only, not convex_low, self.high, "upper"))
        return kinks

    def with_alpha(self, part: RampLines, alpha: AlphaPair) -> LinearRelaxation:
        """`fixed_lines`' part completed by α: a line through each kink in the interval, of slope α."""
        ls, li, us, ui = part.lines.lower_slope, part.lines.lower_intercept, part.lines.upper_slope, part.lines.upper_intercept
        # α (per spec and neuron in α-CROWN) enters only where a line goes through a kink, and a line through a
        # kink at 0 has intercept 0 whatever α: relu's lines then carry the spec dimension in the lower slope
        # alone (the other three stay per neuron, cheap to gather and apply)
        through = []  # (slope, intercept) of the line through each kink
        for mask, convex, kink, side in self._kinks(part.low_only, part.high_only):
            slope = getattr(alpha, side)
            intercept = kink - slope * kink if kink else 0.0
            through.append((slope, intercept))
            if convex:
                ls, li = torch.where(mask, slope, ls), torch.where(mask, intercept, li)
            else:
                us, ui = torch.where(mask, slope, us), torch.where(mask, intercept, ui)
        if len(through) == 2:  # both kinks in the interval: a line through each
            (slope_low, intercept_low), (slope_high, intercept_high) = through
            ls, li = torch.where(part.both, slope_low, ls), torch.where(part.both, intercept_low, li)
            us, ui = torch.where(part.both, slope_high, us), torch.where(part.both, intercept_high, ui)
        return LinearRelaxation(ls, li, us, ui)


@dataclasses.dataclass
class RampLines:
    """The α-free part of a ramp's lines on one interval (`_Ramp.fixed_lines`): the pieces and chords, and the
    masks of the neurons whose interval holds the low kink only, the high kink only, or both. α, clamped
    between the piece slopes, adds only finite lines through finite kinks: the lines are finite wherever
    these are."""

    lines: LinearRelaxation
    low_only: torch.Tensor
    high_only: torch.Tensor
    both: torch.Tensor


def _number(value: Any, default: float) -> float:
    return default if value is None else float(value)


@register_relaxation("aten.relu.default")
def relu(args: tuple, kwargs: dict) -> _Ramp:
    """max(x, 0).

    >>> import torch
    >>> lines = relu((), {}).relax(torch.tensor([-1.0]), torch.tensor([3.0]))
    >>> lines.upper_slope.tolist(), lines.upper_intercept.tolist(), lines.lower_slope.tolist()
    ([0.75], [0.75], [1.0])
    """
    return _Ramp(0.0, float("inf"))


@register_relaxation("aten.leaky_relu.default")
def leaky_relu(args: tuple, kwargs: dict) -> _Ramp:
    """x for x >= 0, slope·x below (slope from the node's second argument, 0.01 by default)."""
    return _Ramp(0.0, float("inf"), _number(args[0] if args else kwargs.get("negative_slope"), 0.01))


@register_relaxation("aten.hardtanh.default")
def hardtanh(args: tuple, kwargs: dict) -> _Ramp:
    """clamp to [min_val, max_val] (-1, 1 by default)."""
    low = _number(args[0] if len(args) > 0 else kwargs.get("min_val"), -1.0)
    high = _number(args[1] if len(args) > 1 else kwargs.get("max_val"), 1.0)
    return _Ramp(low, high)


@register_relaxation("aten.clamp.default")
def clamp(args: tuple, kwargs: dict) -> _Ramp:
    """clamp(x, min, max) with either side optional."""
    low = args[0] if len(args) > 0 else kwargs.get("min")
    high = args[1] if len(args) > 1 else kwargs.get("max")
    return _Ramp(_number(low, float("-inf")), _number(high, float("inf")))


@register_relaxation("aten.clamp_min.default")
def clamp_min(args: tuple, kwargs: dict) -> _Ramp:
    """max(x, min)."""
    return _Ramp(float(args[0] if args else kwargs["min"]), float("inf"))


@register_relaxation("aten.clamp_max.default")
def clamp_max(args: tuple, kwargs: dict) -> _Ramp:
    """min(x, max)."""
    return _Ramp(float("-inf"), float(args[0] if args else kwargs["max"]))
