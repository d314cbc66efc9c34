"""β: the split constraints of a domain as Lagrangian terms of the bound, optimized jointly with α.

A domain's split keeps z in [l', u'] on every input it bounds, so for any β_l, β_u >= 0

    f(x) >= f(x) - β_l (z(x) - l') - β_u (u' - z(x))      on the domain,

i.e. the coefficient reaching z gains (β_u - β_l) and the bias gains β_l l' - β_u u' (β-CROWN's
multipliers, on both ends of a general interval). Without β the linear term in z is minimized over the
whole input set, where z leaves [l', u']; with β the bound can use the split. Every β >= 0 gives a
sound bound, so the best bound seen during Adam is kept.
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.bounds.alpha import AlphaOptions, _initial_alphas
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.transfers.registry import Interval, Step


class SplitConstraint:
    """Wraps a split node's transfer: adds the β terms of its interval to the backward step."""

    def __init__(self, transfer, interval: Interval, beta_lower: torch.Tensor, beta_upper: torch.Tensor):
        self.transfer, self.interval = transfer, interval
        self.beta_lower, self.beta_upper = beta_lower, beta_upper

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return self.transfer.needs_bounds(step)

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        return self.transfer.ibp(step, intervals)

    def backward(self, step: Step, A: torch.Tensor):
        finite_lower, finite_upper = torch.isfinite(self.interval.lower), torch.isfinite(self.interval.upper)
        beta_lower = torch.where(finite_lower, self.beta_lower, 0.0)
        beta_upper = torch.where(finite_upper, self.beta_upper, 0.0)
        lower = torch.where(finite_lower, self.interval.lower, 0.0)
        upper = torch.where(finite_upper, self.interval.upper, 0.0)
        parts, terms = self.transfer.backward(step, A + beta_upper - beta_lower)
        own = beta_lower * lower - beta_upper * upper
        return parts, own if terms is None else terms + own


def optimize_alpha_beta(engine: BoundPropagation, target: fx.Node, A: torch.Tensor,
                        options: AlphaOptions | None = None) -> torch.Tensor:
    """The best lower bound of `A · target` ([specs, batch]) over α and the β of `engine.splits`.

    >>> import torch, opwise
    >>> from opwise.bounds.input_set import InputSet
    >>> model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Tanh())
    >>> with torch.no_grad(): _ = model[0].weight.fill_(1.0); _ = model[0].bias.zero_()
    >>> graph = opwise.trace(model, torch.zeros(1, 1))
    >>> z = next(n for n in graph.nodes if n.name == "linear")
    >>> engine = BoundPropagation(graph, InputSet(-torch.ones(1, 1), torch.ones(1, 1)),
    ...                           splits={z: Interval(torch.tensor([[0.5]]), torch.tensor([[1.0]]))})
    >>> bound = optimize_alpha_beta(engine, graph.output, torch.ones(1, 1, 1))
    >>> bool(bound > 0.4), bool(bound <= torch.tanh(torch.tensor(0.5)))
    (True, True)
    """
    options = options or AlphaOptions()
    engine.prepare(target)
    best = engine.backward(target, A).detach().clone()
    alphas = _initial_alphas(engine, target, A.shape[0])
    betas = []
    for node, interval in engine.splits.items():
        if node not in engine.ancestors(target):
            continue
        shape = (A.shape[0], *interval.lower.shape)
        pair = [torch.zeros(shape, dtype=A.dtype, device=A.device, requires_grad=True) for _ in range(2)]
        engine.step(node)
        engine.transfers[node] = SplitConstraint(engine.transfers[node], interval, *pair)
        betas += pair
    parameters = [t for pair in alphas.values() for t in (pair.lower, pair.upper) if t is not None] + betas
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
        with torch.no_grad():
            for beta in betas:
                beta.clamp_(min=0)
        for node, pair in alphas.items():
            x = engine.interval(engine.step(node).inputs[0])
            engine.step(node).relaxation.clamp_alpha(pair, x.lower, x.upper)
    for node in engine.splits:
        if isinstance(engine.transfers.get(node), SplitConstraint):
            engine.transfers[node] = engine.transfers[node].transfer
    return best
