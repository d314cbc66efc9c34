"""Elementwise operators through their relaxations (opwise/bounds/transfers/nonlinear.py)."""

import torch

from opwise.bounds.relaxations.registry import relaxation_for
from opwise.bounds.transfers.nonlinear import fold_points
from opwise.bounds.transfers.registry import Interval


def test_point_intervals_get_the_constant_function_value_and_others_keep_their_lines():
    lower, upper = torch.tensor([0.0, -3e38, 0.0]), torch.tensor([0.0, -3e38, 1.0])
    relaxation = relaxation_for("aten.exp.default")
    lines = fold_points(relaxation.relax(lower, upper), Interval(lower, upper), relaxation.function)
    assert lines.lower_slope[:2].tolist() == [0.0, 0.0] and lines.upper_slope[:2].tolist() == [0.0, 0.0]
    assert lines.lower_intercept[:2].tolist() == [1.0, 0.0] and lines.upper_intercept[:2].tolist() == [1.0, 0.0]
    unfolded = relaxation.relax(lower, upper)
    assert lines.upper_slope[2] == unfolded.upper_slope[2] and lines.lower_intercept[2] == unfolded.lower_intercept[2]


def _ramp_step(name: str, args: tuple, interval: Interval):
    from opwise.bounds.transfers.registry import Step

    return Step(node=None, op=name, inputs=["x"], shapes=[tuple(interval.lower.shape)], function=None, args=(),
                bounds=lambda node: interval, relaxation=relaxation_for(name, args))


def test_ramp_lines_under_alpha_are_the_relaxations_lines_while_the_fixed_part_is_kept_per_interval():
    """Adam steps α on one interval: the engine keeps the α-free part of a ramp's lines and applies each α; the
    lines must equal a fresh `relax` for every α, and follow the interval when it changes (new or in place)."""
    from opwise.bounds.relaxations.base import AlphaPair
    from opwise.bounds.transfers.nonlinear import ELEMENTWISE

    generator = torch.Generator().manual_seed(0)
    for name, args in (("aten.relu.default", ()), ("aten.leaky_relu.default", (0.2,)), ("aten.hardtanh.default", ())):
        a, b = torch.randn(2, 3, 50, generator=generator).unbind(0)
        interval = Interval(torch.minimum(a, b), torch.maximum(a, b))
        step = _ramp_step(name, args, interval)
        for trial in range(3):
            if trial == 2:  # the same tensors changed in place: the kept part must not be reused
                interval.lower.sub_(0.5)
            alpha = AlphaPair(torch.rand(4, 3, 50, generator=generator), torch.rand(4, 3, 50, generator=generator))
            step.relaxation.clamp_alpha(alpha, interval.lower, interval.upper)
            step.alpha = alpha
            lines, finite = ELEMENTWISE.lines(step)
            fresh = fold_points(step.relaxation.relax(interval.lower, interval.upper, alpha), interval, step.relaxation.function)
            assert finite
            for got, want in zip(vars(lines).values(), vars(fresh).values()):
                assert torch.equal(torch.broadcast_to(got, (4, 3, 50)), torch.broadcast_to(want, (4, 3, 50))), name
        assert "fixed" in step.cache


def test_ramp_alpha_clamp_to_the_piece_slopes_matches_the_per_neuron_range():
    """With one kink (relu, leaky relu) α's range is the two piece slopes on every interval: the scalar clamp must
    give what the per-neuron range gives."""
    from opwise.bounds.relaxations.base import AlphaPair

    generator = torch.Generator().manual_seed(1)
    for args in ((), (0.3,), (2.5,)):
        relaxation = relaxation_for("aten.leaky_relu.default", args) if args else relaxation_for("aten.relu.default")
        a, b = torch.randn(2, 200, generator=generator).unbind(0)
        lower, upper = torch.minimum(a, b), torch.maximum(a, b)
        alpha = AlphaPair(torch.randn(200, generator=generator) * 3, torch.randn(200, generator=generator) * 3)
        low_min, low_max, up_min, up_max, _ = relaxation._alpha_range(lower, upper)
        want = (torch.max(torch.min(alpha.lower, low_max), low_min), torch.max(torch.min(alpha.upper, up_max), up_min))
        relaxation.clamp_alpha(alpha, lower, upper)
        assert torch.equal(alpha.lower, want[0]) and torch.equal(alpha.upper, want[1])
