"""α-CROWN through the whole chain: every intermediate bound gets its own α, optimised with the final one.

A relaxation's lines depend on its input's interval, and that interval is itself a CROWN bound whose
relaxations have α. As in auto_LiRPA, each intermediate node S whose interval a relaxation needs gets
one α set per relaxed node before it and per spec of S (2 per refined neuron: lower and upper), stored
at the neurons whose lines depend on it (`SparseAlpha`: a convolution's bounds would take hundreds of
millions of values densely), and one Adam step moves all of them: the gradient of the final bound flows back through every intermediate
interval into the α that produced it. Each pass recomputes the intervals in topological order, each
intersected with CROWN's (so nothing gets looser than CROWN); every interval and final bound of every
step is sound, so the best seen per neuron and per spec is kept, and the engine ends holding the best
intervals (later passes, e.g. branch-and-bound, start from them).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import fx

from opwise.bounds.strategies.alpha import AlphaOptions, clamp_alphas, initial_alphas, maximize, optimize_alpha, parameter_groups
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.transfers.nonlinear import ELEMENTWISE
from opwise.bounds.transfers.registry import Interval
from opwise.progress import Progress


@dataclasses.dataclass
class IntermediateBound:
    """One intermediate node refined with its own α: CROWN's interval, the refined positions, the best so far.

    An elementwise relaxed node (a ReLU's output that max pooling asks for) has no α of its own (`alphas`
    empty): its own relaxation cannot beat f applied to its input's interval, so it is recomputed that way; so
    is a copy of its input's elements (`BoundPropagation.copies_input`), whose bound is its input's.
    """

    node: fx.Node
    crown: Interval
    selected: torch.Tensor
    alphas: dict[fx.Node, AlphaPair]
    best: Interval
    #: CROWN's interval with the refined positions opened to ±inf (what a fresh bound of them is met with)
    open: Interval | None = None


def _alpha_size(alphas: dict[fx.Node, AlphaPair]) -> int:
    return sum(t.numel() for pair in alphas.values() for t in (pair.lower, pair.upper) if t is not None)


def intermediate_bounds(engine: BoundPropagation, target: fx.Node, budget: int) -> list[IntermediateBound]:
    """The intermediate nodes on the way to `target` whose CROWN interval has α to optimise, in topological
    order, while their α fit in `budget` values; refined positions are those still unstable after CROWN."""
    chosen = []
    for node in engine.ancestors(target):
        crown = engine.known_interval(node)
        if node is target or node is engine.input_node or crown is None:
            continue
        if engine.transfer(node) is ELEMENTWISE or engine.copies_input(node):
            chosen.append(IntermediateBound(node, crown, crown.lower.new_zeros(0, dtype=torch.long), {}, crown))
            continue
        selected = engine.neurons_to_refine(node, crown, engine.groups(node, crown))
        if not selected.numel():
            continue
        alphas = initial_alphas(engine, node, 2 * selected.numel(), sparse=True, limit=budget)
        if not alphas:  # none to optimise, or more than the budget leaves
            continue
        size = _alpha_size(alphas)
        budget -= size
        groups, infinity = engine.groups(node, crown), float("inf")
        lower, upper = crown.lower.clone(memory_format=torch.contiguous_format), crown.upper.clone(memory_format=torch.contiguous_format)
        lower.view(groups, -1)[:, selected], upper.view(groups, -1)[:, selected] = -infinity, infinity
        chosen.append(IntermediateBound(node, crown, selected, alphas, crown, Interval(lower, upper)))
    return chosen


def _end(raw: torch.Tensor, best: torch.Tensor, sign: float, undefined: torch.Tensor | None) -> torch.Tensor:
    """One end of a link's interval: the tighter of `raw` and `best` (sign 1: lower ends, the larger; −1: upper
    ends), with the gradient of `raw` where raw is the tighter one, or looser but inside the domain of the node's
    relaxations (`undefined`: where some consumer's function is not finite at raw). There the gradient is
    straight-through, as in auto_LiRPA, whose intermediate bounds are not intersected, so a neuron where an earlier
    interval is still tighter keeps steering its α (on a ReLU net a layer's IBP end often beats its CROWN end;
    cutting the gradient there took mnist_fc 256x2 prop_10_0.05 from 4,100 domains to a timeout). Outside the
    domain auto_LiRPA's relaxation clamps its input and passes no gradient, and neither does this: a layer norm's
    variance is at least 0 by IBP while its raw CROWN lower bound is negative, and rsqrt at var + 1e-12 has slope
    5e17 there; passed to the raw bound and on through its attention (exp's lines at the cap, 5e21), a tiny
    MPNet's α gradients overflowed float32 (then inf · 0 = NaN) in 187 of 582 α tensors at every step. A NaN raw
    end keeps `best`.

    >>> raw = torch.tensor([-3.0, -0.5, 2.0, float("nan")], requires_grad=True)
    >>> end = _end(raw, torch.zeros(4), 1.0, torch.tensor([True, False, False, False]))
    >>> end.sum().backward(); end.tolist(), raw.grad.tolist()
    ([0.0, 0.0, 2.0, 0.0], [0.0, 1.0, 1.0, 0.0])
    """
    tighter = sign * raw >= sign * best
    passes = torch.isfinite(raw) if undefined is None else torch.isfinite(raw) & (tighter | ~undefined)
    return torch.where(tighter, raw, best).detach() + torch.where(passes, raw - raw.detach(), 0.0)


def _undefined(engine: BoundPropagation, node: fx.Node, value: torch.Tensor) -> torch.Tensor | None:
    """Where an elementwise relaxation fed by `node` has no finite value at `value` (None: defined everywhere)."""
    outside = None
    for user in node.users:
        if user.op != "call_function" or not engine.bounded(user) or engine.transfer(user) is not ELEMENTWISE:
            continue
        function = getattr(engine.step(user).relaxation, "function", None)
        if function is not None:
            with torch.no_grad():
                here = ~torch.isfinite(function(value.detach()))
            outside = here if outside is None else outside | here
    return outside


def _recompute(engine: BoundPropagation, link: IntermediateBound) -> Interval:
    """The link's interval from the current α and intervals before it, intersected with the best so far
    (CROWN's at first; every interval seen is sound, so their intersection is; a NaN end, from a step whose
    relaxation met a degenerate interval, leaves the other's); its gradient as `_end` says."""
    if link.alphas:
        raw = engine.refine(link.node, link.open, link.selected, link.alphas)
        return Interval(_end(raw.lower, link.best.lower, 1.0, _undefined(engine, link.node, raw.lower)),
                        _end(raw.upper, link.best.upper, -1.0, _undefined(engine, link.node, raw.upper)))
    step = engine.step(link.node)
    image = engine.transfer(link.node).ibp(step, [engine.interval(i) for i in step.inputs])
    return Interval(torch.fmax(image.lower, link.crown.lower), torch.fmin(image.upper, link.crown.upper))


def optimize_bounds(engine: BoundPropagation, target: fx.Node, A: torch.Tensor,
                    options: AlphaOptions | None = None, progress: Progress | None = None) -> torch.Tensor:
    """The best lower bound of `A · target` ([specs, batch]) over the α of the final bound and of every
    intermediate bound; falls back to `optimize_alpha` (final α only) when `options.intermediate` is off
    or intermediate bounds are IBP. `progress` is told of every Adam step (see `maximize`).

    >>> import torch, opwise
    >>> from opwise.bounds.input_set import InputSet
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    >>> graph = opwise.trace(model, torch.zeros(1, 2))
    >>> engine = BoundPropagation(graph, InputSet.ball(torch.zeros(1, 2), 1.0))
    >>> crown = engine.backward(graph.output, torch.ones(1, 1, 1))
    >>> bool((optimize_bounds(engine, graph.output, torch.ones(1, 1, 1)) >= crown).all())
    True
    """
    options = options or AlphaOptions()
    best = engine.backward(target, A).detach().clone()
    if not options.intermediate or engine.intermediate != "crown":
        return optimize_alpha(engine, target, A, options, initial=best, progress=progress)
    chain = intermediate_bounds(engine, target, options.max_intermediate_alpha)
    final_alphas = initial_alphas(engine, target, A.shape[0])
    parameters = parameter_groups(engine, [final_alphas, *(link.alphas for link in chain)], options)
    if not parameters:
        return best

    def bound() -> torch.Tensor:
        for link in chain:
            clamp_alphas(engine, link.alphas)
            refined = engine.tighten(link.node, _recompute(engine, link))
            link.best = Interval(torch.fmax(link.best.lower, refined.lower.detach()),
                                 torch.fmin(link.best.upper, refined.upper.detach()))
        clamp_alphas(engine, final_alphas)
        return engine.backward(target, A, alphas=final_alphas)

    try:
        return maximize(bound, parameters, options, best, progress)
    finally:
        for link in chain:
            engine.tighten(link.node, link.best)
