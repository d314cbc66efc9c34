"""The input set being bounded over: a box, an Lp ball (clipped to a valid domain when given), or a box cut by
linear constraints between its elements (linear_constraints.py).

Its jobs for bounding: the interval of the input (for IBP) and the exact minimum of a linear function over
the set (the last step of CROWN: `min_x A·x` is `A⁺·l + A⁻·u` on a box and `A·x₀ − ε‖A‖_q` on an Lp ball,
with 1/p + 1/q = 1). A ball clipped to a box is bounded both ways and the larger bound kept.

Its jobs for searching (attacks, counterexample candidates): membership, projection onto the set, random
points in it, and the point where a linear function is smallest, so that a search over an L2 ball stays in
the ball and not in its bounding box.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from opwise.bounds.linear_constraints import LinearConstraints
from opwise.bounds.transfers.registry import Interval


#: bisection steps of a projection onto a ball (float64: 2^-50 of the way along its path)
PROJECTION_STEPS = 50


@dataclasses.dataclass
class InputSet:
    """`lower`/`upper`: the box (for a ball, its bounding box within the domain); `center`/`eps`/`norm`: the ball;
    `constraints`: linear constraints between the box's elements (`G·x <= h`), which cut it to a polytope."""

    lower: torch.Tensor
    upper: torch.Tensor
    center: torch.Tensor | None = None
    eps: float = 0.0
    norm: float = math.inf
    constraints: LinearConstraints | None = None

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

    @property
    def is_box(self) -> bool:
        """Whether the set is its box: no ball, or an L∞ ball (which clipping to the domain leaves a box), and no
        linear constraints."""
        return (self.center is None or math.isinf(self.norm)) and self.constraints is None

    @property
    def is_ball(self) -> bool:
        """Whether the set is an Lp ball with p < ∞ (clipped to its box)."""
        return self.center is not None and not math.isinf(self.norm)

    def expand(self, batch: int) -> "InputSet":
        """The set of one sample repeated for `batch` samples (views, no copies)."""

        def repeat(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.expand(batch, *tensor.shape[1:])

        return InputSet(repeat(self.lower), repeat(self.upper), repeat(self.center), self.eps, self.norm, self.constraints)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "InputSet":
        """The same set with its tensors on `device` (and in `dtype`, if given)."""

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device=device, dtype=dtype)

        constraints = None if self.constraints is None else self.constraints.to(device, dtype)
        return InputSet(move(self.lower), move(self.upper), move(self.center), self.eps, self.norm, constraints)

    def reshape(self, shape: tuple[int, ...]) -> "InputSet":
        """The same set with its tensors viewed in another shape of the same size (constraints stay flat).

        >>> InputSet(torch.zeros(1, 4), torch.ones(1, 4)).reshape((1, 2, 2)).lower.shape
        torch.Size([1, 2, 2])
        """

        def view(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.reshape(shape)

        return InputSet(view(self.lower), view(self.upper), view(self.center), self.eps, self.norm, self.constraints)

    def chunk(self, lower: torch.Tensor, upper: torch.Tensor, center: torch.Tensor | None) -> "InputSet":
        """The set's kind (ball, constraints) over another box and centre: a chunk of its batch.

        >>> disk = InputSet.ball(torch.zeros(2, 2), 1.0, norm=2)
        >>> part = disk.chunk(disk.lower[:1], disk.upper[:1], disk.center[:1]); part.norm, part.lower.shape
        (2.0, torch.Size([1, 2]))
        """
        return InputSet(lower, upper, center, self.eps, self.norm, self.constraints)

    def contains(self, x: torch.Tensor, tolerance: float = 0.0) -> bool:
        """Whether every point of the batch x lies in the set (the ball's distance taken in float64).

        >>> disk = InputSet.ball(torch.zeros(1, 2), 1.0, norm=2)
        >>> disk.contains(torch.tensor([[0.6, 0.7]])), disk.contains(torch.tensor([[0.8, 0.8]]))
        (True, False)
        """
        if not bool(((x >= self.lower - tolerance) & (x <= self.upper + tolerance)).all()):
            return False
        if self.constraints is not None and not bool((self.constraints.violation(x) <= tolerance).all()):
            return False
        return not self.is_ball or bool((self._distance(x) <= self.eps + tolerance).all())

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """A point of the set per point of x: the nearest one for a box and for L1 and L2 balls (clipped to the
        box); for another p, the clipped point pulled toward the centre onto the ball.

        The nearest point of a ball ∩ box is the box-clipped minimiser of `‖x − z‖² + λ‖x − c‖_p`: for p = 2
        the clipped `c + t·(z − c)`, for p = 1 the clipped soft-thresholded `c + shrink(z − c, μ)`; the
        distance to c grows with t (shrinks with μ), so a bisection finds the λ that reaches the sphere.

        >>> disk = InputSet.ball(torch.zeros(1, 2), 1.0, norm=2, domain=(-0.5, 2.0))
        >>> disk.project(torch.tensor([[3.0, 0.0], [-2.0, 0.0], [0.1, 0.2]])).tolist()
        [[1.0, 0.0], [-0.5, 0.0], [0.10000000149011612, 0.20000000298023224]]
        """
        clipped = torch.max(torch.min(x, self.upper), self.lower)
        if self.constraints is not None:
            return self.constraints.project(x, self.lower.expand_as(x), self.upper.expand_as(x))
        if self.is_box:
            return clipped
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        center, lower, upper = (t.to(torch.float64) for t in (self.center, self.lower, self.upper))
        offset = x.to(torch.float64) - center
        largest = offset.abs().flatten(1).amax(1).reshape(shape)
        pulled = clipped.to(torch.float64) - center

        def path(s: torch.Tensor) -> torch.Tensor:
            """From the centre (s = 0) to the clipped x (s = 1), farther from the centre as s grows."""
            if self.norm == 2:
                return torch.max(torch.min(center + s * offset, upper), lower)
            if self.norm == 1:
                return torch.max(torch.min(center + _shrink(offset, (1 - s) * largest), upper), lower)
            return center + s * pulled

        low = torch.zeros(shape, dtype=torch.float64, device=x.device)  # path(0) = c is in the set
        high = torch.ones_like(low)
        inside = self._distance(path(high)) <= self.eps
        low = torch.where(inside.reshape(shape), high, low)
        for _ in range(0 if bool(inside.all()) else PROJECTION_STEPS):
            middle = (low + high) / 2
            feasible = (self._distance(path(middle)) <= self.eps).reshape(shape)
            low, high = torch.where(feasible, middle, low), torch.where(feasible, high, middle)
        return self._inside(path(low), center, x.dtype)

    def _inside(self, point: torch.Tensor, center: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`point` (float64, in the set) in `dtype`; rounding may leave the ball by an ulp, so a point that did
        is pulled toward the centre until it is inside (at worst it becomes the centre)."""
        result = point.to(dtype)
        for factor in (1 - 1e-6, 1 - 1e-4, 1 - 1e-2, 0.5, 0.0):
            outside = self._distance(result) > self.eps
            if not bool(outside.any()):
                break
            pulled = (center + factor * (point - center)).to(dtype)
            result = torch.where(outside.reshape(-1, *([1] * (point.dim() - 1))), pulled, result)
        return result

    def _distance(self, x: torch.Tensor) -> torch.Tensor:
        """Per point of x, its Lp distance to the centre, in float64."""
        offset = x.to(torch.float64) - self.center.to(torch.float64)
        return torch.linalg.vector_norm(offset.flatten(1), ord=self.norm, dim=1)

    def ascent_step(self, gradient: torch.Tensor) -> torch.Tensor:
        """The step of the set's size that raises a linear function with this gradient fastest: each input's
        width times the gradient's sign on a box, ε times the unit-ball maximiser of `gradient · δ` on a ball.

        >>> InputSet.ball(torch.zeros(1, 2), 2.0, norm=2).ascent_step(torch.tensor([[3.0, -4.0]])).tolist()
        [[1.2000000476837158, -1.600000023841858]]
        """
        if not self.is_ball:
            return (self.upper - self.lower) * gradient.sign()
        return self.eps * _unit_maximiser(gradient, self.norm)

    def minimizer(self, A: torch.Tensor) -> torch.Tensor:
        """Per row of A ([n, *input shape]), a point of the set where `A·x` is smallest: the box corner; on a
        ball its minimiser `c − ε·δ*` (δ* the unit-ball maximiser), projected into the domain box (there
        only near the smallest). Counterexample candidates of branch-and-bound.

        >>> InputSet.ball(torch.zeros(1, 2), 1.0, norm=1).minimizer(torch.tensor([[1.0, -3.0]])).tolist()
        [[0.0, 1.0]]
        """
        if self.is_box or not len(A):
            return torch.where(A >= 0, self.lower, self.upper)
        if self.constraints is not None:  # the box corner of A + λG (the bound's own multipliers), made feasible
            shifted = self.constraints.shifted(A.reshape(A.shape[0], -1), self.lower.reshape(self.lower.shape[0], -1),
                                               self.upper.reshape(self.upper.shape[0], -1))
            return self.project(torch.where(shifted.reshape(A.shape) >= 0, self.lower, self.upper))
        return self.project(self.center - self.ascent_step(A))

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` random points of the set (uniform on a box; on a ball a random direction at a random
        radius, projected into the domain box). `generator` is a CPU generator (reproducible on any device).

        >>> disk = InputSet.ball(torch.zeros(1, 3), 0.5, norm=2)
        >>> disk.contains(disk.sample(100, torch.Generator().manual_seed(0)))
        True
        """
        shape = (count, *self.lower.shape[1:])
        if not self.is_ball:
            noise = torch.rand(shape, generator=generator, dtype=self.lower.dtype).to(self.lower.device)
            points = self.lower + (self.upper - self.lower) * noise
            return points if self.constraints is None else self.project(points)
        direction = torch.randn(shape, generator=generator, dtype=self.center.dtype).to(self.center.device)
        length = torch.linalg.vector_norm(direction.flatten(1), ord=self.norm, dim=1).clamp(min=1e-12)
        size = math.prod(shape[1:])
        fraction = torch.rand(count, generator=generator, dtype=self.center.dtype).to(self.center.device)
        radius = self.eps * fraction ** (1 / size)
        scale = (radius / length).reshape(count, *([1] * (len(shape) - 1)))
        return self.project(self.center + scale * direction)

    def minimum(self, A: torch.Tensor, groups: int | None = None) -> torch.Tensor:
        """min over the set of A·x per spec and group; A is [specs, batch, *input shape] -> [specs, groups].

        A group is a sample (groups = batch, the default) or the whole batch (groups = 1).

        >>> box = InputSet(torch.zeros(1, 2), torch.ones(1, 2))
        >>> box.minimum(torch.tensor([[[1.0, -2.0]]])).tolist()
        [[-2.0]]
        """
        batch = self.lower.shape[0]
        flat = A.reshape(A.shape[0], batch, -1)
        # A·lower + A⁻·(upper − lower), summed by einsum (a matrix product per sample): one [specs, batch, n]
        # temporary, not five, and coefficients laid out per input element (forward mode's) are read in place
        lower, upper = self.lower.reshape(batch, -1), self.upper.reshape(batch, -1)
        bound = torch.einsum("sbn,bn->sb", flat, lower) + torch.einsum("sbn,bn->sb", flat.clamp(max=0), upper - lower)
        if self.constraints is not None:  # weak duality: at least the box's bound (its multipliers start at 0)
            bound = torch.maximum(bound, self.constraints.minimum(flat, lower, upper))
        if self.center is not None and not math.isinf(self.norm):
            dual = math.inf if self.norm == 1 else self.norm / (self.norm - 1)
            center = self.center.reshape(1, batch, -1)
            ball = (flat * center).sum(-1) - self.eps * torch.linalg.vector_norm(flat, ord=dual, dim=-1)
            bound = torch.maximum(bound, ball)
        # samples are independent, so a spec spanning the whole batch is bounded by the sum over samples
        return bound if groups in (None, batch) else bound.sum(-1, keepdim=True)


def _shrink(offset: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Soft thresholding: each entry moved toward 0 by `amount`, stopping at 0."""
    return offset.sign() * (offset.abs() - amount).clamp(min=0)


def _unit_maximiser(gradient: torch.Tensor, norm: float) -> torch.Tensor:
    """Per row, the δ with ‖δ‖_p <= 1 that maximises `gradient · δ` (0 where the gradient is 0): the
    gradient's largest entry for p = 1, `sign(g)·|g|^(q−1) / ‖g‖_q^(q−1)` with 1/p + 1/q = 1 otherwise."""
    flat = gradient.flatten(1)
    if norm == 1:
        largest = flat.abs().argmax(1, keepdim=True)
        return torch.zeros_like(flat).scatter(1, largest, flat.gather(1, largest).sign()).reshape(gradient.shape)
    dual = norm / (norm - 1)
    length = torch.linalg.vector_norm(flat, ord=dual, dim=1, keepdim=True)
    unit = flat.sign() * (flat.abs() / length.clamp(min=1e-30)) ** (dual - 1)
    return torch.where(length > 0, unit, 0.0).reshape(gradient.shape)
