"""Sigmoid, tanh and erf relaxations: soundness for every interval and α, and CROWN's tangent/secant cases."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import brentq

from opwise.bounds.relaxations.registry import relaxation_for

FUNCTIONS = {
    "aten.sigmoid.default": (lambda x: 1 / (1 + math.exp(-x)), lambda x: math.exp(-x) / (1 + math.exp(-x)) ** 2),
    "aten.tanh.default": (math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    "aten.erf.default": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x)),
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
def test_convex_side_is_midpoint_tangent_below_and_secant_above(key):
    f, df = FUNCTIONS[key]
    lines = relaxation_for(key).relax(torch.tensor([-3.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64))
    assert lines.upper_slope.item() == pytest.approx((f(-1.0) - f(-3.0)) / 2, rel=1e-9)
    assert lines.upper_slope.item() * -3 + lines.upper_intercept.item() == pytest.approx(f(-3.0), abs=1e-12)
    assert lines.lower_slope.item() == pytest.approx(df(-2.0), rel=1e-9)
    assert lines.lower_slope.item() * -2 + lines.lower_intercept.item() == pytest.approx(f(-2.0), abs=1e-12)


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_concave_side_mirrors_the_convex_side(key):
    f, df = FUNCTIONS[key]
    lines = relaxation_for(key).relax(torch.tensor([1.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64))
    assert lines.lower_slope.item() == pytest.approx((f(3.0) - f(1.0)) / 2, rel=1e-9)
    assert lines.upper_slope.item() == pytest.approx(df(2.0), rel=1e-9)


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
@pytest.mark.parametrize("low, high", [(-1.0, 2.0), (-2.0, 1.0), (-1.5, 1.0)])
def test_straddling_lines_touch_the_curve_at_the_midpoint_when_sound_else_through_the_far_end(key, low, high):
    # a tangent below on the convex piece is sound at every point in [low, d_low] (d_low: its line passes
    # through (high, f(high))), above on the concave piece at every point in [d_high, high]; CROWN (as
    # auto_LiRPA) takes the midpoint where it lies in that range, else d
    f, df = FUNCTIONS[key]
    middle = (low + high) / 2
    touch_high = brentq(lambda t: f(t) + df(t) * (low - t) - f(low), 0.0, high, xtol=1e-14)
    touch_low = brentq(lambda t: f(t) + df(t) * (high - t) - f(high), low, 0.0, xtol=1e-14)
    lines = relaxation_for(key).relax(torch.tensor([low], dtype=torch.float64), torch.tensor([high], dtype=torch.float64))
    upper_point = middle if middle >= touch_high else touch_high
    lower_point = middle if middle <= touch_low else touch_low
    assert lines.upper_slope.item() == pytest.approx(df(upper_point), rel=1e-7)
    assert lines.upper_slope.item() * upper_point + lines.upper_intercept.item() == pytest.approx(f(upper_point), abs=1e-9)
    assert lines.lower_slope.item() == pytest.approx(df(lower_point), rel=1e-7)
    assert lines.lower_slope.item() * lower_point + lines.lower_intercept.item() == pytest.approx(f(lower_point), abs=1e-9)
    if upper_point == touch_high:
        assert lines.upper_slope.item() * low + lines.upper_intercept.item() == pytest.approx(f(low), abs=1e-9)
    if lower_point == touch_low:
        assert lines.lower_slope.item() * high + lines.lower_intercept.item() == pytest.approx(f(high), abs=1e-9)


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_straddling_without_a_touching_tangent_uses_the_secant(key):
    f, _ = FUNCTIONS[key]
    low, high = -5.0, 0.5
    lines = relaxation_for(key).relax(torch.tensor([low], dtype=torch.float64), torch.tensor([high], dtype=torch.float64))
    assert lines.upper_slope.item() == pytest.approx((f(high) - f(low)) / (high - low), rel=1e-9)


@pytest.mark.parametrize("key", sorted(FUNCTIONS))
def test_float32_huge_intervals_stay_finite_and_keep_dtype(key):
    relaxation = relaxation_for(key)
    lower = torch.tensor([-1e4, -50.0, 3.0, -0.0], dtype=torch.float32)
    upper = torch.tensor([1e4, 50.0, 3.0, 1e-7], dtype=torch.float32)
    lines = relaxation.relax(lower, upper)
    assert lines.lower_slope.dtype == torch.float32
    for part in (lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept):
        assert torch.isfinite(part).all()


def test_alpha_init_is_crown_choice_and_clamp_projects_into_range():
    relaxation = relaxation_for("aten.sigmoid.default")
    lower, upper = torch.tensor([-1.0, -3.0]), torch.tensor([2.0, -1.0])
    alpha = relaxation.init_alpha(lower, upper)
    assert torch.equal(relaxation.relax(lower, upper, alpha).upper_slope, relaxation.relax(lower, upper).upper_slope)
    alpha.lower.fill_(100.0)
    relaxation.clamp_alpha(alpha, lower, upper)
    assert alpha.lower[1].item() == pytest.approx(-1.0)
    assert alpha.lower[0].item() <= 0.0


def test_alpha_receives_gradients():
    relaxation = relaxation_for("aten.tanh.default")
    lower, upper = torch.tensor([-1.0, -3.0, 1.0]), torch.tensor([2.0, -1.0, 2.0])
    alpha = relaxation.init_alpha(lower, upper)
    alpha.lower.requires_grad_(True)
    alpha.upper.requires_grad_(True)
    lines = relaxation.relax(lower, upper, alpha)
    (lines.lower_intercept.sum() + lines.upper_intercept.sum()).backward()
    assert alpha.lower.grad is not None and torch.isfinite(alpha.lower.grad).all()
    assert alpha.upper.grad[2] != 0
