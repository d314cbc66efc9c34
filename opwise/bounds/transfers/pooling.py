"""Max pooling (fixed and adaptive windows) and max/min reductions: each maximum is at least the input its window's largest lower bound
belongs to, and at most the window's largest upper bound (exactly that input when its lower bound beats
every other upper); a minimum is the mirror image (min x = −max −x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

from opwise.bounds.transfers.registry import Interval, Step, bound_transfer


def _pool_arguments(step: Step) -> dict:
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
    values = dict(zip(names, step.args[1:]))
    values.update({k: v for k, v in step.node.kwargs.items() if k in names})
    if not values.get("stride"):
        values["stride"] = values["kernel_size"]
    return values


@bound_transfer("aten.max_pool2d")
class MaxPool:
    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return [step.inputs[0]]

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        return Interval(step.function(intervals[0].lower), step.function(intervals[0].upper))

    def pool(self, step: Step, value: torch.Tensor, return_indices: bool = False):
        return F.max_pool2d(value, return_indices=return_indices, **_pool_arguments(step))

    def backward(self, step: Step, A: torch.Tensor):
        x = step.bounds(step.inputs[0])
        lower_max, chosen = self.pool(step, x.lower, return_indices=True)
        upper_max = self.pool(step, x.upper)
        chosen_upper = x.upper.flatten(2).gather(2, chosen.flatten(2)).view_as(chosen)
        # the largest upper bound among the other inputs of the window: the pool of uppers with the chosen one lowered
        others = x.upper.flatten(2).scatter(2, chosen.flatten(2), float("-inf")).view_as(x.upper)
        exact = (lower_max >= self.pool(step, others)) & (chosen_upper >= upper_max)

        negative = A.clamp(max=0)
        weights = torch.where(exact, A, A.clamp(min=0))
        bias = negative * upper_max * ~exact
        return [_scattered(weights, chosen, x.lower.shape)], bias


@bound_transfer("aten.adaptive_max_pool2d")
class AdaptiveMaxPool(MaxPool):
    """Adaptive max pooling: the same bounds over its windows (of varying size, possibly overlapping)."""

    def pool(self, step: Step, value: torch.Tensor, return_indices: bool = False):
        size = step.args[1] if len(step.args) > 1 else step.node.kwargs["output_size"]
        return F.adaptive_max_pool2d(value, size, return_indices=return_indices)


def _scattered(weights: torch.Tensor, chosen: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Coefficients [S, *shape] that put each window's weight on the input it chose (`chosen`: flat indices
    into the last two axes, as max_pool2d returns them; windows that overlap add up)."""
    specs, leading = weights.shape[0], shape[:-2]
    index = chosen.flatten(-2).unsqueeze(0).expand(specs, *leading, -1)
    coefficient = weights.new_zeros(specs, *leading, shape[-2] * shape[-1])
    return coefficient.scatter_add_(-1, index, weights.flatten(-2)).view(specs, *shape)


def _reduced_last(value: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """`value` with the reduced dims moved last and flattened into one."""
    kept = [d for d in range(value.dim()) if d not in dims]
    return value.permute(*kept, *dims).flatten(len(kept))


@bound_transfer("aten.amax.default", "aten.amin.default", "aten.max.default", "aten.min.default")
class Extremum:
    """amax(x, dims, keepdim) and amin, and max(x) / min(x) over every element: the max-pool bounds over the reduced
    dims (min by negation)."""

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return [step.inputs[0]]

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        return Interval(step.function(intervals[0].lower), step.function(intervals[0].upper))  # monotone

    def backward(self, step: Step, A: torch.Tensor):
        x = step.bounds(step.inputs[0])
        rank = x.lower.dim()
        dims = step.args[1] if len(step.args) > 1 else step.node.kwargs.get("dim", [])
        dims = tuple(sorted(d % rank for d in ([dims] if isinstance(dims, int) else dims))) or tuple(range(rank))
        sign = -1.0 if step.op.startswith(("aten.amin", "aten.min")) else 1.0  # min x = −max(−x): bounds swap, negate
        low, high = (x.lower, x.upper) if sign > 0 else (-x.upper, -x.lower)
        low, high = _reduced_last(low, dims), _reduced_last(high, dims)
        lower_max, chosen = low.max(-1, keepdim=True)
        upper_max = high.max(-1, keepdim=True).values
        others = high.scatter(-1, chosen, float("-inf")).max(-1, keepdim=True).values
        exact = (lower_max >= others) & (high.gather(-1, chosen) >= upper_max)
        out_shape = A.shape[1:]
        A = A * sign  # A·min x = (−A)·max(−x), whose inputs are −x: the sign comes back on the coefficient
        negative = A.clamp(max=0)
        weights = torch.where(exact.reshape(out_shape), A, A.clamp(min=0))
        bias = negative * (upper_max * ~exact).reshape(out_shape)
        # each weight onto the element its maximum chose, in the reduced-last layout, then back to x's
        specs, kept = A.shape[0], [d for d in range(rank) if d not in dims]
        reduced = weights.new_zeros(specs, *low.shape).scatter_add_(
            -1, chosen.unsqueeze(0).expand(specs, *chosen.shape), weights.reshape(specs, *chosen.shape))
        reduced = reduced.reshape(specs, *(x.lower.shape[d] for d in kept), *(x.lower.shape[d] for d in dims))
        order = [0] + [1 + (kept + list(dims)).index(d) for d in range(rank)]
        return [reduced.permute(*order) * sign], bias
