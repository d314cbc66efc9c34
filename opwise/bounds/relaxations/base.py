"""The contract between relaxations and the bound engine.

A relaxation of an elementwise function f on [l, u] is a pair of lines, elementwise:

    lower_slope * x + lower_intercept  <=  f(x)  <=  upper_slope * x + upper_intercept   for all x in [l, u]

Relaxations are pure functions of tensors `(lower, upper)` (any shape, same shape) and optional α
parameters (same shape, or None for the default CROWN choice). A relaxation with α also declares how
to initialise α and the range it is clamped to, so α-CROWN can optimise it by projected gradient.
Everything must hold for l == u (a point), l < 0 < u, very wide intervals, and ±large values without NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import torch


@dataclasses.dataclass
class LinearRelaxation:
    """Elementwise lower and upper lines valid on [l, u]."""

    lower_slope: torch.Tensor
    lower_intercept: torch.Tensor
    upper_slope: torch.Tensor
    upper_intercept: torch.Tensor


@dataclasses.dataclass
class BilinearRelaxation:
    """Planes for z = x * y on the box [lx, ux] x [ly, uy], elementwise:

    lower_x * x + lower_y * y + lower_intercept  <=  x * y  <=  upper_x * x + upper_y * y + upper_intercept
    """

    lower_x: torch.Tensor
    lower_y: torch.Tensor
    lower_intercept: torch.Tensor
    upper_x: torch.Tensor
    upper_y: torch.Tensor
    upper_intercept: torch.Tensor


class Relaxation(Protocol):
    """One elementwise function's relaxation family (registered per operator by the engine)."""

    function: Callable[[torch.Tensor], torch.Tensor]

    def relax(self, lower: torch.Tensor, upper: torch.Tensor, alpha: "AlphaPair | None" = None) -> LinearRelaxation:
        ...

    # Optional: `monotone = True` (interval propagation takes f(l), f(u)), or
    # `image(lower, upper) -> (low, high)`: the exact range of a non-monotone function on [l, u].

    def init_alpha(self, lower: torch.Tensor, upper: torch.Tensor) -> "AlphaPair | None":
        """α for the lower and the upper line, starting at the CROWN choice; None if not optimisable."""
        ...

    def clamp_alpha(self, alpha: "AlphaPair", lower: torch.Tensor, upper: torch.Tensor) -> "AlphaPair":
        """Project α back to its valid range after a gradient step (in place is fine)."""
        ...


@dataclasses.dataclass
class AlphaPair:
    """α parameters of the lower line and of the upper line (either may be None: fixed line)."""

    lower: torch.Tensor | None
    upper: torch.Tensor | None
