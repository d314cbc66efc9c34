"""Lookups with a bounded index: gather, index_select and indexing by one index tensor, where the index depends on
the input (an argmax fed on, a one-hot's position).

The index is integer-valued and jumps, so no line follows the value it picks: each output lies between the smallest
lower end and the largest upper end of the data at the indices the index's interval [l, u] allows (the integers j
with l <= j <= u that are valid positions), exactly the data's where one index remains. CROWN's lines are those
ends (zero slopes for the data and the index). A lookup with a constant index is routing (affine.py). Negative
indices (from the end, as index_select and indexing allow) are refused with the bounded index: an interval that
spans 0 would mix both ends.

>>> import opwise.bounds
>>> class Pick(torch.nn.Module):
...     def forward(self, x):
...         return torch.tensor([[10.0, 20.0, 30.0]]).gather(1, x.argmax(1, keepdim=True))
>>> x = torch.tensor([[0.0, 1.0, 0.9]])
>>> bounds = opwise.bounds.BoundedModel(Pick(), x).compute_bounds(x_lower=x - 0.01, x_upper=x + 0.01, method="crown")
>>> bounds.lower, bounds.upper  # x1 surely the largest: 20
(tensor([[20.]]), tensor([[20.]]))
>>> bounds = opwise.bounds.BoundedModel(Pick(), x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="crown")
>>> bounds.lower, bounds.upper  # x2 may be the largest too: 20 to 30
(tensor([[20.]]), tensor([[30.]]))
"""

from __future__ import annotations

import math

import torch
from torch import fx

from opwise.bounds.transfers.affine import Affine
from opwise.bounds.transfers.registry import Interval, Step, bound_transfer
from opwise.errors import UnsupportedOperation


def hull_at_indices(data: Interval, dim: int, index: Interval, pick) -> Interval:
    """Per output, [min, max] of the data's ends at the positions j along `dim` with index.lower <= j <= index.upper;
    `pick(tensor, j)` is the data at position j laid out like the output, `index` broadcast to the output. Where no
    position is allowed (NaN or empty bounds) every position is.

    >>> data = Interval(torch.tensor([1.0, 5.0, 3.0]), torch.tensor([2.0, 6.0, 4.0]))
    >>> index = Interval(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    >>> hull_at_indices(data, 0, index, lambda t, j: t[j].expand(2))
    Interval(lower=tensor([1., 3.]), upper=tensor([6., 6.]))
    """
    low = high = everywhere_low = everywhere_high = None
    for j in range(data.lower.shape[dim]):
        at_low, at_high = pick(data.lower, j), pick(data.upper, j)
        possible = (index.lower <= j) & (index.upper >= j)
        if low is None:
            low = torch.where(possible, at_low, math.inf)
            high = torch.where(possible, at_high, -math.inf)
            everywhere_low, everywhere_high = at_low, at_high
            continue
        low = torch.where(possible, torch.minimum(low, at_low), low)
        high = torch.where(possible, torch.maximum(high, at_high), high)
        everywhere_low, everywhere_high = torch.minimum(everywhere_low, at_low), torch.maximum(everywhere_high, at_high)
    none = low > high
    return Interval(torch.where(none, everywhere_low, low), torch.where(none, everywhere_high, high))


class _Lookup(Affine):
    """Routing where the index is a constant; the hull at the allowed indices where it is bounded."""

    #: the argument position of the index (aten.index: of its list of indices)
    index_position = 2

    def _index(self, step: Step):
        return step.args[self.index_position] if len(step.args) > self.index_position else None

    def _index_bounded(self, step: Step) -> bool:
        index = self._index(step)
        return isinstance(index, fx.Node) and index in step.inputs

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return list(step.inputs) if self._index_bounded(step) else []

    def _data(self, step: Step, bounds: dict, like: torch.Tensor) -> Interval:
        data = step.args[0]
        if isinstance(data, fx.Node):
            return bounds[data]
        value = torch.as_tensor(data, device=like.device).to(like.dtype)
        return Interval(value, value)

    def hull(self, step: Step, data: Interval, index: Interval) -> Interval:
        raise NotImplementedError

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        if not self._index_bounded(step):
            return super().ibp(step, intervals)
        bounds = dict(zip(step.inputs, intervals))
        index = bounds[self._index(step)]
        return self.hull(step, self._data(step, bounds, index.lower), index)

    def backward(self, step: Step, A: torch.Tensor):
        if not self._index_bounded(step):
            return super().backward(step, A)
        output = self.ibp(step, [step.bounds(node) for node in step.inputs])
        bias = A.clamp(min=0) * output.lower + A.clamp(max=0) * output.upper
        return [A.new_zeros((A.shape[0], *shape)) for shape in step.shapes], bias


@bound_transfer("aten.gather.default")
class Gather(_Lookup):
    """gather(data, dim, index): out[..., k, ...] = data[..., index[..., k, ...], ...] along dim."""

    def hull(self, step: Step, data: Interval, index: Interval) -> Interval:
        dim = step.args[1] % max(data.lower.dim(), 1)
        shape = index.lower.shape
        return hull_at_indices(data, dim, index, lambda t, j: t.gather(dim, torch.full(shape, j, device=t.device)))


@bound_transfer("aten.index_select.default")
class IndexSelect(_Lookup):
    """index_select(data, dim, index): the data's entries at the 1-D index's positions along dim."""

    def hull(self, step: Step, data: Interval, index: Interval) -> Interval:
        dim = step.args[1] % max(data.lower.dim(), 1)
        _refuse_negative(step, index)
        view = [1] * data.lower.dim()
        view[dim] = -1
        spread = Interval(index.lower.reshape(view), index.upper.reshape(view))
        count = index.lower.numel()
        return hull_at_indices(data, dim, spread, lambda t, j: t.narrow(dim, j, 1).expand(
            *t.shape[:dim], count, *t.shape[dim + 1:]))


@bound_transfer("aten.index.Tensor")
class Index(_Lookup):
    """data[..., index, ...] by one index tensor (the others None, i.e. whole axes): the positions the index allows
    along its axis; several index tensors with a bounded one are refused."""

    def _index(self, step: Step):
        indices = step.args[1]
        bounded = [i for i in indices if isinstance(i, fx.Node) and i in step.inputs]
        return bounded[0] if bounded else None

    def hull(self, step: Step, data: Interval, index: Interval) -> Interval:
        indices = step.args[1]
        given = [k for k, i in enumerate(indices) if i is not None]
        if len(given) != 1:
            raise UnsupportedOperation(
                step.node.name, step.op, step.module_path, "bound",
                "it indexes by several index tensors and one depends on the bounded input; bound rules take one index "
                "tensor (data[index] or data[:, index]) or constant indices")
        _refuse_negative(step, index)
        axis = given[0]
        extra = index.lower.dim()
        after = data.lower.dim() - axis - 1
        spread = Interval(index.lower.reshape(*[1] * axis, *index.lower.shape, *[1] * after),
                          index.upper.reshape(*[1] * axis, *index.upper.shape, *[1] * after))

        def pick(t: torch.Tensor, j: int) -> torch.Tensor:
            at = t.select(axis, j)
            for _ in range(extra):
                at = at.unsqueeze(axis)
            return at.expand(*t.shape[:axis], *index.lower.shape, *t.shape[axis + 1:])

        return hull_at_indices(data, axis, spread, pick)


def _refuse_negative(step: Step, index: Interval) -> None:
    if bool((index.lower < 0).any()):
        raise UnsupportedOperation(
            step.node.name, step.op, step.module_path, "bound",
            "its index depends on the bounded input and may be negative (counted from the end), which bound rules do "
            "not follow; make the index nonnegative (e.g. remainder by the axis length) before the lookup")
