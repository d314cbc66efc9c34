"""`verify`: is the model's prediction robust on an input set? A PGD attack first (a real counterexample
ends it), then incomplete bound propagation; branch-and-bound (bab/) completes the unknown cases.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from opwise.bounds.attack import pgd_attack
from opwise.bounds.bab.genbab import branch_and_bound
from opwise.bounds.bounded_model import METHODS, BoundedModel
from opwise.bounds.input_set import InputSet
from opwise.bounds.spec import Specification, robustness_disjuncts
from opwise.errors import InputError
from opwise.tracing import Graph
from opwise.tracing.fidelity import check_fidelity

#: what method="auto" tries, in order, until the property is verified
AUTO_METHODS = ("crown", "alpha-crown")


@dataclasses.dataclass
class VerificationResult:
    """`status`: "verified", "falsified" or "unknown". `margin_lower`: the proven lower bound of
    min_j (y_target − y_j) (None when falsified); `counterexample`: an input that a forward pass
    confirmed misclassified; `stats`: methods tried, seconds, attack margin."""

    status: str
    margin_lower: float | None
    counterexample: torch.Tensor | None
    target: int
    stats: dict


def verify(
    model: torch.nn.Module | Graph | BoundedModel,
    x: torch.Tensor,
    *,
    eps: float,
    target: int | None = None,
    norm: float = math.inf,
    method: str = "auto",
    timeout: float | None = None,
    domain: tuple[float, float] | None = None,
    bab: bool | dict = False,
) -> VerificationResult:
    """Verify that `target` (by default the model's prediction at x) stays the top output on the Lp
    ball of radius eps around x (one sample, batch 1), clipped to `domain`.

    `bab=True` (or a dict of `branch_and_bound` options) completes an L∞ case the bounds leave
    unknown by branch-and-bound (status then also "timeout"; its counts in `stats["bab"]`).

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> with torch.no_grad(): _ = model[0].weight.copy_(torch.eye(2)); _ = model[0].bias.zero_()
    >>> opwise.verify(model, torch.tensor([[1.0, 0.0]]), eps=0.1).status
    'verified'
    >>> result = opwise.verify(model, torch.tensor([[1.0, 0.0]]), eps=0.6)
    >>> result.status, bool(model(result.counterexample).argmax() != 0)
    ('falsified', True)
    """
    start = time.monotonic()
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() == 0 or x.shape[0] != 1:
        raise InputError(f"verify takes one sample with a batch dimension of 1, got shape {tuple(x.shape)}")
    if method != "auto" and method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose 'auto' or one of {', '.join(METHODS)}")
    bounded = model if isinstance(model, BoundedModel) else BoundedModel(model, x)
    check_fidelity(bounded, model, x)
    with torch.no_grad():
        output = bounded(x).reshape(1, -1)
    classes = output.shape[1]
    if target is None:
        target = int(output.argmax())
    if not 0 <= int(target) < classes:
        raise InputError(f"target {target} is out of range for {classes} outputs")
    target = int(target)
    # checks eps, norm, domain and shapes
    input_set = bounded.input_set(x, eps, norm, None, None, domain)
    stats: dict = {"methods": []}
    if math.isinf(norm):
        spec = Specification(input_set.lower, input_set.upper, robustness_disjuncts(classes, target))
        attack = pgd_attack(lambda z: bounded(z).reshape(z.shape[0], -1), spec, time_limit=timeout)
        stats["attack_margin"] = attack.margin
        if attack.found:
            stats["seconds"] = time.monotonic() - start
            return VerificationResult("falsified", None, attack.counterexample, target, stats)
    margin = -math.inf
    for name in AUTO_METHODS if method == "auto" else (method,):
        if timeout is not None and time.monotonic() - start > timeout:
            break
        bounds = bounded.compute_bounds(x, eps=eps, norm=norm, method=name, target=target, domain=domain, bound_upper=False)
        margin = max(margin, float(bounds.lower.min()))
        stats["methods"].append(name)
        if margin > 0:
            break
    if bab and margin <= 0 and math.isinf(norm):
        options = {"timeout": 60.0 if timeout is None else max(0.0, timeout - (time.monotonic() - start)),
                   **(bab if isinstance(bab, dict) else {})}
        result = branch_and_bound(bounded, spec, **options)
        stats["bab"], stats["seconds"] = result.stats, time.monotonic() - start
        return VerificationResult(result.status, result.margin_lower, result.counterexample, target, stats)
    stats["seconds"] = time.monotonic() - start
    return VerificationResult("verified" if margin > 0 else "unknown", margin, None, target, stats)
