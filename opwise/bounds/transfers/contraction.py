"""A matrix product of two bounded tensors, carried back in one step instead of three.

expand.py rewrites `x @ y` as `sum_k(expand(x) * expand(y))`: both factors broadcast to the full [.., i, k, j]
grid, their product bounded by McCormick planes per term (product.py), summed over k. Carried back node by
node, the coefficients on that grid are [specs, .., i, k, j]: every spec of an intermediate bound gets k times
the elements of the product it bounds (on vit_2023's ibp_3_3_8 these tensors were half of a CROWN pass).
`Contraction` recognises the pattern; `contraction_backward` takes the coefficients of the sum straight to
the factors before broadcasting, as einsum contractions with the planes: the same lines and the same bound,
with no tensor of specs × the full grid.
"""

from __future__ import annotations

import dataclasses
import string

import torch
from torch import fx

from opwise.bounds.relaxations.base import BilinearRelaxation

#: the ops of the pattern, as `Graph.info(node).op` names them
SUM, MULTIPLY, EXPAND = "aten.sum.dim_IntList", "aten.mul.Tensor", "aten.expand.default"


@dataclasses.dataclass(frozen=True)
class Contraction:
    """`total = sum(product, summed)`, `product = left * right`, each factor an `expand` of `sources[i]` (shaped
    `source_shapes[i]`) to the product's shape `full`; `summed`: the summed dims (non-negative)."""

    total: fx.Node
    product: fx.Node
    factors: tuple[fx.Node, fx.Node]
    sources: tuple[fx.Node, fx.Node]
    source_shapes: tuple[tuple[int, ...], tuple[int, ...]]
    full: tuple[int, ...]
    summed: tuple[int, ...]

    @property
    def inner(self) -> tuple[fx.Node, fx.Node, fx.Node]:
        """The nodes a fused step skips (no coefficient reaches them)."""
        return (self.product, *self.factors)

    @staticmethod
    def of(node: fx.Node, op, shape, bounded) -> "Contraction | None":
        """The contraction ending at `node`, or None; `op(n)`, `shape(n)` and `bounded(n)` describe nodes as the
        graph does. Only where nothing else uses the product or the broadcast factors (their coefficients
        come from the sum alone)."""
        if op(node) != SUM or len(node.args) != 2 or node.kwargs or not isinstance(node.args[0], fx.Node):
            return None
        product = node.args[0]
        if op(product) != MULTIPLY or len(product.users) != 1 or len(product.args) != 2 or product.kwargs:
            return None
        factors = product.args
        if factors[0] is factors[1] or not all(isinstance(f, fx.Node) and op(f) == EXPAND and len(f.users) == 1
                                               and bounded(f) for f in factors):
            return None
        sources = tuple(f.args[0] for f in factors)
        if not all(isinstance(s, fx.Node) and bounded(s) for s in sources):
            return None
        full = tuple(shape(product))
        if any(tuple(shape(f)) != full for f in factors):
            return None
        summed = tuple(sorted({d % len(full) for d in node.args[1]}))
        return Contraction(node, product, tuple(factors), sources, tuple(tuple(shape(s)) for s in sources), full, summed)


def contraction_backward(A: torch.Tensor, planes: BilinearRelaxation, contraction: Contraction
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`A` [specs, *sum shape] carried back through the product's planes (the lower plane where a term's coefficient
    is positive, the upper one elsewhere, as `_select_planes` in product.py) to each factor's source: (coefficients
    [specs, *source shape] of each, bias terms [specs, *sum shape]). The planes are shaped like the product, or
    [specs, *product shape] (α per spec); they must be finite.

    >>> import torch
    >>> from opwise.bounds.relaxations.bilinear import relax_bilinear
    >>> x, y = torch.rand(2, 3), torch.rand(3, 4)
    >>> c = Contraction(None, None, (None, None), (None, None), ((2, 3, 1), (1, 3, 4)), (2, 3, 4), (1,))
    >>> planes = relax_bilinear(x[:, :, None], x[:, :, None] + 1, y[None], y[None] + 1)
    >>> A = torch.randn(5, 2, 4)
    >>> cx, cy, terms = contraction_backward(A, planes, c)
    >>> tuple(cx.shape), tuple(cy.shape), tuple(terms.shape)
    ((5, 2, 3, 1), (5, 1, 3, 4), (5, 2, 4))
    """
    rank = len(contraction.full)
    letters = string.ascii_letters[:rank]
    spec = "Z"
    kept = "".join(letters[d] for d in range(rank) if d not in contraction.summed)
    coefficient_letters = spec + kept
    negative = A.clamp(max=0)
    # the terms' coefficients, unsqueezed at the summed dims: positive ones take the lower plane, others the upper
    per_spec = planes.lower_x.dim() == rank + 1
    plane_letters = (spec if per_spec else "") + letters
    results = []
    for lower, upper, shape in ((planes.lower_x, planes.upper_x, contraction.source_shapes[0]),
                                (planes.lower_y, planes.upper_y, contraction.source_shapes[1])):
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        out = spec + "".join(letters[d] for d in range(rank) if padded[d] != 1 or contraction.full[d] == 1)
        formula = f"{coefficient_letters},{plane_letters}->{out}"
        part = torch.einsum(formula, A, lower) + torch.einsum(formula, negative, upper - lower)
        results.append(part.reshape(A.shape[0], *shape))
    dims = tuple(d + (1 if per_spec else 0) for d in contraction.summed)
    lower_intercept = planes.lower_intercept.sum(dims)
    difference = planes.upper_intercept.sum(dims) - lower_intercept
    terms = A * lower_intercept + negative * difference
    return results[0], results[1], terms
