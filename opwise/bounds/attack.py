"""PGD attack on a specification: searches the input box for a point in the unsafe output set.

Used before and during bounding: a counterexample ends verification early, and only a point that a
real forward pass confirms is ever reported (`check_counterexample`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import torch

from opwise.bounds.spec import Specification

Function = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class AttackResult:
    """`counterexample` is a confirmed violating input (shaped like spec.x_lower) or None."""

    counterexample: torch.Tensor | None
    margin: float
    output: torch.Tensor | None = None

    @property
    def found(self) -> bool:
        return self.counterexample is not None


def disjunct_margins(spec: Specification, y: torch.Tensor) -> torch.Tensor:
    """[batch, disjuncts]: for each disjunct the largest row of C y - d (<= 0: that disjunct holds at y)."""
    return torch.stack([d.margin(y) for d in spec.unsafe], dim=-1)


def check_counterexample(function: Function, spec: Specification, x: torch.Tensor) -> tuple[bool, float, torch.Tensor]:
    """Forward pass at x, clipped into the box: (violates, margin, output)."""
    x = torch.max(torch.min(x, spec.x_upper), spec.x_lower)
    with torch.no_grad():
        y = function(x)
    margin = float(spec.margin(y.reshape(y.shape[0], -1)).min())
    return margin <= 0, margin, y


def pgd_attack(
    function: Function,
    spec: Specification,
    *,
    steps: int = 100,
    restarts: int = 8,
    step_size: float = 0.25,
    seed: int = 0,
    time_limit: float | None = None,
    patience: int | None = 40,
    tolerance: float = 1e-3,
) -> AttackResult:
    """Minimise each disjunct's margin by signed-gradient steps inside the box, several starts per disjunct.

    `function` maps a batch `[n, *spec.x_lower.shape[1:]]` to outputs `[n, outputs]`. `step_size` is a
    fraction of each input's box width, decayed by a cosine schedule. Starts: the box centre, then
    uniform random points. The attack stops early when it has stalled: no disjunct's best margin fell by
    more than `tolerance` of its size (at least `tolerance`² absolutely) in the last `patience` steps (None:
    never). Signed steps reach a vertex of the box within a few steps and stay at a local minimum there, so
    on a property that holds the remaining steps (most of the time, on a large network) find nothing.

    >>> import torch
    >>> from opwise.bounds.spec import Specification, robustness_disjuncts
    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad(): _ = model.weight.copy_(torch.eye(2)); _ = model.bias.zero_()
    >>> spec = Specification(torch.tensor([[0.4, 0.0]]), torch.tensor([[0.6, 1.0]]), robustness_disjuncts(2, 0))
    >>> result = pgd_attack(model, spec)
    >>> result.found, result.margin <= 0, spec.contains(result.counterexample)
    (True, True, True)
    """
    lower, upper = spec.x_lower, spec.x_upper
    width = upper - lower
    count = len(spec.unsafe)
    starts = restarts * count
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand((starts, *lower.shape[1:]), generator=generator, dtype=lower.dtype).to(lower.device)
    noise[:count] = 0.5
    x = lower + width * noise
    chosen = torch.arange(starts, device=lower.device) % count
    deadline = None if time_limit is None else time.monotonic() + time_limit
    best_x, best_margin = x[:1].detach(), math.inf
    history = []  # per step: each disjunct's best margin so far
    for step in range(steps + 1):
        x = x.detach().requires_grad_(True)
        y = function(x).reshape(starts, -1)
        margins = disjunct_margins(spec, y)
        own = margins.gather(1, chosen[:, None]).squeeze(1)
        overall = margins.amin(dim=1).detach()
        index = int(overall.argmin())
        if float(overall[index]) < best_margin:
            best_margin, best_x = float(overall[index]), x[index : index + 1].detach().clone()
        history.append(torch.minimum(history[-1], _best_per_disjunct(own, chosen, count)) if history else
                       _best_per_disjunct(own, chosen, count))
        if (best_margin <= 0 or step == steps or (deadline is not None and time.monotonic() > deadline)
                or _stalled(history, patience, tolerance)):
            break
        (gradient,) = torch.autograd.grad(own.sum(), x)
        scale = step_size * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = torch.max(torch.min(x.detach() - scale * width * gradient.sign(), upper), lower)
    violates, margin, output = check_counterexample(function, spec, best_x)
    return AttackResult(best_x if violates else None, margin, output)


def _best_per_disjunct(own: torch.Tensor, chosen: torch.Tensor, count: int) -> torch.Tensor:
    """[count]: the lowest margin among the starts aimed at each disjunct."""
    best = own.new_full((count,), math.inf)
    return best.scatter_reduce(0, chosen, own.detach(), reduce="amin")


def _stalled(history: list[torch.Tensor], patience: int | None, tolerance: float) -> bool:
    """Whether no disjunct's best margin fell by more than `tolerance` of its size in the last `patience` steps.

    >>> flat = [torch.tensor([2.0, 1.0])] * 21
    >>> _stalled(flat, 20, 1e-3), _stalled(flat[:-1] + [torch.tensor([2.0, 0.9])], 20, 1e-3), _stalled(flat, None, 1e-3)
    (True, False, False)
    """
    if patience is None or len(history) <= patience:
        return False
    now, before = history[-1], history[-1 - patience]
    return bool(((before - now) <= tolerance * now.abs().clamp(min=tolerance)).all())
