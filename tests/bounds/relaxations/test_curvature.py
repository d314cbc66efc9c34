"""The shared machinery: bisection, exact support offsets, and the case split by inflection count."""

from __future__ import annotations

import torch

from opwise.bounds.relaxations.curvature import SECANT, SUPPORT, TANGENT, bisect
from opwise.bounds.relaxations.gelu_silu import GeluRelaxation, SiluRelaxation


def test_bisect_returns_the_end_where_the_predicate_holds_for_either_bracket_order():
    bad = torch.tensor([0.0, 3.0], dtype=torch.float64)
    good = torch.tensor([3.0, 0.0], dtype=torch.float64)
    root = bisect(lambda x: (x - 1.234) * torch.tensor([1.0, -1.0], dtype=torch.float64) >= 0, bad, good)
    assert torch.allclose(root, torch.tensor([1.234, 1.234], dtype=torch.float64), atol=1e-12)
    assert root[0] >= 1.234 and root[1] <= 1.234


def test_support_offsets_are_the_exact_extremes_of_f_minus_a_line():
    generator = torch.Generator().manual_seed(5)
    for relaxation in (GeluRelaxation(), SiluRelaxation()):
        lower = torch.rand(200, generator=generator, dtype=torch.float64) * 20 - 15
        upper = lower + torch.rand(200, generator=generator, dtype=torch.float64) * 15
        slope = torch.rand(200, generator=generator, dtype=torch.float64) * 1.4 - 0.2
        low, high = relaxation.support_offsets(lower, upper, slope)
        x = lower[:, None] + (upper - lower)[:, None] * torch.linspace(0, 1, 20001, dtype=torch.float64)
        values = relaxation.function(x) - slope[:, None] * x
        assert torch.allclose(low, values.min(dim=1).values, atol=1e-7)
        assert torch.allclose(high, values.max(dim=1).values, atol=1e-7)


def test_modes_follow_the_number_of_inflection_points():
    relaxation = GeluRelaxation()
    lower = torch.tensor([-1.0, 0.0, -3.0], dtype=torch.float64)
    upper = torch.tensor([1.0, 3.0, 3.0], dtype=torch.float64)
    lower_plan, upper_plan = relaxation.plan(lower, upper)
    assert lower_plan.mode.tolist() == [TANGENT, TANGENT, SUPPORT]
    assert upper_plan.mode[0] == SECANT and upper_plan.mode[2] == SUPPORT


def test_projected_gradient_on_alpha_tightens_and_stays_sound(soundness):
    _, _, assert_sound = soundness
    relaxation = GeluRelaxation()
    lower = torch.tensor([-4.0, -1.0, -0.5, -3.0], dtype=torch.float64)
    upper = torch.tensor([4.0, 3.0, 1.0, 0.5], dtype=torch.float64)
    probe = torch.tensor([-3.5, 2.5, -0.4, -2.8], dtype=torch.float64)
    alpha = relaxation.init_alpha(lower, upper)
    alpha.lower.requires_grad_(True)

    def lower_line_at_probe():
        lines = relaxation.relax(lower, upper, alpha)
        return lines.lower_slope * probe + lines.lower_intercept

    start = lower_line_at_probe().detach()
    optimizer = torch.optim.Adam([alpha.lower], lr=0.1)
    for _ in range(25):
        optimizer.zero_grad()
        (-lower_line_at_probe().sum()).backward()
        optimizer.step()
        relaxation.clamp_alpha(alpha, lower, upper)
    end = lower_line_at_probe().detach()
    assert (end >= start - 1e-12).all() and (end > start + 1e-3).sum() >= 2
    assert_sound(relaxation.function, relaxation.relax(lower, upper, alpha), lower, upper)


def test_alpha_with_a_leading_specification_dimension_broadcasts_over_the_interval():
    relaxation = GeluRelaxation()
    lower = torch.tensor([-4.0, -1.0, -0.5], dtype=torch.float64)
    upper = torch.tensor([4.0, 3.0, 1.0], dtype=torch.float64)
    pair = relaxation.init_alpha(lower, upper)
    alpha = type(pair)(pair.lower.expand(2, 3).clone(), pair.upper.expand(2, 3).clone())
    alpha.lower[1] += 0.1
    relaxation.clamp_alpha(alpha, lower, upper)
    lines = relaxation.relax(lower, upper, alpha)
    assert lines.lower_slope.shape == (2, 3)
    single = relaxation.relax(lower, upper, type(pair)(alpha.lower[1], alpha.upper[1]))
    assert torch.allclose(lines.lower_intercept[1], single.lower_intercept)


def test_monotone_flag_marks_exactly_the_increasing_families():
    from opwise.bounds.relaxations.registry import relaxation_for

    increasing = ["aten.sigmoid.default", "aten.tanh.default", "aten.exp.default", "aten.log.default", "aten.sqrt.default"]
    assert all(relaxation_for(key).monotone for key in increasing)
    assert relaxation_for("aten.pow.Tensor_Scalar", (3,)).monotone
    for key, args in [("aten.pow.Tensor_Scalar", (2,)), ("aten.reciprocal.default", ()), ("aten.gelu.default", ()), ("aten.sin.default", ())]:
        assert not relaxation_for(key, args).monotone


def test_the_remembered_plan_follows_in_place_changes_of_the_bounds():
    relaxation = GeluRelaxation()
    lower, upper = torch.tensor([-1.0, 0.5]), torch.tensor([1.0, 2.0])
    before = relaxation.relax(lower, upper)
    assert relaxation.relax(lower, upper).upper_slope.equal(before.upper_slope)
    upper.add_(2.0)
    after = relaxation.relax(lower, upper)
    fresh = GeluRelaxation().relax(lower.clone(), upper.clone())
    assert after.upper_slope.equal(fresh.upper_slope) and not after.upper_slope.equal(before.upper_slope)
