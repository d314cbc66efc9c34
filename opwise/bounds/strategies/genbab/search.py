"""GenBaB: complete verification by branch-and-bound over the inputs of general nonlinearities.

The root is bounded first (after a PGD attack); while its margin bound is not positive, the worst
domains are split — one neuron's input interval each, chosen by a branching heuristic and split at a
point from the lookup table — and their children bounded in batches until every domain is proven
(verified), a checked counterexample is found (falsified), or time runs out (timeout). Each child
bounds the inputs whose value at the split neuron lies on its side; the children cover the parent. A domain with
nothing left to split (every candidate interval a point or split already) is decided by an LP over the input
(leaf.py). One that the LP leaves open without a counterexample is set aside and the search goes on with the others:
a counterexample elsewhere still falsifies, and where every other domain is proved it ends 'unknown', its reason
naming the leaves set aside (never 'verified').
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.attack import FIRST_STEPS, check_counterexample, pgd_attack
from opwise.bounds.strategies.genbab.bounding import DomainBounder
from opwise.bounds.strategies.genbab.branching import (BRANCHING, SPLIT_POINTS, choose_splits, ranked_splits,
                                                     split_nodes, strong_splits)
from opwise.bounds.strategies.genbab.domains import DomainQueue
from opwise.bounds.strategies.genbab.leaf import decide_leaf
from opwise.bounds.strategies.result import BabResult, queue_limit, within_timeout
from opwise.bounds.bounded_model import BoundedModel
from opwise.bounds.spec import Specification
from opwise.errors import InputError, TimeLimitReached
from opwise.progress import Progress

#: "fsb": candidate splits per domain that a bound pass measures (α,β-CROWN's kfsb takes 10 on a GPU). On this
#: 2-core CPU, 1 thread: oval21 wide_kw img3478 unsat with 1,539 domains in 15.3 s (bbps: 2,533 in 15.4 s; 10
#: candidates: 1,523 in 22.8 s), base_kw img6767 in 48 s (bbps 42 s; 10 candidates: timeout), mnist_fc 256x4
#: prop_11_0.05 in 16.5 s (bbps 16.0 s, 10 candidates 21.2 s): fewer domains, no less time, so "bbps" stays the default
FSB_CANDIDATES = 2
#: seconds between PGD attacks during the search
ATTACK_INTERVAL = 10.0
#: the share of the search's time its attacks may take: the first one of the timeout, each later one of the
#: time since the one before (a caller that attacked already, as verify does, would otherwise see a second
#: attack take all the time a large network's PGD can use before any domain is bounded)
ATTACK_SHARE = 0.25
#: undecided leaves a reason names one by one
UNDECIDED_NAMED = 3


@within_timeout
def branch_and_bound(
    bounded: BoundedModel,
    spec: Specification,
    *,
    method: str = "alpha-crown",
    branching: str = "bbps",
    split_point: str = "table",
    timeout: float = 60.0,
    batch_size: int = 64,
    attack: bool = True,
    max_domains: int = 200_000,
    max_memory: int | None = None,
    alpha: AlphaOptions | None = None,
    attacked: bool = False,
    refine_intermediate: bool | None = None,
    progress: Progress | None = None,
) -> BabResult:
    """Decide whether `spec` holds for `bounded` by splitting nonlinear neurons' input intervals.

    `branching`: "bbps" | "babsr" | "largest-interval" | "fsb" (the `FSB_CANDIDATES` best by BBPS, each measured by
    a bound pass of its children); `split_point`: "table" | "midpoint";
    `batch_size`: domains bounded per engine pass; `max_domains`: queue size at which it gives up ('unknown');
    `max_memory`: bytes the open domains' tensors may hold before it gives up (None: no limit); `attacked`: the
    caller has just run the same PGD attack (seed 0) on `spec`, so the search skips its first one and attacks
    only between rounds (verify_specification does: the same attack again found nothing new);
    `refine_intermediate`: each round bounds the intermediate nodes after a split node again per domain
    (CROWN with the domain's splits; False: they keep the root's intervals, narrowed only at the splits; None:
    where a round's share of that work fits in 15% of the time left, `DomainBounder.refines`); `progress` is
    called after every round with the open and visited domains, the worst open lower bound and the time left.

    >>> import torch
    >>> from opwise.bounds.spec import Disjunct
    >>> _ = torch.manual_seed(1)
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Sigmoid(), torch.nn.Linear(4, 1))
    >>> bounded = BoundedModel(model, torch.zeros(1, 2))
    >>> grid = torch.cartesian_prod(torch.linspace(-1, 1, 201), torch.linspace(-1, 1, 201))
    >>> true_min = float(model(grid).min().detach())
    >>> spec = Specification(-torch.ones(1, 2), torch.ones(1, 2), [Disjunct(torch.ones(1, 1), torch.tensor([true_min - 0.01]))])
    >>> branch_and_bound(bounded, spec, timeout=30).status
    'verified'
    """
    if branching not in BRANCHING:
        raise InputError(f"unknown branching {branching!r}; choose one of {', '.join(BRANCHING)}")
    if split_point not in SPLIT_POINTS:
        raise InputError(f"unknown split_point {split_point!r}; choose one of {', '.join(SPLIT_POINTS)}")
    start = time.monotonic()
    deadline = start + timeout
    spec = spec.to(bounded.device)
    stats = {"domains_visited": 0, "branching_decisions": 0, "max_depth": 0, "rounds": 0, "attacks": 0}
    undecided: list[Undecided] = []  # leaves the LP left open without a counterexample: never 'verified' after one

    def function(x: torch.Tensor) -> torch.Tensor:
        """The model on x (padded to a power of two by the graph: a few traces, not one per count of candidates)."""
        return bounded(x).reshape(len(x), -1)

    def finish(status, margin, counterexample=None) -> BabResult:
        stats["seconds"] = time.monotonic() - start
        if status == "timeout" and "reason" not in stats:  # how far the search got: a user judges whether more time helps
            stats["reason"] = f"the time limit was reached after {stats['domains_visited']} domains"
            if margin is not None and math.isfinite(margin):
                stats["reason"] += f", the worst open domain's margin bound at {margin:.4g} (proved where above 0)"
        if status in ("timeout", "unknown") and undecided:
            stats["undecided_leaves"] = len(undecided)
            aside = _undecided_reason(undecided, bounder)
            stats["reason"] = f"{stats['reason']}; {aside}" if stats.get("reason") else aside
            if margin is not None:
                margin = min([margin] + [leaf.margin for leaf in undecided])
        return BabResult(status, counterexample, stats, margin)

    def attack_now(seed: int, budget: float) -> torch.Tensor | None:
        """The attack with `seed`'s random starts; the centre's own steps (the same for every seed) only at seed 0."""
        stats["attacks"] += 1
        result = pgd_attack(function, spec, seed=seed, time_limit=max(0.0, min(budget, deadline - time.monotonic())),
                            first_steps=0 if seed else FIRST_STEPS)
        return result.counterexample

    if attack and not attacked:
        counterexample = attack_now(0, ATTACK_SHARE * timeout)
        if counterexample is not None:
            return finish("falsified", None, counterexample)
    bounder = DomainBounder(bounded, spec, method, alpha, refine_intermediate)
    root = bounder.root(deadline)
    stats["domains_visited"] = bounder.visited
    if root.lower > 0:
        return finish("verified", root.lower)
    counterexample = _checked_primal(function, spec, bounder.candidates)
    if counterexample is not None:
        return finish("falsified", None, counterexample)
    shortcuts = bounder.shortcuts() if branching in ("bbps", "fsb") else None
    input_set = bounder.input_set(1)
    queue, proven, last_attack = DomainQueue(count_bytes=max_memory is not None), float("inf"), time.monotonic()

    def split(domains: list) -> tuple[list, list, int]:
        """The children of every domain that can be split (two per decision, three where it isolates the split
        point), the domains that have nothing left to split, and the number of decisions."""
        if branching == "fsb":
            ranked = ranked_splits(domains, bounder.nodes, count=FSB_CANDIDATES, branching=branching,
                                   split_point=split_point, input_set=input_set, shortcuts=shortcuts)
            decisions = strong_splits(domains, ranked, lambda children: bounder.evaluate(children, batch_size, deadline))
        else:
            decisions = choose_splits(domains, bounder.nodes, branching=branching, split_point=split_point,
                                      input_set=input_set, shortcuts=shortcuts)
        children = [child for domain, decision in zip(domains, decisions) if decision is not None
                    for child in domain.split(decision.input, decision.index, decision.point, decision.isolate)]
        exhausted = [domain for domain, decision in zip(domains, decisions) if decision is None]
        return children, exhausted, len(domains) - len(exhausted)

    queue.push(root)
    try:
        while len(queue):
            if time.monotonic() > deadline:
                return finish("timeout", queue.worst())
            reason = queue_limit(queue, max_domains, max_memory)
            if reason is not None:
                stats["reason"] = reason
                return finish("unknown", queue.worst())
            parents = queue.pop(max(1, batch_size // 2))
            children, exhausted, decided = split(parents)
            stats["branching_decisions"] += decided
            for domain in exhausted:  # nothing left to split: an LP over the input decides it, or it is set aside
                answer = decide_leaf(bounder, domain, deadline)
                stats["leaf_lps"] = stats.get("leaf_lps", 0) + 1
                if answer.proved:
                    proven = min(proven, answer.margin)
                    continue
                if answer.candidate is not None:
                    counterexample = _checked_primal(function, spec, answer.candidate)
                    if counterexample is not None:
                        return finish("falsified", None, counterexample)
                if time.monotonic() >= deadline:  # the LP was stopped by the clock: it decided nothing
                    return finish("timeout", min([queue.worst()] + [p.lower for p in parents]))
                undecided.append(Undecided(domain.depth, max(domain.lower, answer.margin), answer.reason))
            while children and 2 * len(children) <= batch_size:  # few open domains (the first rounds): split again
                grandchildren, more, decided = split(children)
                if more:
                    break
                children = grandchildren
                stats["branching_decisions"] += decided
            if not children:
                continue
            bounder.bound(children, max(2, batch_size), deadline)
            stats["rounds"] += 1
            stats["domains_visited"] = bounder.visited
            stats["max_depth"] = max(stats["max_depth"], max(child.depth for child in children))
            open_children = [child for child in children if not child.lower > 0]
            proven = min([proven] + [child.lower for child in children if child.lower > 0])
            if open_children:
                counterexample = _checked_primal(function, spec, torch.cat([bounder.primal_inputs(open_children),
                                                                            bounder.candidates]))
                if counterexample is not None:
                    return finish("falsified", None, counterexample)
                if attack and time.monotonic() - last_attack > ATTACK_INTERVAL:
                    counterexample = attack_now(stats["rounds"], ATTACK_SHARE * (time.monotonic() - last_attack))
                    last_attack = time.monotonic()
                    if counterexample is not None:
                        return finish("falsified", None, counterexample)
            for child in open_children:
                queue.push(child)
            if progress is not None:
                now = time.monotonic()
                progress({"search": "GenBaB", "open": len(queue), "visited": stats["domains_visited"],
                          "lower": queue.worst() if len(queue) else None, "seconds": now - start, "left": deadline - now})
    except TimeLimitReached:  # a bound pass reached the deadline: end with the counts so far (no margin: the
        return finish("timeout", None)  # domains of the interrupted round are neither in the queue nor bounded)
    if undecided:  # every other domain is proved: the leaves set aside alone stand between the search and a proof
        return finish("unknown", proven)
    return finish("verified", proven)


@dataclasses.dataclass
class Undecided:
    """A leaf (nothing left to split) whose LP neither proved it nor gave a counterexample a forward pass confirms:
    its depth, the lower bound of its margin (its own bound, or the LP's optimum where higher) and the LP's reason."""

    depth: int
    margin: float
    reason: str


def _undecided_reason(undecided: list[Undecided], bounder: DomainBounder) -> str:
    """Why the search cannot say 'verified': the leaves it set aside (the first few named, worst first), and why
    they have nothing to split (`_nothing_to_split`)."""
    what = _nothing_to_split(bounder)
    if bounder.nodes:
        what = f"{len(undecided)} domain{'s' if len(undecided) > 1 else ''} with {what}"
    worst = sorted(undecided, key=lambda leaf: leaf.margin)[:UNDECIDED_NAMED]
    named = "; ".join(f"depth {leaf.depth}, margin bound {leaf.margin:.3g}: {leaf.reason or 'no LP answer'}"
                      for leaf in worst)
    more = f"; and {len(undecided) - len(worst)} more" if len(undecided) > len(worst) else ""
    return (f"{what}, left open by a linear program over the input without a counterexample that a forward pass "
            f"confirms ({named}{more})")


def _checked_primal(function, spec: Specification, candidates: torch.Tensor) -> torch.Tensor | None:
    """The candidate input with the lowest margin, if a forward pass confirms that it violates the spec."""
    if not len(candidates):
        return None
    with torch.no_grad():
        margins = spec.margin(function(candidates))
    best = candidates[int(margins.argmin()) :][:1]
    violates, _, _ = check_counterexample(function, spec, best)
    return best if violates else None


def _nothing_to_split(bounder: DomainBounder) -> str:
    """Why a domain has nothing to split: its candidates are all decided, or the graph has none, or has some only
    on nodes whose leading axis is not the input's batch (which names them: a graph bounded as one sample whose
    nodes have no batch axis is not one without nonlinearities)."""
    if bounder.nodes:
        return ("nothing left to split: every split node's interval lies on one side of its kink or is narrower than "
                "the smallest split width")
    off_batch = sorted({node.nonlinear for node in split_nodes(bounder.bounded.graph, off_batch=True)})
    if off_batch:
        named = ", ".join(off_batch[:3]) + (f" and {len(off_batch) - 3} more" if len(off_batch) > 3 else "")
        return (f"nothing to split: the splittable nodes ({named}) do not have the input's batch axis first (domains "
                "are batched along it)")
    return ("nothing to split: no node has a splittable relaxation (a smooth function or kinks) or is a product "
            "of two input-dependent tensors")
