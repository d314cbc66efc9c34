"""Specifications: the margin bound and the ruled-out test read the same stacked rows the same way."""

from __future__ import annotations

import math

import pytest
import torch

from opwise.bounds.spec import Disjunct, Specification


def _two_disjuncts() -> Specification:
    return Specification(torch.zeros(1), torch.ones(1), [Disjunct(torch.eye(1), torch.zeros(1)),
                                                         Disjunct(torch.eye(1), torch.zeros(1))])


def test_a_nan_bound_proves_nothing():
    """A NaN row bound of the first disjunct made the margin bound skip that disjunct (min(inf, nan) is inf in
    Python), so [nan, 1] read as a margin of 1: proved, while `ruled_out` said no."""
    spec = _two_disjuncts()
    lower = torch.tensor([math.nan, 1.0])
    assert spec.margin_bound(lower) == -math.inf
    assert not spec.ruled_out(lower)


def test_margin_bound_is_the_worst_disjunct_of_its_best_row():
    spec = Specification(torch.zeros(1), torch.ones(1), [Disjunct(torch.eye(2), torch.full((2,), 0.5)),
                                                         Disjunct(torch.ones(1, 2), torch.zeros(1))])
    # disjunct 0: rows 2.0 - 0.5 and -3.0 - 0.5, best 1.5; disjunct 1: 0.25 - 0
    assert spec.margin_bound(torch.tensor([2.0, -3.0, 0.25])) == pytest.approx(0.25, rel=1e-5)
    assert spec.ruled_out(torch.tensor([2.0, -3.0, 0.25]))
    assert not spec.ruled_out(torch.tensor([2.0, -3.0, -0.25]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_bound_a_few_rounding_units_above_the_threshold_proves_nothing(dtype):
    """A pass sums in another order than the forward pass: where the network reaches the threshold exactly, its
    bound may come out a unit of rounding above it (GenBaB once proved a binarized net's exact minimum so)."""
    d = torch.tensor([-0.6325264], dtype=dtype)
    spec = Specification(torch.zeros(1), torch.ones(1), [Disjunct(torch.ones(1, 1, dtype=dtype), d)])
    for units in (1, 4):
        assert spec.margin_bound(d + units * torch.finfo(dtype).eps * d.abs()) <= 0
    assert spec.margin_bound(d + 1e-3) > 0


def test_specifications_to_converts_many_at_once_and_keeps_every_value():
    """The bulk conversion (lindex's 60,000 boxes) gives what Specification.to gives, box by box."""
    from opwise.bounds.spec import specifications_to

    shared = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    specs = [Specification(torch.full((1, 2), -k, dtype=torch.float64), torch.full((1, 2), k + 0.5, dtype=torch.float64),
                           [Disjunct(shared, torch.tensor([k / 3], dtype=torch.float64)),
                            Disjunct(torch.eye(2, dtype=torch.float64), torch.tensor([k, -k], dtype=torch.float64))])
             for k in range(5)]
    converted = specifications_to(specs, dtype=torch.float32)
    for bulk, spec in zip(converted, specs):
        one = spec.to(dtype=torch.float32)
        assert torch.equal(bulk.x_lower, one.x_lower) and torch.equal(bulk.x_upper, one.x_upper)
        assert bulk.x_lower.shape == (1, 2) and bulk.x_lower.dtype == torch.float32
        for a, b in zip(bulk.unsafe, one.unsafe):
            assert torch.equal(a.C, b.C) and torch.equal(a.d, b.d)
    assert converted[0].unsafe[0].C is converted[4].unsafe[0].C     # a shared matrix is converted once


def test_specifications_to_keeps_strict_rows_strict():
    """A property's strict rows (`Y_0 < 0`, vnnlib.StrictDisjunct) stay strict through the bulk conversion: at exactly
    0 the row does not hold, so no search reports the point (it lost its class once, and searches then ended on
    points the competition's check rejects)."""
    from opwise.bounds.spec import specifications_to
    from opwise.bounds.vnncomp.vnnlib import StrictDisjunct

    specs = [Specification(torch.zeros(1, 1), torch.ones(1, 1),
                           [StrictDisjunct(torch.ones(1, 1), torch.zeros(1), torch.tensor([True]))]) for _ in range(3)]
    for spec in specifications_to(specs, dtype=torch.float64):
        assert isinstance(spec.unsafe[0], StrictDisjunct) and spec.unsafe[0].strict.tolist() == [True]
        assert float(spec.margin(torch.zeros(1, 1, dtype=torch.float64))) > 0      # 0 < 0 does not hold
        assert float(spec.margin(torch.full((1, 1), -1e-9, dtype=torch.float64))) <= 0


def test_contradictory_rows_are_found_and_rows_some_output_meets_never_are():
    """Rows no y meets (a bound and its opposite, a cycle y0 >= y1 + 1 >= y2 + 2 >= y0 + 3) are contradictory;
    500 random systems built around a point that meets them (d = C y* + slack >= C y*) never are, nor a system met
    only with equality (slack 0)."""
    from opwise.bounds.spec import contradictory

    assert contradictory(Disjunct(torch.tensor([[-1.0], [1.0]]), torch.tensor([-0.44, 0.42])))
    cycle = torch.tensor([[-1.0, 1.0, 0.0], [0.0, -1.0, 1.0], [1.0, 0.0, -1.0]])
    assert contradictory(Disjunct(cycle, -torch.ones(3)))
    assert not contradictory(Disjunct(cycle, torch.zeros(3)))   # y0 = y1 = y2 meets it with equality
    generator = torch.Generator().manual_seed(0)
    for _ in range(500):
        rows, columns = int(torch.randint(2, 8, (1,), generator=generator)), int(torch.randint(1, 5, (1,), generator=generator))
        C = torch.randn(rows, columns, generator=generator, dtype=torch.float64)
        point = torch.randn(columns, generator=generator, dtype=torch.float64) * 10
        slack = torch.rand(rows, generator=generator, dtype=torch.float64) * (torch.rand(1, generator=generator) < 0.5)
        assert not contradictory(Disjunct(C, C @ point + slack))
