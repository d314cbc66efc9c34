"""threshold, hardshrink, softshrink: lines and interval images sound on every kind of interval, intervals that
straddle a jump or kink included, and at the breakpoints themselves (torch's own functions as the reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from opwise.bounds.relaxations.registry import relaxation_for

CASES = {
    "threshold": (("aten.threshold.default", (0.1, -0.5)), lambda x: F.threshold(x, 0.1, -0.5), (0.1,)),
    "threshold_jump_down": (("aten.threshold.default", (-1.0, 2.0)), lambda x: F.threshold(x, -1.0, 2.0), (-1.0,)),
    "hardshrink": (("aten.hardshrink.default", (0.5,)), lambda x: F.hardshrink(x, 0.5), (-0.5, 0.5)),
    "softshrink": (("aten.softshrink.default", (0.3,)), lambda x: F.softshrink(x, 0.3), (-0.3, 0.3)),
}


def straddling(breakpoints: tuple[float, ...], seed: int, count: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Random intervals with an end close to a breakpoint or across it, of widths from 1e-6 to 10."""
    generator = torch.Generator().manual_seed(seed)
    at = torch.tensor(breakpoints, dtype=torch.float64)[torch.randint(0, len(breakpoints), (count,), generator=generator)]
    width = 10 ** (torch.rand(count, generator=generator, dtype=torch.float64) * 7 - 6)
    share = torch.rand(count, generator=generator, dtype=torch.float64) * 1.2 - 0.1  # ends just beside it, too
    lower = at - share * width
    return lower, lower + width


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lines_and_image_are_sound(name, seed, soundness):
    interval_zoo, _, assert_sound = soundness
    (key, args), function, breakpoints = CASES[name]
    relaxation = relaxation_for(key, args)
    zoo = interval_zoo(seed, low=-8.0, high=8.0)
    near = straddling(breakpoints, seed)
    lower, upper = torch.cat([zoo[0], near[0]]), torch.cat([zoo[1], near[1]])
    lines = relaxation.relax(lower, upper)
    assert_sound(function, lines, lower, upper, samples=2001)
    # the breakpoints themselves (where a jump's value sits), inside each interval
    for point in breakpoints:
        inside = (lower <= point) & (point <= upper)
        value = function(torch.full_like(lower, point))
        assert (lines.lower_slope * point + lines.lower_intercept <= value + 1e-9)[inside].all()
        assert (lines.upper_slope * point + lines.upper_intercept >= value - 1e-9)[inside].all()
    low, high = relaxation.image(lower, upper)
    x = lower[:, None] + (upper - lower)[:, None] * torch.linspace(0, 1, 2001, dtype=torch.float64)
    x = torch.minimum(x, upper[:, None])  # l + (u − l)·1 may round past u, across a jump
    values = function(x)
    assert (low[:, None] <= values).all() and (values <= high[:, None]).all()


def test_image_is_the_exact_range_where_it_is_attained():
    relaxation = relaxation_for("aten.hardshrink.default", (0.5,))
    low, high = relaxation.image(torch.tensor([-2.0, 0.1, -0.4, 0.6]), torch.tensor([-1.0, 3.0, 0.4, 0.7]))
    assert low.tolist() == [-2.0, 0.0, 0.0, pytest.approx(0.6)]
    assert high.tolist() == [-1.0, 3.0, 0.0, pytest.approx(0.7)]


def test_softshrink_is_exact_on_each_piece_and_lines_are_hand_derived_across_one_kink():
    relaxation = relaxation_for("aten.softshrink.default", (1.0,))
    lines = relaxation.relax(torch.tensor([2.0, 0.0]), torch.tensor([4.0, 3.0]))
    # on [2, 4] softshrink is x − 1 exactly
    assert lines.lower_slope[0] == 1 and lines.upper_slope[0] == 1
    assert lines.lower_intercept[0] == -1 and lines.upper_intercept[0] == -1
    # on [0, 3]: 0 up to 1, then x − 1; the chord from (0, 0) to (3, 2) above; below, the better of 0 and x − 1
    # (mean over [0, 3]: 0 vs 0.5), so x − 1
    assert lines.upper_slope[1] == pytest.approx(2 / 3) and lines.upper_intercept[1] == pytest.approx(0.0)
    assert lines.lower_slope[1] == pytest.approx(1.0) and lines.lower_intercept[1] == pytest.approx(-1.0)


def test_an_interval_ending_at_a_jump_is_relaxed_without_the_far_side():
    """A branch-and-bound split at a jump leaves intervals that end there: only the limit the interval reaches counts
    (before, both limits did, and no split could make the lines exact)."""
    hardshrink = relaxation_for("aten.hardshrink.default", (0.5,))
    lines = hardshrink.relax(torch.tensor([-0.5, 0.5]), torch.tensor([0.5, 2.0]))
    # on [−0.5, 0.5] hardshrink is 0 (its value at ±0.5 included)
    assert lines.lower_slope[0] == 0 and lines.lower_intercept[0] == 0
    assert lines.upper_slope[0] == 0 and lines.upper_intercept[0] == 0
    threshold = relaxation_for("aten.threshold.default", (0.1, -0.5))
    lines = threshold.relax(torch.tensor([-1.0]), torch.tensor([0.1]))  # x <= 0.1 gives −0.5, at 0.1 too
    assert lines.lower_intercept.item() == -0.5 and lines.upper_intercept.item() == -0.5
    assert lines.lower_slope.item() == 0 and lines.upper_slope.item() == 0


def test_split_point_is_the_breakpoint_nearest_the_middle():
    softshrink = relaxation_for("aten.softshrink.default", (0.3,))
    points = softshrink.split_at(torch.tensor([-1.0, -0.2, 0.5]), torch.tensor([1.0, 2.0, 0.9]))
    # tie: the first; one inside; none inside: NaN, so branch-and-bound never splits a neuron its lines fit exactly
    torch.testing.assert_close(points, torch.tensor([-0.3, 0.3, float("nan")]), equal_nan=True)
