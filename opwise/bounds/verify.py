"""The one verification orchestrator: per specification (an input box or an Lp ball, and an unsafe output
set) it runs a PGD attack in the input set (a real counterexample ends it), then bound passes, then, when
asked for a complete answer, input splitting (a box with few free inputs; the affine–ReLU chain fast path
where the network is one) or branch-and-bound on nonlinear neurons (GenBaB; the only search for a ball:
it splits neurons while every bound pass concretizes over the ball itself). `opwise.verify` (robustness of
a prediction) and the VNN-COMP instances use it; both report one `VerificationResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import time
from typing import Iterator

import torch

from opwise.bounds.attack import pgd_attack
from opwise.bounds.bounded_model import BoundedModel
from opwise.bounds.engine.deadline import deadline as bound_deadline
from opwise.bounds.function_bounds import FunctionBounds
from opwise.bounds.methods import method_name
from opwise.bounds.input_set import InputSet
from opwise.bounds.spec import Specification, contradictory, robustness_disjuncts, specifications_to
from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.strategies.genbab.search import branch_and_bound
from opwise.bounds.strategies.input_split import input_split_bab
from opwise.bounds.strategies.low_dimensional import LowDimensionalBounds
from opwise.bounds.strategies.relu_chain import ReluChain
from opwise.errors import InputError, TimeLimitReached
from opwise.progress import LiveLine, Progress
from opwise.tracing import Graph
from opwise.tracing.precision import as_float32

#: what method="auto" tries, in order, until the property is verified
AUTO_METHODS = ("crown", "alpha-crown")


@dataclasses.dataclass
class VerificationResult:
    """`status`: "verified", "falsified", "unknown" or "timeout". `margin_lower`: the proven lower bound of the
    property's margin (for robustness min_j (y_target − y_j); None when falsified, and when input splitting
    proved it box by box); `counterexample`: an input
    that a forward pass confirmed violates the property; `target`: the class verified (None for a general
    specification); `stats`: methods tried, seconds, attack margin, the complete search's counts."""

    status: str
    margin_lower: float | None
    counterexample: torch.Tensor | None
    target: int | None
    stats: dict

    @property
    def vnncomp_status(self) -> str:
        """The word VNN-COMP uses: unsat (verified), sat (falsified), timeout, unknown."""
        return {"verified": "unsat", "falsified": "sat"}.get(self.status, self.status)


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
    device: str | torch.device | None = None,
    verbose: bool = False,
) -> VerificationResult:
    """Verify that `target` (by default the model's prediction at x) stays the top output on the Lp
    ball of radius eps around x (one sample, batch 1), clipped to `domain`.

    `bab=True` (or a dict of `branch_and_bound` options) completes a case the bounds leave unknown by
    branch-and-bound (status then also "timeout"; its counts in `stats["bab"]`): input splitting or GenBaB
    for L∞, GenBaB (neuron splits over the ball) for L1 and L2. `device`
    ("cpu", "cuda") is where everything is computed (default: the model's device); the counterexample
    comes back on it.

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> with torch.no_grad(): _ = model[0].weight.copy_(torch.eye(2)); _ = model[0].bias.zero_()
    >>> opwise.verify(model, torch.tensor([[1.0, 0.0]]), eps=0.1).status
    'verified'
    >>> result = opwise.verify(model, torch.tensor([[1.0, 0.0]]), eps=0.6)
    >>> result.status, bool(model(result.counterexample).argmax() != 0)
    ('falsified', True)
    >>> result = opwise.verify(model, torch.tensor([[1.0, 0.0]]), eps=0.6, norm=2)   # the disk reaches x0 = x1 at 0.71
    >>> result.status, result.margin_lower > 0
    ('verified', True)
    """
    start = time.monotonic()
    x = torch.as_tensor(x)
    x = x.double() if x.dtype == torch.float64 else x.float()  # in the bounded model's dtype below
    if x.dim() == 0 or x.shape[0] != 1:
        raise InputError(f"verify takes one sample with a batch dimension of 1, got shape {tuple(x.shape)}")
    method = method_name(method, extra=("auto",))
    if isinstance(model, torch.nn.Module):
        model = as_float32(model, "bounds")  # the model itself is also run (counterexamples)
    bounded = model if isinstance(model, BoundedModel) else BoundedModel(model, x, device=device)
    x = x.to(bounded.dtype)
    x = x.to(bounded.device)
    with torch.no_grad():
        output = bounded(x).reshape(1, -1)
    classes = output.shape[1]
    if classes < 2:
        raise InputError(f"robustness needs at least two outputs to compare, the model has {classes}; "
                         "state the property with verify_specification (opwise.bounds.verify) instead")
    if target is None:
        target = int(output.argmax())
    if not 0 <= int(target) < classes:
        raise InputError(f"target {target} is out of range for {classes} outputs")
    target = int(target)
    # checks eps, norm, domain and shapes
    input_set = bounded.input_set(x, eps, norm, None, None, domain)
    spec = Specification.over(input_set, robustness_disjuncts(classes, target, bounded.dtype))
    methods = None if method == "auto" else (method,)
    remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
    line = LiveLine() if verbose else None
    earlier = bounded.progress
    if line is not None and earlier is None:  # verbose also shows the bound passes' layers and α iterations
        bounded.progress = line
    try:
        result = verify_specification(bounded, spec, methods=methods, complete=bab, timeout=remaining, progress=line)
    finally:
        bounded.progress = earlier
        if line is not None:
            line.close()
    result.target = target
    result.stats["seconds"] = time.monotonic() - start
    return result


def verify_specification(
    model: BoundedModel | FunctionBounds,
    spec: Specification,
    *,
    methods: tuple[str, ...] | None = None,
    complete: bool | dict = False,
    timeout: float | None = None,
    max_split_inputs: int = 16,
    attack: bool = True,
    progress: Progress | None = None,
) -> VerificationResult:
    """Decide whether `spec` holds: PGD in its input set, then each bound method in turn until the property
    is proved (disjuncts whose rows contradict each other, which no output meets, are dropped first:
    `contradictory`), then (with `complete`) a complete search: input splitting when the set is a box with at most
    `max_split_inputs` free inputs (the chain fast path for affine–ReLU networks), input splitting for half the
    time and then GenBaB for a box with up to `PORTFOLIO_FACTOR` times as many, else GenBaB.

    `methods` (None: chosen with the search) are the bound passes over the whole box: CROWN then α-CROWN
    without a search; none before input splitting on the chain (its first round bounds the whole box);
    α-CROWN on the final bound only (cheap, and far tighter than the splitting rounds' forward-mode bounds)
    before input splitting on other networks; none before GenBaB, whose root starts with the same CROWN pass and
    keeps its intermediate bounds (a pass here first cost a second CROWN pass: 40 % of a CROWN-proof on
    vit_2023's ibp_3_3_8), then optimises α unless CROWN proved the property. α stops
    once the property is proved; with a search to follow, each pass gets at most half the time left. The
    attack is left to input splitting, which attacks its boxes itself.

    `complete` is True or a dict of the chosen search's options (`input_split_bab` or `branch_and_bound`
    keywords; options only GenBaB takes, such as `alpha`, `split_point` or a GenBaB branching heuristic,
    choose GenBaB; "strategy": "input-split" or "genbab" forces one; input splitting refuses a ball).
    `progress` is handed to that search. `model` may be a FunctionBounds (a forward and a bound function): it gets
    the attack, its bound function and input splitting, and GenBaB only through its `bounded`.

    >>> import torch
    >>> from opwise.bounds.spec import Disjunct
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> bounded = BoundedModel(model, torch.zeros(1, 2))
    >>> box = (-torch.ones(1, 2), torch.ones(1, 2))
    >>> grid = torch.cartesian_prod(torch.linspace(-1, 1, 201), torch.linspace(-1, 1, 201))
    >>> floor = float(model(grid).min())
    >>> safe = Specification(*box, [Disjunct(torch.ones(1, 1), torch.tensor([floor - 0.01]))])   # y <= floor - 0.01 never
    >>> verify_specification(bounded, safe, complete=True, timeout=30).status
    'verified'
    >>> unsafe = Specification(*box, [Disjunct(torch.ones(1, 1), torch.tensor([floor + 0.01]))])
    >>> result = verify_specification(bounded, unsafe, complete=True, timeout=30)
    >>> result.status, bool(model(result.counterexample.cpu()) <= floor + 0.01)
    ('falsified', True)
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    spec = spec.to(model.device)
    possible = [disjunct for disjunct in spec.unsafe if not contradictory(disjunct)]
    if not possible:  # no output meets any disjunct's rows, whatever the network does
        return VerificationResult("verified", None, None, None, {"contradictory_disjuncts": len(spec.unsafe),
                                                                 "margin": math.inf, "time": time.monotonic() - start})
    if len(possible) < len(spec.unsafe):
        spec = dataclasses.replace(spec, unsafe=possible)
    if not spec.region.is_box and isinstance(model, FunctionBounds):
        raise InputError("a FunctionBounds model is bounded over boxes only; give a BoundedModel for other input sets")
    options = dict(complete) if isinstance(complete, dict) else {}
    if progress is not None:
        options.setdefault("progress", progress)
    strategy = _search_strategy(spec, options, max_split_inputs) if complete else None
    graph_model = _graph_model(model)
    if strategy == THEN_GENBAB and graph_model is None:  # GenBaB cannot follow: input splitting takes all the time
        strategy = "input-split"
    splits_inputs = strategy in ("input-split", THEN_GENBAB)
    chain = _chain_of(model) if splits_inputs else None
    if methods is None:
        methods = ROOT_METHODS[strategy if not splits_inputs or chain is None else "input-split-chain"]
    stats: dict = {"methods": []}

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def finish(status: str, margin: float | None, counterexample: torch.Tensor | None = None) -> VerificationResult:
        stats["seconds"] = time.monotonic() - start
        return VerificationResult(status, margin, counterexample, None, stats)

    if attack and not splits_inputs:
        share = ATTACK_SHARE_BEFORE_SEARCH if complete else ATTACK_SHARE
        found = pgd_attack(_forward(model), spec, time_limit=None if deadline is None else left() * share)
        stats["attack_margin"] = found.margin
        if found.found:
            return finish("falsified", None, found.counterexample)
    try:
        with contextlib.ExitStack() as stack:
            if deadline is not None:  # bound passes check it between layers and chunks
                stack.enter_context(bound_deadline(left()))
            margin = _root_margin(model, spec, methods, final_only=splits_inputs,
                                  share=0.5 if strategy else 1.0, left=left, stats=stats)
            if margin > 0:
                return finish("verified", margin)
            if strategy is None:  # "unknown" only with a bound: with none, no pass ended before the time ran out
                return finish("unknown" if stats["methods"] else "timeout", margin if stats["methods"] else None)
            if deadline is not None and time.monotonic() >= deadline:
                return finish("timeout", margin)
            options.setdefault("timeout", 60.0 if deadline is None else left())
            if splits_inputs:
                bound_fn, forward = _splitting_functions(model, chain)
                split_options = _options_for(input_split_bab, options, "input splitting")
                if strategy == THEN_GENBAB:
                    split_options["timeout"] *= INPUT_SPLIT_SHARE
                result = input_split_bab(bound_fn, forward, spec, **split_options)
                if strategy == THEN_GENBAB and result.status in ("timeout", "unknown"):
                    stats["input_split"] = result.stats
                    genbab = set(inspect.signature(branch_and_bound).parameters)
                    remaining = {key: value for key, value in options.items() if key in genbab}
                    remaining["timeout"] = 60.0 if deadline is None else left()
                    result = branch_and_bound(graph_model, spec, **remaining)
            elif graph_model is None:
                stats["reason"] = "GenBaB splits neurons of a traced graph; this model is given by functions only"
                return finish("unknown", margin)
            else:
                if attack:  # the search's first attack would repeat this one
                    options.setdefault("attacked", True)
                result = branch_and_bound(graph_model, spec, **_options_for(branch_and_bound, options, "GenBaB"))
    except TimeLimitReached:
        return finish("timeout", stats.get("margin"))
    stats["search"] = strategy
    stats["bab"] = result.stats
    if result.status == "falsified":
        return finish("falsified", None, result.counterexample)
    if result.status == "verified":  # input splitting proves every box without one number for the whole
        return finish("verified", getattr(result, "margin_lower", None))
    if "reason" in result.stats:
        stats["reason"] = result.stats["reason"]
    searched = getattr(result, "margin_lower", None)  # the worst open domain's bound: one for the whole set
    return finish(result.status, margin if searched is None else max(margin, searched))


def verify_boxes(
    model: BoundedModel | FunctionBounds,
    specs: list[Specification],
    *,
    timeout: float | None = None,
    max_split_inputs: int = 16,
    progress: Progress | None = None,
) -> Iterator[tuple[list[int], VerificationResult]]:
    """Decide a property stated over several input boxes (a VNN-LIB disjunction of boxes), yielding
    (indices of the boxes decided, their result) until every box is decided or the time is up (the boxes
    left then come as one 'timeout').

    Boxes with at most `max_split_inputs` free inputs whose unsafe sets share their rows C (thresholds may
    differ), at least `BATCHED_BOXES` of them, are decided together by one input splitting search
    (`input_split_bab` over the list): lindex's 60,000 one-input boxes, decided one by one, spent 0.1 s each
    on an attack and a bound pass; together every round bounds up to a thousand of their domains in one
    call. Every other box goes to `verify_specification` with a complete search, as a single box does (a
    whole-box attack and α-CROWN pass first: cheap for a few boxes). A counterexample's box is
    `result.stats["box"]`.

    >>> import torch
    >>> from opwise.bounds.spec import Disjunct
    >>> model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> bounded = BoundedModel(model, torch.zeros(1, 1))
    >>> def box(i):                                             # y <= min over the box - 0.01 never holds
    ...     lower, upper = torch.tensor([[i / 10]]), torch.tensor([[(i + 1) / 10]])
    ...     floor = float(model(torch.linspace(i / 10, (i + 1) / 10, 1001)[:, None]).min())
    ...     return Specification(lower, upper, [Disjunct(torch.ones(1, 1), torch.tensor([floor - 0.01]))])
    >>> [(indices, result.status) for indices, result in verify_boxes(bounded, [box(i) for i in range(20)], timeout=30)]
    [([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], 'verified')]
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    if any(spec.device != model.device for spec in specs):
        specs = specifications_to(specs, model.device)
    plan = [unit for group in _box_groups(specs, max_split_inputs)
            for unit in ([group] if len(group) >= BATCHED_BOXES else [[index] for index in group])]
    for position, unit in enumerate(plan):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            rest = [index for later in plan[position:] for index in later]
            yield rest, VerificationResult("timeout", None, None, None, {"reason": "the time limit was reached"})
            return
        if len(unit) == 1:
            yield unit, verify_specification(model, specs[unit[0]], complete=True, timeout=left,
                                             max_split_inputs=max_split_inputs, progress=progress)
        else:
            yield unit, _split_boxes(model, [specs[index] for index in unit], unit, left, progress)


#: the fewest boxes that share one input splitting search (fewer go one by one, as ACAS Xu prop_6's two do)
BATCHED_BOXES = 8


def _box_groups(specs: list[Specification], max_split_inputs: int) -> list[list[int]]:
    """The boxes searched together (lists of indices, in order of their first box): boxes with few free inputs
    grouped by their output rows; every other box alone."""
    groups: dict[object, list[int]] = {}
    written: dict[int, tuple] = {}  # id(C) -> its key (parsed boxes share their C tensors)
    if len({spec.x_lower.shape for spec in specs}) == 1:  # one comparison for every box (lindex has 60,000)
        free = (torch.stack([spec.x_upper for spec in specs]) > torch.stack([spec.x_lower for spec in specs]))
        free = free.reshape(len(specs), -1).sum(1).tolist()
    else:
        free = [int((spec.x_upper > spec.x_lower).sum()) for spec in specs]
    for index, spec in enumerate(specs):
        if spec.region.is_box and free[index] <= max_split_inputs:
            for d in spec.unsafe:
                if id(d.C) not in written:
                    written[id(d.C)] = (tuple(d.C.shape), d.C.cpu().numpy().tobytes())
            key = tuple(written[id(d.C)] for d in spec.unsafe)
        else:
            key = ("alone", index)
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _split_boxes(model: BoundedModel | FunctionBounds, specs: list[Specification], indices: list[int],
                 timeout: float | None, progress: Progress | None) -> VerificationResult:
    """One input splitting search over the boxes `specs` (numbered `indices` in the property)."""
    start = time.monotonic()
    bound_fn, forward = _splitting_functions(model, _chain_of(model))
    stats: dict = {"methods": [], "search": "input-split", "boxes": len(specs)}
    try:
        with contextlib.ExitStack() as stack:
            if timeout is not None:
                stack.enter_context(bound_deadline(timeout))
            result = input_split_bab(bound_fn, forward, specs, timeout=60.0 if timeout is None else timeout,
                                     progress=progress)
    except TimeLimitReached:
        stats["seconds"] = time.monotonic() - start
        return VerificationResult("timeout", None, None, None, stats)
    stats["bab"] = result.stats
    stats["seconds"] = time.monotonic() - start
    if "reason" in result.stats:
        stats["reason"] = result.stats["reason"]
    if result.status == "falsified":
        stats["box"] = indices[result.stats.get("box", 0)]
    return VerificationResult(result.status, None, result.counterexample, None, stats)


def _graph_model(model: BoundedModel | FunctionBounds) -> BoundedModel | None:
    """The traced model behind `model` (None for a FunctionBounds given by functions only)."""
    return model if isinstance(model, BoundedModel) else model.bounded


def _chain_of(model: BoundedModel | FunctionBounds) -> ReluChain | None:
    """The affine-ReLU chain the model's graph is, bounding in the model's dtype; None where it is none (or the
    model is given by functions only)."""
    graph_model = _graph_model(model)
    return None if graph_model is None else ReluChain.of_graph(graph_model.graph, dtype=graph_model.dtype)


def _splitting_functions(model: BoundedModel | FunctionBounds, chain: ReluChain | None):
    """(bound function, forward function) of input splitting: the chain's where the network is one, else the
    low-dimensional bounds of the graph (or a FunctionBounds' own bound function) and the model."""
    if chain is not None:
        return chain.bound_and_smear, chain
    graph_model = _graph_model(model)
    return (LowDimensionalBounds(graph_model) if graph_model is not None else model.lower_bounds), _forward(model)


#: the share of the time left that the first attack may take: without a search the bound passes alone can prove
#: the property, and an attack that takes all the time leaves none for them (the digits transformer under a 20 s
#: timeout on a loaded CPU: 5 of 16 samples ended "unknown" at margin -inf with no bound pass run, though CROWN
#: proves each); before a search, which attacks again, half
ATTACK_SHARE = 0.25
ATTACK_SHARE_BEFORE_SEARCH = 0.5

#: the automatic search for a box with more than `max_split_inputs` free inputs but at most this many times as
#: many: input splitting for `INPUT_SPLIT_SHARE` of the time, then GenBaB. pensieve_big_parallel (32 of 96 inputs
#: free) is proved by input splitting in 93 domains, while GenBaB's root alone outlasts its timeout; a network
#: that input splitting cannot prove in a share of the time still gets GenBaB.
THEN_GENBAB = "input-split, then genbab"
PORTFOLIO_FACTOR = 4
INPUT_SPLIT_SHARE = 0.5

#: the bound passes over the whole box before each complete search (None: no search); see verify_specification
ROOT_METHODS: dict[str | None, tuple[str, ...]] = {
    None: AUTO_METHODS, "genbab": (), "input-split": ("alpha-crown",), "input-split-chain": (),
    THEN_GENBAB: ("alpha-crown",),
}


def _search_strategy(spec: Specification, options: dict, max_split_inputs: int) -> str:
    """The complete search: the options' "strategy" (popped), else input splitting for few free inputs, input
    splitting then GenBaB for up to `PORTFOLIO_FACTOR` times as many, GenBaB beyond, or wherever the options
    name something only GenBaB takes."""
    strategy = options.pop("strategy", "auto")
    if strategy == "auto":
        free = int((spec.x_upper > spec.x_lower).sum())
        if spec.region.is_ball or _genbab_options(options) or free > PORTFOLIO_FACTOR * max_split_inputs:
            return "genbab"
        return "input-split" if free <= max_split_inputs else THEN_GENBAB
    if strategy not in ("input-split", "genbab"):
        raise InputError(f"unknown complete-search strategy {strategy!r}; choose 'auto', 'input-split' or 'genbab'")
    return strategy


def _forward(model: BoundedModel | FunctionBounds):
    """The model's forward pass with its outputs flattened per sample (what the attack and the searches check)."""
    return lambda z: model(z).reshape(z.shape[0], -1)


def _root_margin(model: BoundedModel | FunctionBounds, spec: Specification, methods: tuple[str, ...], *, final_only: bool, share: float, left, stats: dict) -> float:
    """The best margin bound of `methods` over the whole input set, stopping at the first that proves `spec`.
    Each pass may take `share` of the time left: one that runs out ends with the margin so far (a search
    follows); `final_only` optimises α on the final bound only (a cheap pass before input splitting)."""
    rows = torch.cat([d.C for d in spec.unsafe])
    threshold = torch.cat([d.d for d in spec.unsafe])
    region = spec.region
    margin = -math.inf
    for name in methods:
        budget = left()
        if budget is not None and budget <= 0:
            break
        limit = None if budget is None else budget * share
        try:
            with contextlib.ExitStack() as stack:
                if limit is not None and share < 1:
                    stack.enter_context(bound_deadline(limit))
                lower = _lower_bounds(model, region, rows, name, threshold, limit, final_only)
        except TimeLimitReached:
            if share >= 1:
                raise
            stats.setdefault("root_timeouts", []).append(name)
            continue
        margin = max(margin, spec.margin_bound(lower.detach().amin(0)))
        stats["margin"] = margin
        stats["methods"].append(name)
        if margin > 0:
            break
    return margin


def _lower_bounds(model: BoundedModel | FunctionBounds, region: InputSet, rows: torch.Tensor, name: str,
                  threshold: torch.Tensor, time_limit: float | None, final_only: bool) -> torch.Tensor:
    """Lower bounds [batch, rows] of rows·f(x) over `region` by the bound method `name`; α-CROWN stops once
    every row exceeds its threshold (nothing left to prove) or its time is up."""
    if isinstance(model, FunctionBounds):
        if name == "alpha-crown" and model.optimized is not None:
            return model.optimized(region.lower, region.upper, rows, threshold, time_limit)
        return model.lower_bounds(region.lower, region.upper, rows)
    alpha = None
    if name == "alpha-crown":
        alpha = AlphaOptions(intermediate=not final_only, stop_above=threshold[:, None].to(model.device),
                             time_limit=time_limit)
    specs = rows[None].expand(region.lower.shape[0], *rows.shape)
    return model.bound(region, specs, name, bound_upper=False, alpha=alpha).lower


def _genbab_options(options: dict) -> bool:
    """Whether the options name something only GenBaB takes (an option or a branching heuristic of its own)."""
    from opwise.bounds.strategies.genbab.branching import BRANCHING

    only_genbab = set(inspect.signature(branch_and_bound).parameters) - set(inspect.signature(input_split_bab).parameters)
    return bool(only_genbab & set(options)) or options.get("branching") in BRANCHING


def _options_for(search, options: dict, name: str) -> dict:
    """The options a complete search takes; an InputError names the others."""
    accepted = set(inspect.signature(search).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        keywords = ", ".join(sorted(k for k in accepted if k not in ("bound_fn", "function", "spec", "bounded")))
        raise InputError(f"the complete search chose {name}, which does not take {', '.join(unknown)}; it takes "
                         f"{keywords} (or pass strategy='input-split' / 'genbab')")
    return options
