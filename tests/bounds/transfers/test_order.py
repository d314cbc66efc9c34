"""Order statistics (sort, topk, max/min/kthvalue/median with a dim): sampled and attacked outputs inside IBP and
CROWN bounds, exact bounds where the intervals fix the order, and clear refusals for what cannot be bounded."""

from __future__ import annotations

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.errors import OpwiseError
from tests.bounds.helpers import assert_sound, randomize_

STATISTICS = {
    "sort": lambda h: torch.sort(h, -1).values,
    "sort_descending_dim1": lambda h: torch.sort(h.view(-1, 3, 2), 1, descending=True).values.flatten(1),
    "sort_stable": lambda h: torch.sort(h, stable=True, dim=-1).values,
    "topk": lambda h: torch.topk(h, 3).values,
    "topk_smallest": lambda h: torch.topk(h, 2, largest=False).values,
    "max_dim": lambda h: torch.max(h, -1).values[:, None],
    "min_dim_keepdim": lambda h: torch.min(h.view(-1, 2, 3), 1, keepdim=True).values.flatten(1),
    "kthvalue": lambda h: torch.kthvalue(h, 4, -1).values[:, None],
    "median": lambda h: torch.median(h, -1, keepdim=True).values,
}


class Head(torch.nn.Module):
    def __init__(self, statistic, width: int, activation=torch.tanh):
        super().__init__()
        self.statistic, self.activation = statistic, activation
        self.first, self.second = torch.nn.Linear(3, 6), torch.nn.Linear(width, 2)

    def forward(self, x):
        values = self.statistic(self.activation(self.first(x)) * 3)
        return torch.cat([values, self.second(values)], -1)


@pytest.mark.parametrize("name", sorted(STATISTICS))
@pytest.mark.parametrize("seed", range(3))
def test_order_statistics_are_bounded_soundly(name, seed):
    statistic = STATISTICS[name]
    width = statistic(torch.zeros(1, 6)).shape[-1]
    model = randomize_(Head(statistic, width), seed).eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
    radius = [0.01, 0.2, 1.0][seed]  # from orders the intervals fix to orders they leave open
    assert_sound(model, x - radius, x + radius, methods=("ibp", "crown"), samples=3_000, seed=seed, attack=seed == 1)


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_crown_is_no_looser_than_ibp_on_the_statistics_of_an_affine_input(name):
    """A line is used only where its input's bound starts at the interval's end (with every valid line, CROWN was
    up to 50% looser than IBP on random topk heads)."""
    statistic = STATISTICS[name]
    width = statistic(torch.zeros(1, 6)).shape[-1]
    model = randomize_(Head(statistic, width, activation=lambda h: h), 0).eval()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    results = assert_sound(model, x - 0.3, x + 0.3, methods=("ibp", "crown"), samples=1_000, attack=False)
    crown, ibp = results["crown"], results["ibp"]
    assert ((crown.upper - crown.lower)[:, :width] <= (ibp.upper - ibp.lower)[:, :width] + 1e-5).all()


def test_bounds_are_exact_where_the_intervals_fix_the_order():
    """Disjoint intervals: sort is a fixed permutation, so CROWN bounds a linear form of it exactly."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Identity())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 10.0, 20.0, -10.0]))

    class Sorted(torch.nn.Module):
        def forward(self, x):
            values = torch.sort(model(x), -1, descending=True).values
            return values[:, :1] - values[:, 1:2] + values[:, 3:]

    x = torch.zeros(1, 2)
    bounds = BoundedModel(Sorted(), x).compute_bounds(x_lower=x - 1, x_upper=x + 1, method="crown")
    # descending: x0 + x1 + 20, x1 + 10, x0, x0 − x1 − 10, so the form is (x0 + x1 + 20) − (x1 + 10) + (x0 − x1 − 10)
    # = 2·x0 − x1, in [−3, 3] on the box
    torch.testing.assert_close(bounds.lower, torch.tensor([[-3.0]]))
    torch.testing.assert_close(bounds.upper, torch.tensor([[3.0]]))


def test_a_max_over_a_dim_takes_the_largest_lower_bound_as_its_lower_line():
    class Max(torch.nn.Module):
        def forward(self, x):
            return torch.max(x, -1).values[:, None] - x[:, :1]

    x = torch.tensor([[0.0, 0.5, -3.0]])
    bounds = BoundedModel(Max(), x).compute_bounds(x_lower=x - 1, x_upper=x + 1, method="crown")
    # max(x) − x0 >= x1 − x0 (x1 has the largest lower bound), whose minimum on the box is −0.5 − 1 = −1.5 (valid,
    # though max(x) − x0 >= 0 holds too: the line is x1's, not x0's)
    assert bounds.lower.item() == pytest.approx(-1.5)
    assert bounds.upper.item() == pytest.approx(1.5 + 1)  # max's upper end 1.5 minus x0's lower end −1


def test_unsorted_topk_values_are_refused_with_the_reason_and_sort_indices_are_bounded():
    class Indices(torch.nn.Module):
        def forward(self, x):
            return torch.sort(x, -1).indices.float() + x

    class Unsorted(torch.nn.Module):
        def forward(self, x):
            return torch.topk(x, 2, sorted=False).values

    x = torch.tensor([[0.0, 2.0, 1.0, 3.0]])
    bounds = BoundedModel(Indices(), x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="ibp")
    assert torch.allclose(bounds.lower, Indices()(x) - 0.1) and torch.allclose(bounds.upper, Indices()(x) + 0.1)  # position.py
    with pytest.raises(OpwiseError, match="sorted=False"):
        BoundedModel(Unsorted(), x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="crown")
