"""Positions: argmax and argmin, and the indices output of the order statistics (order.py).

An index is integer-valued and jumps wherever the inputs change order, so no line follows it: its interval comes
from the orders the input intervals allow. Input j can hold ascending rank r only if the inputs surely below it
(u_i < l_j) number at most r and those surely above it (l_i > u_j) at most n − 1 − r: they lie on that side at
every point of the box, whatever rule breaks ties. The index at rank r lies between the smallest and the largest
such candidate; where one candidate remains it is exactly that index. argmax is rank n − 1 (no input surely above:
u_j >= max_i l_i, a tie with a later input counting), argmin rank 0; as torch documents that they return the
first of tied extremes, an input an earlier one is surely at least (at most) is dropped too (u_j > max_{i<j} l_i),
so that a point with ties is exact. The other ops fix no tie rule (sort is unstable, CUDA's max.dim picks any), so
their candidates keep every tie.
CROWN's lines are the interval's ends (zero slopes): nothing of the input passes through an index.

>>> import opwise.bounds
>>> class Shift(torch.nn.Module):
...     def forward(self, x):
...         return x + x.argmax(1, keepdim=True).float()
>>> x = torch.tensor([[0.0, 3.0, 1.0]])
>>> bounds = opwise.bounds.BoundedModel(Shift(), x).compute_bounds(x_lower=x - 0.5, x_upper=x + 0.5, method="crown")
>>> bounds.lower, bounds.upper  # x1 is surely the largest: the index is exactly 1
(tensor([[0.5000, 3.5000, 1.5000]]), tensor([[1.5000, 4.5000, 2.5000]]))
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from opwise.bounds.transfers.registry import Interval, Step, bound_transfer


def candidate_span(low: torch.Tensor, high: torch.Tensor, ranks: torch.Tensor,
                   first_wins: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """For bounds [low, high] with the dim last ([..., n]) and ascending ranks [K]: per rank ([..., K], in low's
    dtype) the smallest and the largest index of an input that can hold that rank (see the module docstring).
    `first_wins` (a max or a min alone: argmax and argmin, whose documented rule returns the first of tied
    extremes): an input is no candidate where an earlier one is surely at least (at most) it, tie included.

    >>> low, high = torch.tensor([0.0, 2.0, 1.5]), torch.tensor([1.0, 3.0, 2.5])
    >>> candidate_span(low, high, torch.tensor([2, 0]))  # the largest is x1 or x2; the smallest surely x0
    (tensor([1., 0.]), tensor([2., 0.]))
    >>> candidate_span(torch.tensor([2.0, 2.0]), torch.tensor([2.0, 2.0]), torch.tensor([1]), first_wins=True)
    (tensor([0.]), tensor([0.]))
    """
    length = low.shape[-1]
    ranks = ranks.to(low.device)
    infinity = torch.full_like(low[..., :1], float("inf"))
    if bool((ranks == length - 1).all()):  # a max: no input surely above (O(n), the common case)
        possible = high >= low.amax(-1, keepdim=True)
        if first_wins:  # and no earlier one surely at least it: u_j > max_{i<j} l_i
            possible &= high > torch.cat([-infinity, low[..., :-1]], -1).cummax(-1).values
        possible = possible.unsqueeze(-2)
    elif bool((ranks == 0).all()):  # a min: no input surely below
        possible = low <= high.amin(-1, keepdim=True)
        if first_wins:
            possible &= low < torch.cat([infinity, high[..., :-1]], -1).cummin(-1).values
        possible = possible.unsqueeze(-2)
    else:
        below = (high.unsqueeze(-2) < low.unsqueeze(-1)).sum(-1)  # [..., n]: per j, the i with u_i < l_j
        above = (low.unsqueeze(-2) > high.unsqueeze(-1)).sum(-1)
        possible = (below.unsqueeze(-2) <= ranks[:, None]) & (ranks[:, None] <= length - 1 - above.unsqueeze(-2))
    possible = possible.expand(*low.shape[:-1], ranks.numel(), length)
    positions = torch.arange(length, device=low.device)
    first = torch.where(possible, positions, length).amin(-1)
    last = torch.where(possible, positions, -1).amax(-1)
    # none possible only where the bounds are NaN or empty (an infeasible split): every index is then sound
    none = first == length
    first, last = torch.where(none, 0, first), torch.where(none, length - 1, last)
    return first.to(low.dtype), last.to(low.dtype)


def index_interval(x: Interval, dim: int | None, ranks: torch.Tensor, drop: bool, first_wins: bool = False) -> Interval:
    """The interval of the indices of the given ascending ranks along `dim` of the input with bounds `x` (None:
    flattened, one index); `drop`: the output has no dim there (else one entry per rank at that dim); `first_wins`:
    as in `candidate_span`.

    >>> x = Interval(torch.tensor([[0.0, 2.0], [1.0, 1.0]]), torch.tensor([[1.0, 3.0], [3.0, 2.0]]))
    >>> index_interval(x, 1, torch.tensor([1]), drop=True)  # per row: the argmax is 1, then 0 or 1
    Interval(lower=tensor([1., 0.]), upper=tensor([1., 1.]))
    """
    if dim is None:
        low, high = x.lower.reshape(-1), x.upper.reshape(-1)
        first, last = candidate_span(low, high, ranks, first_wins)
        shape = () if drop else (1,) * x.lower.dim()
        return Interval(first.reshape(shape), last.reshape(shape))
    first, last = candidate_span(x.lower.movedim(dim, -1), x.upper.movedim(dim, -1), ranks, first_wins)
    ends = [(end[..., 0] if drop else end.movedim(-1, dim)).contiguous() for end in (first, last)]
    return Interval(*ends)


def constant_backward(A: torch.Tensor, output: Interval, input_shape: tuple[int, ...]):
    """Backward through a node bounded by constants: a zero coefficient for its input (so that the pass still reaches
    it) and the bias terms A⁺·lower + A⁻·upper.

    >>> parts, bias = constant_backward(torch.tensor([[2.0, -1.0]]), Interval(torch.zeros(2), torch.ones(2)), (3,))
    >>> parts[0], bias
    (tensor([[0., 0., 0.]]), tensor([[ 0., -1.]]))
    """
    bias = A.clamp(min=0) * output.lower + A.clamp(max=0) * output.upper
    return [A.new_zeros((A.shape[0], *input_shape))], bias


def op_argument(step: Step, position: int | None, name: str, default):
    """The argument of the step's op by keyword or position (None: keyword only); for an output of a multi-output
    op (a getitem of sort or topk), the op's.

    >>> from opwise.tracing import trace
    >>> class Top(torch.nn.Module):
    ...     def forward(self, x): return x.argmax(1, keepdim=True)
    >>> node = next(n for n in trace(Top(), torch.zeros(1, 3)).nodes if n.op == "call_function")
    >>> step = Step(node, "aten.argmax.default", [], [], None, node.args, None)
    >>> op_argument(step, 1, "dim", None), op_argument(step, 2, "keepdim", False)
    (1, True)
    """
    source = step.node.args[0] if step.node.target is operator.getitem else step.node
    if name in source.kwargs:
        return source.kwargs[name]
    return source.args[position] if position is not None and len(source.args) > position else default


@bound_transfer("aten.argmax.default", "aten.argmin.default")
class ArgExtreme:
    """argmax / argmin with a dim (keepdim or not) or over the flattened input (dim None).

    >>> from opwise.bounds.transfers.registry import transfer_for
    >>> type(transfer_for("aten.argmin.default")).__name__
    'ArgExtreme'
    """

    #: its lines are the ends of the interval its input's interval gives: no pass through it is tighter (engine)
    constant_lines = True

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return [step.inputs[0]]

    def _interval(self, step: Step, x: Interval) -> Interval:
        dim, keepdim = op_argument(step, 1, "dim", None), op_argument(step, 2, "keepdim", False)
        dim = None if dim is None else dim % max(x.lower.dim(), 1)
        length = x.lower.numel() if dim is None else x.lower.shape[dim]
        rank = length - 1 if step.op == "aten.argmax.default" else 0
        return index_interval(x, dim, torch.tensor([rank]), not keepdim, first_wins=True)

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        return self._interval(step, intervals[0])

    def backward(self, step: Step, A: torch.Tensor):
        x = step.bounds(step.inputs[0])
        return constant_backward(A, self._interval(step, x), tuple(x.lower.shape))
