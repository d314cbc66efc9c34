"""Batched PGD over many boxes at once: one row per box, several restarts per row.

`opwise.bounds.attack.pgd_attack` searches one box; a certified map needs an attack per patch, so here
every patch's box is a batch row and all are attacked by the same forward/backward passes.
"""

from __future__ import annotations

import math

import torch

from opwise.bounds.attack import StraightThrough, input_gradient
from opwise.tracing.graph import model_device


def robust_margins(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """min_j≠target (y_target − y_j) per row, by a real forward pass (≤ 0: the prediction changed).

    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad(): _ = model.weight.copy_(torch.eye(2)); _ = model.bias.zero_()
    >>> robust_margins(model, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0).tolist()
    [1.0, -1.0]
    """
    y = model(x.to(model_device(model, x.device))).reshape(x.shape[0], -1)
    others = y.clone()
    others[:, target] = -torch.inf
    return (y[:, target] - others.amax(1)).to(x.device)


def attack_boxes(
    model: torch.nn.Module,
    lower: torch.Tensor,
    upper: torch.Tensor,
    target: int,
    *,
    steps: int = 30,
    restarts: int = 4,
    step_size: float = 0.25,
    seed: int = 0,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Search each box [lower[i], upper[i]] for an input the model does not classify as `target`.

    Returns (found [rows] bool, points [rows, ...]): a found point was confirmed by a forward pass and
    lies in its box; other rows hold the best point tried. Starts: the box centre, then uniform points;
    steps move by the sign of the margin's gradient, a cosine-decayed fraction of the box width.

    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad(): _ = model.weight.copy_(torch.eye(2)); _ = model.bias.zero_()
    >>> found, points = attack_boxes(model, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.5], [1.0, 1.5]]), 0)
    >>> found.tolist(), bool(points[1, 1] >= 1.0)
    ([False, True], True)
    """
    rows = lower.shape[0]
    generator = torch.Generator(device="cpu").manual_seed(seed)  # the same starts on every device
    found = torch.zeros(rows, dtype=torch.bool, device=lower.device)
    points = ((lower + upper) / 2).clone()
    device = model_device(model, lower.device)  # the attack runs where the model is; results come back
    for start in range(0, rows, chunk):
        part = slice(start, min(rows, start + chunk))
        f, p = _attack_chunk(model, lower[part].to(device), upper[part].to(device), target, steps, restarts, step_size,
                             generator)
        found[part], points[part] = f.to(found.device), p.to(points.device)
    return found, points


def _attack_chunk(model, lower, upper, target, steps, restarts, step_size, generator):
    rows = lower.shape[0]
    width = upper - lower
    lower_r, upper_r, width_r = (t.repeat(restarts, *[1] * (t.dim() - 1)) for t in (lower, upper, width))
    noise = torch.rand(lower_r.shape, generator=generator, dtype=lower.dtype).to(lower.device)
    noise[:rows] = 0.5
    x = lower_r + width_r * noise
    best_margin = torch.full((rows,), math.inf, device=lower.device)
    best_x = ((lower + upper) / 2).clone()
    for step in range(steps + 1):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad(), StraightThrough():
            margins = robust_margins(model, x, target)
        gradient = input_gradient(margins.sum(), x) if step < steps else None
        per_row = margins.detach().reshape(restarts, rows)
        value, which = per_row.min(0)
        better = value < best_margin
        candidates = x.detach().reshape(restarts, rows, *x.shape[1:])[which, torch.arange(rows, device=which.device)]
        best_margin = torch.where(better, value, best_margin)
        best_x[better] = candidates[better]
        if gradient is None or bool((best_margin <= 0).all()):
            break
        scale = step_size * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = torch.max(torch.min(x.detach() - scale * width_r * gradient.sign(), upper_r), lower_r)
    best_x = torch.max(torch.min(best_x, upper), lower)
    with torch.no_grad():
        confirmed = robust_margins(model, best_x, target) <= 0
    return confirmed, best_x
