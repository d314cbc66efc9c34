"""α-CROWN: optimise the relaxations' free parameters (α) by Adam on the final bound.

α is one tensor per relaxed node and specification ([specs, *node shape]), starting at CROWN's choice;
every bound computed along the way is valid, so the best one seen per sample and specification is
kept and the result is never looser than CROWN.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import fx

from opwise.bounds.engine import BoundPropagation
from opwise.bounds.relaxations.base import AlphaPair


@dataclasses.dataclass
class AlphaOptions:
    """Adam steps, learning rate, and the early stop: stop after `patience` steps without a relative
    improvement of the summed bound larger than `tolerance`."""

    iterations: int = 20
    learning_rate: float = 0.1
    patience: int = 4
    tolerance: float = 1e-4


def _initial_alphas(engine: BoundPropagation, target: fx.Node, specs: int) -> dict[fx.Node, AlphaPair]:
    alphas = {}
    for node in engine.ancestors(target):
        if node is engine.input_node:
            continue
        step = engine.step(node)
        relaxation = step.relaxation
        if relaxation is None or not hasattr(relaxation, "init_alpha"):
            continue
        x = engine.interval(step.inputs[0])
        pair = relaxation.init_alpha(x.lower, x.upper)
        if pair is None:
            continue
        expand = lambda t: None if t is None else t.detach().expand(specs, *t.shape).clone().requires_grad_(True)  # noqa: E731
        alphas[node] = AlphaPair(expand(pair.lower), expand(pair.upper))
    return alphas


def optimize_alpha(engine: BoundPropagation, target: fx.Node, A: torch.Tensor, options: AlphaOptions | None = None,
                   initial: torch.Tensor | None = None) -> torch.Tensor:
    """The best lower bound of `A · target` over α ([specs, batch]); `initial` is CROWN's bound if known.

    >>> import torch, opwise
    >>> from opwise.bounds.input_set import InputSet
    >>> _ = torch.manual_seed(0); model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> graph = opwise.trace(model, torch.zeros(1, 2))
    >>> engine = BoundPropagation(graph, InputSet.ball(torch.zeros(1, 2), 1.0))
    >>> crown = engine.backward(graph.output, torch.ones(1, 1, 1))
    >>> bool((optimize_alpha(engine, graph.output, torch.ones(1, 1, 1)) >= crown).all())
    True
    """
    options = options or AlphaOptions()
    best = (engine.backward(target, A) if initial is None else initial).detach().clone()
    alphas = _initial_alphas(engine, target, A.shape[0])
    parameters = [t for pair in alphas.values() for t in (pair.lower, pair.upper) if t is not None]
    if not parameters:
        return best
    optimizer = torch.optim.Adam(parameters, lr=options.learning_rate)
    reference, stale = float(best.sum()), 0
    for _ in range(options.iterations):
        lower = engine.backward(target, A, alphas=alphas)
        best = torch.maximum(best, lower.detach())
        total = float(best.sum())
        if total - reference > options.tolerance * max(abs(reference), 1.0):
            reference, stale = total, 0
        else:
            stale += 1
            if stale >= options.patience:
                break
        optimizer.zero_grad()
        (-lower.sum()).backward()
        optimizer.step()
        for node, pair in alphas.items():
            x = engine.interval(engine.step(node).inputs[0])
            engine.step(node).relaxation.clamp_alpha(pair, x.lower, x.upper)
    return best
