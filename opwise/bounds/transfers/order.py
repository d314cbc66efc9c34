"""Order statistics along a dim: sort, topk, max/min with a dim, kthvalue and median (their values output).

Each output is the k-th smallest of the n inputs along the dim, for a k fixed by its position. The k-th smallest
is nondecreasing in every input, so its interval is the k-th smallest of the lower bounds to the k-th smallest
of the upper bounds. Linear bounds: x_j <= y whenever at least n − k of the other inputs are surely at least x_j
(l_i >= u_j), since then at most k − 1 inputs lie below it; x_j >= y whenever at least k − 1 others are surely
at most x_j (u_i <= l_j). Among such inputs the one with the highest lower (lowest upper) bound is the line when
that bound equals the interval's end; otherwise the end is (a constant). For a max (k = n) every input is a lower line, as in max
pooling; where the intervals fix the order, the output is exactly one input. The indices output is bounded by the
positions that can hold each rank (position.py), with constant lines.

>>> import opwise.bounds
>>> class TopTwo(torch.nn.Module):
...     def forward(self, x):
...         return torch.topk(x, 2).values
>>> x = torch.tensor([[0.0, 1.0, 5.0]])
>>> bounds = opwise.bounds.BoundedModel(TopTwo(), x).compute_bounds(x_lower=x - 1, x_upper=x + 1, method="crown")
>>> bounds.lower, bounds.upper  # the largest is surely x2; the second lies between the others' bounds
(tensor([[4., 0.]]), tensor([[6., 2.]]))
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from opwise.bounds.transfers.position import constant_backward, index_interval, op_argument
from opwise.bounds.transfers.registry import Interval, Step, bound_transfer
from opwise.errors import OpwiseError


def _dim(step: Step) -> int:
    rank = len(step.shapes[0])
    if step.op == "aten.sort.stable":  # sort.stable(x, *, stable, dim, descending): keywords only
        return op_argument(step, None, "dim", -1) % rank
    return op_argument(step, 2 if step.op.startswith(("aten.topk", "aten.kthvalue")) else 1, "dim", -1) % rank


def _layout(step: Step, length: int) -> tuple[torch.Tensor, bool]:
    """The ascending rank (k − 1) of each output position along the dim, and whether the op drops the dim."""
    op = step.op
    if op.startswith("aten.sort"):
        descending = op_argument(step, 2 if op != "aten.sort.stable" else None, "descending", False)
        ranks = torch.arange(length)
        return ranks.flip(0) if descending else ranks, False
    if op.startswith("aten.topk"):
        count, largest, ordered = op_argument(step, 1, "k", None), op_argument(step, 3, "largest", True), \
            op_argument(step, 4, "sorted", True)
        if not ordered and count > 1:
            raise OpwiseError(f"node '{step.node.name}' ({op}) with sorted=False returns its {count} values in an "
                              "order torch does not fix, so they cannot be bounded position by position; use "
                              "sorted=True (the default)")
        ranks = torch.arange(count)
        return (length - 1 - ranks if largest else ranks), False
    keepdim = op_argument(step, 3 if op.startswith("aten.kthvalue") else 2, "keepdim", False)
    if op.startswith("aten.max"):
        which = length - 1
    elif op.startswith("aten.min"):
        which = 0
    elif op.startswith("aten.kthvalue"):
        which = op_argument(step, 1, "k", None) - 1
    else:  # median: the lower of the two middle values
        which = (length - 1) // 2
    return torch.tensor([which]), not keepdim


@bound_transfer("aten.sort", "aten.topk", "aten.max.dim", "aten.min.dim", "aten.kthvalue", "aten.median.dim")
class OrderStatistic:
    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return [step.inputs[0]]

    @staticmethod
    def _reads_indices(step: Step) -> bool:
        return step.node.target is operator.getitem and step.node.args[1] != 0

    def _indices(self, step: Step, x: Interval) -> Interval:
        dim = _dim(step)
        ranks, drop = _layout(step, x.lower.shape[dim])
        return index_interval(x, dim, ranks, drop)

    def _statistics(self, ranks: torch.Tensor, low: torch.Tensor, high: torch.Tensor):
        """For bounds [low, high] with the dim last ([..., n]) and the outputs' ranks [K]: per output ([..., K])
        the lower and upper constants, and per side the chosen input and whether it is a valid line."""
        length = low.shape[-1]
        ranks = ranks.to(low.device)
        low_constant, high_constant = low.sort(-1).values[..., ranks], high.sort(-1).values[..., ranks]
        # surely_above[..., i, j]: l_i >= u_j with i != j (input i is at least input j wherever they vary)
        others = ~torch.eye(length, dtype=torch.bool, device=low.device)
        above_count = ((low[..., :, None] >= high[..., None, :]) & others).sum(-2)  # [..., n], per input j
        below_count = ((high[..., :, None] <= low[..., None, :]) & others).sum(-2)
        # x_j <= y_k when n − k inputs are surely above it; x_j >= y_k when k − 1 are surely below (k = rank + 1)
        under = above_count[..., None, :] >= (length - 1 - ranks)[:, None]  # [..., K, n]
        over = below_count[..., None, :] >= ranks[:, None]
        infinity = torch.tensor(float("inf"), dtype=low.dtype, device=low.device)
        low_pick = torch.where(under, low[..., None, :], -infinity).max(-1)
        high_pick = torch.where(over, high[..., None, :], infinity).min(-1)
        # a line reaches no further than the constant over the box only where it starts at it (a max's largest lower
        # bound; an input whose place the intervals fix): elsewhere the constant is kept (on random topk heads CROWN
        # was 0.76 of IBP's width with every valid line, 0.49 with these only)
        low_line, high_line = low_pick.values >= low_constant, high_pick.values <= high_constant
        return low_constant, high_constant, low_pick.indices, low_line, high_pick.indices, high_line

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        if self._reads_indices(step):
            return self._indices(step, intervals[0])
        x, dim = intervals[0], _dim(step)
        ranks, drop = _layout(step, x.lower.shape[dim])
        ends = [value.movedim(dim, -1).sort(-1).values[..., ranks.to(value.device)] for value in (x.lower, x.upper)]
        return Interval(*((end[..., 0] if drop else end.movedim(-1, dim)).contiguous() for end in ends))

    def backward(self, step: Step, A: torch.Tensor):
        if self._reads_indices(step):
            x = step.bounds(step.inputs[0])
            return constant_backward(A, self._indices(step, x), tuple(x.lower.shape))
        x, dim = step.bounds(step.inputs[0]), _dim(step)
        ranks, drop = _layout(step, x.lower.shape[dim])
        low, high = x.lower.movedim(dim, -1), x.upper.movedim(dim, -1)
        low_constant, high_constant, low_index, low_line, high_index, high_line = self._statistics(ranks, low, high)
        rows = (A.unsqueeze(dim + 1) if drop else A).movedim(dim + 1, -1)  # [specs, batch, ..., K]
        positive, negative = rows.clamp(min=0), rows.clamp(max=0)
        coefficient = torch.zeros((*rows.shape[:-1], low.shape[-1]), dtype=A.dtype, device=A.device)
        coefficient.scatter_add_(-1, low_index.expand(rows.shape), positive * low_line)
        coefficient.scatter_add_(-1, high_index.expand(rows.shape), negative * high_line)
        zero = torch.zeros((), dtype=A.dtype, device=A.device)  # not constant · 0: an infinite end would give NaN
        bias = positive * torch.where(low_line, zero, low_constant) + negative * torch.where(high_line, zero, high_constant)
        bias = bias[..., 0] if drop else bias.movedim(-1, dim + 1)
        return [coefficient.movedim(-1, dim + 1).contiguous()], bias.contiguous()
