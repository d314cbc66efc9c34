"""exp, log, pow, reciprocal, sqrt, rsqrt: soundness on their domains, tangent/secant lines, domain errors."""

from __future__ import annotations

import math

import pytest
import torch

from opwise.bounds.relaxations.registry import relaxation_for
from opwise.errors import OpwiseError

# (key, args, true function, domain low, domain high)
CASES = {
    "exp": ("aten.exp.default", (), torch.exp, -50.0, 40.0),
    "log": ("aten.log.default", (), torch.log, 1e-3, 50.0),
    "square": ("aten.pow.Tensor_Scalar", (2,), lambda x: x * x, -50.0, 50.0),
    "cube": ("aten.pow.Tensor_Scalar", (3,), lambda x: x * x * x, -50.0, 50.0),
    "fourth": ("aten.pow.Tensor_Scalar", (4.0,), lambda x: x**4, -20.0, 20.0),
    "half": ("aten.pow.Tensor_Scalar", (0.5,), torch.sqrt, 0.0, 50.0),
    "one_and_half": ("aten.pow.Tensor_Scalar", (1.5,), lambda x: x * torch.sqrt(x), 0.0, 50.0),
    "inverse": ("aten.pow.Tensor_Scalar", (-1,), lambda x: 1 / x, 0.01, 50.0),
    "inverse_square": ("aten.pow.Tensor_Scalar", (-2,), lambda x: 1 / (x * x), 0.05, 50.0),
    "inverse_root": ("aten.pow.Tensor_Scalar", (-0.5,), torch.rsqrt, 0.01, 50.0),
    "zero": ("aten.pow.Tensor_Scalar", (0,), torch.ones_like, -50.0, 50.0),
    "reciprocal_positive": ("aten.reciprocal.default", (), torch.reciprocal, 0.01, 50.0),
    "reciprocal_negative": ("aten.reciprocal.default", (), torch.reciprocal, -50.0, -0.01),
    "inverse_cube_negative": ("aten.pow.Tensor_Scalar", (-3,), lambda x: x**-3, -50.0, -0.1),
    "sqrt": ("aten.sqrt.default", (), torch.sqrt, 0.0, 50.0),
    "rsqrt": ("aten.rsqrt.default", (), torch.rsqrt, 0.01, 50.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_sound_for_default_and_random_alpha(name, seed, soundness):
    interval_zoo, random_alpha, assert_sound = soundness
    key, args, function, low, high = CASES[name]
    relaxation = relaxation_for(key, args)
    lower, upper = interval_zoo(seed, count=100, low=low, high=high)
    assert_sound(function, relaxation.relax(lower, upper), lower, upper)
    assert_sound(function, relaxation.relax(lower, upper, random_alpha(relaxation, lower, upper, seed)), lower, upper)


def test_convex_exp_is_secant_above_and_midpoint_tangent_below():
    lines = relaxation_for("aten.exp.default").relax(torch.tensor([0.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64))
    assert lines.upper_slope.item() == pytest.approx((math.exp(2) - 1) / 2, rel=1e-12)
    assert lines.upper_intercept.item() == pytest.approx(1.0, rel=1e-12)
    assert lines.lower_slope.item() == pytest.approx(math.e, rel=1e-12)
    assert lines.lower_intercept.item() == pytest.approx(0.0, abs=1e-12)


def test_concave_log_is_secant_below_and_midpoint_tangent_above():
    lines = relaxation_for("aten.log.default").relax(torch.tensor([1.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64))
    assert lines.lower_slope.item() == pytest.approx(math.log(3) / 2, rel=1e-12)
    assert lines.upper_slope.item() == pytest.approx(0.5, rel=1e-12)
    assert lines.upper_intercept.item() == pytest.approx(math.log(2) - 1, rel=1e-12)


def test_cube_across_zero_touches_at_both_ends():
    lines = relaxation_for("aten.pow.Tensor_Scalar", (3,)).relax(torch.tensor([-1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64))
    # lower line through (-1, -1) tangent to x³ at t > 0: 2t³ + 3t² - 1 = (t + 1)²(2t - 1) = 0, so t = 1/2
    assert lines.lower_slope.item() == pytest.approx(0.75, rel=1e-9)
    # upper line through (2, 8) tangent at t < 0: t³ - 3t² + 4 = (t + 1)(t - 2)² = 0, so t = -1 (the left end)
    assert lines.upper_slope.item() == pytest.approx(3.0, rel=1e-9)


@pytest.mark.parametrize(
    "key,args,lower,upper",
    [
        ("aten.reciprocal.default", (), -1.0, 1.0),
        ("aten.reciprocal.default", (), 0.0, 1.0),
        ("aten.pow.Tensor_Scalar", (-2,), -1.0, 0.5),
        ("aten.log.default", (), 0.0, 1.0),
        ("aten.sqrt.default", (), -0.1, 1.0),
        ("aten.rsqrt.default", (), 0.0, 1.0),
        ("aten.pow.Tensor_Scalar", (0.5,), -1.0, 1.0),
    ],
)
def test_intervals_outside_the_domain_raise_a_clear_error(key, args, lower, upper):
    with pytest.raises(OpwiseError, match="tighten"):
        relaxation_for(key, args).relax(torch.tensor([lower]), torch.tensor([upper]))


def test_sqrt_at_zero_stays_finite():
    lines = relaxation_for("aten.sqrt.default").relax(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 4.0]))
    for part in (lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept):
        assert torch.isfinite(part).all()
    assert lines.lower_slope[1].item() == pytest.approx(0.5)
