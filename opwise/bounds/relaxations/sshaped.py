"""Sigmoid, tanh and erf: convex below 0, concave above, so tangent/secant lines as in CROWN and DeepPoly.

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lines = relaxation_for("aten.sigmoid.default").relax(torch.tensor([-1.0]), torch.tensor([2.0]))
>>> bool((lines.lower_slope * 0.5 + lines.lower_intercept <= torch.sigmoid(torch.tensor(0.5))).all())
True
"""

from __future__ import annotations

import math

import torch

from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.relaxations.registry import register_relaxation


class SigmoidRelaxation(CurvatureRelaxation):
    """σ(x) = 1 / (1 + e^-x); σ' = σ(1 - σ); inflection at 0."""

    split_table = "sigmoid"

    inflection_points = (0.0,)
    monotone = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        value = torch.sigmoid(x)
        return value * (1 - value)

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x <= 0


class TanhRelaxation(CurvatureRelaxation):
    """tanh' = 1 - tanh²; inflection at 0."""

    split_table = "tanh"

    inflection_points = (0.0,)
    monotone = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return 1 - torch.tanh(x) ** 2

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x <= 0


class ErfRelaxation(CurvatureRelaxation):
    """erf' = 2/√π·e^(−x²); inflection at 0 (GELU exported to ONNX as x·(1 + erf(x/√2))/2 reaches it)."""

    inflection_points = (0.0,)
    monotone = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-x * x) * (2 / math.sqrt(math.pi))

    def convex_at(self, x: torch.Tensor) -> torch.Tensor:
        return x <= 0


@register_relaxation("aten.erf.default")
def erf(args, kwargs) -> ErfRelaxation:
    """The erf relaxation (no arguments)."""
    return ErfRelaxation()


@register_relaxation("aten.sigmoid.default")
def sigmoid(args, kwargs) -> SigmoidRelaxation:
    """The sigmoid relaxation (no arguments)."""
    return SigmoidRelaxation()


@register_relaxation("aten.tanh.default")
def tanh(args, kwargs) -> TanhRelaxation:
    """The tanh relaxation (no arguments)."""
    return TanhRelaxation()
