"""β-CROWN split constraints, as the engine applies them in a backward pass.

A domain's split keeps z in [l', u'] on every input it bounds, so for any β_l, β_u >= 0

    f(x) >= f(x) - β_l (z(x) - l') - β_u (u' - z(x))      on the domain,

i.e. the coefficient reaching z gains (β_u - β_l) and the bias gains β_l l' - β_u u' (β-CROWN's
multipliers, on both ends of a general interval; an infinite end has no constraint). Without β the
linear term in z is minimized over the whole input set, where z leaves [l', u']; with β the bound can use
the split. Every β >= 0 gives a sound bound.
"""

from __future__ import annotations

import dataclasses

import torch

from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.transfers.registry import Interval


@dataclasses.dataclass
class SplitEnds:
    """A split's ends as its β terms use them: where each end is finite, and the end (0 where infinite).
    An engine keeps them per split node: they do not change while Adam steps β.

    >>> ends = SplitEnds.of(Interval(torch.tensor([0.5]), torch.tensor([float("inf")])))
    >>> ends.upper_finite.tolist(), ends.upper.tolist()
    ([False], [0.0])
    """

    lower_finite: torch.Tensor
    lower: torch.Tensor
    upper_finite: torch.Tensor
    upper: torch.Tensor

    @classmethod
    def of(cls, split: Interval) -> "SplitEnds":
        lower_finite, upper_finite = torch.isfinite(split.lower), torch.isfinite(split.upper)
        return cls(lower_finite, torch.where(lower_finite, split.lower, 0.0), upper_finite, torch.where(upper_finite, split.upper, 0.0))


def apply_split_constraint(A: torch.Tensor, split: Interval | SplitEnds, beta: AlphaPair) -> tuple[torch.Tensor, torch.Tensor]:
    """The coefficient of z with the β terms of its split added, and the β terms' constant ([specs, *z shape]).

    >>> import torch
    >>> split = Interval(torch.tensor([[0.5]]), torch.tensor([[float("inf")]]))
    >>> A, constant = apply_split_constraint(torch.ones(1, 1, 1), split, AlphaPair(torch.full((1, 1, 1), 2.0), torch.ones(1, 1, 1)))
    >>> A.tolist(), constant.tolist()                     # z - 2 (z - 0.5) = -z + 1; no upper end: β_u unused
    ([[[-1.0]]], [[[1.0]]])
    """
    ends = split if isinstance(split, SplitEnds) else SplitEnds.of(split)
    beta_lower = torch.where(ends.lower_finite, beta.lower, 0.0)
    beta_upper = torch.where(ends.upper_finite, beta.upper, 0.0)
    constant = beta_lower * ends.lower - beta_upper * ends.upper
    return A + beta_upper - beta_lower, constant


def initial_betas(split: Interval, specs: int) -> AlphaPair:
    """β = 0 for both ends ([specs, *split shape]): the pass starts as plain CROWN.

    >>> beta = initial_betas(Interval(torch.zeros(1, 3), torch.ones(1, 3)), specs=2)
    >>> tuple(beta.lower.shape), float(beta.upper.abs().sum()), beta.lower is beta.upper
    ((2, 1, 3), 0.0, False)
    """
    zeros = torch.zeros((specs, *split.lower.shape), dtype=split.lower.dtype, device=split.lower.device)
    return AlphaPair(zeros, zeros.clone())


def clamp_betas(beta: AlphaPair) -> None:
    """Project β onto β >= 0, where every value gives a sound bound.

    >>> beta = AlphaPair(torch.tensor([-1.0, 2.0]), torch.tensor([0.5, -0.5]))
    >>> clamp_betas(beta); beta.lower.tolist(), beta.upper.tolist()
    ([0.0, 2.0], [0.5, 0.0])
    """
    with torch.no_grad():
        beta.lower.clamp_(min=0)
        beta.upper.clamp_(min=0)
