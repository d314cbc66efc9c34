"""Max/min reductions: exact where one input dominates, the bound of the chosen input otherwise."""

from __future__ import annotations

import pytest
import torch

import opwise


class _Reduce(torch.nn.Module):
    def __init__(self, which: str):
        super().__init__()
        self.which = which

    def forward(self, x):
        return getattr(x, self.which)(1, keepdim=True)


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
@pytest.mark.parametrize("which, center, expected", [
    ("amax", [2.5, 0.5], (2.0, 3.0)),     # x1 ∈ [2, 3] beats x2 ∈ [0, 1]: max = x1 exactly
    ("amin", [2.5, 0.5], (0.0, 1.0)),     # min = x2 exactly
    # x1 ∈ [0.5, 1.5], x2 ∈ [0.75, 1.75] overlap: max ≥ x2 (the larger lower bound), max ≤ 1.75 (the larger upper)
    ("amax", [1.0, 1.25], (0.75, 1.75)),
])
def test_bounds_of_two_inputs(which, center, expected, method):
    eps = 0.5
    bounds = opwise.compute_bounds(_Reduce(which), torch.tensor([center]), eps=eps, method=method)
    assert (float(bounds.lower), float(bounds.upper)) == pytest.approx(expected)
