"""Complete verification by splitting the input box, for low-dimensional inputs (ACAS Xu's 5).

Domains (sub-boxes) wait in a priority queue, worst bound margin first. Each round pops a batch, bisects
every domain along the dimension with the largest `width × |∂margin/∂x|` at its centre (or simply the
widest one), bounds all children in one call of `bound_fn`, checks their centres by a forward pass, and
keeps only the children not yet proved. A disjunct of the unsafe set, once ruled out on a domain, stays
ruled out on its sub-domains, so each domain carries the mask of disjuncts still open and only their rows
are bounded. PGD runs on the whole box first and on the worst domain during the search (at most
`attack_share` of the time); a
counterexample is reported only after `check_counterexample` confirms it.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import time
from typing import Callable

import torch

from opwise.bounds.bab.result import BabResult
from opwise.bounds.attack import Function, check_counterexample, pgd_attack
from opwise.bounds.spec import Specification
from opwise.errors import InputError

BoundFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""`bound_fn(x_lower [B, *shape], x_upper [B, *shape], C [rows, outputs]) -> lower bounds of C·f(x), [B, rows]`."""

BRANCHING = ("gradient", "widest")


@dataclasses.dataclass
class _Rows:
    """All disjuncts' rows stacked: C [rows, outputs], d [rows], owner[r] = the row's disjunct."""

    C: torch.Tensor
    d: torch.Tensor
    owner: torch.Tensor
    count: int

    @classmethod
    def of(cls, spec: Specification) -> "_Rows":
        owner = torch.cat([torch.full((d.C.shape[0],), k, dtype=torch.long) for k, d in enumerate(spec.unsafe)])
        return cls(torch.cat([d.C for d in spec.unsafe]), torch.cat([d.d for d in spec.unsafe]),
                   owner.to(spec.x_lower.device), len(spec.unsafe))

    def disjunct_margins(self, row_margins: torch.Tensor) -> torch.Tensor:
        """[B, disjuncts]: per disjunct the largest of its rows' margins (> 0: ruled out)."""
        out = torch.full((row_margins.shape[0], self.count), -math.inf, dtype=row_margins.dtype, device=row_margins.device)
        return out.scatter_reduce(1, self.owner.expand_as(row_margins), row_margins, reduce="amax")


def input_split_bab(
    bound_fn: BoundFunction,
    function: Function,
    spec: Specification,
    *,
    timeout: float,
    batch_size: int = 256,
    branching: str = "gradient",
    max_domains: int = 500_000,
    min_width: float = 1e-7,
    attack_share: float = 0.1,
    attack_steps: int = 50,
) -> BabResult:
    """Decide whether some x in the box puts f(x) in the unsafe set, by bisecting the box.

    'verified' when every domain has a disjunct-wise positive lower bound, 'falsified' with a checked
    counterexample, 'timeout' when time runs out, 'unknown' when the queue outgrows `max_domains` or
    only domains narrower than `min_width` (in every splittable dimension) remain unproved.

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
    start = time.monotonic()
    deadline = start + timeout
    rows = _Rows.of(spec)
    stats = {"domains": 0, "max_depth": 0, "bound_calls": 0, "attacks": 0, "attack_time": 0.0, "time": 0.0}

    def finish(status: str, counterexample: torch.Tensor | None = None) -> BabResult:
        stats["time"] = time.monotonic() - start
        return BabResult(status, counterexample, stats)

    attack = pgd_attack(function, spec, time_limit=max(0.0, min(timeout * attack_share, 5.0)))
    stats["attacks"] += 1
    stats["attack_time"] = time.monotonic() - start
    if attack.found:
        return finish("falsified", attack.counterexample)
    splittable = (spec.x_upper > spec.x_lower).reshape(-1)
    open_all = torch.ones(1, rows.count, dtype=torch.bool, device=spec.x_lower.device)
    queue: list = []
    counter = itertools.count()
    narrow = 0
    found = _bound_and_push(bound_fn, function, spec, rows, spec.x_lower, spec.x_upper, open_all,
                            torch.zeros(1, dtype=torch.long), queue, counter, stats)
    while found is None and queue:
        if time.monotonic() > deadline:
            return finish("timeout")
        if len(queue) > max_domains:
            stats["reason"] = f"more than {max_domains} open domains"
            return finish("unknown")
        popped = [heapq.heappop(queue) for _ in range(min(batch_size, len(queue)))]
        lower = torch.cat([entry[2] for entry in popped])
        upper = torch.cat([entry[3] for entry in popped])
        open_ = torch.cat([entry[4] for entry in popped])
        depth = torch.tensor([entry[5] for entry in popped])
        width = (upper - lower).reshape(len(popped), -1) * splittable
        keep = width.amax(dim=1) > min_width
        narrow += int((~keep).sum())
        if not keep.any():
            continue
        lower, upper, open_, depth, width = lower[keep], upper[keep], open_[keep], depth[keep], width[keep]
        if stats["attack_time"] < attack_share * (time.monotonic() - start):
            found = _attack_domain(function, spec, lower[:1], upper[:1], attack_steps, stats)
            if found is not None:
                break
        dimension = _choose_dimension(function, rows, lower, upper, open_, width, branching)
        left_upper, right_lower = upper.clone().reshape(len(upper), -1), lower.clone().reshape(len(lower), -1)
        index = torch.arange(len(lower))
        middle = (lower.reshape(len(lower), -1)[index, dimension] + upper.reshape(len(upper), -1)[index, dimension]) / 2
        left_upper[index, dimension] = middle
        right_lower[index, dimension] = middle
        child_lower = torch.cat([lower, right_lower.reshape(lower.shape)])
        child_upper = torch.cat([left_upper.reshape(upper.shape), upper])
        found = _bound_and_push(bound_fn, function, spec, rows, child_lower, child_upper, open_.repeat(2, 1),
                                (depth + 1).repeat(2), queue, counter, stats)
    if found is not None:
        return finish("falsified", found)
    if narrow:
        stats["reason"] = f"{narrow} domains narrower than {min_width} stayed unproved"
        return finish("unknown")
    return finish("verified")


def _bound_and_push(bound_fn, function, spec, rows, lower, upper, open_, depth, queue, counter, stats):
    """Bound the domains, push the unproved ones; return a confirmed counterexample among their centres."""
    stats["domains"] += len(lower)
    stats["max_depth"] = max(stats["max_depth"], int(depth.max()))
    centre = (lower + upper) / 2
    with torch.no_grad():
        outputs = function(centre).reshape(len(centre), -1)
    violated = (outputs @ rows.C.T - rows.d)
    centre_margins = rows.disjunct_margins(violated).amin(dim=1)
    if (centre_margins <= 0).any():
        candidate = centre[int(centre_margins.argmin())][None]
        confirmed, _, _ = check_counterexample(function, spec, candidate)
        if confirmed:
            return candidate
    needed = open_[:, rows.owner].any(dim=0)
    bounds = torch.full((len(lower), len(rows.d)), -math.inf, dtype=lower.dtype, device=lower.device)
    with torch.no_grad():
        bounds[:, needed] = bound_fn(lower, upper, rows.C[needed]).to(lower.dtype) - rows.d[needed]
    stats["bound_calls"] += 1
    margins = rows.disjunct_margins(bounds)
    open_ = open_ & ~(margins > 0)
    worst = torch.where(open_, margins, math.inf).amin(dim=1)
    for i in torch.nonzero(open_.any(dim=1)).flatten().tolist():
        heapq.heappush(queue, (float(worst[i]), next(counter), lower[i : i + 1], upper[i : i + 1], open_[i : i + 1], int(depth[i])))
    return None


def _choose_dimension(function, rows, lower, upper, open_, width, branching) -> torch.Tensor:
    """Per domain, the flat input index to bisect: widest, or largest width × |gradient of the open margin|."""
    if branching == "widest":
        return width.argmax(dim=1)
    centre = ((lower + upper) / 2).detach().requires_grad_(True)
    outputs = function(centre).reshape(len(centre), -1)
    row_margins = outputs @ rows.C.T - rows.d
    open_rows = open_[:, rows.owner]
    # the open disjunct closest to holding at the centre; inside it, the row nearest to ruling it out
    disjunct = torch.where(open_, rows.disjunct_margins(row_margins.detach()), math.inf).argmin(dim=1)
    mine = (rows.owner[None, :] == disjunct[:, None]) & open_rows
    row = torch.where(mine, row_margins.detach(), -math.inf).argmax(dim=1)
    (gradient,) = torch.autograd.grad(row_margins.gather(1, row[:, None]).sum(), centre)
    score = width * gradient.reshape(len(centre), -1).abs()
    # a flat gradient says nothing: fall back to the widest dimension there
    score = torch.where(score.amax(dim=1, keepdim=True) > 0, score, width)
    return score.argmax(dim=1)


def _attack_domain(function, spec, lower, upper, steps, stats):
    """PGD inside one domain (the worst popped); a confirmed counterexample or None."""
    began = time.monotonic()
    stats["attacks"] += 1
    sub = Specification(lower, upper, spec.unsafe)
    result = pgd_attack(function, sub, steps=steps, restarts=2, seed=stats["attacks"])
    stats["attack_time"] += time.monotonic() - began
    return result.counterexample
