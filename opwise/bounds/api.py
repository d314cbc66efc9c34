"""`compute_bounds`: the one-call form of BoundedModel for a model and an input set."""

from __future__ import annotations

import math

import torch

from opwise.bounds.bounded_model import BoundedModel, Bounds
from opwise.errors import InputError
from opwise.tracing import Graph


def compute_bounds(
    model: torch.nn.Module | Graph | BoundedModel,
    x: torch.Tensor | None = None,
    *,
    eps: float | None = None,
    norm: float = math.inf,
    method: str = "crown",
    C: torch.Tensor | None = None,
    target: int | torch.Tensor | None = None,
    x_lower: torch.Tensor | None = None,
    x_upper: torch.Tensor | None = None,
    domain: tuple[float, float] | None = None,
    device: str | torch.device | None = None,
) -> Bounds:
    """Bounds on `C·model(x')` for every x' in the Lp ball of radius `eps` around `x` (or the box
    `[x_lower, x_upper]`), clipped to `domain` when given.

    `method`: "ibp", "crown", "crown-ibp" (IBP for intermediate bounds), "forward-crown" (forward-mode
    intermediate bounds), "alpha-crown" (α of every intermediate bound optimised too); auto_LiRPA's names
    ("CROWN", "backward", "CROWN-Optimized", ...) work too (`opwise.bounds.methods`). `C` is
    [specs, outputs] or [batch, specs, outputs]; `target` gives the margins `y_target - y_j` instead;
    with neither, the outputs themselves are bounded. Returns `Bounds` with `.lower`/`.upper` shaped
    [batch, specs]. For repeated calls on one model use `opwise.bounds.BoundedModel` (traces once).

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> with torch.no_grad(): _ = model[0].weight.copy_(torch.eye(2)); _ = model[0].bias.zero_()
    >>> b = opwise.compute_bounds(model, torch.tensor([[0.5, 0.5]]), eps=0.1, domain=(0, 0.55))
    >>> [[round(v, 4) for v in row] for row in b.lower.tolist()], [[round(v, 4) for v in row] for row in b.upper.tolist()]
    ([[0.4, 0.4]], [[0.55, 0.55]])
    """
    if isinstance(model, BoundedModel):
        bounded = model
    else:
        example = x if x is not None else x_lower
        if example is None:
            raise InputError("give x and eps, or both x_lower and x_upper")
        bounded = BoundedModel(model, torch.as_tensor(example, dtype=torch.float32), device=device)  # checks fidelity
    return bounded.compute_bounds(x, eps=eps, norm=norm, method=method, C=C, target=target,
                                  x_lower=x_lower, x_upper=x_upper, domain=domain)
