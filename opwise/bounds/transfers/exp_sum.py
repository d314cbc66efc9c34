"""A sum of exponentials of differences (softmax's denominator), carried back in one step instead of five.

expand.py writes softmax's denominator as `sum_j(mask · exp(clamp_max(x_j − x_i, cap)))` over an [.., i, j]
grid of score differences. Carried back node by node, the coefficients of an intermediate bound on that grid are
[specs, .., i, j]: each spec of the denominator's n positions gets n times as many elements, touched by the
sum's broadcast, the mask, exp's lines, the clamp's lines and the difference (on vit_2023's ibp_3_3_8 most of
the time spent in the softmaxes). The coefficient of every term of row i has the sign of the row's coefficient
(the mask is non-negative and both lines of exp and of the clamp rise), so exp's and the clamp's lines compose
into one lower and one upper line per term, drawn once without the specs; `exp_sum_backward` contracts the
row coefficients with them straight to the difference's two operands: the node-by-node walk's bound, with no
tensor of specs × the grid.
"""

from __future__ import annotations

import dataclasses
import string

import torch
from torch import fx

from opwise.bounds.relaxations.base import LinearRelaxation

#: the ops of the pattern, as `Graph.info(node).op` names them
SUM, MULTIPLY, EXP, CLAMP_MAX, SUBTRACT = ("aten.sum.dim_IntList", "aten.mul.Tensor", "aten.exp.default",
                                           "aten.clamp_max.default", "aten.sub.Tensor")


@dataclasses.dataclass(frozen=True)
class ExpSum:
    """`total = sum(terms, [summed])`, `terms = exp · mask` (a constant), `exp = exp(clamp)`, `clamp =
    clamp_max(difference, cap)` (or no clamp: `clamp` is None and exp takes the difference), `difference =
    operands[0] − operands[1]`, each operand shaped `operand_shapes[i]` and broadcast to `full`."""

    total: fx.Node
    terms: fx.Node
    exp: fx.Node
    clamp: fx.Node | None
    difference: fx.Node
    operands: tuple[fx.Node, fx.Node]
    operand_shapes: tuple[tuple[int, ...], tuple[int, ...]]
    full: tuple[int, ...]
    summed: int

    @property
    def inner(self) -> tuple[fx.Node, ...]:
        """The nodes a fused step skips (no coefficient reaches them)."""
        return tuple(n for n in (self.terms, self.exp, self.clamp, self.difference) if n is not None)

    @staticmethod
    def of(node: fx.Node, op, shape, bounded) -> "ExpSum | None":
        """The pattern ending at `node`, or None; `op(n)`, `shape(n)` and `bounded(n)` describe nodes as the graph
        does. Only where each inner node has one user (its coefficient comes from the sum alone)."""
        if op(node) != SUM or len(node.args) != 2 or node.kwargs or not isinstance(node.args[0], fx.Node):
            return None
        terms = node.args[0]
        if op(terms) != MULTIPLY or len(terms.users) != 1 or len(terms.args) != 2 or terms.kwargs:
            return None
        exps = [a for a in terms.args if isinstance(a, fx.Node) and bounded(a)]
        if len(exps) != 1 or op(exps[0]) != EXP or len(exps[0].users) != 1:
            return None
        exp = exps[0]
        clamp = exp.args[0] if op(exp.args[0]) == CLAMP_MAX else None
        if clamp is not None and (len(clamp.users) != 1 or len(clamp.args) != 2 or clamp.kwargs):
            return None
        difference = exp.args[0] if clamp is None else clamp.args[0]
        if (not isinstance(difference, fx.Node) or op(difference) != SUBTRACT or len(difference.users) != 1
                or len(difference.args) != 2 or difference.kwargs):
            return None
        operands = difference.args
        if not all(isinstance(a, fx.Node) and bounded(a) for a in operands):
            return None
        full = tuple(shape(terms))
        if any(tuple(shape(n)) != full for n in (exp, difference)) or any(len(shape(a)) > len(full) for a in operands):
            return None
        dims = node.args[1]
        if not isinstance(dims, (list, tuple)) or len(dims) != 1:
            return None
        return ExpSum(node, terms, exp, clamp, difference, tuple(operands), tuple(tuple(shape(a)) for a in operands),
                      full, dims[0] % len(full))


def compose_lines(mask: torch.Tensor, exp: LinearRelaxation, clamp: LinearRelaxation | None) -> LinearRelaxation | None:
    """mask · exp(clamp(d)) bounded by one lower and one upper line in d per term: exp's lower line over the clamp's
    lower line, and likewise the upper ones. Sound where a term's coefficient has one sign for both steps: the mask
    is non-negative and exp's slopes are (the clamp's are by the walk's rule either way). None where that fails."""
    if bool((mask < 0).any()) or bool((exp.lower_slope < 0).any()) or bool((exp.upper_slope < 0).any()):
        return None
    if clamp is None:
        return LinearRelaxation(mask * exp.lower_slope, mask * exp.lower_intercept,
                                mask * exp.upper_slope, mask * exp.upper_intercept)
    return LinearRelaxation(mask * exp.lower_slope * clamp.lower_slope,
                            mask * (exp.lower_intercept + exp.lower_slope * clamp.lower_intercept),
                            mask * exp.upper_slope * clamp.upper_slope,
                            mask * (exp.upper_intercept + exp.upper_slope * clamp.upper_intercept))


def exp_sum_backward(A: torch.Tensor, lines: LinearRelaxation, pattern: ExpSum
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`A` [specs, *sum shape] carried back through the composed `lines` (each part shaped like the grid, or
    [specs, *grid]: α per spec; finite) to the difference's operands: (coefficients [specs, *operand shape] of each, bias terms
    [specs, *sum shape]). A positive row coefficient takes every term's lower line, a negative one the upper.

    >>> import torch
    >>> p = ExpSum(None, None, None, None, None, (None, None), ((2, 1, 3), (2, 3, 1)), (2, 3, 3), 2)
    >>> ones = torch.ones(2, 3, 3)
    >>> first, second, terms = exp_sum_backward(torch.ones(4, 2, 3), LinearRelaxation(ones, ones, ones, ones), p)
    >>> tuple(first.shape), tuple(second.shape), float(first.sum() + second.sum()), tuple(terms.shape)
    ((4, 2, 1, 3), (4, 2, 3, 1), 0.0, (4, 2, 3))
    """
    rank = len(pattern.full)
    letters = string.ascii_letters[:rank]
    spec = "Z"
    coefficient_letters = spec + "".join(letters[d] for d in range(rank) if d != pattern.summed)

    def own_letters(line: torch.Tensor) -> str:  # a line with α per spec has the specs first
        return (spec if line.dim() == rank + 1 else "") + letters

    positive, negative = A.clamp(min=0), A.clamp(max=0)
    parts = []
    for shape, sign in zip(pattern.operand_shapes, (1.0, -1.0)):
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        out = spec + "".join(letters[d] for d in range(rank) if padded[d] != 1 or pattern.full[d] == 1)
        part = (torch.einsum(f"{coefficient_letters},{own_letters(lines.lower_slope)}->{out}", positive, lines.lower_slope)
                + torch.einsum(f"{coefficient_letters},{own_letters(lines.upper_slope)}->{out}", negative, lines.upper_slope))
        parts.append((sign * part).reshape(A.shape[0], *shape))
    lower, upper = lines.lower_intercept, lines.upper_intercept
    terms = (positive * lower.sum(pattern.summed + lower.dim() - rank)
             + negative * upper.sum(pattern.summed + upper.dim() - rank))
    return parts[0], parts[1], terms


def grid_coefficients(A: torch.Tensor, pattern: ExpSum) -> torch.Tensor:
    """`A` [specs, *sum shape] as the coefficients of the grid's terms [specs, *grid] (what the sum hands back)."""
    return A.unsqueeze(pattern.summed + 1).expand(A.shape[0], *pattern.full)
