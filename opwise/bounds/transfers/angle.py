"""atan2(y, x), the angle of the point (x, y) (robotics and physics nets read headings from two coordinates): its
interval over the box of its operands' intervals, and constant lines from that interval.

Over a box that does not meet the closed ray {y = 0, x <= 0} (the branch cut, and the origin on it) the angle is
continuous and has no critical point (its gradient (−y, x)/(x² + y²) never vanishes), and along each edge, a
segment of a line that misses the origin, it is monotone: its extremes are at the box's corners. A box that meets
the ray reaches both sides of the cut, ±π: its interval is [−π, π]. The ray is taken closed because floats have
signed zeros: atan2(−0.0, −1) = −π while atan2(0.0, −1) = π, and −0.0 lies in any interval [0, u], as it does
in [l, 0]; so an interval of y that touches 0 beside an x that reaches 0 or below is on the cut.

No pair of planes is drawn through the angle: CROWN's lines are the interval's ends (zero slopes), as for a
comparison (comparison.py), computed from the intervals CROWN gives its operands.

>>> from opwise.bounds.transfers.registry import Interval
>>> low, high = atan2_image(Interval(torch.tensor([0.5, -1.0]), torch.tensor([1.0, 1.0])),
...                         Interval(torch.tensor([1.0, -2.0]), torch.tensor([2.0, -1.0])))
>>> [round(v, 4) for v in low.tolist()], [round(v, 4) for v in high.tolist()]  # the second box spans the cut
([0.245, -3.1416], [0.7854, 3.1416])
"""

from __future__ import annotations

import math

import torch
from torch import fx

from opwise.bounds.transfers.comparison import IntervalOnly
from opwise.bounds.transfers.registry import Interval, Step, bound_transfer


def atan2_image(y: Interval, x: Interval) -> tuple[torch.Tensor, torch.Tensor]:
    """(lowest, highest) atan2(y, x) over the box y in [y.lower, y.upper], x in [x.lower, x.upper], elementwise and
    broadcast (see the module docstring); computed in float64, returned in y's dtype one unit in the last place
    wider on each side."""
    y_low, y_high, x_low, x_high = (end.double() for end in (y.lower, y.upper, x.lower, x.upper))
    corners = torch.stack(torch.broadcast_tensors(torch.atan2(y_low, x_low), torch.atan2(y_low, x_high),
                                                  torch.atan2(y_high, x_low), torch.atan2(y_high, x_high)))
    on_cut = (y_low <= 0) & (y_high >= 0) & (x_low <= 0)
    half_turn = torch.full_like(corners[0], math.pi)
    low = torch.where(on_cut, -half_turn, corners.min(0).values).to(y.lower.dtype)
    high = torch.where(on_cut, half_turn, corners.max(0).values).to(y.lower.dtype)
    # one unit in the last place outward: the model's atan2 in its own dtype may round a point past the extreme
    return torch.nextafter(low, torch.full_like(low, -math.inf)), torch.nextafter(high, torch.full_like(high, math.inf))


def _operand(arg, intervals: dict[fx.Node, Interval], like: torch.Tensor) -> Interval:
    """A bounded node's interval, or a constant's single value."""
    if isinstance(arg, fx.Node):
        return intervals[arg]
    value = torch.as_tensor(arg, dtype=like.dtype, device=like.device)
    return Interval(value, value)


@bound_transfer("aten.atan2.default")
class Atan2(IntervalOnly):
    """atan2(y, x) of bounded tensors (either may be a constant): the interval `atan2_image` gives, constant lines.

    >>> import opwise
    >>> class Heading(torch.nn.Module):
    ...     def forward(self, v):
    ...         return torch.atan2(v[:, 1:], v[:, :1])
    >>> bounds = opwise.compute_bounds(Heading(), torch.tensor([[1.0, 1.0]]), eps=0.5, method="crown")
    >>> round(bounds.lower.item(), 4), round(bounds.upper.item(), 4)
    (0.3218, 1.249)
    """

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        bounds = dict(zip(step.inputs, intervals))
        like = intervals[0].lower
        low, high = atan2_image(_operand(step.args[0], bounds, like), _operand(step.args[1], bounds, like))
        shape = step.shape if step.shape is not None else low.shape
        return Interval(low.expand(shape).contiguous(), high.expand(shape).contiguous())
