"""β: the split constraints of a domain as Lagrangian terms of the bound, optimized jointly with α.

A domain's split keeps z in [l', u'] on every input it bounds, so for any β_l, β_u >= 0

    f(x) >= f(x) - β_l (z(x) - l') - β_u (u' - z(x))      on the domain,

i.e. the coefficient reaching z gains (β_u - β_l) and the bias gains β_l l' - β_u u' (β-CROWN's
multipliers, on both ends of a general interval). Without β the linear term in z is minimized over the
whole input set, where z leaves [l', u']; with β the bound can use the split. Every β >= 0 gives a
sound bound, so the best bound seen during Adam is kept. β rides on α-CROWN's optimizer: while the
bound is optimized, each split node's step carries its β pair where a nonlinear node carries α.
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.bounds.alpha import AlphaOptions, optimize_alpha
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.transfers.registry import Interval, Step


class SplitConstraint:
    """Wraps a split node's transfer: adds the β terms of its interval (β = the step's α pair) backward."""

    def __init__(self, transfer, interval: Interval):
        self.transfer = transfer
        self.lower_finite, self.upper_finite = torch.isfinite(interval.lower), torch.isfinite(interval.upper)
        self.lower = torch.where(self.lower_finite, interval.lower, 0.0)
        self.upper = torch.where(self.upper_finite, interval.upper, 0.0)

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return self.transfer.needs_bounds(step)

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        return self.transfer.ibp(step, intervals)

    def backward(self, step: Step, A: torch.Tensor):
        if step.alpha is None:
            return self.transfer.backward(step, A)
        beta_lower = torch.where(self.lower_finite, step.alpha.lower, 0.0)
        beta_upper = torch.where(self.upper_finite, step.alpha.upper, 0.0)
        parts, terms = self.transfer.backward(step, A + beta_upper - beta_lower)
        own = beta_lower * self.lower - beta_upper * self.upper
        return parts, own if terms is None else terms + own


class Multipliers:
    """The β pair of one split node posing as its step's relaxation parameters, so that α-CROWN's
    optimizer (opwise.bounds.alpha) optimizes them with the α (one per spec): zero at start, kept >= 0."""

    def __init__(self, shape: torch.Size, like: torch.Tensor):
        self.shape, self.like = shape, like

    def init_alpha(self, lower: torch.Tensor, upper: torch.Tensor) -> AlphaPair:
        zeros = torch.zeros(self.shape, dtype=self.like.dtype, device=self.like.device)
        return AlphaPair(zeros, zeros.clone())

    def clamp_alpha(self, alpha: AlphaPair, lower: torch.Tensor, upper: torch.Tensor) -> AlphaPair:
        with torch.no_grad():
            alpha.lower.clamp_(min=0)
            alpha.upper.clamp_(min=0)
        return alpha


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
    engine.prepare(target)
    saved = {}
    for node, interval in engine.splits.items():
        if node not in engine.ancestors(target) or node is engine.input_node:
            continue
        step = engine.step(node)
        saved[node] = (engine.transfers[node], step.relaxation)
        engine.transfers[node] = SplitConstraint(engine.transfers[node], interval)
        step.relaxation = Multipliers(interval.lower.shape, A)
    try:
        return optimize_alpha(engine, target, A, options)
    finally:
        for node, (transfer, relaxation) in saved.items():
            engine.transfers[node], engine.step(node).relaxation = transfer, relaxation
