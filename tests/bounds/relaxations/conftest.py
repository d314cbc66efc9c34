"""Shared checks for relaxation tests: random intervals of every kind and a dense-sample soundness check."""

from __future__ import annotations

import pytest
import torch


def interval_zoo(seed: int, count: int = 200, low: float = -8.0, high: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Narrow, wide, point, straddling, huge, all-negative and all-positive intervals within [low, high]
    plus [-50, 50]-wide ones, clipped to [low, high] when the domain demands it (float64)."""
    generator = torch.Generator().manual_seed(seed)
    centre = torch.rand(count, generator=generator, dtype=torch.float64) * (high - low) + low
    kind = torch.randint(0, 5, (count,), generator=generator)
    scale = torch.tensor([1e-4, 0.3, 2.0, 10.0, 60.0], dtype=torch.float64)[kind]
    width = torch.rand(count, generator=generator, dtype=torch.float64) * scale
    width[::17] = 0.0
    lower = (centre - width / 2).clamp(low, high)
    upper = (centre + width / 2).clamp(low, high)
    fixed_lower = torch.tensor([-50.0, -3.0, 0.5, -0.5, low, 0.0], dtype=torch.float64).clamp(low, high)
    fixed_upper = torch.tensor([50.0, -1.0, 3.0, 0.5, high, 0.0], dtype=torch.float64).clamp(low, high)
    return torch.cat([lower, fixed_lower]), torch.cat([upper, torch.maximum(fixed_upper, fixed_lower)])


def random_alpha(relaxation, lower: torch.Tensor, upper: torch.Tensor, seed: int):
    """α drawn uniformly inside the range `plan` says keeps each line sound."""
    from opwise.bounds.relaxations.base import AlphaPair

    generator = torch.Generator().manual_seed(seed)
    sides = relaxation.plan(lower, upper)
    values = [side.low + torch.rand(lower.shape, generator=generator, dtype=torch.float64) * (side.high - side.low) for side in sides]
    return AlphaPair(*values)


def assert_sound(function, lines, lower: torch.Tensor, upper: torch.Tensor, samples: int = 1001, tolerance: float = 1e-6) -> None:
    """Lower line <= f <= upper line at `samples` evenly spaced points of every interval, endpoints included."""
    for part in (lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept):
        assert torch.isfinite(part).all(), "relaxation produced NaN or inf"
    steps = torch.linspace(0.0, 1.0, samples, dtype=lower.dtype)
    x = lower[:, None] + (upper - lower)[:, None] * steps[None, :]
    value = function(x)
    low = lines.lower_slope[:, None] * x + lines.lower_intercept[:, None]
    high = lines.upper_slope[:, None] * x + lines.upper_intercept[:, None]
    slack = tolerance * (1 + value.abs() + (lines.lower_slope[:, None] * x).abs() + (lines.upper_slope[:, None] * x).abs())
    below = (low - value - slack).max(dim=1).values
    above = (value - high - slack).max(dim=1).values
    worst = int(torch.argmax(torch.maximum(below, above)))
    assert (below <= 0).all() and (above <= 0).all(), (
        f"unsound on [{lower[worst].item()}, {upper[worst].item()}]: lower line exceeds f by {below[worst].item():.3g}, "
        f"f exceeds upper line by {above[worst].item():.3g}"
    )


@pytest.fixture
def soundness():
    """The helpers above, as one fixture (tests in this folder share them)."""
    return interval_zoo, random_alpha, assert_sound
