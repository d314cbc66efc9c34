"""Bounding a batch of branch-and-bound domains in one engine pass, and the root's shortcut bounds.

The input set is repeated once per domain and each domain's narrowed intervals enter the engine as
splits. Intermediate bounds are optimized once, at the root (α-CROWN over every layer); in a domain, the
nodes that no split node precedes keep the root's intervals (a split cannot change them), and the nodes
after a split node are bounded again by CROWN once per round, with the domain's splits applied, and met
with the domain's own intervals (its parent's, which hold on it): a split at an early layer fixes its
neuron's line and so tightens every later layer's intervals and relaxations, which bounds that stay fixed
never see (on mnist_fc 256x4 prop_8_0.03, 371 domains proved what 449 domains with fixed intermediate
bounds left at a margin of -0.82). Each Adam step is then one backward pass from the output. Batches are
padded to the full batch size, so that a model is traced for one new batch size (tracing costs a second
or more).

Each domain keeps its per-row bounds; a disjunct that an ancestor ruled out stays ruled out (the
ancestor's bound holds on every descendant), so a batch bounds only the rows of disjuncts that some of
its domains leave open (a robustness property has a disjunct per other class, and after the first splits
most of them are ruled out everywhere), and Adam (unless given its options) stops once every open disjunct of
every domain is ruled out.
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import partial

import torch
from torch import fx

from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.strategies.alpha_chain import optimize_bounds
from opwise.bounds.strategies.beta import BETA, Parameters, optimize_alpha_beta
from opwise.bounds.strategies.genbab.branching import Shortcut, SplitNode, split_nodes
from opwise.bounds.strategies.genbab.domains import Domain, Guide, stack_intervals
from opwise.bounds.bounded_model import BoundedModel, settle_intermediate_bounds
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.spec import Specification, proving_margins
from opwise.bounds.transfers.registry import Interval
from opwise.errors import InputError
from opwise.tracing.graph import Graph
from opwise.tracing.batching import padded_chunks

#: the share of the search's time left that a round's re-bounding of intermediate nodes may take (`DomainBounder.refines`)
REFINE_SHARE = 0.15
#: rows per backward pass when computing the root's shortcut bounds
SHORTCUT_CHUNK = 1024

#: Adam steps of the root's intermediate-bound α-CROWN (eran_2021's sigmoid net needed up to ~60; on mnist_fc 256x4
#: prop_8_0.03, 20 steps end at the same final bound as 60 but the search then needs 641+ domains instead of 371:
#: the intermediate bounds it keeps are looser)
ROOT_ITERATIONS = 60
#: the share of the time left that those steps may take: on sri_resnet_a's ResNet a step takes about 1 s and the bound
#: gains 0.03 in steps 8-30 (-0.62 to -0.59); with half the time left for them the search ended at -0.21 to -0.22
#: after 60 s, with a quarter at -0.19 (idx_5209)
ROOT_SHARE = 0.25

#: Adam steps of α/β per round (children start where their parent ended) on a network whose split nodes are all
#: piecewise linear (ReLU): for the same number of steps, 10 per round proved 2.4x as many domains as 20 on
#: oval21 base_kw img8194 and 2.7x on mnist_fc 256x4 prop_8_0.03, and mnist_fc 256x2 prop_6_0.03 was verified
#: with 281 steps instead of 621 (5 per round never converged). Smooth nonlinearities, whose α are tangent
#: points, keep `AlphaOptions`' default (not measured).
ROUND_ITERATIONS = 10
#: a round in which more than this share of the domains bounded did not raise the margin bound they inherited
#: doubles the Adam steps of the next rounds (up to `MAX_ROUND_ITERATIONS`); below a quarter of it, they halve back
#: towards the start. β needs many steps to prove a domain whose splits no input meets (its bound then grows
#: without limit): on mnist_fc 256x2 prop_10_0.05, 10 steps per round left 43-91% of each round's domains where
#: their parents were, and the search spent 60 s 45 splits deep on one disjunct; 20 steps left 2-7% and proved the
#: property in 11 s. Where 10 steps leave nothing stalled (oval21 base_kw img8194, mnist_fc 256x4 prop_8_0.03),
#: they stay at 10.
STALL_SHARE = 0.25
MAX_ROUND_ITERATIONS = 80

#: rounds (counted from 1) at which a search that chooses for itself (`refine_intermediate` None) bounds its first
#: chunk both with and without re-bounding the intermediate nodes and keeps the one that pays (`refine_pays`); one
#: round in 8 then one in 64 costs a few percent of a search, and a choice made in the first round is checked deeper
#: in the tree, where splits have narrowed more
TRIAL_ROUNDS = (1, 8, 64, 512)
#: fewest domains a first-round probe of re-bounding measures (`DomainBounder._probe`): the root's pass times the
#: batch overestimates a batched round 3.6-7.7x on eran's 9x200 ReLU MLP (1.0 s measured for 64 domains, 3.6-7.7 s
#: estimated as the machine's load varied), and the decision flipped with that noise: the search proved
#: mnist_relu_9_200 idx_186 in 245 domains when it re-bounded, and timed out after 7,617 when it did not
PROBE_MIN = 4
#: re-bounding pays when the tree of domains it leaves to split (`_subtree`), times its cost, is smaller by more than
#: this share than the plain pass's, or it raises the domains' mean bound gain over the parents' per second of
#: bounding by more than this share. On oval21 base_kw
#: img8194 the two passes' bounds agree to 1e-5 in every round while re-bounding takes 4.6x as long (1451 domains in
#: 6.1 s without it, 1435 in 18.8 s with it); on mnist_fc 256x4 prop_8_0.03 it proves 16 of 64 domains against 0 in
#: 1.45x the time, and without it the search times out at 60 s; on oval21 deep_kw img4510 it raised the mean gain
#: 3.6% in 4.5x the time (a search of 1,409 domains instead of 4,929)
REFINE_MARGIN = 0.05
#: levels of splitting over which `refine_pays` weighs the domains each pass proves (`_subtree`)
PAYBACK_LEVELS = 8


class DomainBounder:
    """Bounds the property margin of domains: min over disjuncts of the best row's `C y - d` lower bound.

    "alpha-crown" optimizes α with the domains' split multipliers β (beta.py); "crown" uses neither,
    so its splits only tighten relaxations.

    >>> import torch
    >>> from opwise.bounds.spec import Specification, robustness_disjuncts
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    >>> bounder = DomainBounder(BoundedModel(model, torch.zeros(1, 2)),
    ...     Specification(torch.zeros(1, 2), torch.ones(1, 2) * 0.1, robustness_disjuncts(2, 0)), "crown")
    >>> root = bounder.root()
    >>> sorted(root.intervals), root.guide is not None
    (['linear'], True)
    """

    def __init__(self, bounded: BoundedModel, spec: Specification, method: str = "alpha-crown",
                 alpha: AlphaOptions | None = None, refine_intermediate: bool | None = None):
        if method not in ("crown", "alpha-crown"):
            raise InputError(f"branch-and-bound bounds with 'crown' or 'alpha-crown', not {method!r}")
        self.bounded, self.spec, self.method, self.alpha = bounded, spec, method, alpha
        self.C = torch.cat([d.C for d in spec.unsafe]).to(bounded.device)
        self.d = torch.cat([d.d for d in spec.unsafe]).to(bounded.device)
        self.groups = [len(d.d) for d in spec.unsafe]
        self.nodes: list[SplitNode] = split_nodes(bounded.graph)
        #: nodes whose intervals a round may bound again per domain (those after a split node), and whether rounds
        #: do (None: the search chooses, within the time `refines` allows, by trial rounds)
        self.refined = after_split_nodes(bounded.graph, self.nodes)
        self.refine_intermediate = refine_intermediate
        #: whether re-bounding fits in the time (`refines`, decided at the first round)
        self._fits: bool | None = None
        #: whether the rounds re-bound those nodes now: what `refine_intermediate` says, else the last trial's choice
        self.refining = bool(refine_intermediate)
        #: rounds bounded so far (`TRIAL_ROUNDS`)
        self.rounds = 0
        #: seconds the root's CROWN pass over the intermediate bounds took (one domain)
        self.intermediate_seconds = 0.0
        #: Adam steps per round by default (`ROUND_ITERATIONS` where every split node is piecewise linear)
        self.round_iterations = ROUND_ITERATIONS if self.nodes and all(
            getattr(node.relaxation, "piecewise_linear", False) for node in self.nodes) else AlphaOptions().iterations
        self.first_round_iterations = self.round_iterations
        self.visited = 0
        #: points of the input set where the last call's unproved rows are smallest ([n, *input shape])
        self.candidates = spec.x_lower[:0].to(bounded.device)

    def input_set(self, batch: int) -> InputSet:
        """The specification's input set (its box, or its ball) for `batch` domains: every domain bounds over it."""
        return self.spec.region.to(self.bounded.device).expand(batch)

    def root(self, deadline: float | None = None) -> Domain:
        """The unsplit domain, bounded; its intervals (the engine's intermediate bounds) are kept for reuse."""
        infinite = torch.full((1,), math.inf, device=self.bounded.device)
        domain = Domain({node.input: Interval(-infinite, infinite)
                         for node in self.nodes})
        engine = BoundPropagation(self.bounded.graph, self.input_set(1), "crown", record=self._recorded(),
                                  output_specs=self.output_specs(self.bounded.graph))
        progress = self.bounded.progress
        started = time.monotonic()
        if progress is not None:  # the root's bound pass is most of a small search's time: shown layer by layer
            settle_intermediate_bounds(engine, engine.graph.output, lambda report: progress({"search": "crown", **report}))
        engine.prepare(engine.graph.output)
        self.intermediate_seconds = time.monotonic() - started
        open_rows = None
        if self.method == "alpha-crown":
            row_bounds = proving_margins(self._tighten_intermediate(engine, deadline)[:, 0], self.d)
            proved = torch.stack([(part > 0).any() for part in row_bounds.split(self.groups)]).all()
            if proved:  # every disjunct ruled out already: one pass for the guide, no α steps (no search follows)
                domain.row_bounds = row_bounds
                open_rows = torch.zeros(len(row_bounds), 1, dtype=torch.bool, device=row_bounds.device)
        self.candidates = self.candidates[:0]
        rows = self._bound_with(engine, [domain], deadline, open_rows=open_rows)
        self.root_engine = engine
        self._drop_ruled_out(rows[:, 0], domain)
        self.root_intervals = engine.known_intervals()
        return domain

    def _recorded(self) -> list[str]:
        """The nodes whose coefficients guide branching (the split nonlinearities)."""
        return [node.nonlinear for node in self.nodes]

    def _tighten_intermediate(self, engine: BoundPropagation, deadline: float | None) -> torch.Tensor:
        """α-CROWN over every intermediate bound at the root (`optimize_bounds`): the engine keeps the best
        intervals, which every domain then reuses. Stops once every row is proved, or at `ROOT_SHARE` of the time left.
        Returns the output rows' lower bounds [rows, 1]."""
        output = engine.graph.output
        A = self.output_specs(engine)  # the CROWN pass over the intermediate bounds is done: α's share is of what it leaves
        budget = None if deadline is None else max(0.0, (deadline - time.monotonic()) * ROOT_SHARE)
        options = dataclasses.replace(self.alpha or AlphaOptions(), intermediate=True, iterations=ROOT_ITERATIONS,
                                      stop_above=self.d[:, None], time_limit=budget)
        return optimize_bounds(engine, output, A, options).detach()

    def bound(self, domains: list[Domain], batch_size: int, deadline: float | None = None) -> None:
        """Set each domain's `lower`, `row_bounds`, `guide`, α/β and intervals (infeasible domains get +inf).

        A domain's split nodes keep its own (narrowed) intervals and every other node the root's, all sound on the
        domain; where rounds refine (`refines`), the nodes after a split node are bounded again within them. The
        output is bounded only in the rows of the disjuncts some domain of the chunk leaves open (`open_rows`).
        """
        size = self._chunk_size(batch_size)
        self.candidates = self.candidates[:0]
        self.rounds += 1
        chooses = self.refine_intermediate is None
        probed = self._probe(domains, size, deadline) if chooses and self._fits is None else 0
        allowed = self.refines(size, deadline)
        if not probed:
            self.refining = allowed and (self.refining or not chooses or self.rounds == 1)
        trial = chooses and allowed and self.rounds in TRIAL_ROUNDS and not probed
        for positions, real in padded_chunks(len(domains) - probed, size):
            padded = [domains[probed + index] for index in positions]
            if trial:
                self.refining, trial = self._trial(padded, real, size, deadline)[0], False
            else:
                self._bound_chunk(padded, real, size, self.refining, deadline)
        self.adapt_iterations(sum(domain.stalled for domain in domains) / max(1, len(domains)))

    def _chunk_size(self, batch_size: int) -> int:
        """Domains per engine pass: the graph's batch for `batch_size` (1 where the graph folds its samples
        together, which the engine cannot keep apart)."""
        return self.bounded.graph.for_batch(1 if self.bounded.folds_samples() else batch_size).batch_size

    def _bound_chunk(self, padded: list[Domain], real: int, size: int, refine: bool, deadline: float | None,
                     steps: int | None = None) -> None:
        """Bound one chunk of domains (padded to the graph's batch `size`; the first `real` are the chunk's own);
        `steps`: Adam steps of α/β (None: the rounds' own)."""
        self._bound_with(self.engine_for(padded, size, refine), padded[:real], deadline, _stacked_parameters(padded),
                         self.open_rows(padded), steps)

    def evaluate(self, domains: list[Domain], batch_size: int, deadline: float | None = None) -> list[float]:
        """Each domain's margin bound from one bound pass at the α/β it inherited (no Adam step, the intermediate
        nodes not bounded again): what strong branching compares candidate splits by (`strong_splits`). The
        domains are a search's throwaway candidates: they count as no visit.

        >>> import torch
        >>> from opwise.bounds.spec import robustness_disjuncts
        >>> _ = torch.manual_seed(1)
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> bounder = DomainBounder(BoundedModel(model, torch.zeros(1, 2)),
        ...     Specification(-torch.ones(1, 2), torch.ones(1, 2), robustness_disjuncts(2, 0)))
        >>> root = bounder.root()
        >>> children = [c for i in range(3) for c in root.split("linear", i, 0.0)]
        >>> bounds = bounder.evaluate(children, 8)
        >>> len(bounds), max(bounds) > root.lower, bounder.visited  # a split that tightens a ReLU shows; no visit
        (6, True, 1)
        """
        size = self._chunk_size(batch_size)
        visited = self.visited
        for positions, real in padded_chunks(len(domains), size):
            self._bound_chunk([domains[index] for index in positions], real, size, False, deadline, steps=0)
        self.visited = visited
        return [domain.lower for domain in domains]

    def _trial(self, padded: list[Domain], real: int, size: int, deadline: float | None) -> tuple[bool, float]:
        """Bound a chunk as the rounds do now (`refining`) and copies of it the other way; returns whether
        re-bounding the intermediate nodes paid on it (`refine_pays`) and the seconds the re-bounding pass took. The
        copies' bounds are dropped (the domains keep the way the rounds do now), but not their candidate
        counterexamples."""
        inherited = [domain.lower for domain in padded[:real]]
        copies = [dataclasses.replace(domain, intervals=dict(domain.intervals)) for domain in padded]
        visited, seconds = self.visited, {}
        for chunk, refine in ((copies, not self.refining), (padded, self.refining)):
            self.visited, started = visited, time.monotonic()  # the copies' pass visits nothing
            self._bound_chunk(chunk, real, size, refine, deadline)
            seconds[refine] = time.monotonic() - started
        refined, plain = (padded, copies) if self.refining else (copies, padded)
        pays = refine_pays(inherited, [d.lower for d in refined[:real]], [d.lower for d in plain[:real]],
                           cost=seconds[True] / max(seconds[False], 1e-9))
        return pays, seconds[True]

    def _probe(self, domains: list[Domain], size: int, deadline: float | None) -> int:
        """Decide `refines` by measuring, where the root's estimate says a round of re-bounding would not fit: the
        first domains, as many as the estimate lets fit (a power of two, at least `PROBE_MIN`), are bounded both
        ways (they keep the plain pass's bounds); re-bounding fits when that measured pass, scaled to `size`
        domains, fits in `REFINE_SHARE` of the time left, and the rounds re-bound when it also paid. Returns how many
        domains it bounded (0: no probe; the estimate decides as before)."""
        if deadline is None:
            return 0
        share = REFINE_SHARE * max(0.0, deadline - time.monotonic())
        if size * self.intermediate_seconds <= share or not domains:
            return 0
        count = 1 << int(math.log2(max(1.0, share / max(self.intermediate_seconds, 1e-9))))
        count = self._chunk_size(count) if count >= PROBE_MIN else 0
        if not PROBE_MIN <= count < size:
            return 0
        positions, real = padded_chunks(len(domains), count)[0]
        self.refining = False
        pays, seconds = self._trial([domains[index] for index in positions], real, count, deadline)
        self._fits = seconds * size / count <= REFINE_SHARE * max(0.0, deadline - time.monotonic())
        self.refining = self._fits and pays
        return real

    def adapt_iterations(self, stalled: float) -> None:
        """Double the Adam steps per round after a round whose share `stalled` of domains kept their inherited bound
        (above `STALL_SHARE`), or halve them back towards the first rounds' after one with few such domains.

        >>> import torch
        >>> from opwise.bounds.spec import robustness_disjuncts
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        >>> bounder = DomainBounder(BoundedModel(model, torch.zeros(1, 2)),
        ...                         Specification(torch.zeros(1, 2), torch.ones(1, 2), robustness_disjuncts(2, 0)))
        >>> steps = []
        >>> for share in (0.9, 0.5, 0.1, 0.0, 0.0): bounder.adapt_iterations(share); steps.append(bounder.round_iterations)
        >>> steps
        [20, 40, 40, 20, 10]
        """
        if stalled > STALL_SHARE:
            self.round_iterations = min(2 * self.round_iterations, MAX_ROUND_ITERATIONS)
        elif stalled < STALL_SHARE / 4:
            self.round_iterations = max(self.round_iterations // 2, self.first_round_iterations)

    def refines(self, batch: int, deadline: float | None) -> bool:
        """Whether rounds bound the intermediate nodes after a split node again per domain, decided once: as
        `refine_intermediate` says, else (None) when a round's share of that work, the root's intermediate pass
        times the `batch`, fits in `REFINE_SHARE` of the time left (always without a deadline).

        Re-bounding tightens each domain's relaxations (it pays on ReLU MLPs and small CNNs, 0.02-0.055 s a domain at
        the root); on networks where one domain's pass takes longer (attention, ResNets, a cGAN: 0.24-15 s) a
        round of 64 domains would outlast the search, and the root's intervals, narrowed at the splits, are what
        GenBaB and α,β-CROWN keep for them."""
        if self.refine_intermediate is not None:
            return self.refine_intermediate
        if self._fits is None:
            self._fits = deadline is None or \
                batch * self.intermediate_seconds <= REFINE_SHARE * max(0.0, deadline - time.monotonic())
        return self._fits

    def open_rows(self, domains: list[Domain]) -> torch.Tensor | None:
        """[rows, domains] bool: the rows of each domain's disjuncts that its bounds (its own or an
        ancestor's: `row_bounds`) leave open; None when a domain has no row bounds yet (bound every row).

        A disjunct is ruled out when one of its rows has a positive bound; its rows need no bounding again.
        """
        if any(d.row_bounds is None for d in domains):
            return None
        bounds = torch.stack([d.row_bounds for d in domains], 1)
        open_rows, start = torch.ones_like(bounds, dtype=torch.bool), 0
        for size in self.groups:
            open_rows[start : start + size] = ~(bounds[start : start + size] > 0).any(0, keepdim=True)
            start += size
        return open_rows

    def engine_for(self, domains: list[Domain], size: int, refine: bool) -> BoundPropagation:
        """The engine that bounds `domains` (padded to the graph's batch `size`): each one's intervals as splits, the
        root's elsewhere; with `refine`, the nodes after a split node are bounded again within them."""
        graph = self.bounded.graph.for_batch(size)
        self.bounded.check_samples_independent(graph)
        intervals = stack_intervals(domains)
        known, outer = {}, {}  # outer: the engine bounds the node again, within the domain's interval
        for name in self.root_intervals:
            interval = intervals.get(name) or self._root_interval(name, graph, size)
            if interval is not None:
                (outer if refine and name in self.refined else known)[name] = interval
        return BoundPropagation(graph, self.input_set(size), "crown", intervals, known=known, outer=outer,
                                record=self._recorded(), output_specs=self.output_specs(graph))

    def _root_interval(self, name: str, graph, size: int) -> Interval | None:
        """The root's interval of a node, repeated over a batch of `size` (None where its batch is folded)."""
        interval = self.root_intervals.get(name)
        if interval is None or interval.lower.shape[:1] != (1,):
            return None
        shape = graph.info(graph.node(name)).shape
        if shape is None or tuple(shape) != (size, *interval.lower.shape[1:]):
            return None
        return Interval(interval.lower.expand(shape), interval.upper.expand(shape))

    def output_specs(self, engine: BoundPropagation | Graph, C: torch.Tensor | None = None) -> torch.Tensor:
        """The property's rows (or the rows `C`) as backward coefficients of the output of the engine's graph (or
        of `engine`, a graph), [rows, batch, *output shape]."""
        C = self.C if C is None else C
        graph = engine if isinstance(engine, Graph) else engine.graph
        shape = graph.info(graph.output).shape
        return C[:, None, :].expand(len(C), shape[0], C.shape[1]).reshape(len(C), *shape)

    def _bound_with(self, engine: BoundPropagation, domains: list[Domain], deadline: float | None,
                    warm: Parameters | None = None, open_rows: torch.Tensor | None = None,
                    steps: int | None = None) -> torch.Tensor:
        """Bound the domains in one engine pass; returns every row's bound ([rows, batch]). With `open_rows`
        ([rows, batch], see `open_rows`) only the rows open in some domain are bounded; the others keep the
        domain's `row_bounds`, and every row keeps the better of its new and its inherited bound. `steps`: Adam
        steps of α/β instead of the rounds' (0: one pass at the warm start)."""
        graph, count = engine.graph, len(domains)
        output = graph.output
        wanted = None if open_rows is None else open_rows.any(1)
        # every row when all are open somewhere, or none is (domains proved already: bound them all the same)
        picked = None if wanted is None or bool(wanted.all()) or not bool(wanted.any()) else wanted.nonzero().flatten()
        C, d = (self.C, self.d) if picked is None else (self.C[picked], self.d[picked])
        A = self.output_specs(engine, C)
        engine.prepare(output)
        parameters = {}
        if self.method == "alpha-crown":
            options = self.alpha  # given options are used as they are (stop_above None: never stop early)
            if options is None and open_rows is not None:  # the default: stop once every open row is proved
                still_open = open_rows if picked is None else open_rows[picked]
                options = AlphaOptions(iterations=self.round_iterations, stop_above=torch.where(still_open, d[:, None], -math.inf))
            if steps is not None:
                options = dataclasses.replace(options or AlphaOptions(), iterations=steps)
            lower, parameters, last = optimize_alpha_beta(engine, output, A, options, warm=_rows_of(warm, picked),
                                                          deadline=deadline)
            if picked is not None:
                parameters = _with_rows(warm, picked, parameters)
        else:
            last = engine.bound(output, A)
            lower = last.lower
        row_bounds = proving_margins(lower.detach(), d[:, None])
        if open_rows is not None:  # every row keeps the better of its inherited and its new bound (if bounded)
            padding = [domains[-1].row_bounds] * (row_bounds.shape[1] - count)
            inherited = torch.stack([domain.row_bounds for domain in domains] + padding, 1)
            row_bounds = torch.maximum(inherited, row_bounds) if picked is None else \
                inherited.index_copy(0, picked, torch.maximum(inherited[picked], row_bounds))
        margins, rows = self._margins(row_bounds)
        position = torch.arange(len(self.C), device=rows.device) if picked is None else \
            torch.zeros(len(self.C), dtype=torch.long, device=rows.device).index_copy(0, picked, torch.arange(len(picked), device=rows.device))
        input_coefficient, bias = (t.detach() for t in last.linear)
        self._keep_candidates(input_coefficient, row_bounds if picked is None else row_bounds[picked], count)
        self.visited += count
        # the α of the rows bounded, for the products' guides (picked once: a copy of every α per domain cost 17% of a
        # round on sri's ResNet, which has no product)
        products = any(node.other is not None for node in self.nodes)
        bounded_parameters = (parameters if picked is None else _rows_of(parameters, picked)) if products else {}
        parts = {name: [_domain_parts(t, engine.batch) for t in (pair.lower, pair.upper)] for name, pair in parameters.items()}
        for index, domain in enumerate(domains):
            row = int(position[rows[index]])  # the deciding row among those bounded (any, once the domain is proved)
            infeasible = bool(engine.infeasible[index])
            # a child's inputs are among its parent's, so the parent's bound (carried in `lower`) holds too
            domain.stalled = not infeasible and not float(margins[index]) > domain.lower
            domain.lower = math.inf if infeasible else max(domain.lower, float(margins[index]))
            domain.row_bounds = torch.full_like(row_bounds[:, index], math.inf) if infeasible else row_bounds[:, index].clone()
            domain.guide = Guide({node.nonlinear: last.recorded[graph.node(node.nonlinear)][row, index : index + 1]
                                  for node in self.nodes},
                                 input_coefficient[row, index : index + 1], bias[row, index],
                                 self._product_alphas(bounded_parameters, row, index))
            domain.parameters = {name: AlphaPair(*(None if side is None else side[index] for side in sides))
                                 for name, sides in parts.items()} or None
            if not infeasible:
                for node in self.nodes:
                    interval = engine.interval(graph.node(node.input))
                    domain.intervals[node.input] = Interval(interval.lower[index : index + 1], interval.upper[index : index + 1])
        return row_bounds

    def _product_alphas(self, parameters: Parameters, row: int, index: int) -> dict[str, AlphaPair]:
        """The α of every split product's planes in spec row `row` of domain `index` ([1, *product shape])."""
        alphas = {}
        for node in self.nodes:
            pair = parameters.get(node.nonlinear) if node.other is not None else None
            if pair is not None and pair.lower is not None and pair.upper is not None:
                alphas[node.nonlinear] = AlphaPair(pair.lower[row, index : index + 1], pair.upper[row, index : index + 1])
        return alphas

    def _drop_ruled_out(self, row_bounds: torch.Tensor, root: Domain) -> None:
        """Keep only the disjuncts the root leaves open: one that a row's bound rules out on the whole
        input set is ruled out on every domain, so the search need not bound it again."""
        keep, groups, start = [], [], 0
        for size in self.groups:
            if not (row_bounds[start : start + size] > 0).any():
                keep += range(start, start + size)
                groups.append(size)
            start += size
        if not groups or len(keep) == len(self.C):
            return
        keep = torch.tensor(keep, device=self.C.device)
        self.C, self.d, self.groups = self.C[keep], self.d[keep], groups
        if root.row_bounds is not None:
            root.row_bounds = root.row_bounds[keep]
        if root.parameters is not None:
            root.parameters = {name: AlphaPair(*(None if t is None else t[keep] for t in (pair.lower, pair.upper)))
                               for name, pair in root.parameters.items()}

    def _margins(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per domain the margin bound (min over disjuncts of max over their rows) and its deciding row."""
        best_values, best_rows = [], []
        start = 0
        for size in self.groups:
            value, row = rows[start : start + size].max(0)
            best_values.append(value)
            best_rows.append(row + start)
            start += size
        values, rows_ = torch.stack(best_values), torch.stack(best_rows)
        worst = values.argmin(0)
        pick = torch.arange(values.shape[1], device=values.device)
        return values[worst, pick], rows_[worst, pick]

    def shortcuts(self) -> dict[str, Shortcut]:
        """Linear bounds of every split node's input in terms of the input, over the whole input set (the root's
        engine, CROWN): at once for a node whose rows fit in one pass, else each element's when branching first
        asks for it (a pass per round for the new candidates costs more than one pass for a small node's every row:
        about 5% fewer domains in 60 s on eran's mnist_relu_9_200)."""
        engine = self.root_engine
        inputs = math.prod(self.spec.x_lower.shape[1:])
        result = {}
        for node in self.nodes:
            if node.input in result:
                continue
            target = engine.graph.node(node.input)
            elements = math.prod(engine.graph.info(target).shape[1:])
            compute = partial(element_linear_bounds, engine, target)
            if 2 * elements <= SHORTCUT_CHUNK:  # the whole node in one pass: no pass per round for new candidates
                result[node.input] = Shortcut(*compute(torch.arange(elements, device=self.bounded.device)))
            else:
                result[node.input] = Shortcut.lazy(elements, inputs, compute, device=self.bounded.device,
                                                   dtype=self.spec.x_lower.dtype)
        return result

    def _keep_candidates(self, input_coefficient: torch.Tensor, bounded_rows: torch.Tensor, count: int) -> None:
        """Add to `candidates` (emptied by each `root` and `bound` call) the minimisers over the input set of the
        linear bounds of every row a pass left unproved ([rows, batch, *input] coefficients; rows bounded
        [rows, batch]), for its first `count` domains (the rest is padding), at most one per domain or per row
        (the lowest bounds): each is a likely counterexample of its own disjunct, and a domain's worst row (its
        guide's) is not always the one a counterexample violates."""
        bounds = bounded_rows[:, :count].flatten()
        unproved = (~(bounds > 0)).nonzero().flatten()
        limit = max(count, len(bounded_rows))  # a forward pass per candidate: one per domain or row, lowest bounds first
        if len(unproved) > limit:
            unproved = unproved[bounds[unproved].nan_to_num(-math.inf).topk(limit, largest=False).indices]
        coefficients = input_coefficient[:, :count].reshape(-1, *input_coefficient.shape[2:])
        self.candidates = torch.cat([self.candidates, self.input_set(1).minimizer(coefficients[unproved])])

    def primal_inputs(self, domains: list[Domain]) -> torch.Tensor:
        """Per domain, the point of the input set that minimizes its bound's linear function (a box corner, a
        point on the ball): a likely counterexample."""
        return self.input_set(1).minimizer(torch.cat([d.guide.input_coefficient for d in domains]))


def element_linear_bounds(engine: BoundPropagation, target: fx.Node, elements: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """CROWN's linear lower and upper bounds of `target`'s flat `elements` in terms of the input, in passes of
    at most `SHORTCUT_CHUNK` rows: (lower coefficient [m, inputs], lower bias [m], upper ...)."""
    shape = engine.graph.info(target).shape
    size = math.prod(shape[1:])
    coefficients, biases = [], []
    for chunk in torch.cat([elements, elements + size]).split(SHORTCUT_CHUNK):
        A = torch.zeros(len(chunk), size, dtype=engine.input_set.lower.dtype, device=elements.device)
        A[torch.arange(len(chunk), device=elements.device), chunk % size] = torch.where(chunk < size, 1.0, -1.0).to(A.dtype)
        coefficient, bias = engine.bound(target, A.reshape(len(chunk), 1, *shape[1:]), record=False).linear
        coefficients.append(coefficient.detach().reshape(len(chunk), -1))
        biases.append(bias.detach()[:, 0])
    coefficient, bias = torch.cat(coefficients), torch.cat(biases)
    count = len(elements)
    return coefficient[:count], bias[:count], -coefficient[count:], -bias[count:]


def refine_pays(inherited: list[float], refined: list[float], plain: list[float], cost: float = 1.0) -> bool:
    """Whether bounds with the intermediate nodes re-bounded per domain (`refined`, which took `cost` times as long
    as the plain pass) beat those without (`plain`) on the same domains by more than `REFINE_MARGIN`: in domains
    proved (+inf: infeasible), weighed by the subtrees each pass leaves to search (`_subtree`) times its cost, or
    else in mean gain over the bounds the domains `inherited` (among the domains that neither pass proved) per
    second of bounding. Re-bounding costs a CROWN pass over every later layer per domain, so it must show in the
    bounds as much as in the time: the plain pass bounds `cost` times as many domains meanwhile.

    >>> refine_pays([-1.0] * 4, [0.5, 0.5, -0.5, -0.5], [0.5, -0.5, -0.5, -0.5])   # 2 proved against 1
    True
    >>> refine_pays([-1.0] * 4, [-0.5] * 4, [-0.50001] * 4)                         # the same gain
    False
    >>> refine_pays([-1.0] * 2, [-0.5, -0.5], [-0.8, -0.8])                         # a gain of 0.5 against 0.2
    True
    >>> refine_pays([-1.0] * 2, [-0.5, -0.5], [-0.8, -0.8], cost=4.0)               # ... in 4x the time
    False
    """
    count, cost = len(inherited), max(cost, 1.0)
    proved_refined, proved_plain = sum(bound > 0 for bound in refined), sum(bound > 0 for bound in plain)
    if proved_refined > proved_plain and \
            _subtree(proved_plain / count) > cost * (1 + REFINE_MARGIN) * _subtree(proved_refined / count):
        return True
    gains = [(r - i, p - i) for i, r, p in zip(inherited, refined, plain)
             if math.isfinite(i) and not r > 0 and not p > 0]
    if not gains:
        return False
    gain_refined, gain_plain = (sum(g) / len(gains) for g in zip(*gains))
    return max(gain_refined, 0.0) / cost - gain_plain > REFINE_MARGIN * max(abs(gain_plain), 1e-12)


def _subtree(proved: float) -> float:
    """Domains a search bounds below one domain when each round proves the share `proved` of them and splits the
    rest in two (`PAYBACK_LEVELS` levels deep): a share proved compounds, so it is weighed by the tree it saves and
    not by domains per second (on eran's mnist_relu_9_200 idx_186 re-bounding proved 47 of 64 first-round domains
    against 8 in 4.2-5.9x the time, a knife edge by rate, and the search took 245 domains with it, 7,617 without).

    >>> round(_subtree(0.0)), round(_subtree(0.5)), round(_subtree(0.75), 2)
    (511, 9, 2.0)
    """
    growth = 2 * (1 - proved)
    return sum(growth**level for level in range(PAYBACK_LEVELS + 1))


def after_split_nodes(graph, nodes: list[SplitNode]) -> frozenset[str]:
    """Names of the graph's nodes that depend on the input of a split node (a split there can narrow them).

    >>> import torch, opwise
    >>> from opwise.bounds.strategies.genbab.branching import split_nodes
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 3), torch.nn.ReLU())
    >>> graph = opwise.trace(model, torch.zeros(1, 2))
    >>> sorted(after_split_nodes(graph, split_nodes(graph)))
    ['linear_1', 'output', 'relu', 'relu_1']
    """
    inputs = {node.input for node in nodes}
    after: set[str] = set()
    for node in graph.nodes:  # topological order
        if any(arg.name in inputs or arg.name in after for arg in node.all_input_nodes):
            after.add(node.name)
    return frozenset(after)


def _rows_of(parameters: Parameters | None, rows: torch.Tensor | None) -> Parameters | None:
    """The α/β of the spec rows `rows` only (all of them when None)."""
    if parameters is None or rows is None:
        return parameters
    return {name: AlphaPair(*(None if t is None else t[rows] for t in (pair.lower, pair.upper))) for name, pair in parameters.items()}


def _with_rows(full: Parameters | None, rows: torch.Tensor, ended: Parameters) -> Parameters:
    """`full` (every row) with the rows `rows` replaced by `ended` (what a pass over those rows ended with): the
    rows not bounded keep their warm start for the domains' children (a β that `full` lacks starts at 0 there).
    Without a warm start for some α, `ended` is not enough for a child that bounds other rows: none then
    (children start at CROWN's α)."""
    if full is None or any(name not in full and not name.startswith(BETA) for name in ended):
        return {}

    result = {}
    for name, pair in ended.items():
        before = full.get(name)
        if before is None:  # a β new in this pass: 0 (sound, CROWN's start) on the other rows
            specs = next(t for p in full.values() for t in (p.lower, p.upper) if t is not None).shape[0]
            before = AlphaPair(*(None if t is None else t.new_zeros((specs, *t.shape[1:])) for t in (pair.lower, pair.upper)))
        result[name] = AlphaPair(*(None if b is None or e is None else b.index_copy(0, rows, e)
                                   for b, e in ((before.lower, pair.lower), (before.upper, pair.upper))))
    return result


def _domain_parts(parameter: torch.Tensor | None, domains: int) -> tuple[torch.Tensor, ...] | None:
    """Each domain's part of an α or β batched along dim 1 over `domains` domains (None stays None): one entry per
    domain, or several where the node folds attention heads into that dimension (domain-major, as the fold orders
    them).

    >>> [part.tolist() for part in _domain_parts(torch.arange(6.0).reshape(1, 6), 2)]
    [[[0.0, 1.0, 2.0]], [[3.0, 4.0, 5.0]]]
    """
    if parameter is None:
        return None
    return parameter.split(parameter.shape[1] // domains, dim=1)


def _stacked_parameters(domains: list[Domain]) -> Parameters | None:
    """The domains' α/β warm starts batched along dim 1 (None unless every domain has one)."""
    if any(d.parameters is None for d in domains):
        return None

    def stacked(name: str, side: str) -> torch.Tensor | None:
        parts = [getattr(d.parameters[name], side) for d in domains]
        return None if parts[0] is None else torch.cat(parts, 1)

    return {name: AlphaPair(stacked(name, "lower"), stacked(name, "upper")) for name in domains[0].parameters}
