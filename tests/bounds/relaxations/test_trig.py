"""sin and cos relaxations: sound on any interval (wider than 2π included), exact extremes, tight pieces."""

from __future__ import annotations

import math

import pytest
import torch

from opwise.bounds.relaxations.registry import relaxation_for
from opwise.bounds.relaxations.trig import sine_extremes

KEYS = ["aten.sin.default", "aten.cos.default"]
TRUE = {"aten.sin.default": torch.sin, "aten.cos.default": torch.cos}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sound_for_default_and_random_alpha(key, seed, soundness):
    interval_zoo, random_alpha, assert_sound = soundness
    relaxation = relaxation_for(key)
    lower, upper = interval_zoo(seed, low=-60.0, high=60.0)
    assert_sound(TRUE[key], relaxation.relax(lower, upper), lower, upper, samples=2001)
    alpha = random_alpha(relaxation, lower, upper, seed)
    assert_sound(TRUE[key], relaxation.relax(lower, upper, alpha), lower, upper, samples=2001)


def test_sine_extremes_match_dense_sampling():
    generator = torch.Generator().manual_seed(3)
    lower = torch.rand(300, generator=generator, dtype=torch.float64) * 40 - 20
    upper = lower + torch.rand(300, generator=generator, dtype=torch.float64) * torch.tensor([0.1, 2.0, 8.0]).double().repeat(100)
    low, high = sine_extremes(lower, upper)
    x = lower[:, None] + (upper - lower)[:, None] * torch.linspace(0, 1, 20001, dtype=torch.float64)
    assert torch.allclose(low, torch.sin(x).min(dim=1).values, atol=1e-6)
    assert torch.allclose(high, torch.sin(x).max(dim=1).values, atol=1e-6)


def test_wider_than_two_pi_bounds_the_full_range():
    lines = relaxation_for("aten.sin.default").relax(torch.tensor([-10.0]), torch.tensor([10.0]))
    x = torch.linspace(-10, 10, 5)
    assert ((lines.upper_slope * x + lines.upper_intercept) >= 1.0 - 1e-6).any()
    assert ((lines.lower_slope * x + lines.lower_intercept) <= -1.0 + 1e-6).any()


def test_inside_a_concave_piece_the_lines_are_midpoint_tangent_and_secant():
    low, high = 0.5, 2.5
    lines = relaxation_for("aten.sin.default").relax(torch.tensor([low], dtype=torch.float64), torch.tensor([high], dtype=torch.float64))
    assert lines.upper_slope.item() == pytest.approx(math.cos(1.5), rel=1e-9)
    assert lines.lower_slope.item() == pytest.approx((math.sin(high) - math.sin(low)) / 2, rel=1e-9)
    gap = (lines.upper_slope - lines.lower_slope) * 1.5 + lines.upper_intercept - lines.lower_intercept
    assert gap.item() < 1.0 - math.sin(low)


def test_cos_is_sin_shifted():
    lower, upper = torch.tensor([-0.3, 1.0], dtype=torch.float64), torch.tensor([0.9, 7.0], dtype=torch.float64)
    cos_lines = relaxation_for("aten.cos.default").relax(lower, upper)
    sin_lines = relaxation_for("aten.sin.default").relax(lower + math.pi / 2, upper + math.pi / 2)
    assert torch.allclose(cos_lines.upper_slope, sin_lines.upper_slope)
    assert torch.allclose(cos_lines.upper_intercept, sin_lines.upper_intercept + sin_lines.upper_slope * math.pi / 2)
