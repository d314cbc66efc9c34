"""One bound pass that certifies more than the box it was asked about.

A CROWN pass over a patch's box at radius ε ends in a linear bound `margin(x') >= a·x' + b` that holds on the
whole box. Every smaller box of the same patch lies inside it, so the same linear bound holds there too, and
its minimum over the box of radius ε' <= ε is `a·x + b - Σ_j |a_j|·min(ε', room_j)` (sum over the patch's
features; `room_j`: how far feature j may move in its worst direction before the domain stops it). That is
the largest ε' where this minimum stays positive for every margin: a radius *proved* by the pass, even by a
pass that failed at ε. A radius search then needs no blind bisection: every pass certifies a radius and
brackets the next one.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from opwise.bounds import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.methods import METHODS
from opwise.bounds.spec import margin_matrix
from opwise.bounds.transfers.patches import FreeCoefficients, dense
from opwise.bounds.transfers.registry import Interval

#: bisection steps on ε' when reading a radius off a linear bound (float64: 2^-50 of the probe)
RADIUS_STEPS = 50

#: how far above zero (relative to 1 + |the bound at x|) a margin read off a linear bound must stay: at the radius
#: it finds, the true margin may be zero, and there float32 forward passes of the model break it by rounding (seen:
#: -1.5e-7 at a corner of a box whose radius was read off an exact bound without this)
ROUNDING = 1e-6


@dataclasses.dataclass
class PatchLinearBound:
    """The linear lower bounds of one pass, restricted to each row's patch: margin_j(x') >= centre[j] +
    Σ_k slope[j, k]·(x'_k − x_k) on the row's box, for the patch's features k. `centre` [rows, specs]: the
    bound's value at x; `weight` [rows, specs, k] = |slope|; `room` [rows, specs, k]: how far feature k can
    move in the direction that lowers the bound (the domain's edge; inf without one). Padding has weight 0."""

    centre: torch.Tensor
    weight: torch.Tensor
    room: torch.Tensor

    def margin(self, eps: torch.Tensor) -> torch.Tensor:
        """The smallest margin bound over the box of radius `eps` [rows] (<= the radius probed), less `ROUNDING`,
        [rows]."""
        reach = torch.minimum(eps.reshape(-1, 1, 1).to(self.room.dtype), self.room)
        return (self.centre - (self.weight * reach).sum(-1) - ROUNDING * (1 + self.centre.abs())).amin(-1)

    def radius(self, reach: torch.Tensor) -> torch.Tensor:
        """Per row, the largest radius <= `reach` at which the margin bound stays positive (0 where it is not
        positive even at x), by bisection that keeps only radii it checked. A radius up to the probed one is
        proved; past it, the bound no longer holds and the radius only guesses where the next probe should go.

        >>> bound = PatchLinearBound(torch.tensor([[1.0], [2.0]]), torch.tensor([[[4.0]], [[1.0]]]), torch.full((2, 1, 1), float("inf")))
        >>> [round(r, 4) for r in bound.radius(torch.tensor([1.0, 1.0])).tolist()]
        [0.25, 1.0]
        """
        reach = reach.to(torch.float64)
        at_reach = self.margin(reach) > 0
        low, high = torch.zeros_like(reach), reach.clone()
        for _ in range(RADIUS_STEPS):
            middle = (low + high) / 2
            positive = self.margin(middle) > 0
            low, high = torch.where(positive, middle, low), torch.where(positive, high, middle)
        return torch.where(at_reach, reach, low).to(torch.float32)


    def predicted_radius(self, at_x: torch.Tensor, probe: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
        """Where the method's own bound (not this linear one) is guessed to reach zero, up to `reach` [rows]: a
        probe for the next pass after this one failed at `probe` [rows], never a proved radius. The bound's
        value at x falls from the true margins `at_x` [specs] (the relaxations are exact at a point) to this
        pass's `centre` at the probe; as relaxations loosen with the box's area that fall is taken as
        quadratic in the radius, b·ε², and the slopes as this pass's.

        >>> bound = PatchLinearBound(torch.tensor([[0.5]]), torch.tensor([[[1.0]]]), torch.full((1, 1, 1), float("inf")))
        >>> round(float(bound.predicted_radius(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([1.0]))), 4)  # 1 - ε²/2 - ε = 0
        0.7321
        """
        probe = probe.to(torch.float64).reshape(-1, 1)
        fall = ((at_x.to(torch.float64).reshape(1, -1) - self.centre) / probe**2).clamp(min=0)

        def positive(eps: torch.Tensor) -> torch.Tensor:
            moved = (self.weight * torch.minimum(eps.reshape(-1, 1, 1), self.room)).sum(-1)
            return (at_x.reshape(1, -1) - fall * eps.reshape(-1, 1) ** 2 - moved).amin(-1) > 0

        low, high = torch.zeros_like(probe[:, 0]), reach.to(torch.float64).clone()
        for _ in range(RADIUS_STEPS):
            middle = (low + high) / 2
            fine = positive(middle)
            low, high = torch.where(fine, middle, low), torch.where(fine, high, middle)
        return low.to(torch.float32)


def patch_features(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patch's features as flat indices [patches, k] (k: the largest patch; shorter ones padded) and
    which of them are real (not padding), [patches, k].

    >>> index, real = patch_features(torch.tensor([[True, False, True], [False, True, False]]))
    >>> index[real].tolist()
    [0, 2, 1]
    """
    flat = masks.reshape(masks.shape[0], -1)
    size = int(flat.sum(1).max()) if flat.shape[0] else 0
    index = flat.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :size]
    return index, flat.gather(1, index)


def patch_linear_bound(lower: torch.Tensor, slope: torch.Tensor, x: torch.Tensor, index: torch.Tensor,
                       real: torch.Tensor, eps: torch.Tensor, domain: tuple[float, float] | None) -> PatchLinearBound:
    """`PatchLinearBound` of a pass over the boxes of radius `eps` [rows] around x [1, *shape] on the patch
    features `index` / `real` [rows, k] (`patch_features`), from its margin lower bounds [rows, specs] and its
    input coefficients on those features, `slope` [rows, specs, k]. A lower bound is the linear bound's
    minimum over the box, its value at x less each feature's worst move to the box's edge: adding those back
    gives the value at x."""
    rows, specs, size = slope.shape
    slope = slope.to(torch.float64)
    weight = slope.abs() * real.unsqueeze(1)
    here = x.reshape(1, -1).expand(rows, -1).gather(1, index).to(torch.float64).unsqueeze(1)
    if domain is None:
        room = torch.full_like(weight, math.inf)
    else:
        # a positive slope lowers the bound as the feature falls (to domain[0]), a negative one as it rises
        room = torch.where(slope > 0, here - domain[0], domain[1] - here).clamp(min=0)
    bound = PatchLinearBound(torch.zeros_like(weight[..., 0]), weight, room)
    reach = torch.minimum(eps.reshape(-1, 1, 1).to(torch.float64), room)
    bound.centre = lower.to(torch.float64) + (weight * reach).sum(-1)
    return bound


def has_linear_bound(method: str) -> bool:
    """Whether `method`'s final bound is one CROWN pass (a linear bound to reuse): not IBP, not α-CROWN's
    optimisation (its α change from box to box).

    >>> has_linear_bound("crown"), has_linear_bound("alpha-crown")
    (True, False)
    """
    return method in METHODS and METHODS[method][1] == "crown"


@dataclasses.dataclass
class PackedIntervals:
    """Intermediate intervals of a pass, one row per box, the nodes' elements side by side (`layout`: names and
    per-sample shapes, in order): what a later pass over a smaller box around the same point may take as
    `outer` (`BoundPropagation`). ±inf stands for nothing known.

    >>> packed = PackedIntervals.pack({"a": Interval(torch.zeros(2, 1), torch.ones(2, 1))}, [("a", (1,)), ("b", (2,))])
    >>> packed.lower.tolist(), packed.unpack()["a"].upper.tolist()
    ([[0.0, -inf, -inf], [0.0, -inf, -inf]], [[1.0], [1.0]])
    """

    layout: list[tuple[str, tuple[int, ...]]]
    lower: torch.Tensor
    upper: torch.Tensor

    @classmethod
    def pack(cls, intervals: dict[str, Interval], layout: list[tuple[str, tuple[int, ...]]], rows: int | None = None
             ) -> "PackedIntervals":
        rows = next(iter(intervals.values())).lower.shape[0] if rows is None else rows
        lower, upper = [torch.zeros(rows, 0)], [torch.zeros(rows, 0)]
        for name, shape in layout:
            interval = intervals.get(name)
            if interval is None or tuple(interval.lower.shape[1:]) != tuple(shape):
                size = math.prod(shape)
                lower.append(torch.full((rows, size), -math.inf))
                upper.append(torch.full((rows, size), math.inf))
            else:
                lower.append(interval.lower.detach().reshape(rows, -1).cpu())
                upper.append(interval.upper.detach().reshape(rows, -1).cpu())
        return cls(layout, torch.cat(lower, 1), torch.cat(upper, 1))

    def unpack(self, device: torch.device | str = "cpu") -> dict[str, Interval]:
        result, start = {}, 0
        for name, shape in self.layout:
            size = math.prod(shape)
            lower, upper = self.lower[:, start : start + size], self.upper[:, start : start + size]
            start += size
            if bool(torch.isfinite(lower).any() | torch.isfinite(upper).any()):
                result[name] = Interval(lower.reshape(-1, *shape).to(device), upper.reshape(-1, *shape).to(device))
        return result


class FailedProbeIntervals:
    """Per patch of a map, the intermediate intervals of the pass at its lowest failed probe. Every later probe
    of that patch is smaller (a failed probe bounds the search from above), its box inside that one, so those
    intervals hold there too: as `outer` they decide neurons that interval propagation alone leaves open,
    and CROWN bounds fewer of them."""

    def __init__(self, count: int):
        self.probe = torch.full((count,), math.inf)  # the probe each patch's intervals were settled at (inf: none)
        self.packed: PackedIntervals | None = None

    def outer(self, rows: torch.Tensor, eps: torch.Tensor) -> PackedIntervals | None:
        """`outer` for probes `eps` [n] of the patches `rows` [n]: a patch's intervals where they were settled at
        a larger probe, nothing elsewhere."""
        if self.packed is None:
            return None
        usable = (self.probe[rows] > eps).unsqueeze(1)
        return PackedIntervals(self.packed.layout, torch.where(usable, self.packed.lower[rows], -math.inf),
                               torch.where(usable, self.packed.upper[rows], math.inf))

    def keep(self, rows: torch.Tensor, eps: torch.Tensor, failed: torch.Tensor, settled: PackedIntervals | None) -> None:
        """Keep the intervals of the failed probes below each patch's lowest so far."""
        if settled is None:
            return
        if self.packed is None:
            size = (self.probe.shape[0], settled.lower.shape[1])
            self.packed = PackedIntervals(settled.layout, torch.full(size, -math.inf), torch.full(size, math.inf))
        for index in failed.nonzero().flatten().tolist():
            row = int(rows[index])
            if float(eps[index]) < float(self.probe[row]):
                self.probe[row] = eps[index]
                self.packed.lower[row], self.packed.upper[row] = settled.lower[index], settled.upper[index]


def linear_pass(bounded: BoundedModel, lower: torch.Tensor, upper: torch.Tensor, index: torch.Tensor, target: int,
                method: str, chunk: int, outer: PackedIntervals | None = None, settle: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, PackedIntervals | None]:
    """One CROWN-type pass (`has_linear_bound(method)`) over the boxes [rows, *shape], in chunks of `chunk`
    rows: the margin lower bounds [rows, specs], the input coefficients of the linear bounds they are the
    minima of, on each row's features `index` [rows, k] ([rows, specs, k]), and with `settle`, the
    intermediate intervals the pass settled per row (else None). `outer`: per row, intervals known to hold
    over a larger box around the same point (an earlier pass's), which spare the pass CROWN specs."""
    intermediate, _ = METHODS[method]
    outputs = math.prod(bounded.graph.info(bounded.graph.output).shape[1:])
    spec = margin_matrix(outputs, target).to(bounded.device)
    layout = None if outer is None else outer.layout

    def run(graph, low, high, features, outer_lower, outer_upper):
        nonlocal layout
        bounded.check_samples_independent(graph)
        known = None if outer_lower is None else PackedIntervals(layout, outer_lower.cpu(), outer_upper.cpu()).unpack(low.device)
        engine = BoundPropagation(graph, InputSet(low, high), intermediate, outer=known)
        A = spec.unsqueeze(1).expand(spec.shape[0], low.shape[0], outputs).reshape(spec.shape[0], *graph.info(graph.output).shape)
        result = engine.bound(graph.output, A)
        if result.input_coefficient is None:  # the output does not depend on the input
            slope = torch.zeros(low.shape[0], spec.shape[0], features.shape[1], device=low.device)
        elif isinstance(result.input_coefficient, FreeCoefficients):  # read off the free elements, never made dense
            slope = result.input_coefficient.at(features).detach().transpose(0, 1)
        else:
            coefficient = dense(result.input_coefficient).detach().reshape(spec.shape[0], low.shape[0], -1).transpose(0, 1)
            slope = coefficient.gather(2, features.unsqueeze(1).expand(-1, spec.shape[0], -1))
        if not settle:
            return result.lower.detach().T, slope, None, None
        intervals = {name: i for name, i in engine.known_intervals().items() if i.lower.shape[:1] == low.shape[:1]}
        layout = layout or [(name, tuple(interval.lower.shape[1:])) for name, interval in sorted(intervals.items())]
        settled = PackedIntervals.pack(intervals, layout, low.shape[0])
        return result.lower.detach().T, slope, settled.lower, settled.upper

    # whole chunks only, the last one padded with its last row: a short pass would re-trace the graph for its size
    rows = lower.shape[0]
    padded = torch.arange(-(-rows // chunk) * chunk).clamp(max=rows - 1)
    outer_lower, outer_upper = (None, None) if outer is None else (outer.lower[padded], outer.upper[padded])
    with torch.no_grad():
        bound, slope, settled_lower, settled_upper = bounded.graph.map_batches(
            run, lower[padded].to(bounded.device), upper[padded].to(bounded.device), index[padded].to(bounded.device),
            outer_lower, outer_upper, max_batch=chunk)
    settled = PackedIntervals(layout, settled_lower[:rows], settled_upper[:rows]) if settle else None
    return bound[:rows], slope[:rows], settled
