"""GELU (exact erf and tanh approximation) and SiLU: convex around 0, concave in both tails.

Both dip to a minimum left of 0 (GELU about -0.16997 at -0.7518, SiLU about -0.27846 at -1.2785), so
intervals across both inflection points get support lines (see `curvature`); the α of those lines is
their slope, which α-CROWN tunes between the ReLU-like choices 0 and 1.

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lines = relaxation_for("aten.gelu.default").relax(torch.tensor([-5.0]), torch.tensor([5.0]))
>>> bool((lines.lower_slope * -0.7518 + lines.lower_intercept <= -0.16997).all())
True
"""

from __future__ import annotations

import math

import torch

from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.relaxations.registry import register_relaxation

# Inflection points: GELU'' = φ(x)(2 - x²); SiLU'' = 0 where x·tanh(x/2) = 2; for the tanh
# approximation found numerically (root of the second derivative, to 1e-15).
GELU_INFLECTION = math.sqrt(2.0)
GELU_TANH_INFLECTION = 1.418504008790828
SILU_INFLECTION = 2.3993572805154675
TANH_GELU_SCALE = math.sqrt(2.0 / math.pi)
TANH_GELU_CUBIC = 0.044715


class SymmetricInflections(CurvatureRelaxation):
    """A function convex on [-c, c] and concave outside."""

    inflection: float

    def __init__(self):
        self.inflection_points = (-self.inflection, self.inflection)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs() <= self.inflection


class GeluRelaxation(SymmetricInflections):
    """GELU(x) = x Φ(x); GELU' = Φ(x) + x φ(x)."""

    split_table = "gelu"

    inflection = GELU_INFLECTION

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2.0)))
        density = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return cdf + x * density


class TanhGeluRelaxation(SymmetricInflections):
    """GELU(x) ≈ x/2 (1 + tanh(k (x + 0.044715 x³))), k = √(2/π)."""

    split_table = "gelu_tanh"

    inflection = GELU_TANH_INFLECTION

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x, approximate="tanh")

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        inner = torch.tanh(TANH_GELU_SCALE * (x + TANH_GELU_CUBIC * x**3))
        inner_slope = TANH_GELU_SCALE * (1 + 3 * TANH_GELU_CUBIC * x * x)
        return 0.5 * (1 + inner) + 0.5 * x * (1 - inner * inner) * inner_slope


class SiluRelaxation(SymmetricInflections):
    """SiLU(x) = x σ(x); SiLU' = σ(x)(1 + x(1 - σ(x)))."""

    split_table = "silu"

    inflection = SILU_INFLECTION

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        value = torch.sigmoid(x)
        return value * (1 + x * (1 - value))


@register_relaxation("aten.gelu.default")
def gelu(args, kwargs) -> SymmetricInflections:
    """GELU; `approximate` ("none" or "tanh") comes as a kwarg or the first argument."""
    approximate = kwargs.get("approximate", args[0] if args else "none")
    return TanhGeluRelaxation() if approximate == "tanh" else GeluRelaxation()


@register_relaxation("aten.silu.default")
def silu(args, kwargs) -> SiluRelaxation:
    """The SiLU (swish) relaxation (no arguments)."""
    return SiluRelaxation()
