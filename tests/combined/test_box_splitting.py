"""Branch-and-bound on boxes (opwise/combined/box_splitting.py): proves what a loose bound cannot, never a box
that holds a violation, within its budget, and stops early at a counterexample."""

from __future__ import annotations

import torch

from opwise.combined.box_splitting import certify_by_splitting


def _loose(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """A sound but loose lower bound of f(x) = 1 − x0 − 2·x1 over a box: the worst corner, less the box's width."""
    return 1 - upper[:, 0] - 2 * upper[:, 1] - (upper - lower).sum(1)


def test_proves_safe_boxes_the_bound_alone_cannot_and_never_an_unsafe_one():
    lower = torch.zeros(4, 2)
    upper = torch.tensor([[0.3, 0.3], [0.5, 0.2], [0.5, 0.3], [0.9, 0.9]])  # worst f: 0.1, 0.1, -0.1, -1.7
    assert not (_loose(lower, upper) > 0).any()
    proved = certify_by_splitting(_loose, lower, upper, max_boxes=256)
    assert proved.tolist() == [True, True, False, False]


def test_a_box_gives_up_at_its_budget_and_at_a_counterexample():
    lower, upper = torch.zeros(1, 2), torch.tensor([[0.3, 0.3]])
    calls = []

    def counting(lo, up):
        calls.append(lo.shape[0])
        return _loose(lo, up)

    assert not certify_by_splitting(counting, lower, upper, max_boxes=4).item()
    assert sum(calls) <= 4
    calls.clear()
    unsafe = torch.tensor([[0.9, 0.9]])
    # the first piece's centre (0.45, 0.45) already breaks f: one bound pass, no splitting
    assert not certify_by_splitting(counting, lower, unsafe, broken=lambda p: 1 - p[:, 0] - 2 * p[:, 1] <= 0).item()
    assert calls == [1]
