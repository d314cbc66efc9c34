"""The other activation functions of torch.nn: ELU (SELU, CELU), softplus, log-sigmoid, mish, hardswish and hardsigmoid.

Each is relaxed by `curvature` from where it is convex or concave. The piecewise ones have kinks, and a
kink is curvature concentrated in one point: hardswish, x·clamp(x + 3, 0, 6)/6, is 0 left of −3, a convex
parabola on [−3, 3] and x right of 3, and both kinks bend it downwards, so it is relaxed as "convex on
[−3, 3], concave outside", as GELU is; hardsigmoid, clamp(x/6 + 1/2, 0, 1), bends upwards at −3 and
downwards at 3, an S shape around 0 as sigmoid's. ELU, scale·(x if x > 0 else alpha·(exp(input_scale·x) − 1)),
is convex left of 0; its kink at 0 bends upwards when the slope on the left (scale·alpha·input_scale) is at
most the slope on the right (scale), so ELU is convex, and downwards otherwise (SELU), so SELU is an S shape.

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lines = relaxation_for("aten.hardswish.default").relax(torch.tensor([-4.0]), torch.tensor([4.0]))
>>> x = torch.linspace(-4, 4, 801)
>>> bool((lines.lower_slope * x + lines.lower_intercept <= torch.nn.functional.hardswish(x) + 1e-6).all())
True
"""

from __future__ import annotations

import math

import torch

from opwise.bounds.relaxations.base import LinearRelaxation
from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.relaxations.gelu_silu import SymmetricInflections
from opwise.bounds.relaxations.registry import register_relaxation
from opwise.errors import OpwiseError

#: mish'' = 0 at these points (roots found to 1e-20 with mpmath); mish is convex between them
MISH_INFLECTIONS = (-2.2563763963607931, 1.4905711794854285)
#: where mish has its minimum (mish' = 0)
MISH_MINIMUM = -1.1924312145154952
#: where hardswish has its minimum, −3/8
HARDSWISH_MINIMUM = -1.5


class ExtremaImage:
    """The exact range on [l, u] of a function whose interior extrema lie at known points: f at the ends and at
    those points inside. Used for interval bounds of the non-monotone families (their lines would be looser)."""

    critical_points: tuple[float, ...] = ()

    def image(self, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = [self.function(lower), self.function(upper)]
        for point in self.critical_points:
            inside = torch.full_like(lower, point).clamp(lower, upper)
            values.append(self.function(inside))
        stacked = torch.stack(values)
        return stacked.min(dim=0).values, stacked.max(dim=0).values


class HardswishRelaxation(ExtremaImage, SymmetricInflections):
    """hardswish(x) = x·clamp(x + 3, 0, 6)/6; its derivative is 0, (2x + 3)/6, 1 on the three pieces."""

    inflection = 3.0
    critical_points = (HARDSWISH_MINIMUM,)

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.hardswish(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        middle = (2 * x + 3) / 6
        return torch.where(x < -3, torch.zeros_like(x), torch.where(x > 3, torch.ones_like(x), middle))


class HardsigmoidRelaxation(CurvatureRelaxation):
    """hardsigmoid(x) = clamp(x/6 + 1/2, 0, 1): bends up at −3 and down at 3, so convex left of 0, concave right."""

    inflection_points = (0.0,)
    monotone = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.hardsigmoid(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where((x >= -3) & (x <= 3), torch.full_like(x, 1 / 6), torch.zeros_like(x))

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x < 0


class EluRelaxation(CurvatureRelaxation):
    """scale·x for x > 0, scale·alpha·(exp(input_scale·x) − 1) for x <= 0 (ELU, SELU and CELU are this)."""

    monotone = True

    def __init__(self, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0, name: str = "elu"):
        if not (alpha > 0 and scale > 0 and input_scale > 0):
            raise OpwiseError(
                f"{name} with alpha={alpha:g}, scale={scale:g}, input_scale={input_scale:g} is not bounded: the "
                "relaxation needs all three positive (an increasing function, convex left of 0)")
        self.alpha, self.scale, self.input_scale = float(alpha), float(scale), float(input_scale)
        # the kink at 0 bends down when the slope on the left is steeper than on the right (SELU)
        self.bends_down = self.scale * self.alpha * self.input_scale > self.scale
        self.inflection_points = (0.0,) if self.bends_down else ()

    def function(self, x: torch.Tensor) -> torch.Tensor:
        negative = self.scale * self.alpha * torch.expm1(self.input_scale * torch.clamp(x, max=0))
        return torch.where(x > 0, self.scale * x, negative)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        negative = self.scale * self.alpha * self.input_scale * torch.exp(self.input_scale * torch.clamp(x, max=0))
        return torch.where(x > 0, torch.full_like(x, self.scale), negative)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x < 0 if self.bends_down else torch.ones_like(x, dtype=torch.bool)


class SoftplusRelaxation(CurvatureRelaxation):
    """softplus(x) = log(1 + exp(beta·x))/beta, and x where beta·x > threshold (torch's switch).

    The switch drops the value by at most log(1 + exp(−threshold))/beta (2e-9 for the default 20), so the lines
    of the smooth, convex function are moved apart by that much: they then bound the switched function too.
    """

    monotone = True

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        if not beta > 0:
            raise OpwiseError(f"softplus with beta={beta:g} is not bounded: the relaxation needs beta > 0")
        self.beta, self.threshold = float(beta), float(threshold)
        self.switch_gap = math.log1p(math.exp(-self.threshold)) / self.beta

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(x, self.beta, self.threshold)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.beta * x > self.threshold, torch.ones_like(x), torch.sigmoid(self.beta * x))

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x, dtype=torch.bool)

    def relax(self, lower, upper, alpha=None) -> LinearRelaxation:
        lines = super().relax(lower, upper, alpha)
        return LinearRelaxation(lines.lower_slope, lines.lower_intercept - self.switch_gap,
                                lines.upper_slope, lines.upper_intercept + self.switch_gap)


class LogSigmoidRelaxation(CurvatureRelaxation):
    """log σ(x) = −softplus(−x): increasing and concave everywhere (traced whole as `log_sigmoid_forward`, whose
    first output is the value)."""

    monotone = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.logsigmoid(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(-x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x, dtype=torch.bool)


class MishRelaxation(ExtremaImage, CurvatureRelaxation):
    """mish(x) = x·tanh(softplus(x)): convex between its two inflection points, concave outside (like SiLU)."""

    inflection_points = MISH_INFLECTIONS
    critical_points = (MISH_MINIMUM,)

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mish(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.tanh(torch.nn.functional.softplus(x))
        return gate + x * (1 - gate * gate) * torch.sigmoid(x)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return (x > MISH_INFLECTIONS[0]) & (x < MISH_INFLECTIONS[1])


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: float) -> float:
    return float(kwargs.get(name, args[position] if len(args) > position else default))


@register_relaxation("aten.hardswish.default")
def hardswish(args, kwargs) -> HardswishRelaxation:
    """The hardswish relaxation (no arguments)."""
    return HardswishRelaxation()


@register_relaxation("aten.hardsigmoid.default")
def hardsigmoid(args, kwargs) -> HardsigmoidRelaxation:
    """The hardsigmoid relaxation (no arguments)."""
    return HardsigmoidRelaxation()


@register_relaxation("aten.elu.default")
def elu(args, kwargs) -> EluRelaxation:
    """aten.elu(x, alpha=1, scale=1, input_scale=1): nn.ELU and nn.SELU."""
    return EluRelaxation(_argument(args, kwargs, 0, "alpha", 1.0), _argument(args, kwargs, 1, "scale", 1.0),
                         _argument(args, kwargs, 2, "input_scale", 1.0))


@register_relaxation("aten.celu.default")
def celu(args, kwargs) -> EluRelaxation:
    """celu(x, alpha) = elu(x, alpha, input_scale=1/alpha)."""
    alpha = _argument(args, kwargs, 0, "alpha", 1.0)
    return EluRelaxation(alpha, 1.0, 1.0 / alpha if alpha else math.inf, name="celu")


@register_relaxation("aten.softplus.default")
def softplus(args, kwargs) -> SoftplusRelaxation:
    """aten.softplus(x, beta=1, threshold=20)."""
    return SoftplusRelaxation(_argument(args, kwargs, 0, "beta", 1.0), _argument(args, kwargs, 1, "threshold", 20.0))


@register_relaxation("aten.log_sigmoid_forward.default")
def log_sigmoid(args, kwargs) -> LogSigmoidRelaxation:
    """The log-sigmoid relaxation (no arguments)."""
    return LogSigmoidRelaxation()


@register_relaxation("aten.mish.default")
def mish(args, kwargs) -> MishRelaxation:
    """The mish relaxation (no arguments)."""
    return MishRelaxation()
