"""α-CROWN: optimise the relaxations' free parameters (α) by Adam.

α is one tensor per relaxed node and specification ([specs, *node shape]), starting at CROWN's choice;
every bound computed along the way is valid, so the best one seen per sample and specification is
kept and the result is never looser than CROWN.

`optimize_alpha` optimises the α of the final bound only (intermediate bounds stay as the engine has
them: cheap, what branch-and-bound calls per domain). `optimize_bounds` is α-CROWN as in auto_LiRPA
(Xu et al. 2021): every intermediate bound a relaxation needs gets its own α set too, and all of them
are optimised jointly through the whole chain (opwise/bounds/strategies/alpha_chain.py).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import fx

from opwise.bounds.engine import BoundPropagation
from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.relaxations.sparse_alpha import SparseAlpha
from opwise.bounds.transfers.nonlinear import ELEMENTWISE
from opwise.bounds.transfers.registry import Interval
from opwise.progress import Progress


@dataclasses.dataclass
class AlphaOptions:
    """Adam steps, learning rate, and the early stop: stop after `patience` steps without a relative
    improvement of the summed bound larger than `tolerance`."""

    iterations: int = 20
    #: Adam's step for α in the input's units: tangent points, support-line slopes, bilinear weights
    learning_rate: float = 0.1
    #: Adam's step for the slopes of piecewise-linear activations (ReLU, leaky ReLU, hardtanh), which lie
    #: between two piece slopes (in [0, 1] for ReLU), as auto_LiRPA's default for ReLU α; None: `learning_rate`
    slope_learning_rate: float | None = 0.5
    patience: int = 4
    tolerance: float = 1e-5
    #: the learning rate is multiplied by this after every step
    lr_decay: float = 0.98
    #: optimise the intermediate bounds' α too (`optimize_bounds`); False: the final bound's α only
    intermediate: bool = True
    #: largest number of intermediate α values stored (summed over nodes and specs; `SparseAlpha` stores only the
    #: neurons α changes a line of); nodes past it keep CROWN's bounds
    max_intermediate_alpha: int = 50_000_000
    #: stop once every lower bound exceeds this (a verification threshold, a number or a tensor that
    #: broadcasts against the bound [specs, batch]: nothing left to gain); None: never
    stop_above: float | torch.Tensor | None = None
    #: stop after this many seconds (wall clock); None: no limit
    time_limit: float | None = None


def initial_alphas(engine: BoundPropagation, target: fx.Node, specs: int, sparse: bool = False,
                   limit: int | None = None) -> dict[fx.Node, AlphaPair] | None:
    """CROWN's α ([specs, *node shape], leaves that require grad) of every relaxed node `target` depends on.

    `sparse`: where the relaxation names the neurons its lines depend on, α is a `SparseAlpha` holding those
    neurons' entries only (a node with none gets no α: its lines do not depend on it); what an intermediate
    bound's α takes, whose specs are as many as the node's unstable neurons. `limit`: None (nothing stored)
    where the α would take more values than this; counted before any is stored.
    """
    if limit is not None and _alpha_count(engine, target, specs, sparse) > limit:
        return None
    alphas = {}
    for node, relaxation, x, stored_sparsely in _relaxed_nodes(engine, target, sparse):
        if stored_sparsely:
            alpha = SparseAlpha.around(relaxation, x.lower, x.upper, specs)
            if alpha is not None and alpha.size():
                alphas[node] = alpha
            continue
        pair = relaxation.init_alpha(x.lower, x.upper)
        if pair is None:
            continue
        expand = lambda t: None if t is None else t.detach().expand(specs, *t.shape).clone().requires_grad_(True)  # noqa: E731
        alphas[node] = AlphaPair(expand(pair.lower), expand(pair.upper))
    return alphas


def _relaxed_nodes(engine: BoundPropagation, target: fx.Node, sparse: bool):
    """(node, relaxation, input interval, whether its α is a `SparseAlpha`) for every node before `target` whose
    relaxation has α."""
    for node in engine.ancestors(target):
        if node is engine.input_node:
            continue
        step = engine.step(node)
        relaxation = step.relaxation
        if relaxation is None or not hasattr(relaxation, "init_alpha"):
            continue
        x = engine.interval(step.inputs[0])
        yield node, relaxation, x, (sparse and engine.transfer(node) is ELEMENTWISE
                                    and SparseAlpha.applies(relaxation, tuple(x.lower.shape)))


def _alpha_count(engine: BoundPropagation, target: fx.Node, specs: int, sparse: bool) -> int:
    """How many values `initial_alphas` would store (nothing allocated but each node's own lines)."""
    total = 0
    for _, relaxation, x, stored_sparsely in _relaxed_nodes(engine, target, sparse):
        if stored_sparsely:
            total += SparseAlpha.count(relaxation, x.lower, x.upper, specs)
            continue
        pair = relaxation.init_alpha(x.lower, x.upper)
        if pair is not None:
            total += sum(specs * t.numel() for t in (pair.lower, pair.upper) if t is not None)
    return total


def optimize_alpha(engine: BoundPropagation, target: fx.Node, A: torch.Tensor, options: AlphaOptions | None = None,
                   initial: torch.Tensor | None = None, progress: Progress | None = None) -> torch.Tensor:
    """The best lower bound of `A · target` over α ([specs, batch]); `initial` is CROWN's bound if known.
    `progress` is told of every Adam step (see `maximize`).

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
    alphas = initial_alphas(engine, target, A.shape[0])
    parameters = parameter_groups(engine, [alphas], options)
    if not parameters:
        return best

    def bound() -> torch.Tensor:
        clamp_alphas(engine, alphas)
        return engine.backward(target, A, alphas=alphas)

    return maximize(bound, parameters, options, best, progress)


def parameter_groups(engine: BoundPropagation, alpha_sets: list[dict[fx.Node, AlphaPair]],
                     options: AlphaOptions, betas: dict[fx.Node, AlphaPair] | None = None) -> list[dict]:
    """Adam's parameter groups over every α of `alpha_sets` and every β: piecewise-linear activations'
    slopes at `slope_learning_rate`, the rest (α in input units, β) at `learning_rate`; empty when there
    is nothing to optimise."""
    slopes, others = [], [t for pair in (betas or {}).values() for t in (pair.lower, pair.upper)]
    for alphas in alpha_sets:
        for node, pair in alphas.items():
            relaxation = engine.step(node).relaxation
            group = slopes if getattr(relaxation, "piecewise_linear", False) else others
            group.extend(t for t in (pair.lower, pair.upper) if t is not None)
    slope_rate = options.learning_rate if options.slope_learning_rate is None else options.slope_learning_rate
    return [group for group in ({"params": slopes, "lr": slope_rate}, {"params": others, "lr": options.learning_rate})
            if group["params"]]


def maximize(bound, parameters: list[torch.Tensor] | list[dict], options: AlphaOptions, best: torch.Tensor | None,
             progress: Progress | None = None) -> torch.Tensor:
    """Projected Adam ascent shared by every α optimisation: `bound()` projects the parameters (tensors, or
    Adam's parameter groups) into their valid range and returns a (differentiable) lower bound; the
    elementwise best seen (and `best`, a bound known already; None: none, the first `bound()` is evaluated
    whatever the options) is returned. The last bound is not differentiated (no step would use its gradient),
    so the parameters end as they were for it. After every step `progress` (if given) gets {"search": "alpha-crown",
    "iteration", "iterations", "lower": the worst of the best bounds so far, "seconds": since the start}.

    >>> x = torch.zeros(1, requires_grad=True)
    >>> reports = []
    >>> best = maximize(lambda: -(x - 1) ** 2, [x], AlphaOptions(iterations=3, patience=3), torch.full((1,), -1.0),
    ...                 reports.append)
    >>> [r["iteration"] for r in reports], reports[-1]["lower"] == float(best), reports[0]["iterations"]
    ([1, 2, 3], True, 3)
    """
    if best is not None and options.stop_above is not None and bool((best > options.stop_above).all()):
        return best  # already proved (the CROWN bound it starts from): a step would cost a whole α pass
    optimizer = torch.optim.Adam(parameters, lr=options.learning_rate, foreach=True)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, options.lr_decay)
    stop = None if best is None else EarlyStop(options, best)
    start = time.monotonic()
    for iteration in range(1, max(options.iterations, 1 if best is None else 0) + 1):
        lower = bound()
        best = lower.detach() if best is None else torch.fmax(best, lower.detach())  # a NaN step keeps the best
        stop = stop or EarlyStop(options, best)
        if progress is not None:
            progress({"search": "alpha-crown", "iteration": iteration, "iterations": options.iterations,
                      "lower": float(best.min()), "seconds": time.monotonic() - start})
        if stop(best) or iteration >= options.iterations or not lower.requires_grad:
            break  # (no α reaches the bound: one behind an index or a comparison, whose lines are constants)
        optimizer.zero_grad()
        (-lower.sum()).backward()
        _drop_overflowed_gradients(optimizer)
        optimizer.step()
        schedule.step()
    return best


def _drop_overflowed_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Zero the gradient entries that are not finite, so Adam does not step those parameters this time. On extreme
    intervals a gradient can overflow float32 while every bound stays finite; Adam then makes α NaN, and every later
    step bounds NaN. The bounds are valid for any α in range, so skipping a step costs only the step. A guard: the
    case that showed it (a tiny MPNet at eps 0.05, 187 α tensors at every step) was the α chain's straight-through
    gradient at a variance pinned at 0 (see `alpha_chain._end`), and no longer reaches it.

    >>> x = torch.zeros(2, requires_grad=True)
    >>> optimizer = torch.optim.Adam([x])
    >>> torch.sqrt(x).sum().backward()  # d sqrt / dx at 0 is inf
    >>> _drop_overflowed_gradients(optimizer); x.grad
    tensor([0., 0.])
    """
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is not None:
                torch.nan_to_num_(parameter.grad, nan=0.0, posinf=0.0, neginf=0.0)


class EarlyStop:
    """True after `patience` calls without a relative improvement of the summed best bound above `tolerance`,
    once every bound is above `stop_above`, or past `time_limit`."""

    def __init__(self, options: AlphaOptions, best: torch.Tensor):
        self.options, self.reference, self.stale = options, float(best.sum()), 0
        self.deadline = None if options.time_limit is None else time.monotonic() + options.time_limit

    def __call__(self, best: torch.Tensor) -> bool:
        if self.options.stop_above is not None and bool((best > self.options.stop_above).all()):
            return True
        if self.deadline is not None and time.monotonic() > self.deadline:
            return True
        total = float(best.sum())
        if total - self.reference > self.options.tolerance * max(abs(self.reference), 1.0):
            self.reference, self.stale = total, 0
        else:
            self.stale += 1
        return self.stale >= self.options.patience


def clamp_alphas(engine: BoundPropagation, alphas: dict[fx.Node, AlphaPair]) -> None:
    """Project every α into the range where its lines are sound on the node's current input interval."""
    for node, pair in alphas.items():
        x = engine.interval(engine.step(node).inputs[0])
        if isinstance(pair, SparseAlpha):
            x = Interval(pair.at(x.lower), pair.at(x.upper))
        engine.step(node).relaxation.clamp_alpha(pair, x.lower, x.upper)
