"""remainder (Python's %: the divisor's sign) and fmod (C's: the dividend's sign) by a constant divisor d.

Both are x − q(x)·|d| for an integer q(x) nondecreasing in x (floor(x/d)·d/|d| for remainder, trunc(x/|d|) for
fmod), so on [l, u] the count of pieces crossed is ((u − l) − (f(u) − f(l))) / |d|. Where it is zero the interval
lies in one piece: there f is x − q·|d| exactly, the lines are that line (slope 1, the offset read off both ends,
the wider of the two against rounding) and the interval is [f(l), f(u)] (torch computes fmod exactly and remainder
as fmod plus d, both monotone within a piece). Across a piece's end the interval is f's range there, with constant
lines: [0, d] for remainder with d > 0 ([d, 0] for d < 0; the end d itself, as float32 rounds −1e-9 % 1 up to 1),
and for fmod [max(l, −|d|), min(u, |d|)] widened to hold 0. On integers the range ends one short of ±|d|.

The divisor must not depend on the bounded input (a quotient of two bounded values jumps where either moves) and
must be nonzero and finite (a zero divisor gives NaN or an error, an infinite one sends x < 0 to inf in remainder).

>>> import opwise.bounds
>>> class Wrap(torch.nn.Module):
...     def forward(self, x):
...         return torch.remainder(x, 2.0)
>>> x = torch.tensor([[2.5, 3.5]])
>>> bounds = opwise.bounds.BoundedModel(Wrap(), x).compute_bounds(x_lower=x - 0.25, x_upper=x + 0.75, method="crown")
>>> bounds.lower, bounds.upper  # [2.25, 3.25] lies in one period (f = x − 2); [3.25, 4.25] crosses 4
(tensor([[0.2500, 0.0000]]), tensor([[1.2500, 2.0000]]))
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.bounds.relaxations.base import LinearRelaxation
from opwise.bounds.transfers.registry import Interval, Step, bound_transfer, sum_to
from opwise.errors import UnsupportedOperation


def modulo_lines(lower: torch.Tensor, upper: torch.Tensor, divisor: torch.Tensor, floored: bool,
                 integral: bool = False) -> tuple[Interval, LinearRelaxation]:
    """The interval and the lines of remainder (`floored`) or fmod by `divisor` (nonzero, broadcast to lower's
    shape) on [lower, upper]; `integral`: the values are integers (see the module docstring).

    >>> interval, lines = modulo_lines(torch.tensor([1.5, 2.5]), torch.tensor([2.5, 3.5]), torch.tensor(2.0), True)
    >>> interval.lower, interval.upper, lines.lower_slope, lines.lower_intercept  # the first crosses 2
    (tensor([0.0000, 0.5000]), tensor([2.0000, 1.5000]), tensor([0., 1.]), tensor([ 0., -2.]))
    """
    function = torch.remainder if floored else torch.fmod
    at_lower, at_upper = function(lower, divisor), function(upper, divisor)
    size = divisor.abs()
    # NaN where an end is infinite: the comparison is False, which is the range's case
    one_piece = (upper - lower) - (at_upper - at_lower) < size / 2
    reach = size - 1 if integral else size
    zero = torch.zeros_like(lower)
    if floored:
        low, high = torch.where(divisor > 0, zero, -reach), torch.where(divisor > 0, reach, zero)
    else:
        low = torch.minimum(zero, torch.maximum(lower, -reach))
        high = torch.maximum(zero, torch.minimum(upper, reach))
    interval = Interval(torch.where(one_piece, at_lower, low), torch.where(one_piece, at_upper, high))
    slope = one_piece.to(lower.dtype)
    # within a piece both offsets are −q·|d|; they differ only by rounding, so the lower line takes the smaller
    offset_low = torch.minimum(at_lower - lower, at_upper - upper)
    offset_high = torch.maximum(at_lower - lower, at_upper - upper)
    lines = LinearRelaxation(slope, torch.where(one_piece, offset_low, interval.lower),
                             slope.clone(), torch.where(one_piece, offset_high, interval.upper))
    return interval, lines


@bound_transfer("aten.remainder.Scalar", "aten.remainder.Tensor", "aten.fmod.Scalar", "aten.fmod.Tensor",
                "aten.remainder.Scalar_Tensor")  # a constant dividend: refused with the reason
class Modulo:
    """x % d and fmod(x, d) for a constant d: see the module docstring.

    >>> from opwise.bounds.transfers.registry import transfer_for
    >>> type(transfer_for("aten.fmod.Tensor")).__name__
    'Modulo'
    """

    #: its interval is f's range on its input's interval, and its lines follow f exactly or are that range's ends:
    #: CROWN can find no tighter interval (engine)
    exact_image = True

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return [step.inputs[0]]

    def _divisor(self, step: Step) -> torch.Tensor:
        if "divisor" not in step.cache:
            dividend, divisor = step.args[0], step.args[1] if len(step.args) > 1 else step.node.kwargs.get("other")
            if not isinstance(dividend, fx.Node) or isinstance(divisor, fx.Node):
                raise UnsupportedOperation(
                    step.node.name, step.op, step.module_path, "bound",
                    "its divisor depends on the bounded input; bound rules take a constant divisor (a literal, "
                    "a parameter or a buffer) only")
            divisor = torch.as_tensor(divisor)
            if not bool(torch.isfinite(divisor).all()) or bool((divisor == 0).any()):
                raise UnsupportedOperation(
                    step.node.name, step.op, step.module_path, "bound",
                    "its divisor is zero or not finite somewhere, where the result is NaN, an error or an infinity "
                    "no bound holds; use a nonzero finite divisor")
            step.cache["divisor"] = divisor
        return step.cache["divisor"]

    def _lines(self, step: Step, x: Interval) -> tuple[Interval, LinearRelaxation]:
        divisor = self._divisor(step).to(device=x.lower.device, dtype=x.lower.dtype)
        lower, upper, divisor = torch.broadcast_tensors(x.lower, x.upper, divisor)
        value = step.node.meta.get("val")
        integral = isinstance(value, torch.Tensor) and not value.dtype.is_floating_point
        return modulo_lines(lower, upper, divisor, step.op.startswith("aten.remainder"), integral)

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        return self._lines(step, intervals[0])[0]

    def backward(self, step: Step, A: torch.Tensor):
        x = step.bounds(step.inputs[0])
        _, lines = self._lines(step, x)
        positive, negative = A.clamp(min=0), A.clamp(max=0)
        coefficient = positive * lines.lower_slope + negative * lines.upper_slope
        bias = positive * lines.lower_intercept + negative * lines.upper_intercept
        return [sum_to(coefficient, tuple(x.lower.shape))], bias
