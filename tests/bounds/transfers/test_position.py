"""argmax / argmin and the indices of sort, topk, max / min with a dim, kthvalue and median (position.py): every
index a point of the box gives lies in the bounds, ties included, and a fixed order gives the index exactly."""

from __future__ import annotations

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.transfers.position import candidate_span
from opwise.errors import OpwiseError
from tests.bounds.helpers import METHOD_NAMES, assert_sound, randomize_


def _grid_box(generator, shape, levels=4):
    """Interval ends on a coarse grid, so that sampled points (also on it) tie often."""
    a = torch.randint(0, levels, shape, generator=generator).float()
    b = torch.randint(0, levels, shape, generator=generator).float()
    return torch.minimum(a, b), torch.maximum(a, b)


def test_candidate_span_holds_every_rank_of_sampled_points_with_ties():
    generator = torch.Generator().manual_seed(0)
    for trial in range(200):
        length = int(torch.randint(1, 6, (), generator=generator))
        low, high = _grid_box(generator, (3, length))
        steps = torch.randint(0, 4, (500, 3, length), generator=generator).float()
        points = torch.minimum(torch.maximum(steps, low), high)  # grid points in the box: many ties
        ranks = torch.arange(length)
        first, last = candidate_span(low, high, ranks)  # [3, n]
        for order in (points.sort(-1).indices, points.sort(dim=-1, stable=True).indices,
                      points.sort(-1, descending=True).indices.flip(-1)):
            assert (order >= first).all() and (order <= last).all(), trial
        for picked, rank in ((points.argmax(-1), length - 1), (points.argmin(-1), 0)):
            assert (picked >= first[:, rank]).all() and (picked <= last[:, rank]).all(), trial
            low_end, high_end = candidate_span(low, high, torch.tensor([rank]), first_wins=True)  # torch's tie rule
            assert (picked >= low_end[:, 0]).all() and (picked <= high_end[:, 0]).all(), trial


def test_candidate_span_is_exact_where_the_order_is_fixed():
    low, high = torch.tensor([[3.0, 0.0, 1.0, 2.0]]), torch.tensor([[3.5, 0.5, 1.5, 2.5]])
    first, last = candidate_span(low, high, torch.arange(4))
    assert first.tolist() == last.tolist() == [[1.0, 2.0, 3.0, 0.0]]
    first, last = candidate_span(low, high, torch.tensor([3]))
    assert (first.item(), last.item()) == (0.0, 0.0)


def test_a_tie_at_the_maximum_counts_both_candidates():
    low, high = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([2.0, 2.0, 1.0])  # x0 can tie x1 at 2: argmax 0 there
    assert candidate_span(low, high, torch.tensor([2])) == (torch.tensor([0.0]), torch.tensor([1.0]))
    assert candidate_span(low, high, torch.tensor([2]), first_wins=True) == (torch.tensor([0.0]), torch.tensor([1.0]))
    # x0 surely at least x1 (a tie at most): with the first index winning ties only x0 or x2 can be the argmax
    low, high = torch.tensor([2.0, 1.0, 0.0]), torch.tensor([3.0, 2.0, 2.5])
    assert candidate_span(low, high, torch.tensor([2]), first_wins=True) == (torch.tensor([0.0]), torch.tensor([2.0]))
    assert candidate_span(low, high, torch.tensor([0]), first_wins=True) == (torch.tensor([0.0]), torch.tensor([2.0]))
    low, high = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0])  # x1 ties x0 at best: the argmin is x0
    assert candidate_span(low, high, torch.tensor([0])) == (torch.tensor([0.0]), torch.tensor([1.0]))
    assert candidate_span(low, high, torch.tensor([0]), first_wins=True) == (torch.tensor([0.0]), torch.tensor([0.0]))


def test_argmax_at_a_point_with_ties_is_exact():
    class Index(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x.argmax(1, keepdim=True), x.argmin(1, keepdim=True)], 1).float() + x[:, :2]

    x = torch.tensor([[1.0, 3.0, 3.0, 0.0, 0.0]])
    bounds = BoundedModel(Index(), x).compute_bounds(x_lower=x, x_upper=x, method="crown")
    assert torch.equal(bounds.lower, Index()(x)) and torch.equal(bounds.upper, Index()(x))


class _Indexed(torch.nn.Module):
    """Linear -> an index op -> added back to another linear layer's output (the index as a float)."""

    def __init__(self, index):
        super().__init__()
        self.first, self.second, self.index = torch.nn.Linear(3, 5), torch.nn.Linear(3, 5), index

    def forward(self, x):
        h = self.first(x)
        return self.second(x) + torch.relu(h) + self.index(h).float().reshape(x.shape[0], -1).sum(1, keepdim=True)


INDEX_OPS = {
    "argmax": lambda h: h.argmax(1),
    "argmax_keepdim": lambda h: h.argmax(1, keepdim=True),
    "argmin": lambda h: torch.argmin(h, dim=-1, keepdim=True),
    "argmax_flat": lambda h: h.argmax().reshape(1),
    "argmin_flat_keepdim": lambda h: torch.argmin(h, keepdim=True),
    "max_dim": lambda h: h.max(1).indices,
    "min_dim_keepdim": lambda h: h.min(1, keepdim=True).indices,
    "sort": lambda h: torch.sort(h, 1).indices,
    "sort_descending": lambda h: torch.sort(h, 1, descending=True).indices,
    "topk": lambda h: torch.topk(h, 3).indices,
    "topk_smallest": lambda h: torch.topk(h, 2, largest=False).indices,
    "kthvalue": lambda h: torch.kthvalue(h, 2, 1).indices,
    "median": lambda h: h.median(1).indices,
}


@pytest.mark.parametrize("name", sorted(INDEX_OPS))
def test_index_ops_are_bounded_soundly_on_random_models(name):
    model = _Indexed(INDEX_OPS[name])
    bounded = None
    for seed in range(6):
        randomize_(model, seed)
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(1, 3, generator=generator)
        eps = [0.01, 0.1, 0.5][seed % 3]
        bounded = BoundedModel(model, x)
        methods = METHOD_NAMES if seed == 0 else ("ibp", "crown")
        if "flat" in name:  # over the whole tensor: one sample at a time
            run, samples = (lambda z: torch.cat([model(z[i:i + 1]) for i in range(z.shape[0])])), 300
        else:
            run, samples = model, 2000
        assert_sound(run, x - eps, x + eps, methods=methods, samples=samples, seed=seed, attack=seed == 1,
                     bounded=bounded)


def test_argmax_is_a_constant_where_one_candidate_remains():
    class Shift(torch.nn.Module):
        def forward(self, x):
            return x + x.argmax(1, keepdim=True).float() + torch.sort(x, 1, descending=True).indices.float()

    x = torch.tensor([[0.0, 3.0, 1.0, -2.0]])
    for method in ("ibp", "crown"):
        bounds = BoundedModel(Shift(), x).compute_bounds(x_lower=x - 0.2, x_upper=x + 0.2, method=method)
        assert torch.allclose(bounds.upper - bounds.lower, torch.full((1, 4), 0.4), atol=1e-5)
        assert torch.allclose((bounds.upper + bounds.lower) / 2, Shift()(x), atol=1e-5)


def test_an_index_on_its_own_is_bounded_by_the_candidates():
    class Index(torch.nn.Module):
        def forward(self, x):
            return torch.argmin(x, 1, keepdim=True).float() * 2.0

    x = torch.tensor([[2.0, 0.0, 0.5, 4.0]])
    for method in ("ibp", "crown", "alpha-crown"):
        bounds = BoundedModel(Index(), x).compute_bounds(x_lower=x - 0.3, x_upper=x + 0.3, method=method)
        assert (bounds.lower.item(), bounds.upper.item()) == (pytest.approx(2.0, abs=1e-5), pytest.approx(4.0, abs=1e-5))


def test_unsorted_topk_indices_stay_refused():
    class Unsorted(torch.nn.Module):
        def forward(self, x):
            return torch.topk(x, 2, sorted=False).indices.float()

    x = torch.randn(1, 4)
    with pytest.raises(OpwiseError, match="sorted=False"):
        BoundedModel(Unsorted(), x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="ibp")
