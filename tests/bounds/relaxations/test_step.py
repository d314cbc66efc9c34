"""sign: sound on every interval, and the constant-or-corner choice across 0."""

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


@pytest.mark.parametrize("low, high, upper_line, lower_line", [
    (-3.0, 1.0, (2 / 3, 1.0), (0.0, -1.0)),   # reaches further below 0: corner line above, −1 below
    (-1.0, 4.0, (0.0, 1.0), (0.5, -1.0)),    # further above: 1 above, corner line below
    (0.5, 2.0, (0.0, 1.0), (0.0, 1.0)),      # constant sides
    (-2.0, -0.5, (0.0, -1.0), (0.0, -1.0)),
    (0.0, 2.0, (0.0, 1.0), (0.0, 0.0)),      # touching 0: sign(0) = 0 is the lower end
])
def test_lines(low, high, upper_line, lower_line):
    lines = relaxation_for("aten.sign.default").relax(torch.tensor([low]), torch.tensor([high]))
    assert (lines.upper_slope.item(), lines.upper_intercept.item()) == pytest.approx(upper_line)
    assert (lines.lower_slope.item(), lines.lower_intercept.item()) == pytest.approx(lower_line)
