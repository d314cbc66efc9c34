"""GELU (both forms) and SiLU relaxations: sound on wide, non-monotone intervals; respect the known minima."""

from __future__ import annotations

import pytest
import torch

from opwise.bounds.relaxations.registry import relaxation_for

CASES = {
    "gelu": (("aten.gelu.default", (), {}), torch.nn.functional.gelu, -0.16997),
    "gelu_tanh": (("aten.gelu.default", (), {"approximate": "tanh"}), lambda x: torch.nn.functional.gelu(x, approximate="tanh"), -0.17004),
    "silu": (("aten.silu.default", (), {}), torch.nn.functional.silu, -0.27846),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sound_for_default_and_random_alpha(name, seed, soundness):
    interval_zoo, random_alpha, assert_sound = soundness
    (key, args, kwargs), function, _ = CASES[name]
    relaxation = relaxation_for(key, args, kwargs)
    lower, upper = interval_zoo(seed, low=-60.0, high=60.0)
    assert_sound(function, relaxation.relax(lower, upper), lower, upper, samples=2001)
    assert_sound(function, relaxation.relax(lower, upper, random_alpha(relaxation, lower, upper, seed)), lower, upper, samples=2001)


@pytest.mark.parametrize("name", sorted(CASES))
def test_lower_line_is_below_the_known_minimum(name):
    (key, args, kwargs), function, minimum = CASES[name]
    lower = torch.tensor([-5.0, -2.0, -1.5, -30.0], dtype=torch.float64)
    upper = torch.tensor([5.0, 0.5, 1.0, 30.0], dtype=torch.float64)
    lines = relaxation_for(key, args, kwargs).relax(lower, upper)
    x = torch.linspace(-30, 30, 600001, dtype=torch.float64)
    inside = (x[None] >= lower[:, None]) & (x[None] <= upper[:, None])
    low_line = lines.lower_slope[:, None] * x + lines.lower_intercept[:, None]
    assert (low_line.masked_fill(~inside, float("inf")).min(dim=1).values <= minimum + 1e-5).all()
    assert function(x).min().item() == pytest.approx(minimum, abs=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_inside_the_convex_middle_lines_are_midpoint_tangent_and_secant(name):
    (key, args, kwargs), function, _ = CASES[name]
    lower, upper = torch.tensor([-0.5], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    lines = relaxation_for(key, args, kwargs).relax(lower, upper)
    middle = torch.tensor([0.25], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(function(middle).sum(), middle)
    assert lines.lower_slope.item() == pytest.approx(slope.item(), rel=1e-9)
    assert lines.upper_slope.item() == pytest.approx(((function(upper) - function(lower)) / 1.5).item(), rel=1e-9)


def test_wide_interval_slopes_are_tunable_between_relu_choices():
    relaxation = relaxation_for("aten.gelu.default")
    lower, upper = torch.tensor([-5.0]), torch.tensor([5.0])
    low_plan, _ = relaxation.plan(lower.double(), upper.double())
    assert low_plan.low.item() == pytest.approx(0.0, abs=1e-5)
    assert low_plan.high.item() == pytest.approx(1.0, abs=1e-5)
