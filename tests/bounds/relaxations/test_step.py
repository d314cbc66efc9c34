"""sign: sound on every interval; its lines are the step values at the interval ends."""

from __future__ import annotations

import pytest
import torch

from opwise.bounds.relaxations.registry import relaxation_for


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sound_on_every_interval(seed, soundness):
    interval_zoo, _, assert_sound = soundness
    relaxation = relaxation_for("aten.sign.default")
    lower, upper = interval_zoo(seed)
    zero = torch.zeros(1, dtype=lower.dtype)  # the step itself, at both ends of intervals
    lower = torch.cat([lower, zero, zero - 1, zero])
    upper = torch.cat([upper, zero + 1, zero, zero])
    assert_sound(torch.sign, relaxation.relax(lower, upper), lower, upper)


@pytest.mark.parametrize("low, high, lower, upper", [
    (-3.0, 1.0, -1.0, 1.0), (0.5, 2.0, 1.0, 1.0), (-2.0, -0.5, -1.0, -1.0), (0.0, 2.0, 0.0, 1.0), (-1.0, 0.0, -1.0, 0.0),
])
def test_lines_are_the_step_values_at_the_ends(low, high, lower, upper):
    lines = relaxation_for("aten.sign.default").relax(torch.tensor([low]), torch.tensor([high]))
    assert lines.lower_slope.item() == 0 and lines.upper_slope.item() == 0
    assert (lines.lower_intercept.item(), lines.upper_intercept.item()) == (lower, upper)
