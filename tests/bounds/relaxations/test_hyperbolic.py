"""atan, asinh, sinh and cosh: sound lines for every interval and α, the exact range, the textbook lines on
one convex or concave piece, and whole networks bounded soundly and verified by branch-and-bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from opwise.bounds.relaxations.registry import relaxation_for
from tests.bounds.helpers import assert_sound as assert_network_sound

#: f, f' and the side of 0 where f is convex ("below", "above" or "both")
FUNCTIONS = {
    "aten.atan.default": (math.atan, lambda x: 1 / (1 + x * x), "below"),
    "aten.asinh.default": (math.asinh, lambda x: 1 / math.sqrt(1 + x * x), "below"),
    "aten.sinh.default": (math.sinh, math.cosh, "above"),
    "aten.cosh.default": (math.cosh, math.sinh, "both"),
}


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sound_for_default_and_random_alpha(key, seed, soundness):
    interval_zoo, random_alpha, assert_sound = soundness
    relaxation = relaxation_for(key)
    lower, upper = interval_zoo(seed)
    assert_sound(relaxation.function, relaxation.relax(lower, upper), lower, upper)
    assert_sound(relaxation.function, relaxation.relax(lower, upper, random_alpha(relaxation, lower, upper, seed)), lower, upper)


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_interval_bounds_are_the_exact_range(key):
    from opwise.bounds.transfers.nonlinear import Elementwise
    from opwise.bounds.transfers.registry import Interval

    f = FUNCTIONS[key][0]
    lower = torch.tensor([-3.0, -1.0, 0.5, -2.0, 0.0], dtype=torch.float64)
    upper = torch.tensor([-1.0, 2.0, 3.0, 0.5, 0.0], dtype=torch.float64)
    step = type("Step", (), {"relaxation": relaxation_for(key)})()
    image = Elementwise().ibp(step, [Interval(lower, upper)])
    for index in range(len(lower)):
        points = [lower[index].item() + (upper[index] - lower[index]).item() * k / 2000 for k in range(2001)]
        grid = [f(p) for p in points + ([0.0] if lower[index] < 0 < upper[index] else [])]  # cosh's minimum
        assert image.lower[index].item() == pytest.approx(min(grid), abs=1e-9)
        assert image.upper[index].item() == pytest.approx(max(grid), abs=1e-9)


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_one_piece_gets_the_secant_and_the_midpoint_tangent(key):
    f, df, convex = FUNCTIONS[key]
    low, high = (-3.0, -1.0) if convex in ("below", "both") else (1.0, 3.0)  # a convex piece
    lines = relaxation_for(key).relax(torch.tensor([low], dtype=torch.float64), torch.tensor([high], dtype=torch.float64))
    middle = (low + high) / 2
    assert lines.upper_slope.item() == pytest.approx((f(high) - f(low)) / (high - low), rel=1e-9)
    assert lines.upper_slope.item() * low + lines.upper_intercept.item() == pytest.approx(f(low), abs=1e-9)
    assert lines.lower_slope.item() == pytest.approx(df(middle), rel=1e-9)
    assert lines.lower_slope.item() * middle + lines.lower_intercept.item() == pytest.approx(f(middle), abs=1e-9)


class _Angles(nn.Module):
    """Every function of the family on its own hidden units, mixed by a last layer."""

    def __init__(self, width: int = 6):
        super().__init__()
        self.first, self.last = nn.Linear(3, 4 * width), nn.Linear(4 * width, 2)

    def forward(self, x):
        a, b, c, d = self.first(x).chunk(4, dim=-1)
        return self.last(torch.cat([torch.atan(a), torch.asinh(b), torch.sinh(c), torch.cosh(d)], dim=-1))


@pytest.mark.parametrize("seed", range(4))
def test_networks_of_the_family_are_bounded_soundly(seed):
    torch.manual_seed(seed)
    model = _Angles().eval()
    x = torch.randn(2, 3)
    eps = [0.05, 0.3, 1.0, 2.0][seed]
    assert_network_sound(model, x - eps, x + eps, methods=("ibp", "crown", "alpha-crown"), samples=2000)


def test_branch_and_bound_splits_them_and_agrees_with_a_grid():
    """A net whose property holds on a dense grid (margin 0.044) that the bounds alone leave open: GenBaB,
    splitting the functions' inputs at midpoints (no tables), proves it."""
    from opwise.bounds.verify import verify

    torch.manual_seed(5)
    model, x, eps = _Angles(width=3).eval(), torch.zeros(1, 3), 0.6
    with torch.no_grad():
        grid = torch.stack(torch.meshgrid(*[torch.linspace(-eps, eps, 41)] * 3, indexing="ij"), -1).reshape(-1, 3)
        values = model(grid)
    target = int(model(x).argmax())
    assert float((values[:, target] - values[:, 1 - target]).min()) > 0.04
    assert verify(model, x, eps=eps, target=target).status == "unknown"
    result = verify(model, x, eps=eps, target=target, bab={"strategy": "genbab"}, timeout=60)
    assert result.status == "verified" and result.stats["bab"]["branching_decisions"] > 0
