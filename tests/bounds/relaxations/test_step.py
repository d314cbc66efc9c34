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


ROUNDINGS = {"aten.floor.default": torch.floor, "aten.ceil.default": torch.ceil, "aten.round.default": torch.round,
             "aten.trunc.default": torch.trunc}


@pytest.mark.parametrize("key", sorted(ROUNDINGS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roundings_are_sound_on_every_interval(key, seed, soundness):
    interval_zoo, _, assert_sound = soundness
    lower, upper = interval_zoo(seed)
    # steps and half steps at the ends of intervals, and intervals inside one step
    ends = torch.tensor([-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5], dtype=lower.dtype)
    lower = torch.cat([lower, ends, ends, ends + 0.1, ends - 0.25])
    upper = torch.cat([upper, ends, ends + 1.0, ends + 0.3, ends + 3.0])
    assert_sound(ROUNDINGS[key], relaxation_for(key).relax(lower, upper), lower, upper, samples=4001)


@pytest.mark.parametrize("key", sorted(ROUNDINGS))
def test_roundings_are_exact_inside_one_step_and_slope_one_across_steps(key):
    f = ROUNDINGS[key]
    lower, upper = torch.tensor([0.1, -3.7, 0.2, -2.2]), torch.tensor([0.3, -3.6, 2.9, 1.9])
    lines = relaxation_for(key).relax(lower, upper)
    flat = f(lower) == f(upper)
    assert flat.tolist() == [True, True, False, False]
    assert (lines.lower_slope[flat] == 0).all() and (lines.lower_intercept[flat] == f(lower[flat])).all()
    assert (lines.upper_intercept[flat] == f(upper[flat])).all()
    assert (lines.lower_slope[~flat] == 1).all() and (lines.upper_slope[~flat] == 1).all()
    # across steps the lines are at most one unit apart: a quantizer's error, not the interval's width
    assert ((lines.upper_intercept - lines.lower_intercept)[~flat] <= 2.0).all()


def test_trunc_lines_follow_the_side_of_zero():
    lower, upper = torch.tensor([0.5, -3.5, -1.5]), torch.tensor([3.5, -0.5, 1.5])
    lines = relaxation_for("aten.trunc.default").relax(lower, upper)
    assert lines.lower_intercept.tolist() == [-1.0, 0.0, -1.0]  # floor above 0, ceil below, both across
    assert lines.upper_intercept.tolist() == [0.0, 1.0, 1.0]


class _Quantized(torch.nn.Module):
    """A layer whose activations are quantized to steps of 1/4 (fake quantization), as a quantized network runs."""

    def __init__(self, key: str):
        super().__init__()
        self.f, self.first, self.last = ROUNDINGS[key], torch.nn.Linear(3, 8), torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.last(self.f(4 * self.first(x)) / 4)


@pytest.mark.parametrize("key", sorted(ROUNDINGS))
@pytest.mark.parametrize("eps", [0.01, 0.3, 2.0])
def test_quantized_networks_are_bounded_soundly(key, eps):
    from tests.bounds.helpers import assert_sound as assert_network_sound

    torch.manual_seed(int(eps * 100))
    model = _Quantized(key).eval()
    x = torch.randn(2, 3)
    assert_network_sound(model, x - eps, x + eps, methods=("ibp", "crown", "alpha-crown"), samples=3000)
