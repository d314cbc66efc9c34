"""Specifications: the margin bound and the ruled-out test read the same stacked rows the same way."""

from __future__ import annotations

import math

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
    assert spec.margin_bound(torch.tensor([2.0, -3.0, 0.25])) == 0.25
    assert spec.ruled_out(torch.tensor([2.0, -3.0, 0.25]))
    assert not spec.ruled_out(torch.tensor([2.0, -3.0, -0.25]))
