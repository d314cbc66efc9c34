"""Max/min reductions and adaptive max pooling: exact where one input dominates, the bound of the chosen input
otherwise."""

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


@pytest.mark.parametrize("output_size", [(2, 2), (4, 3)])  # from 5x6: windows of 3 rows, overlapping for 4 outputs
def test_adaptive_max_pooling_is_bounded_soundly(output_size):
    """adaptive_max_pool2d had no bound rule; its windows vary in size and overlap where the sizes do not divide."""
    from tests.bounds.helpers import assert_sound, randomize_

    model = randomize_(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.AdaptiveMaxPool2d(output_size),
                                           torch.nn.Flatten(), torch.nn.Linear(3 * output_size[0] * output_size[1], 2)), 0)
    x = torch.randn(2, 2, 7, 8, generator=torch.Generator().manual_seed(0))
    assert_sound(model.eval(), x - 0.2, x + 0.2, samples=2_000)


def test_max_and_min_of_every_element_are_bounded_soundly():
    """torch.max(x) / torch.min(x) (aten.max.default, aten.min.default: no dim) had no bound rule; they are amax and
    amin over every element (the batch too, so one sample at a time here)."""
    from opwise.bounds import BoundedModel

    class Extremes(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 5)

        def forward(self, x):
            h = torch.tanh(self.linear(x))
            return torch.stack([torch.max(h), torch.min(h), torch.max(h) - torch.min(h)])[None]

    torch.manual_seed(0)
    model, x = Extremes().eval(), torch.randn(1, 3)
    with torch.no_grad():
        outputs = torch.cat([model(x + (torch.rand(1, 3) * 2 - 1) * 0.3) for _ in range(500)])
    for method in ("ibp", "crown"):
        bounds = BoundedModel(model, x).compute_bounds(x_lower=x - 0.3, x_upper=x + 0.3, method=method)
        assert (bounds.lower <= outputs + 1e-5).all() and (outputs <= bounds.upper + 1e-5).all()
    assert bounds.lower[0, 2] > -2.0  # CROWN: max − min through lines of the elements, not −2 (both ends of tanh)
