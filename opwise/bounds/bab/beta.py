"""β: the split constraints of a domain as Lagrangian terms of the bound, optimized jointly with α.

A domain's split keeps z in [l', u'] on every input it bounds, so for any β_l, β_u >= 0

    f(x) >= f(x) - β_l (z(x) - l') - β_u (u' - z(x))      on the domain,

i.e. the coefficient reaching z gains (β_u - β_l) and the bias gains β_l l' - β_u u' (β-CROWN's
multipliers, on both ends of a general interval). Without β the linear term in z is minimized over the
whole input set, where z leaves [l', u']; with β the bound can use the split. Every β >= 0 gives a
sound bound, so the best bound seen during Adam is kept. β is optimized with α by one projected Adam:
each split node's step carries its β pair where a nonlinear node carries α. Children start from their
parent's α and β (a warm start: every α in range and every β >= 0 is sound), and Adam stops at the
search's deadline.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import fx

from opwise.bounds.alpha import AlphaOptions, maximize, parameter_groups
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


#: per node name, the α (or β) pair of one or more domains: [specs, domains, *node shape] (None: fixed line)
Parameters = dict[str, AlphaPair]


def optimize_alpha_beta(engine: BoundPropagation, target: fx.Node, A: torch.Tensor,
                        options: AlphaOptions | None = None, *, warm: Parameters | None = None,
                        deadline: float | None = None) -> tuple[torch.Tensor, Parameters]:
    """The best lower bound of `A · target` ([specs, batch]) over α and the β of `engine.splits`, and
    the α and β it ended with (per node name, detached).

    `warm` starts α and β where a parent domain's search ended (projected into the child's ranges; any
    α in range and any β >= 0 is sound, so a warm start only changes where Adam begins); nodes it
    lacks start at CROWN's α and β = 0. Adam stops at `deadline` (time.monotonic()), keeping the best
    bound seen.

    >>> import torch, opwise
    >>> from opwise.bounds.input_set import InputSet
    >>> model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Tanh())
    >>> with torch.no_grad(): _ = model[0].weight.fill_(1.0); _ = model[0].bias.zero_()
    >>> graph = opwise.trace(model, torch.zeros(1, 1))
    >>> z = next(n for n in graph.nodes if n.name == "linear")
    >>> engine = BoundPropagation(graph, InputSet(-torch.ones(1, 1), torch.ones(1, 1)),
    ...                           splits={z: Interval(torch.tensor([[0.5]]), torch.tensor([[1.0]]))})
    >>> bound, parameters = optimize_alpha_beta(engine, graph.output, torch.ones(1, 1, 1))
    >>> bool(bound > 0.4), bool(bound <= torch.tanh(torch.tensor(0.5))), sorted(parameters)
    (True, True, ['linear', 'tanh'])
    """
    options = options or AlphaOptions()
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
        return _adam(engine, target, A, options, warm or {}, deadline)
    finally:
        for node, (transfer, relaxation) in saved.items():
            engine.transfers[node], engine.step(node).relaxation = transfer, relaxation


def _adam(engine: BoundPropagation, target: fx.Node, A: torch.Tensor, options: AlphaOptions,
          warm: Parameters, deadline: float | None) -> tuple[torch.Tensor, Parameters]:
    """Projected Adam on the summed bound over every α and β, best bound per spec and sample kept."""
    alphas = _initial(engine, target, A.shape[0], warm)
    best = engine.backward(target, A, alphas=alphas).detach()
    parameters = parameter_groups(engine, [alphas], options)
    if parameters:
        if deadline is not None:
            options = dataclasses.replace(options, time_limit=max(0.0, deadline - time.monotonic()))

        def bound() -> torch.Tensor:
            _clamp(engine, alphas)
            return engine.backward(target, A, alphas=alphas)

        best = maximize(bound, parameters, options, best)
    ended = {node.name: AlphaPair(*(None if t is None else t.detach() for t in (pair.lower, pair.upper)))
             for node, pair in alphas.items()}
    return best, ended


def _initial(engine: BoundPropagation, target: fx.Node, specs: int, warm: Parameters) -> dict[fx.Node, AlphaPair]:
    """α and β per relaxed node: the warm start where given (same shapes), else the relaxation's start."""
    alphas = {}
    for node in engine.ancestors(target):
        if node is engine.input_node:
            continue
        relaxation = engine.step(node).relaxation
        if relaxation is None or not hasattr(relaxation, "init_alpha"):
            continue
        x = _relaxed_interval(engine, node)
        pair = warm.get(node.name)
        if pair is None:
            start = relaxation.init_alpha(x.lower, x.upper)
            if start is None:
                continue
            pair = AlphaPair(*(None if t is None else t.expand(specs, *t.shape) for t in (start.lower, start.upper)))
        alphas[node] = AlphaPair(*(None if t is None else t.detach().clone().requires_grad_(True)
                                   for t in (pair.lower, pair.upper)))
    _clamp(engine, alphas)
    return alphas


def _clamp(engine: BoundPropagation, alphas: dict[fx.Node, AlphaPair]) -> None:
    for node, pair in alphas.items():
        x = _relaxed_interval(engine, node)
        engine.step(node).relaxation.clamp_alpha(pair, x.lower, x.upper)


def _relaxed_interval(engine: BoundPropagation, node: fx.Node) -> Interval:
    """The interval a node's relaxation is taken on (none for β, whose range does not depend on one)."""
    step = engine.step(node)
    if isinstance(step.relaxation, Multipliers):
        return Interval(None, None)
    return engine.interval(step.inputs[0])
