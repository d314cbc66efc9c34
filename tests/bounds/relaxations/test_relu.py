"""The piecewise-linear relaxations (opwise/bounds/relaxations/relu.py): valid for every α in range, and
the known optimal (triangle) relaxation for a single ReLU neuron."""

import torch

from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.relaxations.relu import clamp, clamp_max, clamp_min, hardtanh, leaky_relu, relu

FAMILIES = {
    "relu": relu((), {}),
    "leaky_relu": leaky_relu((0.1,), {}),
    "steep_leaky_relu": leaky_relu((2.5,), {}),
    "hardtanh": hardtanh((), {}),
    "hardtanh_wide": hardtanh((-0.5, 2.0), {}),
    "clamp": clamp((-1.0, 0.3), {}),
    "clamp_min": clamp_min((0.2,), {}),
    "clamp_max": clamp_max((-0.4,), {}),
}


def _intervals(count: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(count, generator=generator) * 2
    b = torch.randn(count, generator=generator) * 2
    lower, upper = torch.minimum(a, b), torch.maximum(a, b)
    upper[: count // 20] = lower[: count // 20]  # points
    return lower, upper


def _assert_lines_valid(relaxation, lower, upper, alpha=None):
    lines = relaxation.relax(lower, upper, alpha)
    t = torch.linspace(0, 1, 201)[:, None]
    x = lower + (upper - lower) * t
    y = relaxation.function(x)
    tolerance = 1e-5 * (1 + y.abs())
    assert (lines.lower_slope * x + lines.lower_intercept <= y + tolerance).all()
    assert (lines.upper_slope * x + lines.upper_intercept >= y - tolerance).all()
    assert all(torch.isfinite(v).all() for v in (lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept))


def test_default_lines_are_valid_on_random_intervals():
    for name, relaxation in FAMILIES.items():
        lower, upper = _intervals(2000, seed=hash(name) % 1000)
        _assert_lines_valid(relaxation, lower, upper)


def test_lines_are_valid_for_every_alpha_after_clamping():
    for seed, (name, relaxation) in enumerate(FAMILIES.items()):
        lower, upper = _intervals(1000, seed)
        for trial in range(5):
            generator = torch.Generator().manual_seed(100 * seed + trial)
            alpha = AlphaPair(torch.randn(1000, generator=generator) * 3, torch.randn(1000, generator=generator) * 3)
            relaxation.clamp_alpha(alpha, lower, upper)
            _assert_lines_valid(relaxation, lower, upper, alpha)


def test_single_relu_neuron_gets_the_triangle_relaxation():
    lower = torch.tensor([-1.0, -3.0, 0.5, -2.0, -1.0])
    upper = torch.tensor([3.0, 1.0, 2.0, -0.5, 1.0])
    lines = relu((), {}).relax(lower, upper)
    # unstable: the chord from (l, 0) to (u, u) above; the CROWN lower slope 1 if u > -l else 0
    assert torch.allclose(lines.upper_slope[:2], torch.tensor([0.75, 0.25]))
    assert torch.allclose(lines.upper_intercept[:2], torch.tensor([0.75, 0.75]))
    assert lines.lower_slope[:2].tolist() == [1.0, 0.0]
    assert lines.lower_intercept[:2].tolist() == [0.0, 0.0]
    # stable: exact
    assert lines.lower_slope[2:4].tolist() == [1.0, 0.0] and lines.upper_slope[2:4].tolist() == [1.0, 0.0]
    assert lines.upper_intercept[2:4].tolist() == [0.0, 0.0]
    # u == -l: the area-minimising choice is a tie; CROWN takes slope 0
    assert lines.lower_slope[4].item() == 0.0


def test_alpha_range_of_relu_is_zero_to_one_and_lines_pass_through_the_kink():
    lower, upper = torch.tensor([-1.0]), torch.tensor([2.0])
    alpha = AlphaPair(torch.tensor([7.0]), torch.tensor([-3.0]))
    relu((), {}).clamp_alpha(alpha, lower, upper)
    assert alpha.lower.item() == 1.0
    alpha.lower.fill_(0.3)
    lines = relu((), {}).relax(lower, upper, alpha)
    assert abs(lines.lower_slope.item() - 0.3) < 1e-7 and lines.lower_intercept.item() == 0.0


def test_needs_refinement_only_where_an_interval_contains_a_kink():
    lower, upper = torch.tensor([-2.0, -0.5, 0.5, 0.9]), torch.tensor([-0.5, 0.5, 0.8, 1.5])
    assert hardtanh((), {}).needs_refinement(lower, upper).tolist() == [True, False, False, True]
    assert relu((), {}).needs_refinement(lower, upper).tolist() == [False, True, False, False]
