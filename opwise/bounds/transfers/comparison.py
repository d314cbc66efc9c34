"""Comparisons, logical operators and `where` with a bounded condition, on intervals of their operands.

A comparison of bounded values is a step no line follows (the bool jumps where the operands cross), so its interval
comes from the operands' intervals, as an index's does (position.py): with a in [a_l, a_u] and b in [b_l, b_u],

- a < b is surely true where a_u < b_l and surely false where a_l >= b_u (<=, >, >= alike);
- a == b is surely true only where both are the same single value (a_l = a_u = b_l = b_u) and surely false where
  the intervals are disjoint (a_u < b_l or b_u < a_l); != is its complement;

and the bool's interval is [1, 1], [0, 0] or [0, 1]. A NaN end decides nothing ([0, 1]). A value compared with itself
(isfinite traces to x == x) is decided wherever its interval says it is a number: ==, <=, >= hold, !=, <, > do not.

isnan, isinf and isfinite are decided by the ends of their operand's interval: a value between two finite ends is a
finite number (isnan and isinf false, isfinite true); a point interval at ±inf is infinite. Elsewhere the bool is
[0, 1], since an interval with an infinite end is how the engine says a value is unbounded, and such a value may
be NaN (asin of an input that leaves [−1, 1]). Logical operators (and bitwise ones on booleans) read
each operand's interval as a truth interval (surely true where 0 is outside it, surely false where it is [0, 0])
and combine the ends: and takes the smaller, or the larger, not swaps them. An integer or bool value is kept, as
every bounded value, as floats in the engine's dtype; comparisons are made in float64, exact for integers up to
2^53. CROWN's lines are the interval's ends (zero slopes).

where(c, a, b) with the condition c bounded and the branches constants is b + (a − b)·c, linear in c's {0, 1}
value: CROWN passes A·(a − b) on to c (so a one-hot's count stays linear in the comparisons' intervals) and IBP
takes c's ends. With a bounded branch, an element whose c the interval decides is the branch c picks (CROWN passes
A through to it: the NaN guard where(isnan(h), 0, h) is h's own bound), and an undecided one the hull of both
branches (constant lines). masked_fill(b, c, a) is where(c, a, b). A condition that does not depend on the input
(a mask) is routing (affine.py). Lookups with a bounded index: lookup.py.

>>> import opwise.bounds
>>> class Count(torch.nn.Module):
...     def forward(self, x):
...         return (x.argmax(2) == 1).long().sum(1, keepdim=True)
>>> x = torch.tensor([[[0.0, 3.0], [1.0, 1.5], [2.0, 0.0]]])
>>> bounds = opwise.bounds.BoundedModel(Count(), x).compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method="crown")
>>> bounds.lower, bounds.upper  # every row's argmax is decided: rows 0 and 1 count (1.4..1.6 beats 0.9..1.1)
(tensor([[2.]]), tensor([[2.]]))
"""

from __future__ import annotations

import math

import torch
from torch import fx

from opwise.bounds.transfers.affine import Affine
from opwise.bounds.transfers.registry import Interval, Step, bound_transfer, sum_to
from opwise.errors import UnsupportedOperation

COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")


def _operand(step: Step, position: int, intervals: dict[fx.Node, Interval], like: torch.Tensor) -> Interval:
    """The interval of the op's argument at `position` (a bounded node's, or a constant's single value), in float64."""
    arg = step.args[position] if position < len(step.args) else step.node.kwargs.get("other")
    if isinstance(arg, fx.Node):
        bound = intervals[arg]
        return Interval(bound.lower.double(), bound.upper.double())
    value = torch.as_tensor(arg, device=like.device).double()
    return Interval(value, value)


def compare(op: str, a: Interval, b: Interval) -> tuple[torch.Tensor, torch.Tensor]:
    """(surely true, surely false) of `a op b` for every pair of values in the intervals (op: eq, ne, lt, le, gt, ge).

    >>> a, b = Interval(torch.tensor([0.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])), Interval(torch.tensor(2.0), torch.tensor(2.0))
    >>> compare("lt", a, b), compare("eq", a, b)
    ((tensor([ True, False, False]), tensor([False,  True, False])), (tensor([False,  True, False]), tensor([ True, False, False])))
    """
    if op in ("gt", "ge"):
        op, a, b = {"gt": "lt", "ge": "le"}[op], b, a
    if op == "lt":
        return a.upper < b.lower, a.lower >= b.upper
    if op == "le":
        return a.upper <= b.lower, a.lower > b.upper
    single = (a.lower == a.upper) & (b.lower == b.upper) & (a.lower == b.lower)
    disjoint = (a.upper < b.lower) | (b.upper < a.lower)
    return (single, disjoint) if op == "eq" else (disjoint, single)


def truth(interval: Interval) -> tuple[torch.Tensor, torch.Tensor]:
    """(surely true, surely false) of a value read as a bool (nonzero), from its interval."""
    nonzero = (interval.lower > 0) | (interval.upper < 0)
    return nonzero, (interval.lower == 0) & (interval.upper == 0)


def _bool_interval(true: torch.Tensor, false: torch.Tensor, dtype: torch.dtype, shape) -> Interval:
    return Interval(true.to(dtype).expand(shape).contiguous(), (~false).to(dtype).expand(shape).contiguous())


class IntervalOnly:
    """A transfer whose lines are the interval's ends: zero coefficients for every bounded input, the ends as bias."""

    #: its lines are the ends of the interval its inputs' intervals give: no pass through it is tighter (engine)
    constant_lines = True

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return list(step.inputs)

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        raise NotImplementedError

    def backward(self, step: Step, A: torch.Tensor):
        output = self.ibp(step, [step.bounds(node) for node in step.inputs])
        bias = A.clamp(min=0) * output.lower + A.clamp(max=0) * output.upper
        return [A.new_zeros((A.shape[0], *shape)) for shape in step.shapes], bias


@bound_transfer(*(f"aten.{name}.{overload}" for name in COMPARISONS for overload in ("Scalar", "Tensor")))
class Comparison(IntervalOnly):
    """eq, ne, lt, le, gt, ge of bounded values, with each other or with constants: see the module docstring.

    >>> from opwise.bounds.transfers.registry import transfer_for
    >>> type(transfer_for("aten.ge.Scalar")).__name__
    'Comparison'
    """

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        bounds = dict(zip(step.inputs, intervals))
        like = intervals[0].lower
        name = step.op.split(".")[1]
        first, second = _operand(step, 0, bounds, like), _operand(step, 1, bounds, like)
        if isinstance(step.args[0], fx.Node) and step.args[0] is step.args[1]:
            # a value is itself unless NaN: decided where the ends say it is a number (both finite, or one point at
            # ±inf); an infinite end is how the engine says a value is unbounded, and that value may be NaN (as in
            # Classification below), as may one with a NaN end
            decided = (torch.isfinite(first.lower) & torch.isfinite(first.upper)) | (first.lower == first.upper)
            holds = name in ("eq", "le", "ge")
            true, false = decided & holds, decided & (not holds)
        else:
            true, false = compare(name, first, second)
        return _bool_interval(true, false, like.dtype, step.shape if step.shape is not None else true.shape)


@bound_transfer("aten.logical_and.default", "aten.logical_or.default", "aten.logical_xor.default",
                "aten.logical_not.default", "aten.bitwise_not.default",
                *(f"aten.bitwise_{name}.{overload}" for name in ("and", "or", "xor")
                  for overload in ("Tensor", "Scalar", "Scalar_Tensor")))
class Logical(IntervalOnly):
    """logical_and, or, xor and not of bounded values (nonzero is true), with each other or with constants; and
    bitwise &, |, ^, ~ of booleans (what `isnan(x) | isinf(x)` traces to), which are the logical ones.

    >>> import opwise
    >>> class Bad(torch.nn.Module):
    ...     def forward(self, x):
    ...         return (torch.isnan(x) | torch.isinf(x) | (x > 1)).float()
    >>> bounds = opwise.compute_bounds(Bad(), torch.tensor([[0.0, 2.0]]), eps=0.5, method="crown")
    >>> bounds.lower.tolist() == bounds.upper.tolist() == [[0.0, 1.0]]  # -0.5..0.5 below 1, 1.5..2.5 above
    True
    """

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        bounds = dict(zip(step.inputs, intervals))
        like = intervals[0].lower
        name = step.op.split(".")[1]
        if name.startswith("bitwise_"):
            value = step.node.meta.get("val")
            if not isinstance(value, torch.Tensor) or value.dtype != torch.bool:
                raise UnsupportedOperation(
                    step.node.name, step.op, step.module_path, "bound",
                    "it combines the bits of integers, which no interval of their values follows; only booleans' "
                    "&, |, ^ and ~ (the logical operators) are bounded")
            name = "logical_" + name.removeprefix("bitwise_")
        a_true, a_false = truth(_operand(step, 0, bounds, like))
        if name == "logical_not":
            true, false = a_false, a_true
        else:
            b_true, b_false = truth(_operand(step, 1, bounds, like))
            if name == "logical_and":
                true, false = a_true & b_true, a_false | b_false
            elif name == "logical_or":
                true, false = a_true | b_true, a_false & b_false
            else:
                true = (a_true & b_false) | (a_false & b_true)
                false = (a_true & b_true) | (a_false & b_false)
        return _bool_interval(true, false, like.dtype, step.shape if step.shape is not None else true.shape)


@bound_transfer("aten.any.default", "aten.any.dim", "aten.any.dims", "aten.all.default", "aten.all.dim", "aten.all.dims")
class Reduction(IntervalOnly):
    """any and all of bounded bools: monotone in every element, so the reduction of the surely-true elements is
    surely true and that of the possibly-true ones bounds it from above."""

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        (x,) = intervals
        true, false = truth(Interval(x.lower.double(), x.upper.double()))
        rest = step.args[1:]
        lower, upper = (step.node.target(mask, *rest, **step.node.kwargs) for mask in (true, ~false))
        return Interval(lower.to(x.lower.dtype), upper.to(x.lower.dtype))


@bound_transfer("aten.isnan.default", "aten.isinf.default", "aten.isfinite.default")
class Classification(IntervalOnly):
    """isnan, isinf and isfinite of a bounded value: constants where its interval's ends decide them (module docstring).

    >>> import opwise
    >>> class Clean(torch.nn.Module):
    ...     def forward(self, x):
    ...         return torch.where(torch.isnan(x), torch.zeros_like(x), x) + torch.isfinite(x).float()
    >>> bounds = opwise.compute_bounds(Clean(), torch.tensor([[0.0, 2.0]]), eps=0.5, method="crown")
    >>> bounds.lower, bounds.upper
    (tensor([[0.5000, 2.5000]]), tensor([[1.5000, 3.5000]]))
    """

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        (x,) = intervals
        finite = torch.isfinite(x.lower) & torch.isfinite(x.upper)
        infinite = (x.lower == x.upper) & torch.isinf(x.lower)
        true, false = {"isnan": (torch.zeros_like(finite), finite), "isinf": (infinite, finite),
                       "isfinite": (finite, infinite)}[step.op.split(".")[1]]
        return _bool_interval(true, false, x.lower.dtype, step.shape if step.shape is not None else true.shape)


#: (condition, value where true, value where false): their argument positions in where's overloads and masked_fill's
WHERE_ARGUMENTS = {"where": (0, 1, 2), "masked_fill": (1, 2, 0)}


def _lowest(A: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """min of A·v over v in [lower, upper], elementwise: 0 where A is 0 (an infinite end gives no 0·inf NaN)."""
    return torch.where(A > 0, A * lower, torch.where(A < 0, A * upper, torch.zeros_like(A)))


@bound_transfer("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar",
                "aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
class Where(Affine):
    """where(c, a, b) and masked_fill(b, c, a): routing where c is a constant mask (affine.py); with c bounded, see the
    module docstring.

    >>> import opwise
    >>> class Guard(torch.nn.Module):
    ...     def forward(self, x):
    ...         return torch.where(torch.isnan(x), 0.0, x).sum(1, keepdim=True)
    >>> bounds = opwise.compute_bounds(Guard(), torch.tensor([[1.0, -1.0]]), eps=0.5, method="crown")
    >>> bounds.lower, bounds.upper  # isnan is false on the whole box: the sum's own bounds, not the hull's
    (tensor([[-1.]]), tensor([[1.]]))
    """

    def _arguments(self, step: Step) -> tuple:
        """(condition, value where true, value where false) as nodes or constants."""
        return tuple(step.args[i] for i in WHERE_ARGUMENTS[step.op.split(".")[1]])

    def _branches(self, step: Step) -> tuple | None:
        """(a, b) as constants (tensors or numbers) where the condition is bounded and neither branch is, else None."""
        condition, a, b = self._arguments(step)
        if not self._condition_bounded(step) or any(isinstance(v, fx.Node) for v in (a, b)):
            return None
        if not all(math.isfinite(float(v)) for v in (a, b) if not isinstance(v, torch.Tensor)) or not all(
                bool(torch.isfinite(v).all()) for v in (a, b) if isinstance(v, torch.Tensor) and v.is_floating_point()):
            return None  # an infinite branch would make (a − b)·0 NaN
        return a, b

    def _condition_bounded(self, step: Step) -> bool:
        condition = self._arguments(step)[0]
        return isinstance(condition, fx.Node) and condition in step.inputs

    def _intervals(self, step: Step, intervals: list[Interval]) -> tuple[torch.Tensor, torch.Tensor, Interval, Interval]:
        """(surely true, surely false) of the condition and the branches' intervals, in float64, unbroadcast."""
        bounds = dict(zip(step.inputs, intervals))
        like = intervals[0].lower

        def interval(value) -> Interval:
            if isinstance(value, fx.Node):
                return Interval(bounds[value].lower.double(), bounds[value].upper.double())
            value = torch.as_tensor(value, device=like.device).double()
            return Interval(value, value)

        condition, a, b = (interval(value) for value in self._arguments(step))
        return (*truth(condition), a, b)

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        if not self._condition_bounded(step) or self._branches(step) is not None:
            return []
        return list(step.inputs)

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        if not self._condition_bounded(step):
            return super().ibp(step, intervals)
        like = intervals[0].lower
        true, false, a, b = self._intervals(step, intervals)
        lower = torch.where(true, a.lower, torch.where(false, b.lower, torch.minimum(a.lower, b.lower)))
        upper = torch.where(true, a.upper, torch.where(false, b.upper, torch.maximum(a.upper, b.upper)))
        shape = step.shape if step.shape is not None else lower.shape
        return Interval(lower.to(like.dtype).expand(shape).contiguous(), upper.to(like.dtype).expand(shape).contiguous())

    def backward(self, step: Step, A: torch.Tensor):
        """Where c's interval decides an element, A passes to the branch it picks (exact: a NaN guard `where(isnan(h),
        0, h)` keeps h's lines); where it does not, the hull's ends are the lines. Constant branches: linear in c."""
        if not self._condition_bounded(step):
            return super().backward(step, A)
        branches = self._branches(step)
        if branches is not None:
            a, b = (torch.as_tensor(v, device=A.device).to(A.dtype) for v in branches)
            shape = tuple(A.shape[1:])
            return [sum_to(A * (a - b), step.shapes[0])], A * b.expand(shape)
        intervals = [step.bounds(node) for node in step.inputs]
        true, false, a, b = self._intervals(step, intervals)
        shape = tuple(A.shape[1:])
        true, false = true.expand(shape), false.expand(shape)
        parts: dict[fx.Node, torch.Tensor] = {}
        bias = A.new_zeros(A.shape)
        for chosen, branch, interval in ((true, self._arguments(step)[1], a), (false, self._arguments(step)[2], b)):
            share = torch.where(chosen, A, 0)
            if isinstance(branch, fx.Node):
                part = sum_to(share, step.shapes[step.inputs.index(branch)])
                parts[branch] = parts[branch] + part if branch in parts else part
            else:
                bias = bias + _lowest(share, interval.lower.to(A.dtype), interval.upper.to(A.dtype))
        undecided = ~(true | false)
        if bool(undecided.any()):
            hull = self.ibp(step, intervals)
            bias = bias + _lowest(torch.where(undecided, A, 0), hull.lower, hull.upper)
        return [parts.get(node) for node in step.inputs], bias

    def forward(self, step: Step, inputs: list):
        """Forward-mode bounds: a decided element carries its branch's, an undecided one the hull's ends; routing
        where c is constant (a bounded condition is a float 0/1 to the engine, which torch.where refuses)."""
        from opwise.bounds.transfers.forward import LinearBounds, forward_affine  # forward.py needs the registry

        if not self._condition_bounded(step):
            return forward_affine(step, self, inputs)
        true, false, _, _ = self._intervals(step, [step.bounds(node) for node in step.inputs])
        hull = self.ibp(step, [step.bounds(node) for node in step.inputs])
        shape, rows = tuple(hull.lower.shape), inputs[0].lower_coefficient.shape[0]
        true, false = true.expand(shape), false.expand(shape)
        sides = {"lower": [hull.lower.new_zeros(rows, *shape), hull.lower.clone()],
                 "upper": [hull.upper.new_zeros(rows, *shape), hull.upper.clone()]}
        for chosen, branch in ((true, self._arguments(step)[1]), (false, self._arguments(step)[2])):
            if not isinstance(branch, fx.Node):  # a constant: the hull's ends are its value where c picks it
                continue
            bounds = inputs[step.inputs.index(branch)]
            lead = (1,) * (len(shape) - bounds.lower_bias.dim())
            for side, (coefficients, biases) in sides.items():
                coefficient = getattr(bounds, f"{side}_coefficient")
                bias = getattr(bounds, f"{side}_bias")
                coefficient = coefficient.reshape(rows, *lead, *coefficient.shape[1:]).expand(rows, *shape)
                coefficients[...] = torch.where(chosen, coefficient, coefficients)
                biases[...] = torch.where(chosen, bias.reshape(*lead, *bias.shape).expand(shape), biases)
        return LinearBounds(*sides["lower"], *sides["upper"], inputs[0].positions)
