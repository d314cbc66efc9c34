"""asin, acos, atanh, acosh and tan: sound lines for every interval of the domain and every α (the steep ends
included), the exact range, unbounded (never NaN) lines and ranges where an interval leaves the domain, and
whole networks bounded soundly and verified by branch-and-bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import opwise
from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.relaxations.registry import relaxation_for
from opwise.bounds.transfers.nonlinear import Elementwise
from opwise.bounds.transfers.registry import Interval
from tests.bounds.helpers import assert_sound as assert_network_sound

#: key -> (f, the domain's ends, whether they are excluded)
FUNCTIONS = {
    "aten.asin.default": (torch.asin, (-1.0, 1.0), False),
    "aten.acos.default": (torch.acos, (-1.0, 1.0), False),
    "aten.atanh.default": (torch.atanh, (-1.0, 1.0), True),
    "aten.acosh.default": (torch.acosh, (1.0, 9.0), False),
    "aten.tan.default": (torch.tan, (-math.pi / 2, math.pi / 2), True),
}


def _domain_intervals(key: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The interval zoo within the domain, plus intervals that end at (or a hair inside) its ends."""
    from tests.bounds.relaxations.conftest import interval_zoo

    _, (low, high), open_ends = FUNCTIONS[key]
    inset = 1e-7 if open_ends else 0.0
    lower, upper = interval_zoo(seed, low=low + inset, high=high - inset)
    ends = torch.tensor([low + inset, high - inset], dtype=torch.float64)
    middle = (low + high) / 2 if math.isfinite(high) else low + 1
    extra_lower = torch.stack([ends[0], ends[0], torch.tensor(middle, dtype=torch.float64), ends[0], ends[1]])
    extra_upper = torch.stack([ends[1], torch.tensor(middle, dtype=torch.float64), ends[1], ends[0], ends[1]])
    return torch.cat([lower, extra_lower]), torch.cat([upper, extra_upper])


def _random_alpha(key: str, lower: torch.Tensor, upper: torch.Tensor, seed: int) -> AlphaPair:
    """α drawn inside the range each line stays sound (tan: its principal branch's, the interval moved there)."""
    from tests.bounds.relaxations.conftest import random_alpha

    relaxation = relaxation_for(key)
    if key == "aten.tan.default":
        shift = relaxation._shift(lower, upper)
        return random_alpha(relaxation.principal, lower - shift, upper - shift, seed)
    return random_alpha(relaxation, lower, upper, seed)


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sound_for_default_and_random_alpha(key, seed, soundness):
    _, _, assert_sound = soundness
    relaxation = relaxation_for(key)
    lower, upper = _domain_intervals(key, seed)
    assert_sound(relaxation.function, relaxation.relax(lower, upper), lower, upper)
    assert_sound(relaxation.function, relaxation.relax(lower, upper, _random_alpha(key, lower, upper, seed)), lower, upper)


@pytest.mark.parametrize("branch", [-2, -1, 1, 3])
def test_tan_on_other_branches_is_the_principal_branch_moved(branch, soundness):
    _, _, assert_sound = soundness
    lower, upper = _domain_intervals("aten.tan.default", branch + 5)
    lower, upper = lower + branch * math.pi, upper + branch * math.pi
    relaxation = relaxation_for("aten.tan.default")
    assert_sound(torch.tan, relaxation.relax(lower, upper), lower, upper)
    assert_sound(torch.tan, relaxation.relax(lower, upper, _random_alpha("aten.tan.default", lower, upper, 0)), lower, upper)


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_interval_bounds_are_the_exact_range(key):
    f, (low, high), _ = FUNCTIONS[key]
    lower, upper = _domain_intervals(key, 3)
    image = Elementwise().ibp(type("Step", (), {"relaxation": relaxation_for(key)})(), [Interval(lower, upper)])
    grid = lower[:, None] + (upper - lower)[:, None] * torch.linspace(0, 1, 2001, dtype=torch.float64)
    grid[:, -1] = upper  # the ends exactly (acos(1) = 0; the sum above lands a rounding below 1)
    values = f(grid)
    assert torch.allclose(image.lower, values.min(1).values, rtol=1e-9, atol=1e-9)
    assert torch.allclose(image.upper, values.max(1).values, rtol=1e-9, atol=1e-9)


#: per function, intervals that leave the domain (tan: across a pole)
OUTSIDE = {
    "aten.asin.default": ([-1.5, 0.5, -2.0], [-0.5, 1.01, 2.0]),
    "aten.acos.default": ([-1.5, 0.5, -2.0], [-0.5, 1.01, 2.0]),
    "aten.atanh.default": ([-1.0, 0.5, -2.0], [0.0, 1.0, 2.0]),
    "aten.acosh.default": ([0.0, 0.999, -3.0], [2.0, 1.5, -2.0]),
    "aten.tan.default": ([1.0, -2.0, 1.5], [2.0, -1.0, 4.8]),
}


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_intervals_leaving_the_domain_get_unbounded_lines_and_ranges(key):
    """The function is NaN or infinite there: no line can bound it, and none is made up; the element inside the
    domain beside them keeps its finite lines."""
    relaxation = relaxation_for(key)
    outside_lower, outside_upper = OUTSIDE[key]
    inside_lower, inside_upper = _domain_intervals(key, 0)
    lower = torch.tensor(outside_lower + [inside_lower[1].item()], dtype=torch.float64)
    upper = torch.tensor(outside_upper + [inside_upper[1].item()], dtype=torch.float64)
    for lines in (relaxation.relax(lower, upper), relaxation.relax(lower, upper, relaxation.init_alpha(lower, upper))):
        assert (lines.lower_intercept[:-1] == -math.inf).all() and (lines.upper_intercept[:-1] == math.inf).all()
        assert (lines.lower_slope[:-1] == 0).all() and (lines.upper_slope[:-1] == 0).all()
        assert all(torch.isfinite(part[-1]) for part in (lines.lower_slope, lines.lower_intercept, lines.upper_slope,
                                                          lines.upper_intercept))
    image = Elementwise().ibp(type("Step", (), {"relaxation": relaxation})(), [Interval(lower, upper)])
    assert (image.lower[:-1] == -math.inf).all() and (image.upper[:-1] == math.inf).all()
    assert torch.isfinite(image.lower[-1]) and torch.isfinite(image.upper[-1])


class _Angles(nn.Module):
    """Each function of the family on its own hidden units, fed through tanh into its domain (acosh also at its
    steep end, from 1 + t², whose range starts at 0 as a square), mixed by a last layer."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.first, self.last = nn.Linear(3, 6 * width), nn.Linear(6 * width, 2)

    def forward(self, x):
        a, b, c, d, e, g = torch.tanh(self.first(x)).chunk(6, dim=-1)
        parts = [torch.asin(0.95 * a), torch.acos(b), torch.atanh(0.9 * c), torch.acosh(2 + d), torch.acosh(1 + e ** 2),
                 torch.tan(1.4 * g)]
        return self.last(torch.cat(parts, dim=-1))


@pytest.mark.parametrize("seed", range(4))
def test_networks_of_the_family_are_bounded_soundly(seed):
    torch.manual_seed(seed)
    model = _Angles().eval()
    x = torch.randn(2, 3)
    eps = [0.05, 0.3, 1.0, 3.0][seed]
    results = assert_network_sound(model, x - eps, x + eps, methods=("ibp", "crown", "alpha-crown"), samples=2000)
    assert all(torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all() for bounds in results.values())


def test_a_network_leaving_the_domain_gets_unbounded_not_made_up_bounds():
    """asin of a linear layer: at eps 0.01 its inputs stay inside [−1, 1] and the bounds are finite; at eps 100 they
    leave it, the model's outputs can be NaN, and every method reports the affected outputs as unbounded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), type("Asin", (nn.Module,), {"forward": lambda self, x: torch.asin(x)})(),
                          nn.Linear(3, 1)).eval()
    with torch.no_grad():
        model[0].weight.mul_(0.1)
        model[0].bias.zero_()
    x = torch.zeros(1, 2)
    for method in ("ibp", "crown", "alpha-crown"):
        near = opwise.compute_bounds(model, x, eps=0.01, method=method)
        assert torch.isfinite(near.lower).all() and torch.isfinite(near.upper).all()
        with pytest.warns(RuntimeWarning, match="asin: an input interval leaves its domain"):
            far = opwise.compute_bounds(model, x, eps=100.0, method=method)
        assert (far.lower == -math.inf).all() and (far.upper == math.inf).all()


def test_branch_and_bound_splits_them_and_agrees_with_a_grid():
    """A property that holds on a dense grid but that the bounds alone leave open: GenBaB, splitting the
    functions' inputs, proves it."""
    from opwise.bounds.verify import verify

    for seed in range(20):
        torch.manual_seed(seed)
        model, x, eps = _Angles(width=2).eval(), torch.zeros(1, 3), 0.5
        with torch.no_grad():
            grid = torch.stack(torch.meshgrid(*[torch.linspace(-eps, eps, 31)] * 3, indexing="ij"), -1).reshape(-1, 3)
            values = model(grid)
        target = int(model(x).argmax())
        margin = float((values[:, target] - values[:, 1 - target]).min())
        if margin > 0.02 and verify(model, x, eps=eps, target=target).status == "unknown":
            break
    else:
        pytest.skip("no seed gave a property the bounds alone leave open")
    result = verify(model, x, eps=eps, target=target, bab={"strategy": "genbab"}, timeout=60)
    assert result.status == "verified" and result.stats["bab"]["branching_decisions"] > 0
