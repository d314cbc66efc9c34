"""Linear constraints between inputs (a box cut by G·x <= h): the minimum against a linear program, projections
that land inside, and bound passes over such a set that hold at sampled feasible points."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linprog

from opwise.bounds import BoundedModel
from opwise.bounds.input_set import InputSet
from opwise.bounds.linear_constraints import LinearConstraints


def random_polytope(seed: int, n: int = 4, k: int = 2):
    """A box in [-1, 1]^n cut by k random halfspaces through points near its centre (so it is not empty)."""
    generator = torch.Generator().manual_seed(seed)
    lower = -torch.rand(n, generator=generator, dtype=torch.float64)
    upper = torch.rand(n, generator=generator, dtype=torch.float64)
    G = torch.randn(k, n, generator=generator, dtype=torch.float64)
    G[torch.rand(k, n, generator=generator) < 0.3] = 0.0
    G[:, 0] = torch.where(G[:, 0] == 0, 1.0, G[:, 0])
    h = G @ ((lower + upper) / 2) + 0.1 * torch.rand(k, generator=generator, dtype=torch.float64)
    return lower, upper, G, h


@pytest.mark.parametrize("seed", range(12))
def test_the_minimum_is_a_lower_bound_on_the_linear_program_and_exact_for_one_constraint(seed):
    lower, upper, G, h = random_polytope(seed, k=1 + seed % 3)
    constraints = LinearConstraints.within(G, h, lower, upper)
    assert constraints is not None
    A = torch.randn(5, 1, 4, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    bound = InputSet(lower[None], upper[None], constraints=constraints).minimum(A)
    for row in range(5):
        exact = linprog(A[row, 0].numpy(), A_ub=G.numpy(), b_ub=h.numpy(),
                        bounds=list(zip(lower.tolist(), upper.tolist())), method="highs")
        assert float(bound[row, 0]) <= exact.fun + 1e-9
        box = float(torch.where(A[row, 0] >= 0, lower, upper) @ A[row, 0])
        assert float(bound[row, 0]) >= box - 1e-12  # never below the box's own bound
        if G.shape[0] == 1:
            assert float(bound[row, 0]) == pytest.approx(exact.fun, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_projected_and_sampled_points_meet_the_constraints(seed):
    lower, upper, G, h = random_polytope(seed, k=2)
    region = InputSet(lower[None].float(), upper[None].float(), constraints=LinearConstraints.within(G, h, lower, upper).to(dtype=torch.float32))
    far = 3 * torch.randn(64, 4, generator=torch.Generator().manual_seed(seed))
    projected = region.project(far)
    assert region.contains(projected)
    sampled = region.sample(64, torch.Generator().manual_seed(seed))
    assert region.contains(sampled) and sampled.dtype == torch.float32
    inside = projected[:8]
    assert torch.equal(region.project(inside), inside)  # a feasible point stays where it is
    assert region.contains(region.minimizer(torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))))


def test_constraints_no_point_of_the_box_meets_are_reported_empty():
    G, h = torch.tensor([[1.0, 1.0]]), torch.tensor([-3.0])
    assert LinearConstraints.within(G, h, -torch.ones(2), torch.ones(2)) is None


@pytest.mark.parametrize("seed", range(6))
def test_bound_passes_over_a_polytope_hold_at_sampled_feasible_points(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3))
    lower, upper, G, h = random_polytope(seed, k=2)
    constraints = LinearConstraints.within(G, h, lower, upper).to(dtype=torch.float32)
    region = InputSet(lower[None].float(), upper[None].float(), constraints=constraints)
    bounded = BoundedModel(model, torch.zeros(1, 4))
    points = region.sample(4000, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        outputs = model(points)
    for method in ("crown", "alpha-crown"):
        bound = bounded.bound(region, torch.eye(3)[None], method, bound_upper=False).lower[0]
        assert bool((outputs >= bound - 1e-5).all()), method


def test_a_relation_between_inputs_tightens_the_bound_to_its_exact_value():
    """x0 − x1 over [-1, 1]² with x1 <= x0 is at least 0 (the box alone: −2), through a ReLU layer that passes it."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2)), model[0].bias.fill_(2.0)       # both pre-activations >= 1: stable
        model[2].weight.copy_(torch.tensor([[1.0, -1.0]])), model[2].bias.zero_()
    lower, upper = -torch.ones(1, 2), torch.ones(1, 2)
    constraints = LinearConstraints.within(torch.tensor([[-1.0, 1.0]]), torch.tensor([0.0]), lower[0], upper[0])
    bounded = BoundedModel(model, torch.zeros(1, 2))
    box = bounded.bound(InputSet(lower, upper), torch.eye(1)[None], "crown", bound_upper=False).lower
    polytope = bounded.bound(InputSet(lower, upper, constraints=constraints.to(dtype=torch.float32)), torch.eye(1)[None],
                             "crown", bound_upper=False).lower
    assert float(box) == pytest.approx(-2.0) and float(polytope) == pytest.approx(0.0, abs=1e-6)
