"""atan2 (angle.py): its interval holds atan2 at every sampled point of many boxes (boxes across the branch cut, at
the origin, with ends at 0 where signed zeros flip the angle by 2π, infinite ends), is exact off the cut, and
networks with atan2 of bounded tensors, of a bounded tensor and a constant, and broadcast are bounded soundly."""

from __future__ import annotations

import math

import pytest
import torch

from opwise.bounds.transfers.angle import atan2_image
from opwise.bounds.transfers.registry import Interval
from tests.bounds.helpers import assert_sound


def _boxes(seed: int, count: int = 400) -> tuple[Interval, Interval]:
    """Random boxes of every width; a third have an end snapped to 0, a few are points or reach infinity."""
    generator = torch.Generator().manual_seed(seed)
    ends = torch.randn(4, count, generator=generator, dtype=torch.float64) * torch.tensor([0.1, 1.0, 5.0, 50.0],
                                                                                        dtype=torch.float64).repeat_interleave(count // 4)
    snap = torch.rand(4, count, generator=generator) < 0.15
    ends = torch.where(snap, torch.zeros_like(ends), ends)
    y_low, y_high = torch.minimum(ends[0], ends[1]), torch.maximum(ends[0], ends[1])
    x_low, x_high = torch.minimum(ends[2], ends[3]), torch.maximum(ends[2], ends[3])
    y_high[::23], x_high[::29] = y_low[::23], x_low[::29]  # points along one side
    x_low[::31], y_high[::37] = -math.inf, math.inf
    return Interval(y_low, y_high), Interval(x_low, x_high)


def _points(y: Interval, x: Interval, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """count points per box: uniform ones, corners, and ±0.0 on each axis where the box holds 0 (finite ends
    clipped to ±1e6 for sampling; the infinite ends themselves at the corners)."""
    def sample(interval: Interval) -> torch.Tensor:
        low, high = interval.lower.clamp(-1e6, 1e6), interval.upper.clamp(-1e6, 1e6)
        u = torch.rand(count, *low.shape, generator=generator, dtype=torch.float64)
        values = low + (high - low) * u
        values[0], values[1] = interval.lower, interval.upper
        holds_zero = (interval.lower <= 0) & (interval.upper >= 0)
        values[2] = torch.where(holds_zero, torch.zeros_like(low), values[2])
        values[3] = torch.where(holds_zero, torch.full_like(low, -0.0), values[3])
        return values

    y_values, x_values = sample(y), sample(x)
    # every pairing of the special rows (corners, +0, −0) on both axes
    pairs = torch.cartesian_prod(torch.arange(4), torch.arange(4))
    return torch.cat([y_values, y_values[pairs[:, 0]]]), torch.cat([x_values, x_values[pairs[:, 1]]])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_interval_holds_atan2_at_every_sampled_point(seed, dtype):
    y, x = _boxes(seed)
    low, high = atan2_image(Interval(y.lower.to(dtype), y.upper.to(dtype)), Interval(x.lower.to(dtype), x.upper.to(dtype)))
    y_points, x_points = _points(y, x, 300, torch.Generator().manual_seed(seed))
    values = torch.atan2(y_points.to(dtype), x_points.to(dtype))
    assert torch.isfinite(low).all() and torch.isfinite(high).all()
    assert (values >= low).all(), (low - values).max()
    assert (values <= high).all(), (values - high).max()


@pytest.mark.parametrize("seed", range(3))
def test_the_interval_is_exact_off_the_cut(seed):
    """Where the box misses the closed ray {y = 0, x <= 0} the ends are atan2's extremes (attained at corners)."""
    y, x = _boxes(seed)
    off = ~((y.lower <= 0) & (y.upper >= 0) & (x.lower <= 0)) & torch.isfinite(x.lower) & torch.isfinite(y.upper)
    y, x = Interval(y.lower[off], y.upper[off]), Interval(x.lower[off], x.upper[off])
    low, high = atan2_image(y, x)
    grid = torch.linspace(0, 1, 201, dtype=torch.float64)
    y_grid = y.lower[:, None, None] + (y.upper - y.lower)[:, None, None] * grid[None, :, None]
    x_grid = x.lower[:, None, None] + (x.upper - x.lower)[:, None, None] * grid[None, None, :]
    values = torch.atan2(y_grid, x_grid).flatten(1)
    torch.testing.assert_close(low, values.min(1).values, rtol=0, atol=1e-12)
    torch.testing.assert_close(high, values.max(1).values, rtol=0, atol=1e-12)


def test_boxes_on_the_cut_span_the_whole_turn():
    """Across the negative x axis, around the origin, and touching the cut from above: −0.0 lies in [0, 1], and
    atan2(−0.0, −1) = −π, so [0, 1] × [−2, −1] needs −π too."""
    y = Interval(torch.tensor([-1.0, -1.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0, 1.0]))
    x = Interval(torch.tensor([-2.0, -1.0, -2.0, 0.0]), torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    low, high = atan2_image(y, x)
    torch.testing.assert_close(low, torch.full((4,), -math.pi))
    torch.testing.assert_close(high, torch.full((4,), math.pi))
    assert torch.atan2(torch.tensor(-0.0), torch.tensor(-1.0)) == -torch.tensor(math.pi)
    assert torch.atan2(torch.tensor(0.0), torch.tensor(-0.0)) == torch.tensor(math.pi)


class _Headings(torch.nn.Module):
    """atan2 of two bounded halves, of a bounded tensor and a constant (either side), and broadcast against a column."""

    def __init__(self):
        super().__init__()
        self.first, self.last = torch.nn.Linear(3, 8), torch.nn.Linear(20, 2)
        self.register_buffer("reference", torch.tensor([1.0, -1.0, 0.0, 2.0]))

    def forward(self, x):
        h = self.first(x)
        parts = [torch.atan2(h[:, :4], h[:, 4:]), torch.atan2(h[:, :4], self.reference),
                 torch.atan2(self.reference, h[:, 4:]), torch.atan2(h[:, :4], h[:, 4:5]), torch.atan2(h[:, :4], h[:, :4])]
        return self.last(torch.cat(parts, 1))


@pytest.mark.parametrize("seed", range(4))
def test_networks_with_atan2_are_bounded_soundly(seed):
    torch.manual_seed(seed)
    model, x = _Headings().eval(), torch.randn(2, 3)
    eps = [0.01, 0.1, 0.5, 2.0][seed]
    results = assert_sound(model, x - eps, x + eps, methods=("ibp", "crown", "alpha-crown"), samples=3000)
    assert all(torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all() for bounds in results.values())
    assert (results["crown"].upper - results["crown"].lower <= results["ibp"].upper - results["ibp"].lower + 1e-5).all()
