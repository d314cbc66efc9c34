"""β: the split constraints of a domain as Lagrangian terms of the bound, optimized jointly with α.

The engine applies a split's constraint in a pass given its multipliers β (opwise/bounds/engine/splits.py,
β-CROWN's multipliers on both ends of a general interval). Products of two bounded tensors get an α per
side too (the weight of McCormick's two planes, relaxations/bilinear.py), so a product's split can move
its planes. Every β >= 0 gives a sound bound, so the best
bound seen during Adam is kept. β is optimized with α by one projected Adam. Children start from their
parent's α and β (a warm start: every α in range and every β >= 0 is sound), and Adam stops at the
search's deadline.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import fx

from opwise.bounds.strategies.alpha import AlphaOptions, clamp_alphas, maximize, parameter_groups
from opwise.bounds.engine import BoundPropagation, LinearBound
from opwise.bounds.engine.splits import clamp_betas, initial_betas
from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.relaxations.bilinear import clamp_bilinear_alpha, init_bilinear_alpha

#: the key prefix of a split node's β in `Parameters` (α is keyed by the relaxed node's name alone)
BETA = "beta:"


#: per node name (β: `BETA` + the split node's name), the α or β pair of one or more domains:
#: [specs, domains, *node shape] (None: fixed line)
Parameters = dict[str, AlphaPair]


def optimize_alpha_beta(engine: BoundPropagation, target: fx.Node, A: torch.Tensor,
                        options: AlphaOptions | None = None, *, warm: Parameters | None = None,
                        deadline: float | None = None) -> tuple[torch.Tensor, Parameters, LinearBound]:
    """The best lower bound of `A · target` ([specs, batch]) over α and the β of the engine's splits, and
    the α and β it ended with (per node name, β's prefixed by `BETA`; detached), and the last pass's linear
    bound (its input coefficients and recorded coefficients guide branching).

    `warm` starts α and β where a parent domain's search ended (projected into the child's ranges; any
    α in range and any β >= 0 is sound, so a warm start only changes where Adam begins); nodes it
    lacks start at CROWN's α and β = 0. Adam stops at `deadline` (time.monotonic()), keeping the best
    bound seen.

    >>> import torch, opwise
    >>> from opwise.bounds.input_set import InputSet
    >>> from opwise.bounds.transfers.registry import Interval
    >>> model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Tanh())
    >>> with torch.no_grad(): _ = model[0].weight.fill_(1.0); _ = model[0].bias.zero_()
    >>> graph = opwise.trace(model, torch.zeros(1, 1))
    >>> z = next(n for n in graph.nodes if n.name == "linear")
    >>> engine = BoundPropagation(graph, InputSet(-torch.ones(1, 1), torch.ones(1, 1)),
    ...                           splits={z: Interval(torch.tensor([[0.5]]), torch.tensor([[1.0]]))})
    >>> bound, parameters, _ = optimize_alpha_beta(engine, graph.output, torch.ones(1, 1, 1))
    >>> bool(bound > 0.4), bool(bound <= torch.tanh(torch.tensor(0.5))), sorted(parameters)
    (True, True, ['beta:linear', 'tanh'])
    """
    options = options or AlphaOptions()
    return _adam(engine, target, A, options, warm or {}, deadline)


def _adam(engine: BoundPropagation, target: fx.Node, A: torch.Tensor, options: AlphaOptions,
          warm: Parameters, deadline: float | None) -> tuple[torch.Tensor, Parameters, LinearBound]:
    """Projected Adam on the summed bound over every α and β, best bound per spec and sample kept."""
    alphas, betas = _initial(engine, target, A.shape[0], warm)
    parameters = parameter_groups(engine, [alphas], options, betas)
    if not parameters or options.iterations < 1:
        last = engine.bound(target, A, alphas=alphas, betas=betas)
        best = last.lower.detach()
    else:  # Adam's first bound is the start's (α and β are in range already)
        if deadline is not None:
            options = dataclasses.replace(options, time_limit=max(0.0, deadline - time.monotonic()))

        def bound() -> torch.Tensor:
            nonlocal last
            _clamp(engine, alphas, betas)
            last = engine.bound(target, A, alphas=alphas, betas=betas)
            return last.lower

        best = maximize(bound, parameters, options, None)
    detached = lambda pair: AlphaPair(*(None if t is None else t.detach() for t in (pair.lower, pair.upper)))  # noqa: E731
    ended = {node.name: detached(pair) for node, pair in alphas.items()}
    ended.update({BETA + node.name: detached(pair) for node, pair in betas.items()})
    return best, ended, last


def _initial(engine: BoundPropagation, target: fx.Node, specs: int,
             warm: Parameters) -> tuple[dict[fx.Node, AlphaPair], dict[fx.Node, AlphaPair]]:
    """α per relaxed node and β per split node: the warm start where given (same shapes), else the
    relaxation's start and β = 0."""
    leaf = lambda pair: AlphaPair(*(None if t is None else t.detach().clone().requires_grad_(True)  # noqa: E731
                                    for t in (pair.lower, pair.upper)))
    alphas = {}
    for node in engine.ancestors(target):
        if node is engine.input_node:
            continue
        relaxation = engine.step(node).relaxation
        product = _is_product(engine, node)
        if not product and (relaxation is None or not hasattr(relaxation, "init_alpha")):
            continue
        pair = warm.get(node.name)
        if pair is None:
            if product:
                x, y = (engine.interval(factor) for factor in node.args[:2])
                start = init_bilinear_alpha(x.lower, x.upper, y.lower, y.upper)
            else:
                x = engine.interval(engine.step(node).inputs[0])
                start = relaxation.init_alpha(x.lower, x.upper)
            if start is None:
                continue
            pair = AlphaPair(*(None if t is None else t.expand(specs, *t.shape) for t in (start.lower, start.upper)))
        alphas[node] = leaf(pair)
    betas = {node: leaf(warm.get(BETA + node.name) or initial_betas(engine.split(node), specs))
             for node in engine.split_nodes(target)}
    _clamp(engine, alphas, betas)
    return alphas, betas


def _is_product(engine: BoundPropagation, node: fx.Node) -> bool:
    """Whether the node is a product of two bounded tensors (its McCormick planes have an α each side)."""
    return engine.step(node).op == "aten.mul.Tensor" and bool(engine.transfer(node).needs_bounds(engine.step(node)))


def _clamp(engine: BoundPropagation, alphas: dict[fx.Node, AlphaPair], betas: dict[fx.Node, AlphaPair]) -> None:
    """Project α into its sound range on the current intervals (a product's plane weights into [0, 1]) and β
    onto β >= 0."""
    for node, pair in alphas.items():
        if _is_product(engine, node):
            clamp_bilinear_alpha(pair)
    clamp_alphas(engine, {node: pair for node, pair in alphas.items() if not _is_product(engine, node)})
    for pair in betas.values():
        clamp_betas(pair)
