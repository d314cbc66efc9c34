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
