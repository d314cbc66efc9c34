"""Split estimates: a product's interval estimate is the exact change of A·(plane) over the branch's box, and
broadcast factors sum their copies' changes."""

from __future__ import annotations

import itertools

import torch

from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.relaxations.bilinear import relax_bilinear
from opwise.bounds.strategies.genbab.estimates import interval_estimate, product_changes, product_widths


def plane(planes, positive, x, y):
    """The plane a lower bound of A·(x·y) uses: the lower one where A > 0, the upper one elsewhere."""
    lower = planes.lower_x * x + planes.lower_y * y + planes.lower_intercept
    upper = planes.upper_x * x + planes.upper_y * y + planes.upper_intercept
    return torch.where(positive, lower, upper)


def random_boxes(seed: int, count: int):
    generator = torch.Generator().manual_seed(seed)
    ends = torch.randn(4, 1, count, generator=generator, dtype=torch.float64) * 2
    lx, ux = ends[0].minimum(ends[1]), ends[0].maximum(ends[1]) + 0.1
    ly, uy = ends[2].minimum(ends[3]), ends[2].maximum(ends[3]) + 0.1
    A = torch.randn(1, count, generator=generator, dtype=torch.float64)
    alpha = torch.rand(2, 1, count, generator=generator, dtype=torch.float64)
    point = lx + (ux - lx) * torch.rand(1, count, generator=generator, dtype=torch.float64)
    return A, (lx, ux), (ly, uy), point, AlphaPair(alpha[0], alpha[1])


def test_product_interval_estimate_is_the_exact_change_over_the_branch_box():
    """Each alternative's estimate is min over the branch box of A·(new plane − old plane): a linear function,
    so its minimum is at a corner, which a brute-force corner search finds."""
    A, (lx, ux), (ly, uy), point, alpha = random_boxes(0, 200)
    branches = product_changes("x", "y", A, (lx, ux), (ly, uy), point, alpha)
    old = relax_bilinear(lx, ux, ly, uy, alpha)
    weights = [alpha] + [AlphaPair(torch.full_like(A, w), torch.full_like(A, w)) for w in (1.0, 0.0)]
    for (low, high), branch in zip(((lx, point), (point, ux)), branches):
        assert len(branch) == len(weights)
        for weight, change in zip(weights, branch):
            new = relax_bilinear(low, high, ly, uy, weight)
            corners = [A * (plane(new, A > 0, x, y) - plane(old, A > 0, x, y)) for x, y in itertools.product((low, high), (ly, uy))]
            assert torch.allclose(interval_estimate(change), torch.stack(corners).amin(0), atol=1e-9)


def test_same_alpha_on_the_unchanged_side_of_the_split_changes_nothing():
    """With CROWN's planes (α = 1) the lower plane ly·x + lx·y − lx·ly does not depend on ux, so the branch
    x <= p of a positive coefficient keeps it exactly; the other alternatives are what can improve there."""
    A, (lx, ux), (ly, uy), point, _ = random_boxes(1, 50)
    A = A.abs()
    (left, right) = product_changes("x", "y", A, (lx, ux), (ly, uy), point)
    assert torch.allclose(interval_estimate(left[0]), torch.zeros_like(A))
    assert (interval_estimate(right[0]) >= -1e-9).all()


def test_broadcast_factor_sums_the_changes_of_its_copies():
    """x [1, 3, 1] times y [1, 1, 4]: an x element's estimate is the sum over the 4 products it takes part in."""
    generator = torch.Generator().manual_seed(2)
    lx = torch.randn(1, 3, 1, generator=generator, dtype=torch.float64)
    ux = lx + torch.rand(1, 3, 1, generator=generator, dtype=torch.float64) + 0.1
    ly = torch.randn(1, 1, 4, generator=generator, dtype=torch.float64)
    uy = ly + torch.rand(1, 1, 4, generator=generator, dtype=torch.float64) + 0.1
    A = torch.randn(1, 3, 4, generator=generator, dtype=torch.float64)
    point = (lx + ux) / 2
    broadcast = product_changes("x", "y", A, (lx, ux), (ly, uy), point)
    full = [t.expand(1, 3, 4) for t in (lx, ux, ly, uy, point)]
    elementwise = product_changes("x", "y", A, (full[0], full[1]), (full[2], full[3]), full[4])
    for wide, narrow in zip(broadcast, elementwise):
        for change, single in zip(wide, narrow):
            assert change.terms == []
            expected = interval_estimate(single).reshape(1, 3, 4).sum(-1)
            assert torch.allclose(interval_estimate(change), expected)


def test_square_splits_both_factors_at_once():
    """x·x on [-1, 2] split at 0.5: both factors narrow together, so each branch's estimate is the exact
    change over the branch interval alone."""
    A = torch.ones(1, 1, dtype=torch.float64)
    x = (-torch.ones(1, 1, dtype=torch.float64), 2 * torch.ones(1, 1, dtype=torch.float64))
    point = torch.full((1, 1), 0.5, dtype=torch.float64)
    left, right = product_changes("x", "x", A, x, x, point)
    old = relax_bilinear(x[0], x[1], x[0], x[1])
    for (low, high), branch in zip(((x[0], point), (point, x[1])), (left, right)):
        new = relax_bilinear(low, high, low, high)
        grid = low + (high - low) * torch.linspace(0, 1, 101, dtype=torch.float64)
        exact = (plane(new, A > 0, grid, grid) - plane(old, A > 0, grid, grid)).min()
        assert torch.allclose(interval_estimate(branch[0]).reshape(()), exact)


def test_product_widths_scale_with_both_factors_and_the_coefficient():
    A = torch.tensor([[1.0, -2.0]])
    widths = product_widths(A, (torch.zeros(1, 2), torch.tensor([[1.0, 3.0]])), (torch.zeros(1, 2), torch.tensor([[2.0, 1.0]])))
    assert torch.allclose(widths, torch.tensor([[2.0, 6.0]]), atol=1e-5)
