"""Max pooling: each output is at least the input its window's largest lower bound belongs to, and at
most the window's largest upper bound (exactly that input when its lower bound beats every other upper).
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

    def backward(self, step: Step, A: torch.Tensor):
        x = step.bounds(step.inputs[0])
        arguments = _pool_arguments(step)
        lower_max, chosen = F.max_pool2d(x.lower, return_indices=True, **arguments)
        upper_max = F.max_pool2d(x.upper, **arguments)
        chosen_upper = x.upper.flatten(2).gather(2, chosen.flatten(2)).view_as(chosen)
        # the largest upper bound among the other inputs of the window: the pool of uppers with the chosen one lowered
        others = x.upper.flatten(2).scatter(2, chosen.flatten(2), float("-inf")).view_as(x.upper)
        exact = (lower_max >= F.max_pool2d(others, **arguments)) & (chosen_upper >= upper_max)

        def select(value: torch.Tensor) -> torch.Tensor:
            return value.flatten(2).gather(2, chosen.flatten(2)).view_as(chosen)

        positive, negative = A.clamp(min=0), A.clamp(max=0)
        weights = positive + negative * exact
        _, vjp = torch.func.vjp(select, torch.zeros_like(x.lower))
        (coefficient,) = torch.func.vmap(vjp)(weights)
        bias = negative * upper_max * ~exact
        return [coefficient], bias
