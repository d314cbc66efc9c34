"""Products: affine when one factor is constant, McCormick planes when both factors are bounded.

`mul` of two bounded tensors uses the bilinear relaxation `relax_bilinear(lx, ux, ly, uy, alpha)` of
opwise.bounds.relaxations.bilinear (planes valid on the box of both factors). Matrix products of two
bounded tensors and division by a bounded tensor are rewritten before bounding (expand.py) or reported.
"""

from __future__ import annotations

import importlib

import torch
from torch import fx

from opwise.bounds.transfers.affine import WeightedAffine
from opwise.bounds.transfers.patches import summed_product
from opwise.bounds.transfers.registry import Interval, Step, bound_transfer, sum_to
from opwise.errors import UnsupportedOperation


def _unsupported(step: Step, hint: str) -> UnsupportedOperation:
    return UnsupportedOperation(step.node.name, step.op, step.module_path, engine="bound", hint=hint)


def relax_bilinear(step: Step, x: Interval, y: Interval, alpha=None):
    """The bilinear relaxation from the relaxations package (written alongside, loaded on first use)."""
    try:
        module = importlib.import_module("opwise.bounds.relaxations.bilinear")
    except ImportError:
        raise _unsupported(step, "the product of two bounded tensors needs opwise.bounds.relaxations.bilinear") from None
    return module.relax_bilinear(x.lower, x.upper, y.lower, y.upper, alpha=alpha)


@bound_transfer("aten.mul.Tensor")
class Multiply(WeightedAffine):
    """x * c (affine) or x * y with both bounded (bilinear)."""

    def _both(self, step: Step) -> bool:
        return len(step.inputs) == 2 or (
            isinstance(step.node.args[0], fx.Node) and step.node.args[0] is step.node.args[1]
        )

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return list(step.inputs) if self._both(step) else []

    def _factors(self, step: Step) -> list[fx.Node]:
        return [step.node.args[0], step.node.args[1]]

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        if not self._both(step):
            return self._ibp_constant_factor(step, intervals[0])
        x, y = (intervals[step.inputs.index(f)] for f in self._factors(step))
        corners = torch.stack(torch.broadcast_tensors(x.lower * y.lower, x.lower * y.upper, x.upper * y.lower, x.upper * y.upper))
        return Interval(corners.amin(0), corners.amax(0))

    def _ibp_constant_factor(self, step: Step, x: Interval) -> Interval:
        """x·c from the ends' products, as the op computes values: through centre and radius an infinite end
        (exp of a masked attention score) gives inf − inf = NaN. A zero factor gives 0 (the value is 0·x)."""
        factor = next(arg for arg in step.args[:2] if not (isinstance(arg, fx.Node) and arg in step.inputs))
        ends = torch.stack(torch.broadcast_tensors(step.function(x.lower), step.function(x.upper)))
        if isinstance(factor, torch.Tensor):
            ends = torch.where(torch.broadcast_to(factor == 0, ends.shape[1:]), torch.zeros_like(ends), ends)
        elif factor == 0:
            ends = torch.zeros_like(ends)
        return Interval(ends.amin(0), ends.amax(0))

    def backward(self, step: Step, A: torch.Tensor):
        if not self._both(step):
            return super().backward(step, A)
        x_node, y_node = self._factors(step)
        x, y = step.bounds(x_node), step.bounds(y_node)
        planes = relax_bilinear(step, x, y, step.alpha)
        # the lower plane where A is positive, the upper one elsewhere (as in nonlinear.py)
        coefficient_x, coefficient_y, bias = _select_planes(A, planes)
        coefficients: list[torch.Tensor | None] = [None] * len(step.inputs)
        for node, coefficient in ((x_node, coefficient_x), (y_node, coefficient_y)):
            index = step.inputs.index(node)
            part = sum_to(coefficient, step.shapes[index])
            coefficients[index] = part if coefficients[index] is None else coefficients[index] + part
        return coefficients, bias


def _select_planes(A: torch.Tensor, planes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A through the lower plane where positive, the upper where negative: (x coefficient, y coefficient, bias terms
    [specs, A.shape[1]]). With finite planes as A·lower + A⁻·(upper − lower), as `select_lines`: the differences
    carry no specs dimension, and `torch.where` over [specs, ...] tensors cost a third of a CROWN pass on
    vit_2023's ibp_3_3_8. With an infinite plane somewhere (0·inf would be NaN) each element picks its plane.

    >>> from opwise.bounds.relaxations.base import BilinearRelaxation
    >>> planes = BilinearRelaxation(*(torch.tensor([v]) for v in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)))
    >>> [t.tolist() for t in _select_planes(torch.tensor([[1.0], [-1.0]]), planes)]
    [[[1.0], [-4.0]], [[2.0], [-5.0]], [[3.0], [-6.0]]]
    """
    parts = (planes.lower_x, planes.upper_x, planes.lower_y, planes.upper_y, planes.lower_intercept, planes.upper_intercept)
    if all(bool(torch.isfinite(part).all()) for part in parts):
        negative = A.clamp(max=0)
        coefficient_x = torch.addcmul(A * planes.lower_x, negative, planes.upper_x - planes.lower_x)
        coefficient_y = torch.addcmul(A * planes.lower_y, negative, planes.upper_y - planes.lower_y)
        bias = (summed_product(A, planes.lower_intercept)
                + summed_product(negative, planes.upper_intercept - planes.lower_intercept))
        return coefficient_x, coefficient_y, bias
    positive = A > 0
    terms = A * torch.where(positive, planes.lower_intercept, planes.upper_intercept)
    return (A * torch.where(positive, planes.lower_x, planes.upper_x), A * torch.where(positive, planes.lower_y, planes.upper_y),
            terms.reshape(*A.shape[:2], -1).sum(-1))


@bound_transfer("aten.div.Tensor", "aten.mm", "aten.bmm", "aten.matmul", "aten.mv")
class ConstantFactorProduct(WeightedAffine):
    """Division by a constant, matrix products with one constant side; anything else is reported."""

    def _check(self, step: Step) -> None:
        bounded = [i for i, arg in enumerate(step.node.args[:2]) if isinstance(arg, fx.Node) and arg in step.inputs]
        if step.op.startswith("aten.div") and 1 in bounded:
            raise _unsupported(step, "division by a bounded tensor is bounded after rewriting to mul(x, reciprocal(y)) "
                               "(opwise.bounds.expand.expand_for_bounds)")
        if len(bounded) == 2:
            raise _unsupported(step, "matrix products of two bounded tensors are not bounded yet")

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        self._check(step)
        return super().ibp(step, intervals)

    def backward(self, step: Step, A: torch.Tensor):
        self._check(step)
        return super().backward(step, A)
