"""The input set being bounded over: a box, or an Lp ball (clipped to a valid domain when given).

Its two jobs: the interval of the input (for IBP) and the exact minimum of a linear function over the
set (the last step of CROWN: `min_x A·x` is `A⁺·l + A⁻·u` on a box and `A·x₀ − ε‖A‖_q` on an Lp ball,
with 1/p + 1/q = 1). A ball clipped to a box is bounded both ways and the larger bound kept.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from opwise.bounds.transfers.registry import Interval


@dataclasses.dataclass
class InputSet:
    """`lower`/`upper`: the box (for a ball, its bounding box within the domain); `center`/`eps`/`norm`: the ball."""

    lower: torch.Tensor
    upper: torch.Tensor
    center: torch.Tensor | None = None
    eps: float = 0.0
    norm: float = math.inf

    @classmethod
    def ball(cls, center: torch.Tensor, eps: float, norm: float = math.inf, domain: tuple[float, float] | None = None) -> "InputSet":
        """The Lp ball of radius eps around center, intersected with the domain box.

        >>> s = InputSet.ball(torch.tensor([[0.5, 0.95]]), 0.1, domain=(0.0, 1.0))
        >>> s.upper.tolist()
        [[0.6000000238418579, 1.0]]
        """
        lower, upper = center - eps, center + eps
        if domain is not None:
            lower, upper = lower.clamp(min=domain[0]), upper.clamp(max=domain[1])
        return cls(lower, upper, center, float(eps), float(norm))

    @property
    def interval(self) -> Interval:
        return Interval(self.lower, self.upper)

    def minimum(self, A: torch.Tensor, groups: int | None = None) -> torch.Tensor:
        """min over the set of A·x per spec and group; A is [specs, batch, *input shape] -> [specs, groups].

        A group is a sample (groups = batch, the default) or the whole batch (groups = 1).

        >>> box = InputSet(torch.zeros(1, 2), torch.ones(1, 2))
        >>> box.minimum(torch.tensor([[[1.0, -2.0]]])).tolist()
        [[-2.0]]
        """
        batch = self.lower.shape[0]
        flat = A.reshape(A.shape[0], batch, -1)
        lower, upper = self.lower.reshape(1, batch, -1), self.upper.reshape(1, batch, -1)
        bound = (flat.clamp(min=0) * lower + flat.clamp(max=0) * upper).sum(-1)
        if self.center is not None and not math.isinf(self.norm):
            dual = math.inf if self.norm == 1 else self.norm / (self.norm - 1)
            center = self.center.reshape(1, batch, -1)
            ball = (flat * center).sum(-1) - self.eps * torch.linalg.vector_norm(flat, ord=dual, dim=-1)
            bound = torch.maximum(bound, ball)
        # samples are independent, so a spec spanning the whole batch is bounded by the sum over samples
        return bound if groups in (None, batch) else bound.sum(-1, keepdim=True)
