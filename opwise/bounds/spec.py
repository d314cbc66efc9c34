"""Verification problems: an input box and an unsafe output set (a disjunction of linear conjunctions).

The unsafe set follows VNN-LIB: the property is *violated* by an input x in the box when, for some
disjunct k, every row of `C_k @ y <= d_k` holds for y = f(x). So a disjunct is ruled out as soon as one
of its rows has a positive lower bound on `C_k @ y - d_k`; the property holds when every disjunct is
ruled out. Robustness of class t is the disjuncts `y_t - y_j <= 0` for every j != t, so by default the
rows of C are the margins `y_t - y_j`, exactly what `compute_bounds` bounds from below.

The inputs range over the box, or over an Lp ball inside it (`input_set`: then the box is the ball's
bounding box, and searches, attacks and bounds all work on the ball).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from opwise.bounds.input_set import InputSet


#: a bound on `C y - d` proves a row only by more than this many units of float rounding (of |bound| + |d|): a
#: pass sums in another order than the network's forward pass, so where the network's output reaches the threshold
#: exactly (a binarized net's minimum) the bound may come out one unit above it (GenBaB proved such a row at 6e-8)
ROUNDING_UNITS = 8


def proving_margins(lower: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """`lower - d` less what float rounding may have moved it by (`ROUNDING_UNITS`): > 0 proves the row.

    >>> proving_margins(torch.tensor([1.0, 0.5]), torch.tensor([1.0, 0.0])).tolist() < [0.0, 0.5]
    True
    """
    margin = lower - d
    allowance = ROUNDING_UNITS * torch.finfo(margin.dtype).eps * (lower.abs() + d.abs())
    return margin - torch.where(allowance.isfinite(), allowance, 0.0)


@dataclasses.dataclass
class Disjunct:
    """One conjunction of the unsafe set: every row of `C @ y <= d` holds."""

    C: torch.Tensor  # [rows, outputs]
    d: torch.Tensor  # [rows]

    def margin(self, y: torch.Tensor) -> torch.Tensor:
        """Per sample, the largest `C y - d` row: > 0 means this disjunct does not hold at y ([..., outputs]).
        Integer or bool outputs (a count, a mask) are compared exactly: in float64, the margin returned in C's
        dtype (whose rounding keeps its sign).

        >>> Disjunct(torch.ones(1, 1), torch.tensor([1314.0])).margin(torch.tensor([[1315]]))
        tensor([1.])
        """
        if not y.is_floating_point():
            return (y.double() @ self.C.double().T - self.d.double()).amax(dim=-1).to(self.C.dtype)
        return (y @ self.C.T - self.d).amax(dim=-1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Disjunct":
        """The same rows on `device` (and in `dtype`, if given).

        >>> Disjunct(torch.ones(1, 2), torch.zeros(1)).to(dtype=torch.float64).d.dtype
        torch.float64
        """
        return Disjunct(self.C.to(device=device, dtype=dtype), self.d.to(device=device, dtype=dtype))


@dataclasses.dataclass
class Specification:
    """An input box and the unsafe output set; `margin(y) > 0` means y is safe. `input_set`, when given, is
    the set the inputs range over instead of the whole box (an Lp ball, p < ∞, whose bounding box is the box)."""

    x_lower: torch.Tensor
    x_upper: torch.Tensor
    unsafe: list[Disjunct]
    input_set: InputSet | None = None

    def __post_init__(self):
        # the box decides where the problem lives: rows built apart (robustness_disjuncts, a parsed file) follow it,
        # so that a box on a GPU needs no second move
        device = self.x_lower.device
        if any(d.C.device != device for d in self.unsafe):
            self.unsafe = [d.to(device) for d in self.unsafe]
        if self.input_set is not None and self.input_set.lower.device != device:
            self.input_set = self.input_set.to(device)

    @classmethod
    def over(cls, input_set: InputSet, unsafe: list[Disjunct]) -> "Specification":
        """The specification over an input set: its box, and the set itself unless it is that box.

        >>> disk = InputSet.ball(torch.zeros(1, 2), 1.0, norm=2)
        >>> Specification.over(disk, robustness_disjuncts(2, 0)).region.is_box
        False
        """
        return cls(input_set.lower, input_set.upper, unsafe, None if input_set.is_box else input_set)

    @property
    def region(self) -> InputSet:
        """The set the inputs range over: `input_set`, or the box."""
        return self.input_set if self.input_set is not None else InputSet(self.x_lower, self.x_upper)

    def margin(self, y: torch.Tensor) -> torch.Tensor:
        """The safety margin of outputs y: min over disjuncts of the disjunct's margin; <= 0 is a violation."""
        return torch.stack([d.margin(y) for d in self.unsafe], dim=-1).amin(dim=-1)

    def ruled_out(self, lower: torch.Tensor) -> bool:
        """Whether lower bounds of the disjuncts' stacked rows C·y ([rows], in disjunct order) rule out every
        disjunct: each needs one row with C·y > d everywhere in the box (`margin_bound(lower) > 0`).

        >>> spec = Specification(torch.zeros(1), torch.ones(1), [Disjunct(torch.eye(2), torch.zeros(2))])
        >>> spec.ruled_out(torch.tensor([0.5, -1.0])), spec.ruled_out(torch.tensor([-0.5, -1.0]))
        (True, False)
        """
        return self.margin_bound(lower) > 0

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Specification":
        """The same problem with every tensor on `device` (and in `dtype`, if given).

        >>> spec = Specification(torch.zeros(1, 2), torch.ones(1, 2), robustness_disjuncts(2, 0))
        >>> spec.to(dtype=torch.float64).unsafe[0].C.dtype
        torch.float64
        """
        return Specification(self.x_lower.to(device=device, dtype=dtype), self.x_upper.to(device=device, dtype=dtype),
                             [d.to(device, dtype) for d in self.unsafe],
                             None if self.input_set is None else self.input_set.to(device, dtype))

    @property
    def device(self) -> torch.device:
        """Where the problem's tensors are (the input box's device)."""
        return self.x_lower.device

    def margin_bound(self, lower: torch.Tensor) -> float:
        """The property's margin bound from lower bounds of the stacked rows C·y ([rows]): min over disjuncts of
        the best row's `lower - d` less float rounding (`proving_margins`; > 0: proved). A NaN bound proves nothing: it
        counts as -inf.

        >>> spec = Specification(torch.zeros(1), torch.ones(1), [Disjunct(torch.eye(2), torch.zeros(2))])
        >>> round(spec.margin_bound(torch.tensor([0.5, -1.0])), 5)
        0.5
        """
        margins = proving_margins(lower, torch.cat([d.d for d in self.unsafe])).nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        worst, row = math.inf, 0
        for disjunct in self.unsafe:
            rows = disjunct.C.shape[0]
            worst = min(worst, float(margins[row : row + rows].max()))
            row += rows
        return worst

    def contains(self, x: torch.Tensor, tolerance: float = 0.0) -> bool:
        """Whether every input of the batch x lies in the input set (the ball when there is one), widened by
        `tolerance` on every side.

        >>> Specification(torch.zeros(1, 2), torch.ones(1, 2), []).contains(torch.tensor([[0.5, 1.0]]))
        True
        """
        return self.region.contains(x, tolerance)


def specifications_to(specs: list[Specification], device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> list[Specification]:
    """`Specification.to` for many specifications at once: the boxes and thresholds are converted in one batch and
    each shared tensor once (lindex's 60,000 boxes took 4 s one by one).

    >>> specs = [Specification(torch.zeros(1, 2), torch.ones(1, 2), robustness_disjuncts(2, 0)) for _ in range(3)]
    >>> [spec.x_upper.dtype for spec in specifications_to(specs, dtype=torch.float64)]
    [torch.float64, torch.float64, torch.float64]
    """
    if (not specs or any(spec.input_set is not None for spec in specs)
            or len({(tuple(spec.x_lower.shape), spec.x_lower.device) for spec in specs}) > 1):
        return [spec.to(device, dtype) for spec in specs]
    lowers = torch.stack([spec.x_lower for spec in specs]).to(device=device, dtype=dtype).unbind(0)
    uppers = torch.stack([spec.x_upper for spec in specs]).to(device=device, dtype=dtype).unbind(0)
    disjuncts = [disjunct for spec in specs for disjunct in spec.unsafe]
    thresholds = iter(torch.cat([disjunct.d for disjunct in disjuncts]).to(device=device, dtype=dtype)
                      .split([len(disjunct.d) for disjunct in disjuncts]))
    matrices: dict[int, torch.Tensor] = {}
    for disjunct in disjuncts:
        if id(disjunct.C) not in matrices:
            matrices[id(disjunct.C)] = disjunct.C.to(device=device, dtype=dtype)
    return [Specification(lower, upper, [_moved(d, matrices[id(d.C)], next(thresholds), device) for d in spec.unsafe])
            for lower, upper, spec in zip(lowers, uppers, specs)]


def _moved(disjunct: Disjunct, C: torch.Tensor, d: torch.Tensor, device) -> Disjunct:
    """The disjunct with its converted rows, of its own class (a subclass's other tensors, such as which rows are
    strict, moved to `device`): a plain Disjunct in its place would forget what the subclass adds."""
    if type(disjunct) is Disjunct:
        return Disjunct(C, d)
    rest = {field.name: getattr(disjunct, field.name) for field in dataclasses.fields(disjunct) if field.name not in ("C", "d")}
    return type(disjunct)(C, d, **{name: value.to(device) if isinstance(value, torch.Tensor) else value
                                   for name, value in rest.items()})


#: a disjunct's rows are contradictory when every point violates one of them by this much (relative to the rows'
#: size): far above the LP's rounding, so a disjunct some output meets is never dropped
CONTRADICTION = 1e-6
#: the most rows × columns a disjunct may have for its contradiction check (an LP per disjunct)
CONTRADICTION_SIZE = 100_000


def contradictory(disjunct: Disjunct, lower: torch.Tensor | None = None, upper: torch.Tensor | None = None) -> bool:
    """Whether no vector y at all meets the disjunct's rows `C y <= d` (by a margin far above rounding), whatever
    the network: `Y_0 >= 0.44 and Y_0 <= 0.42`, or rows that contradict each other in sum. Such a disjunct can never
    hold, and a search that bounds rows one by one cannot show it (it times out). `lower`/`upper` ([columns],
    ±inf where none) bound the columns whatever the network: a property's input box where its rows read the inputs,
    a square's 0. The LP minimises the largest row violation t over y in them (HiGHS); contradictory when t exceeds
    `CONTRADICTION` of the rows' size. One row over unbounded columns, or a system larger than `CONTRADICTION_SIZE`,
    is not checked (False).

    >>> contradictory(Disjunct(torch.tensor([[-1.0], [1.0]]), torch.tensor([-0.44, 0.42])))    # y >= 0.44, y <= 0.42
    True
    >>> contradictory(Disjunct(torch.tensor([[-1.0], [1.0]]), torch.tensor([-0.42, 0.44])))
    False
    >>> contradictory(Disjunct(torch.tensor([[1.0]]), torch.tensor([-0.5])), torch.zeros(1), torch.ones(1))  # y in [0, 1]
    True
    """
    C, d = disjunct.C.detach().double().cpu(), disjunct.d.detach().double().cpu()
    rows, columns = C.shape
    low = torch.full((columns,), -math.inf, dtype=torch.float64) if lower is None else lower.double().cpu().flatten()
    high = torch.full((columns,), math.inf, dtype=torch.float64) if upper is None else upper.double().cpu().flatten()
    bounded = bool(torch.isfinite(low).any() or torch.isfinite(high).any())
    if (rows < 2 and not bounded) or rows * columns > CONTRADICTION_SIZE \
            or not (torch.isfinite(C).all() and torch.isfinite(d).all()):
        return False
    if bool((low > high).any()):
        return True
    scale = 1.0 + float(C.abs().max()) + float(d.abs().max())
    # most disjuncts are met at 0 or where their rows are equalities (ACAS Xu's `Y_0 <= Y_j`): no LP for them
    for point in (torch.zeros(columns, dtype=torch.float64), torch.linalg.lstsq(C, d[:, None]).solution[:, 0]):
        point = torch.maximum(torch.minimum(point, high), low)
        if bool((C @ point - d <= CONTRADICTION * scale).all()):
            return False
    from scipy.optimize import linprog

    # variables (y, t): minimise t subject to C y - t <= d, y in its bounds, t >= -scale (bounded below)
    A = torch.cat([C, -torch.ones(rows, 1, dtype=torch.float64)], dim=1).numpy()
    cost = [0.0] * columns + [1.0]
    finite = lambda value: float(value) if math.isfinite(value) else None  # noqa: E731
    bounds = [(finite(a), finite(b)) for a, b in zip(low.tolist(), high.tolist())] + [(-scale, None)]
    solution = linprog(cost, A_ub=A, b_ub=d.numpy(), bounds=bounds, method="highs")
    return solution.status == 2 or (solution.status == 0 and float(solution.fun) > CONTRADICTION * scale)


def robustness_disjuncts(num_classes: int, target: int, dtype: torch.dtype = torch.float32) -> list[Disjunct]:
    """Unsafe set for 'class `target` stays the top class': one disjunct `y_t - y_j <= 0` per j != t.

    >>> [d.C.tolist() for d in robustness_disjuncts(3, 0)]
    [[[1.0, -1.0, 0.0]], [[1.0, 0.0, -1.0]]]
    """
    disjuncts = []
    for other in range(num_classes):
        if other == target:
            continue
        row = torch.zeros(1, num_classes, dtype=dtype)
        row[0, target], row[0, other] = 1.0, -1.0
        disjuncts.append(Disjunct(row, torch.zeros(1, dtype=dtype)))
    return disjuncts


def margin_matrix(num_classes: int, target: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The default `C` of compute_bounds: rows `e_target - e_j` for j != target, shape [classes-1, classes].

    >>> margin_matrix(3, 1).tolist()
    [[-1.0, 1.0, 0.0], [0.0, 1.0, -1.0]]
    """
    return torch.cat([d.C for d in robustness_disjuncts(num_classes, target, dtype)])
