"""`explain_counterexample`: relevance at an input and at a counterexample to it, side by side.

A verifier says *that* x′ breaks the prediction; the relevance change says *which* features the model
reads differently there, and the overlap with the perturbation says whether it is the features that moved.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch

from opwise.attribution import explain
from opwise.errors import InputError
from opwise.tracing.precision import as_float32


@dataclasses.dataclass
class CounterexampleExplanation:
    """Relevance of the true and the adversarial class at x and at x′ (each shaped like x, or [1, T] per token).

    `margin_at_x` / `margin_at_x_prime`: y_true − y_adversarial at each point; `top_changed`: indices
    (flattened) of the k features whose true-class relevance changed most; `top_perturbed`: the k
    features that moved most; `overlap`: the fraction of `top_changed` also in `top_perturbed`.
    """

    x: torch.Tensor
    x_prime: torch.Tensor
    true_class: int
    adversarial_class: int
    relevance_true_x: torch.Tensor
    relevance_true_x_prime: torch.Tensor
    relevance_adversarial_x: torch.Tensor
    relevance_adversarial_x_prime: torch.Tensor
    output_x: torch.Tensor
    output_x_prime: torch.Tensor
    conservation: torch.Tensor
    top_changed: torch.Tensor
    top_perturbed: torch.Tensor
    tokens: list[str] | None = None

    @property
    def perturbation(self) -> torch.Tensor:
        """x′ − x, per feature (per token: the largest absolute change of its embedding)."""
        change = self.x_prime - self.x
        return change.abs().amax(-1) if self.tokens is not None else change

    @property
    def difference(self) -> torch.Tensor:
        """True-class relevance at x′ minus at x: where the evidence for the true class moved."""
        return self.relevance_true_x_prime - self.relevance_true_x

    @property
    def margin_at_x(self) -> float:
        return float(self.output_x[0, self.true_class] - self.output_x[0, self.adversarial_class])

    @property
    def margin_at_x_prime(self) -> float:
        return float(self.output_x_prime[0, self.true_class] - self.output_x_prime[0, self.adversarial_class])

    @property
    def overlap(self) -> float:
        shared = set(self.top_changed.tolist()) & set(self.top_perturbed.tolist())
        return len(shared) / max(1, self.top_changed.numel())


def explain_counterexample(
    model: torch.nn.Module,
    x: torch.Tensor,
    x_prime: torch.Tensor,
    *,
    true_class: int | None = None,
    composite: Any = "epsilon-plus",
    k: int = 5,
    tokens: Sequence[str] | None = None,
) -> CounterexampleExplanation:
    """Explain `model` at x and at its counterexample x′ for the true class (default: the prediction at x)
    and for the class that wins at x′ (the runner-up at x′ if the true class still wins there).

    The default composite is `epsilon-plus`, not `epsilon-plus-flat`: the flat rule spreads a first dense
    layer's relevance evenly over the inputs, which erases the difference between x and x′ on MLPs.
    `tokens`: x is an embedding sequence [1, T, D]; relevance and perturbation are then summed / maxed
    over each token's embedding. `conservation` holds, per explained map, (input relevance sum,
    explained logit), as `Explanation.conservation` does.

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> with torch.no_grad(): _ = model[0].weight.copy_(torch.eye(2)); _ = model[0].bias.zero_()
    >>> c = opwise.explain_counterexample(model, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.4, 0.6]]), k=1)
    >>> c.true_class, c.adversarial_class, round(c.margin_at_x, 2), round(c.margin_at_x_prime, 2)
    (0, 1, 1.0, -0.2)
    >>> c.top_changed.tolist(), c.overlap
    ([0], 1.0)
    """
    x, x_prime = _checked(x, x_prime, tokens)
    if isinstance(model, torch.nn.Module):
        model = as_float32(model, "explanations")
    with torch.no_grad():
        output_x, output_x_prime = model(x).reshape(1, -1), model(x_prime).reshape(1, -1)
    classes = output_x.shape[1]
    true_class = int(output_x.argmax()) if true_class is None else int(true_class)
    if not 0 <= true_class < classes:
        raise InputError(f"true_class {true_class} is out of range for {classes} outputs")
    others = output_x_prime[0].clone()
    others[true_class] = -torch.inf
    adversarial_class = int(others.argmax()) if classes > 1 else true_class
    maps, conservation = [], []
    for cls in (true_class, adversarial_class):
        pair = []
        for point in (x, x_prime):  # one at a time: a model exported for batch 1 takes no batch of 2
            explanation = explain(model, point, target=cls, composite=composite)
            relevance = explanation.relevance if isinstance(explanation.relevance, torch.Tensor) else explanation.relevance[0]
            relevance = relevance.detach()
            conservation.append(explanation.conservation.detach())
            pair.append(relevance.sum(-1) if tokens is not None else relevance)
        maps.append(tuple(pair))
    (true_x, true_x_prime), (adversarial_x, adversarial_x_prime) = maps
    k = max(1, min(int(k), true_x.numel()))
    change = x_prime - x
    moved = change.abs().amax(-1) if tokens is not None else change.abs()
    return CounterexampleExplanation(
        x, x_prime, true_class, adversarial_class, true_x, true_x_prime, adversarial_x, adversarial_x_prime,
        output_x, output_x_prime, torch.cat(conservation),
        top_changed=(true_x_prime - true_x).abs().flatten().topk(k).indices,
        top_perturbed=moved.flatten().topk(k).indices,
        tokens=None if tokens is None else list(tokens),
    )


def _checked(x: torch.Tensor, x_prime: torch.Tensor, tokens: Sequence[str] | None) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x, dtype=torch.float32)
    x_prime = torch.as_tensor(x_prime, dtype=torch.float32)
    if x.dim() == 0 or x.shape[0] != 1:
        raise InputError(f"explain_counterexample takes one sample with a batch dimension of 1, got shape {tuple(x.shape)}")
    if x_prime.numel() != x.numel():
        raise InputError(f"x_prime must have as many values as x (one sample shaped {tuple(x.shape)}), got {tuple(x_prime.shape)}")
    if tokens is not None and (x.dim() != 3 or x.shape[1] != len(tokens)):
        raise InputError(f"with tokens, x must be an embedding sequence [1, T, D] with T = {len(tokens)}, got {tuple(x.shape)}")
    return x, x_prime.reshape(x.shape)
