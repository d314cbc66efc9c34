"""Complete verification by splitting the input box, for low-dimensional inputs (ACAS Xu's 5).

Open domains (sub-boxes) are rows of a few tensors, so a round costs a handful of tensor operations
whatever its size. Each round takes up to `batch_size` domains with the worst bound margin, bisects each
along one dimension, bounds all children in one call of `bound_fn`, checks their centres by a forward pass,
and keeps only the children not yet proved. The dimension is the one with the largest
`width × |weight|` of the row that came closest to proving the domain, when `bound_fn` returns per-input
weights (its linear bound's coefficients, or gradient-based weights); else the largest
`width × (|∂margin/∂x| + its mean over the inputs)` at the centre, or simply the widest.
A disjunct of the unsafe set, once ruled out on a domain, stays ruled out on its sub-domains, so each domain
carries the mask of disjuncts still open and only their rows are bounded. Several boxes whose unsafe sets
share their rows (thresholds may differ: VNN-LIB's disjunctions of many input boxes) are one search, each
domain remembering its box. PGD runs on the whole box first
and, during the search, from the centres of the domains whose centres came closest to a violation, each
inside its own domain (at most `attack_share` of the time); a counterexample is reported only after
`check_counterexample` confirms it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, NamedTuple, Sequence

import torch

from opwise.bounds.attack import Function, StraightThrough, check_counterexample, input_gradient, pgd_attack
from opwise.bounds.strategies.result import BabResult, queue_limit, within_timeout
from opwise.bounds.spec import Specification
from opwise.errors import InputError, TimeLimitReached
from opwise.progress import Progress

BoundFunction = Callable[..., "torch.Tensor | tuple[torch.Tensor, ...]"]
"""`bound_fn(x_lower [B, *shape], x_upper [B, *shape], C [rows, outputs])`: lower bounds of C·f(x), [B, rows];
or (those bounds, per-input weights [B, rows, inputs]: their linear bounds' input coefficients, or any measure
of the rows' sensitivity to each input such as `ReluChain.bound_and_smear`'s gradient weights) for coefficient
branching; or
(bounds, coefficients, state [B, ...]), a per-box state valid on sub-boxes, which the children's call then
gets as a fourth argument (a parent's intermediate bounds, say)."""

BRANCHING = ("auto", "coefficient", "gradient", "widest", "bound")

#: relative slack of domain clipping: float32 linear bounds and the clip's own rounding stay inside it
CLIP_SLACK = 1e-5


class LinearLowerBounds(NamedTuple):
    """What a bound function returns to let input splitting *clip* domains: lower bounds [B, rows] and linear
    lower bounds valid on each box, C·f(x) ≥ coefficients·x + bias (coefficients [B, rows, inputs], bias
    [B, rows]; `lower` is usually their minimum over the box). The coefficients also steer coefficient
    branching, unless branching `weights` [B, rows, inputs] are given; `state` as in BoundFunction."""

    lower: torch.Tensor
    coefficients: torch.Tensor
    bias: torch.Tensor
    weights: torch.Tensor | None = None
    state: torch.Tensor | None = None


@dataclasses.dataclass
class _Rows:
    """All disjuncts' rows stacked: C [rows, outputs], the thresholds of every box d [boxes, rows], owner[r] =
    the row's disjunct."""

    C: torch.Tensor
    d: torch.Tensor
    owner: torch.Tensor
    count: int

    @classmethod
    def of(cls, specs: list[Specification]) -> "_Rows":
        first = specs[0]
        owner = torch.cat([torch.full((d.C.shape[0],), k, dtype=torch.long) for k, d in enumerate(first.unsafe)])
        C = torch.cat([d.C for d in first.unsafe])
        for index, spec in enumerate(specs[1:], start=1):
            if len(spec.unsafe) != len(first.unsafe) or any(
                    a.C.shape != b.C.shape or not torch.equal(a.C, b.C) for a, b in zip(spec.unsafe, first.unsafe)):
                raise InputError(f"boxes searched together must share their output rows C; box {index} differs "
                                 "from box 0 (only the thresholds d may differ)")
        d = torch.stack([torch.cat([d.d for d in spec.unsafe]) for spec in specs])
        return cls(C, d, owner.to(first.x_lower.device), len(first.unsafe))

    def margins(self, outputs: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        """[B, rows]: C·y − d of outputs y [B, outputs], each against its box's thresholds."""
        return outputs @ self.C.T - self.d[box]

    def disjunct_margins(self, row_margins: torch.Tensor) -> torch.Tensor:
        """[B, disjuncts]: per disjunct the largest of its rows' margins (> 0: ruled out)."""
        out = torch.full((row_margins.shape[0], self.count), -math.inf, dtype=row_margins.dtype, device=row_margins.device)
        return out.scatter_reduce(1, self.owner.expand_as(row_margins), row_margins, reduce="amax")

    def closest_row(self, row_margins: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
        """Per domain, the row nearest to ruling out the open disjunct that is furthest from being ruled out."""
        disjunct = torch.where(open_, self.disjunct_margins(row_margins), math.inf).argmin(dim=1)
        mine = (self.owner[None, :] == disjunct[:, None]) & open_[:, self.owner]
        return torch.where(mine, row_margins, -math.inf).argmax(dim=1)


@dataclasses.dataclass
class _Domains:
    """Open domains as rows: boxes, the specification each came from, open-disjunct masks, worst open margin,
    depth, branching scores."""

    lower: torch.Tensor
    upper: torch.Tensor
    box: torch.Tensor
    open_: torch.Tensor
    worst: torch.Tensor
    depth: torch.Tensor
    centre_margin: torch.Tensor
    direction: torch.Tensor | None
    state: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.worst)

    @property
    def nbytes(self) -> int:
        return sum(value.nbytes for value in (getattr(self, f.name) for f in dataclasses.fields(self)) if value is not None)

    def take(self, index: torch.Tensor) -> "_Domains":
        return _Domains(*(None if value is None else value[index]
                          for value in (getattr(self, field.name) for field in dataclasses.fields(self))))

    def pop_worst(self, count: int) -> tuple["_Domains", "_Domains"]:
        """(the `count` domains with the lowest margin, the rest)."""
        if count >= len(self):
            return self, self.take(torch.zeros(0, dtype=torch.long, device=self.worst.device))
        keep = torch.ones(len(self), dtype=torch.bool, device=self.worst.device)
        chosen = torch.topk(self.worst, count, largest=False).indices
        keep[chosen] = False
        return self.take(chosen), self.take(keep.nonzero().flatten())

    @staticmethod
    def concat(parts: list["_Domains"]) -> "_Domains":
        fields = [[getattr(p, f.name) for p in parts] for f in dataclasses.fields(_Domains)]
        return _Domains(*(None if any(v is None for v in values) else torch.cat(values) for values in fields))


@within_timeout
def input_split_bab(
    bound_fn: BoundFunction,
    function: Function,
    spec: Specification | Sequence[Specification],
    *,
    timeout: float,
    batch_size: int = 1024,
    branching: str = "auto",
    max_domains: int = 1_000_000,
    max_memory: int | None = None,
    min_width: float = 1e-7,
    attack_share: float = 0.1,
    attack_steps: int = 50,
    round_time: float = 1.0,
    progress: Progress | None = None,
) -> BabResult:
    """Decide whether some x in the box puts f(x) in the unsafe set, by bisecting the box.

    `spec` may also be a list of boxes whose unsafe sets share their rows C (thresholds d may differ): a
    VNN-LIB disjunction of many input boxes (lindex's 60,000, mscn's 960). They are searched together, every
    round bounding domains of all of them in one call, and the result is 'verified' when every box is;
    a counterexample's box is `stats["box"]`. No whole-box PGD runs then (one per box would cost more than the
    search); the search's attacks start in its first round.

    'verified' when every domain has a disjunct-wise positive lower bound, 'falsified' with a checked
    counterexample, 'timeout' when time runs out, 'unknown' when the open domains outgrow `max_domains` (or
    their tensors `max_memory` bytes) or
    only domains narrower than `min_width` (in every splittable dimension) remain unproved. `branching`:
    "coefficient" (needs a bound_fn that returns input coefficients), "gradient", "widest", or "auto"
    (coefficient when the bound function gives coefficients, else gradient), "bound" (every dimension tried,
    the one whose worse half has the best bound kept). Rounds are kept near `round_time` seconds (fewer domains
    per round while each costs more) and within the time left, so the timeout is kept. `progress` is called
    after every round (open and visited domains, time left).

    >>> import torch
    >>> from opwise.bounds.spec import Disjunct, Specification
    >>> f = lambda x: (x ** 2).sum(dim=1, keepdim=True)            # y = x0² + x1²
    >>> def bound_fn(lo, up, C):                                     # exact interval bounds of C·y
    ...     low = torch.where((lo <= 0) & (up >= 0), 0, torch.minimum(lo ** 2, up ** 2)).sum(1, keepdim=True)
    ...     high = torch.maximum(lo ** 2, up ** 2).sum(1, keepdim=True)
    ...     return torch.where(C.T > 0, C.T * low, C.T * high)
    >>> spec = Specification(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 1.0]]),
    ...                      [Disjunct(torch.tensor([[1.0]]), torch.tensor([0.4]))])   # unsafe: y <= 0.4
    >>> input_split_bab(bound_fn, f, spec, timeout=10).status
    'verified'
    """
    if branching not in BRANCHING:
        raise InputError(f"unknown branching {branching!r}; choose one of {', '.join(BRANCHING)}")
    specs = [spec] if isinstance(spec, Specification) else list(spec)
    if not specs:
        raise InputError("input splitting needs at least one box")
    for one in specs:
        if one.input_set is not None and one.input_set.is_ball:
            raise InputError(f"input splitting splits boxes, and this input set is an L{one.input_set.norm:g} ball: "
                             "its halves would bound points outside the ball; use GenBaB (strategy='genbab'), which "
                             "splits neurons and bounds over the ball")
    if len(specs) > 1 and any(one.input_set is not None for one in specs):
        raise InputError("input splitting searches boxes cut by relations between inputs one at a time")
    start = time.monotonic()
    deadline = start + timeout
    rows = _Rows.of(specs)
    stats = {"domains": 0, "max_depth": 0, "bound_calls": 0, "rounds": 0, "attacks": 0, "attack_time": 0.0, "time": 0.0}

    def finish(status: str, counterexample: torch.Tensor | None = None, box: int | None = None) -> BabResult:
        stats["time"] = time.monotonic() - start
        if box is not None and len(specs) > 1:
            stats["box"] = box
        return BabResult(status, counterexample, stats)

    if len(specs) == 1:
        attack = pgd_attack(function, specs[0], time_limit=max(0.0, min(timeout * attack_share, 5.0)))
        stats["attacks"] += 1
        stats["attack_time"] = time.monotonic() - start
        if attack.found:
            return finish("falsified", attack.counterexample)
    device = specs[0].x_lower.device
    roots_lower = torch.cat([one.x_lower for one in specs])
    roots_upper = torch.cat([one.x_upper for one in specs])
    splittable = (roots_upper > roots_lower).reshape(len(specs), -1).any(dim=0)
    root_open = torch.ones(len(specs), rows.count, dtype=torch.bool, device=device)
    found, queue = _bound(bound_fn, function, specs, rows, roots_lower, roots_upper,
                          torch.arange(len(specs), device=device), root_open,
                          torch.zeros(len(specs), dtype=torch.long, device=device), None, branching, stats)
    if found is not None:  # a box's centre is a counterexample
        return finish("falsified", *found)
    queue = queue.take((queue.worst < math.inf).nonzero().flatten())
    narrow, per_domain = 0, 0.0
    try:
        while found is None and len(queue):
            if time.monotonic() > deadline:
                return finish("timeout")
            reason = queue_limit(queue, max_domains, max_memory)
            if reason is not None:
                stats["reason"] = reason
                return finish("unknown")
            if stats["attack_time"] < attack_share * (time.monotonic() - start):
                found = _attack_domains(function, specs, rows, queue, attack_steps, stats)
                if found is not None:
                    break
            affordable = min(round_time, deadline - time.monotonic()) / max(per_domain, 1e-9)
            count = _filled(bound_fn, max(1, min(batch_size, int(affordable))), len(queue), batch_size)
            batch, rest = queue.pop_worst(count)
            width = (batch.upper - batch.lower).reshape(len(batch), -1) * splittable
            keep = width.amax(dim=1) > min_width
            narrow += int((~keep).sum())
            batch, width = batch.take(keep.nonzero().flatten()), width[keep]
            if not len(batch):
                queue = rest
                continue
            began = time.monotonic()
            if branching == "bound":
                found, children = _split_every_way(bound_fn, function, specs, rows, batch, width, stats)
            else:
                dimension = _choose_dimension(function, rows, batch, width, branching)
                child_lower, child_upper = bisect(batch.lower, batch.upper, dimension)
                found, children = _bound(bound_fn, function, specs, rows, child_lower, child_upper, batch.box.repeat(2),
                                         batch.open_.repeat(2, 1), (batch.depth + 1).repeat(2), _repeat(batch.state, 2),
                                         branching, stats)
            if found is not None:
                break
            children = children.take((children.worst < math.inf).nonzero().flatten())
            queue = _Domains.concat([rest, children])
            stats["rounds"] += 1
            per_domain = (time.monotonic() - began) / len(batch)
            if progress is not None:
                now = time.monotonic()
                progress({"search": "input splitting", "open": len(queue), "visited": stats["domains"],
                          "seconds": now - start, "left": deadline - now})
    except TimeLimitReached:  # a bound pass reached the deadline: end with the counts so far
        return finish("timeout")
    if found is not None:
        return finish("falsified", *found)
    if narrow:
        stats["reason"] = f"{narrow} domains narrower than {min_width} stayed unproved"
        return finish("unknown")
    return finish("verified")


def _filled(bound_fn, count: int, available: int, batch_size: int) -> int:
    """The domains to bisect this round: `count`, or more where the bound function says (`positions`) that it
    would bound their 2 × count children at more positions anyway (padding to a power of two, or a batch size
    it is already specialized to), up to `batch_size` and the domains open. mscn_128d_dual's 867 boxes
    specialized its graph to 1024 at the root; every later round of about 160 children ran at 1024 positions,
    so it cost a sixth of its time per domain more than it had to, and rounds, timed per domain, shrank."""
    positions = getattr(bound_fn, "positions", None)
    if positions is None:
        return count
    return max(count, min(positions(2 * count) // 2, batch_size, available))


def _repeat(state: torch.Tensor | None, times: int) -> torch.Tensor | None:
    return None if state is None else state.repeat(times, *([1] * (state.dim() - 1)))


def _bound(bound_fn, function, specs, rows, lower, upper, box, open_, depth, state, branching, stats):
    """Bound the domains (of boxes `box`): (a confirmed counterexample among their centres and its box, or None;
    the unproved domains)."""
    stats["domains"] += len(lower)
    stats["max_depth"] = max(stats["max_depth"], int(depth.max()))
    centre = (lower + upper) / 2
    constraints = specs[0].input_set.constraints if specs[0].input_set is not None else None
    if constraints is not None:  # a domain no point of which meets the relations is done; centres are made feasible
        open_ = open_ & ~_outside(constraints, lower, upper)[:, None]
        centre = specs[0].region.project(centre)
    thresholds = rows.d[box]
    with torch.no_grad():
        outputs = function(centre).reshape(len(centre), -1).to(rows.C.dtype)
    centre_margins = rows.disjunct_margins(rows.margins(outputs, box)).amin(dim=1)
    if (centre_margins <= 0).any():
        worst = int(centre_margins.argmin())
        candidate, owner = centre[worst][None], int(box[worst])
        confirmed, _, _ = check_counterexample(function, specs[owner], candidate)
        if confirmed:
            return (candidate, owner), None
    needed = open_[:, rows.owner].any(dim=0)
    bounds = torch.full((len(lower), rows.d.shape[1]), -math.inf, dtype=rows.d.dtype, device=lower.device)
    with torch.no_grad():
        answer = bound_fn(lower, upper, rows.C[needed]) if state is None else bound_fn(lower, upper, rows.C[needed], state)
    coefficients = linear = needed_coefficients = None
    if isinstance(answer, LinearLowerBounds):
        linear, state = answer, answer.state
        answer, needed_coefficients = linear.lower, linear.coefficients if linear.weights is None else linear.weights
        if constraints is not None:  # the linear bounds' minimum over the domain cut by the relations
            answer = torch.maximum(answer, _polytope_minimum(constraints, linear, lower, upper).to(answer.dtype))
    elif isinstance(answer, tuple):
        answer, needed_coefficients, *rest = answer
        state = rest[0] if rest else None
    if needed_coefficients is not None:
        coefficients = needed_coefficients.new_zeros(len(lower), rows.d.shape[1], needed_coefficients.shape[-1])
        coefficients[:, needed] = needed_coefficients
    bounds[:, needed] = answer.to(bounds.dtype) - thresholds[:, needed]
    stats["bound_calls"] += 1
    margins = rows.disjunct_margins(bounds)
    open_ = open_ & ~(margins > 0)
    if linear is not None:
        clipped_lower, clipped_upper, ruled_out = clip_domains(
            lower, upper, linear.coefficients, linear.bias - thresholds[:, needed], rows.owner[needed], open_)
        stats["clipped"] = stats.get("clipped", 0) + int(((clipped_lower > lower) | (clipped_upper < upper))
                                                         .reshape(len(lower), -1).any(dim=1).sum())
        lower, upper, open_ = clipped_lower, clipped_upper, open_ & ~ruled_out
    direction = None
    if coefficients is not None and branching in ("auto", "coefficient"):
        direction = coefficients[torch.arange(len(lower), device=lower.device), rows.closest_row(bounds, open_)].abs()
        if linear is not None and linear.weights is None:
            direction = _floored(direction, (upper - lower).reshape(len(lower), -1) > 0)
    elif branching == "coefficient":
        raise InputError("branching='coefficient' needs a bound function that returns (bounds, input coefficients)")
    worst = torch.where(open_, margins, math.inf).amin(dim=1)
    return None, _Domains(lower, upper, box, open_, worst, depth, centre_margins, direction, state)


def _outside(constraints, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """[B]: the domains in which no point meets the relations (some row's smallest `G·x` over the box exceeds h),
    in float64 with a margin for rounding, so a domain with a feasible point is never dropped."""
    G, h = constraints.G.to(torch.float64), constraints.h.to(torch.float64)
    low, high = lower.reshape(len(lower), -1).to(torch.float64), upper.reshape(len(upper), -1).to(torch.float64)
    smallest = low @ G.clamp(min=0).T + high @ G.clamp(max=0).T
    return (smallest - h > 1e-9 * (1 + h.abs() + (G.abs() @ torch.maximum(low.abs(), high.abs()).T).T)).any(dim=1)


def _polytope_minimum(constraints, linear: LinearLowerBounds, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """[B, rows]: the minimum of the linear lower bounds `coefficients·x + bias` over each domain cut by the
    relations (weak duality, LinearConstraints.minimum), at least their minimum over the box."""
    flat = linear.coefficients.to(torch.float64).transpose(0, 1)              # [rows, B, inputs]
    low, high = lower.reshape(len(lower), -1).to(torch.float64), upper.reshape(len(upper), -1).to(torch.float64)
    return (constraints.to(dtype=torch.float64).minimum(flat, low, high).T + linear.bias.to(torch.float64))


def clip_domains(lower: torch.Tensor, upper: torch.Tensor, coefficients: torch.Tensor, offset: torch.Tensor,
                 owner: torch.Tensor, open_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shrink each box to the bounding box of the points that linear lower bounds leave unproved.

    Row r of box b can only be violated where coefficients[b, r]·x + offset[b, r] ≤ 0 (its linear lower bound
    minus the threshold), which confines every input to an interval given the others' extremes. A disjunct
    (`owner[r]`: its rows' disjunct, of `open_.shape[1]`) needs all its rows violated, so its box is the
    intersection of its rows' boxes, and is empty when the disjunct is ruled out; the domain's new box
    spans the boxes of its open disjuncts. Nothing outside the result can be a counterexample, so bounds
    on it are bounds for the domain. Computed in float64 with a relative slack (`CLIP_SLACK`), so rounding
    never cuts off a point; rows with non-finite coefficients clip nothing.
    Returns (lower, upper, ruled_out [B, disjuncts]).

    >>> lower, upper = torch.zeros(1, 2), torch.ones(1, 2)              # x in [0, 1]²
    >>> A, offset = torch.tensor([[[1.0, 1.0]]]), torch.tensor([[-0.5]])    # violated only where x0 + x1 <= 0.5
    >>> lo, up, out = clip_domains(lower, upper, A, offset, torch.tensor([0]), torch.ones(1, 1, dtype=torch.bool))
    >>> [round(v, 4) for v in up[0].tolist()], out.tolist()            # 0.5 plus the rounding slack
    ([0.5, 0.5], [[False]])
    """
    count, disjuncts = len(lower), open_.shape[1]
    lo = lower.reshape(count, 1, -1).double()
    hi = upper.reshape(count, 1, -1).double()
    A, offset = coefficients.double(), offset.double()
    low_terms = torch.minimum(A * lo, A * hi)                                   # [B, rows, inputs]
    slack = CLIP_SLACK * ((A.abs() * torch.maximum(lo.abs(), hi.abs())).sum(-1) + offset.abs())
    room = slack[..., None] - offset[..., None] - (low_terms.sum(-1, keepdim=True) - low_terms)   # A_i x_i <= room_i
    limit = room / A
    usable = (torch.isfinite(A).all(-1) & torch.isfinite(offset))[..., None]
    row_lo = torch.where(usable & (A < 0), torch.maximum(lo, limit), lo)
    row_hi = torch.where(usable & (A > 0), torch.minimum(hi, limit), hi)
    index = owner[None, :, None].expand_as(row_lo)
    shape = (count, disjuncts, lo.shape[-1])
    box_lo = lo.expand(shape).scatter_reduce(1, index, row_lo, reduce="amax")
    box_hi = hi.expand(shape).scatter_reduce(1, index, row_hi, reduce="amin")
    ruled_out = open_ & (box_lo > box_hi).any(dim=-1)
    alive = (open_ & ~ruled_out)[..., None]
    some = alive.any(dim=1)
    new_lo = torch.where(some, torch.where(alive, box_lo, math.inf).amin(dim=1), lo[:, 0])
    new_hi = torch.where(some, torch.where(alive, box_hi, -math.inf).amax(dim=1), hi[:, 0])
    return _rounded(new_lo, lower, -math.inf), _rounded(new_hi, upper, math.inf), ruled_out


def _rounded(value: torch.Tensor, like: torch.Tensor, outwards: float) -> torch.Tensor:
    """float64 `value` in `like`'s dtype and shape, rounded towards `outwards` (±inf) where rounding moved it."""
    near = value.to(like.dtype)
    moved = (near.double() > value) if outwards < 0 else (near.double() < value)
    return torch.where(moved, torch.nextafter(near, torch.full_like(near, outwards)), near).reshape(like.shape)


def bisect(lower: torch.Tensor, upper: torch.Tensor, dimension: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Children of each box halved along its (flat) `dimension`: (lower, upper), left halves first.

    >>> bisect(torch.zeros(1, 2), torch.tensor([[1.0, 4.0]]), torch.tensor([1]))
    (tensor([[0., 0.],
            [0., 2.]]), tensor([[1., 2.],
            [1., 4.]]))
    """
    flat_lower, flat_upper = lower.reshape(len(lower), -1), upper.reshape(len(upper), -1)
    index = torch.arange(len(lower), device=lower.device)
    middle = (flat_lower[index, dimension] + flat_upper[index, dimension]) / 2
    left_upper, right_lower = flat_upper.clone(), flat_lower.clone()
    left_upper[index, dimension] = middle
    right_lower[index, dimension] = middle
    return (torch.cat([lower, right_lower.reshape(lower.shape)]), torch.cat([left_upper.reshape(upper.shape), upper]))


def _split_every_way(bound_fn, function, specs, rows, batch: "_Domains", width: torch.Tensor, stats):
    """Bisect every domain along every splittable dimension, bound all children, keep per domain the
    dimension whose worse half has the highest bound: (counterexample or None, its unproved children)."""
    count, dimensions = len(batch), width.shape[1]
    candidates = [d for d in range(dimensions) if bool((width[:, d] > 0).any())]
    lowers, uppers = zip(*(bisect(batch.lower, batch.upper, torch.full((count,), d, device=width.device)) for d in candidates))
    found, children = _bound(bound_fn, function, specs, rows, torch.cat(lowers), torch.cat(uppers),
                             batch.box.repeat(2 * len(candidates)), batch.open_.repeat(2 * len(candidates), 1), (batch.depth + 1).repeat(2 * len(candidates)),
                             _repeat(batch.state, 2 * len(candidates)), "bound", stats)
    if found is not None:
        return found, None
    worst = children.worst.reshape(len(candidates), 2, count)
    score = torch.where(width[:, candidates].T > 0, worst.amin(dim=1), -math.inf)
    best = score.argmax(dim=0)
    index = torch.arange(count, device=width.device)
    chosen = torch.cat([best * 2 * count + index, best * 2 * count + count + index])
    kept = children.take(chosen)
    return None, kept.take((kept.worst < math.inf).nonzero().flatten())


def _floored(coefficients: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """Linear-bound coefficients [B, inputs] as branching weights: every free input counts at least the mean
    coefficient of the domain's free inputs. A coefficient can vanish along an input whose ReLUs still loosen the
    bound (mscn_128d_dual's two free predicates: one bisected 8 times, the other never). Weights a bound function
    gives itself (the chain's gradient smear) are used as they are: on ACAS Xu the floor took prop_3 on net 1_1
    from 3,233 domains to 25,411."""
    mean = (coefficients * free).sum(dim=1, keepdim=True) / free.sum(dim=1, keepdim=True).clamp(min=1)
    return coefficients + mean


def _choose_dimension(function, rows, batch: _Domains, width: torch.Tensor, branching: str) -> torch.Tensor:
    """Per domain, the flat input index to bisect: largest width × |coefficient| or × (|gradient| + its mean),
    or the widest."""
    if branching == "widest":
        return width.argmax(dim=1)
    if batch.direction is not None:
        score = width * batch.direction.to(width.dtype)
    else:
        centre = ((batch.lower + batch.upper) / 2).detach().requires_grad_(True)
        with StraightThrough():
            row_margins = rows.margins(function(centre).reshape(len(centre), -1).to(rows.C.dtype), batch.box)
        row = rows.closest_row(row_margins.detach(), batch.open_)
        gradient = input_gradient(row_margins.gather(1, row[:, None]).sum(), centre)
        gradient = gradient.reshape(len(centre), -1).abs()
        # the centre's gradient can vanish along an input (ReLUs off there) that still widens the bounds
        # elsewhere in the box: every input counts at least the mean sensitivity, or it is never split
        score = width * (gradient + gradient.mean(dim=1, keepdim=True))
    # a flat score says nothing: fall back to the widest dimension there
    score = torch.where(score.amax(dim=1, keepdim=True) > 0, score, width)
    return score.argmax(dim=1)


def _attack_domains(function, specs, rows, domains: _Domains, steps: int, stats, count: int = 64):
    """Signed-gradient descent on the margin inside each of the `count` domains whose centre came closest to a
    violation (one start per domain, at its centre; all in one batch): a confirmed counterexample and its box,
    or None.
    Counterexamples of ACAS Xu often sit in small pockets that one PGD over the whole box misses."""
    began = time.monotonic()
    stats["attacks"] += 1
    chosen = torch.topk(domains.centre_margin, min(count, len(domains)), largest=False).indices
    lower, upper, open_, box = domains.lower[chosen], domains.upper[chosen], domains.open_[chosen], domains.box[chosen]
    width = upper - lower
    x = (lower + upper) / 2
    found = None
    for step in range(steps):
        x = x.detach().requires_grad_(True)
        with StraightThrough():
            margins = rows.disjunct_margins(rows.margins(function(x).reshape(len(x), -1).to(rows.C.dtype), box))
        margin = torch.where(open_, margins, math.inf).amin(dim=1)
        if bool((margin <= 0).any()):
            worst = int(margin.argmin())
            candidate, owner = x[worst][None].detach(), int(box[worst])
            if check_counterexample(function, specs[owner], candidate)[0]:
                found = candidate, owner
                break
        gradient = input_gradient(margin.clamp(max=1e30).sum(), x)
        scale = 0.2 * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = torch.max(torch.min(x.detach() - scale * width * gradient.sign(), upper), lower)
    stats["attack_time"] += time.monotonic() - began
    return found
