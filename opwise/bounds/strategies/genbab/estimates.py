"""How much splitting one element's interval changes a domain's bound, per branch: the estimates branching
heuristics rank candidates by.

A domain's bound holds the term A · f(z) of a split node's output (A: its saved coefficient). Splitting
an element re-relaxes f on each branch, which changes that term by `intercept + Σ slope · v` over a few
nodes v (`BranchChange`): z itself for a function of one input, both factors x and y for a product x·y,
whose McCormick planes depend on both intervals. Concretizing the v by their intervals on the branch
gives the BaBSR-style estimate (`interval_estimate`); BBPS concretizes them through their shortcuts.
A branch may have several alternative changes (a product's two planes): its estimate is the best one.
"""

from __future__ import annotations

import dataclasses

import torch

from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.relaxations.bilinear import relax_bilinear


@dataclasses.dataclass
class BranchChange:
    """One branch's change of the bound, `intercept + Σ slope · v` for (slope, low, high, node) in `terms`:
    v is that node's element (same flat index as the candidate) and lies in [low, high] on the branch.
    Every tensor is [domains, candidates]. A change with no terms is already concretized."""

    intercept: torch.Tensor
    terms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]]


def interval_estimate(change: BranchChange) -> torch.Tensor:
    """The branch's bound change with every term concretized by its interval on the branch.

    >>> change = BranchChange(torch.tensor([[1.0]]), [(torch.tensor([[2.0]]), torch.tensor([[-1.0]]), torch.tensor([[3.0]]), "z")])
    >>> interval_estimate(change)
    tensor([[-1.]])
    """
    total = change.intercept
    for slope, low, high, _ in change.terms:
        total = total + torch.minimum(slope * low, slope * high)
    return total


def function_changes(relaxation, input_name: str, A: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                     point: torch.Tensor) -> list[list[BranchChange]]:
    """Both branches' changes of `A · f(z)` when f (`relaxation`) is re-relaxed on [l, p] and [p, u] (one
    alternative each: the relaxation's default lines); all tensors [domains, elements].

    >>> from opwise.bounds.relaxations.registry import relaxation_for
    >>> tanh = relaxation_for("aten.tanh.default")
    >>> [left], [right] = function_changes(tanh, "z", torch.ones(1, 1), -torch.ones(1, 1) * 2, torch.ones(1, 1) * 2, -torch.ones(1, 1))
    >>> [round(float(interval_estimate(change)), 3) for change in (left, right)]
    [-0.034, 0.0]
    """
    old = relaxation.relax(lower, upper)
    positive, negative = A.clamp(min=0), A.clamp(max=0)
    changes = []
    for low, high in ((lower, point), (point, upper)):
        new = relaxation.relax(low, high)
        slope = positive * (new.lower_slope - old.lower_slope) + negative * (new.upper_slope - old.upper_slope)
        intercept = positive * (new.lower_intercept - old.lower_intercept) + negative * (new.upper_intercept - old.upper_intercept)
        changes.append([BranchChange(torch.nan_to_num(intercept), [(torch.nan_to_num(slope), low, high, input_name)])])
    return changes


def product_changes(factor: str, other: str, A: torch.Tensor, x: tuple[torch.Tensor, torch.Tensor],
                    y: tuple[torch.Tensor, torch.Tensor], point: torch.Tensor, alpha: AlphaPair | None = None) -> list[list[BranchChange]]:
    """Both branches' changes of `A · (x·y)` when factor x's interval [lx, ux] is split at p, from the planes
    the bound used (`alpha`, [domains, *product shape] per side; None: CROWN's, α = 1), one alternative per
    plane the branch may then use: the same α (where a child's α starts) and either McCormick plane (α = 1
    and 0: where α-CROWN may move it; with α = 1 the branch x <= p keeps its plane, so one choice alone would
    never show that branch improving). `A` is [domains, *product shape]; x, `point` and y are [domains,
    *factor shape] (broadcast to the product's shape as the product does); the result is over x's elements, flat.

    Where both factors have the product's shape a change keeps its terms in x and y (BBPS substitutes
    their shortcuts); otherwise an x element meets several y elements, and the change is concretized per
    product element and summed over the elements that x element takes part in. `other == factor` is x·x.

    >>> A, x, y = torch.ones(1, 1), (torch.zeros(1, 1), torch.ones(1, 1) * 2), (torch.zeros(1, 1), torch.ones(1, 1))
    >>> [[float(interval_estimate(c)) for c in branch] for branch in product_changes("x", "x", A, x, y, torch.ones(1, 1))]
    [[0.0, -1.0], [1.0, 0.0]]
    """
    (lx, ux), (ly, uy) = x, y
    positive = A > 0
    old = relax_bilinear(lx, ux, ly, uy, alpha)
    weights = [alpha] if alpha is not None else []
    weights += [AlphaPair(torch.full_like(A, weight), torch.full_like(A, weight)) for weight in (1.0, 0.0)]
    same, squared = lx.shape == A.shape == ly.shape, other == factor
    count = A.shape[0]

    def flat(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(count, -1)

    branches = []
    for low, high in ((lx, point), (point, ux)):
        y_low, y_high = (low, high) if squared else (ly, uy)
        alternatives = []
        for weight in weights:
            new = relax_bilinear(low, high, y_low, y_high, weight)

            def change(lower_part: str, upper_part: str) -> torch.Tensor:
                before = torch.where(positive, getattr(old, lower_part), getattr(old, upper_part))
                after = torch.where(positive, getattr(new, lower_part), getattr(new, upper_part))
                return torch.nan_to_num(A * (after - before))

            slope_x, slope_y = change("lower_x", "upper_x"), change("lower_y", "upper_y")
            intercept = change("lower_intercept", "upper_intercept")
            if same and squared:
                terms = [(flat(slope_x + slope_y), flat(low), flat(high), factor)]
            elif same:
                terms = [(flat(slope_x), flat(low), flat(high), factor), (flat(slope_y), flat(y_low), flat(y_high), other)]
            else:
                total = interval_estimate(BranchChange(intercept, [(slope_x, low, high, factor), (slope_y, y_low, y_high, other)]))
                intercept, terms = total.sum_to_size(lx.shape), []
            alternatives.append(BranchChange(flat(intercept), terms))
        branches.append(alternatives)
    return branches


def product_widths(A: torch.Tensor, x: tuple[torch.Tensor, torch.Tensor], y: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Per element of factor x, its width times Σ |A|·(width of y) over the product elements it takes part in
    (the McCormick gap a split of x halves), plus a tiny width term so that unused elements still rank.

    >>> product_widths(torch.tensor([[2.0]]), (torch.zeros(1, 1), torch.ones(1, 1)), (torch.zeros(1, 1), torch.ones(1, 1) * 3))
    tensor([[6.0000]])
    """
    (lx, ux), (ly, uy) = x, y
    weight = (A.abs() * (uy - ly)).sum_to_size(lx.shape)
    return ((ux - lx) * (weight + 1e-6)).reshape(A.shape[0], -1)
