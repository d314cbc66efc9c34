"""McCormick planes for the product z = x·y of two bounded tensors (mul, and the terms of bmm/matmul).

On [lx, ux] × [ly, uy] the valid planes are (McCormick 1976)

    lower:  ly·x + lx·y - lx·ly      and  uy·x + ux·y - ux·uy
    upper:  uy·x + lx·y - lx·uy      and  ly·x + ux·y - ux·ly

and any convex combination of the two planes of a side is valid too, so α in [0, 1] per side and element
weighs the first plane (α = 1, CROWN's choice for mul) against the second.

>>> planes = relax_bilinear(torch.tensor(-1.0), torch.tensor(2.0), torch.tensor(0.0), torch.tensor(3.0))
>>> float(planes.lower_x * 2 + planes.lower_y * 3 + planes.lower_intercept) <= 6.0
True
"""

from __future__ import annotations

import torch

from opwise.bounds.relaxations.base import AlphaPair, BilinearRelaxation


def relax_bilinear(
    lx: torch.Tensor, ux: torch.Tensor, ly: torch.Tensor, uy: torch.Tensor, alpha: AlphaPair | None = None
) -> BilinearRelaxation:
    """Lower and upper planes of x·y valid on the box, elementwise with broadcasting; α clamped to [0, 1].

    >>> relax_bilinear(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), torch.tensor(4.0)).upper_x
    tensor(4.)
    """
    lx, ux, ly, uy = torch.broadcast_tensors(lx, ux, ly, uy)

    def weight(value: torch.Tensor | None) -> torch.Tensor:
        return torch.ones_like(lx) if value is None else value.clamp(0.0, 1.0)

    lower_weight = weight(None if alpha is None else alpha.lower)
    upper_weight = weight(None if alpha is None else alpha.upper)
    return BilinearRelaxation(
        lower_x=lower_weight * ly + (1 - lower_weight) * uy,
        lower_y=lower_weight * lx + (1 - lower_weight) * ux,
        lower_intercept=-(lower_weight * lx * ly + (1 - lower_weight) * ux * uy),
        upper_x=upper_weight * uy + (1 - upper_weight) * ly,
        upper_y=upper_weight * lx + (1 - upper_weight) * ux,
        upper_intercept=-(upper_weight * lx * uy + (1 - upper_weight) * ux * ly),
    )


def init_bilinear_alpha(lx: torch.Tensor, ux: torch.Tensor, ly: torch.Tensor, uy: torch.Tensor) -> AlphaPair:
    """CROWN's planes (α = 1 on both sides), shaped like the broadcast box.

    >>> init_bilinear_alpha(torch.zeros(2), torch.ones(2), torch.zeros(1), torch.ones(1)).lower
    tensor([1., 1.])
    """
    shape = torch.broadcast_shapes(lx.shape, ux.shape, ly.shape, uy.shape)
    return AlphaPair(torch.ones(shape, dtype=lx.dtype, device=lx.device), torch.ones(shape, dtype=lx.dtype, device=lx.device))


def clamp_bilinear_alpha(alpha: AlphaPair) -> AlphaPair:
    """Project both α back into [0, 1] in place (every value there is sound).

    >>> clamp_bilinear_alpha(AlphaPair(torch.tensor([1.5]), torch.tensor([-0.2]))).upper
    tensor([0.])
    """
    with torch.no_grad():
        for value in (alpha.lower, alpha.upper):
            if value is not None:
                value.clamp_(0.0, 1.0)
    return alpha
