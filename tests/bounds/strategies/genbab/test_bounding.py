"""DomainBounder: warm-started α/β and reused intermediate bounds stay sound over generations of splits;
disjuncts the root rules out leave the search; timeouts are kept."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch

from opwise.bounds.strategies.beta import BETA
from opwise.bounds.strategies.genbab.bounding import DomainBounder
from opwise.bounds.strategies.genbab.branching import split_nodes
from opwise.bounds.strategies.genbab.search import branch_and_bound
from opwise.bounds import BoundedModel
from opwise.tracing import trace
from opwise.bounds.spec import Disjunct, Specification
from tests.bounds.strategies.genbab.test_search import (BOX, FAST, assert_domains_bound_their_samples, cases, pre_activations,
                                         threshold_spec, tiny_network)


def _split_randomly(domains, generator):
    children = []
    for domain in domains:
        name = list(domain.intervals)[int(torch.randint(len(domain.intervals), (1,), generator=generator))]
        interval = domain.intervals[name]
        index = int(torch.randint(interval.lower.numel(), (1,), generator=generator))
        low, high = float(interval.lower.view(-1)[index]), float(interval.upper.view(-1)[index])
        children += domain.split(name, index, low + (high - low) * float(torch.rand(1, generator=generator)))
    return children


def test_warm_started_generations_bound_every_sample_they_contain():
    """Three generations, each bounded from its parent's α and β (nonzero by then), hold on 4,000 samples."""
    generator = torch.Generator().manual_seed(1)
    x = BOX[0] + (BOX[1] - BOX[0]) * torch.rand(4000, 2, generator=generator)
    for model, bounded, grid_min, spread in cases(range(2)):
        spec = threshold_spec(grid_min - 0.3 * spread)
        bounder = DomainBounder(bounded, spec, "alpha-crown", FAST)
        domains = [bounder.root()]
        values = pre_activations(bounded, x)
        with torch.no_grad():
            y = model(x)
        margin = y[:, 0] - y[:, 1] - float(spec.unsafe[0].d)
        used_beta = False
        for _ in range(3):
            domains = _split_randomly(domains, generator)
            assert all(d.parameters is not None for d in domains)  # warm start from the parent
            bounder.bound(domains, 8)
            assert_domains_bound_their_samples(domains, values, margin)
            for domain in domains:
                used_beta |= any(bool((pair.lower.abs() + pair.upper.abs() > 0).any()) for name, pair in domain.parameters.items()
                                 if name.startswith(BETA) and name[len(BETA):] in domain.intervals)
        assert used_beta, "β stayed zero: the warm start was not exercised"


def test_disjuncts_ruled_out_at_the_root_leave_the_search():
    model, bounded, grid_min, spread = next(cases([0]))
    hard = Disjunct(torch.tensor([[1.0, -1.0]]), torch.tensor([grid_min - 0.2 * spread]))
    easy = Disjunct(torch.tensor([[1.0, -1.0]]), torch.tensor([grid_min - 100.0 * spread]))
    spec = Specification(*BOX, [easy, hard])
    bounder = DomainBounder(bounded, spec, "alpha-crown", FAST)
    root = bounder.root()
    assert root.lower <= 0 and bounder.groups == [1] and float(bounder.d) == float(hard.d)
    assert all(pair.lower is None or pair.lower.shape[0] == 1 for pair in root.parameters.values())
    result = branch_and_bound(bounded, spec, timeout=30, batch_size=8, alpha=FAST)
    assert result.status == "verified" and grid_min > float(hard.d)


def test_timeout_is_kept_within_a_small_margin():
    """An undecidable-in-time case returns `timeout` close to its budget (the clock is read between Adam
    steps). Tracing the model for the batch size, a one-off per model that no clock interrupts, is done first."""
    model, bounded, grid_min, spread = next(cases([2]))
    spec = threshold_spec(grid_min - 1e-6 * spread)
    bounded.graph_for(64)
    start = time.monotonic()
    result = branch_and_bound(bounded, spec, timeout=2.0, attack=False, batch_size=64)
    elapsed = time.monotonic() - start
    assert result.status in ("timeout", "verified")
    assert elapsed < 2.0 * 1.25 + 0.5, f"took {elapsed:.2f} s for a 2 s budget"
    if result.status == "timeout":  # says how far it got
        assert result.stats["reason"].startswith(f"the time limit was reached after {result.stats['domains_visited']} domains")


#: outputs of the robustness-style test networks
CLASSES = 5


def _robustness_case(seed: int, hidden: tuple[int, ...] = (12, 12)):
    """A tiny float32 ReLU MLP (3 inputs, `hidden` widths), its float64 twin, the box around a random point, the
    target class there, and per other class j the exact smallest y_target - y_j over the box (MILP)."""
    from tests.bounds.strategies.bab_reference import milp_min_margin, random_mlp

    exact = random_mlp(seed, (3, *hidden, CLASSES))
    model = random_mlp(seed, (3, *hidden, CLASSES)).float()
    centre = torch.rand(1, 3, generator=torch.Generator().manual_seed(seed)) - 0.5
    box = (centre - 1.0, centre + 1.0)
    with torch.no_grad():
        target = int(model(centre).argmax())
    others = [j for j in range(CLASSES) if j != target]
    exact_box = tuple(b.double() for b in box)
    minima = {j: milp_min_margin(exact, _robustness_spec(exact_box, target, {j: 0.0})) for j in others}
    return model, box, target, minima


def _robustness_spec(box, target: int, thresholds: dict[int, float]) -> Specification:
    """Unsafe: y_target - y_j <= thresholds[j] for some class j (a disjunct per class)."""
    disjuncts = []
    for j, threshold in thresholds.items():
        row = torch.zeros(1, CLASSES)
        row[0, target], row[0, j] = 1.0, -1.0
        disjuncts.append(Disjunct(row.to(box[0].dtype), torch.tensor([threshold], dtype=box[0].dtype)))
    return Specification(*box, disjuncts)


def _sampled_case(seed: int, hidden: tuple[int, ...], samples: int, generator):
    """`_robustness_case` with every disjunct's threshold 10% below its exact minimum (hard, but holds): the model,
    spec, bounded model, `samples` random points of the box and their node values (`pre_activations`)."""
    model, box, target, minima = _robustness_case(seed, hidden)
    spec = _robustness_spec(box, target, {j: minimum - 0.1 * abs(minimum) for j, minimum in minima.items()})
    bounded = BoundedModel(model, torch.zeros(1, 3))
    x = box[0] + (box[1] - box[0]) * torch.rand(samples, 3, generator=generator)
    return model, spec, bounded, x, pre_activations(bounded, x)


def _split_open_domains(domains, generator):
    """Both children of every domain not proved yet, each split at a random point of a random unstable element."""
    return _split_with_constraints(domains, [[]] * len(domains), generator)[0]


def test_rows_a_domain_has_ruled_out_are_not_bounded_again_and_inherited_bounds_hold(monkeypatch):
    """Over generations of random splits, a batch bounds only the rows some domain leaves open (fewer than all,
    once the splits have ruled some disjuncts out), and every domain's row bounds, inherited or new, hold on
    every sample whose pre-activations lie in its intervals."""
    from opwise.bounds.strategies.genbab import bounding as module

    bounded_rows = []
    original = module.optimize_alpha_beta

    def spy(engine, target, A, *args, **kwargs):
        bounded_rows.append(A.shape[0])
        return original(engine, target, A, *args, **kwargs)

    monkeypatch.setattr(module, "optimize_alpha_beta", spy)
    generator = torch.Generator().manual_seed(3)
    fewer = 0
    for seed in range(2):
        model, spec, bounded, x, values = _sampled_case(seed, (12, 12), 3000, generator)
        bounder = DomainBounder(bounded, spec, "alpha-crown")
        domains = [bounder.root()]
        with torch.no_grad():
            y = model(x)
        for _ in range(3):
            domains = _split_open_domains(domains, generator)
            if not domains:
                break
            bounded_rows.clear()
            bounder.bound(domains, 2)  # chunks of two domains: some rows are ruled out in both
            fewer += any(rows < len(bounder.C) for rows in bounded_rows)
            row_values = y @ bounder.C.T - bounder.d  # [samples, rows]
            for domain in domains:
                inside = torch.ones(len(x), dtype=torch.bool)
                for name, interval in domain.intervals.items():
                    inside &= ((values[name] >= interval.lower - 1e-5) & (values[name] <= interval.upper + 1e-5)).all(1)
                if inside.any() and math.isfinite(domain.lower):
                    assert (row_values[inside].amin(0) >= domain.row_bounds - 1e-4).all()
            assert_domains_bound_their_samples(domains, values, spec.margin(y))
    assert fewer, "no batch skipped a row: the test did not exercise ruled-out rows"


def test_multi_disjunct_relu_search_agrees_with_milp():
    """Robustness-style properties (a disjunct per other class) on tiny ReLU MLPs, just above and just below the
    exact smallest margin (MILP): 'verified' only above it, 'falsified' only with a real counterexample."""
    assert sum(_decided_as_milp_says(_robustness_case(seed)) for seed in (1, 2)) >= 3


def _decided_as_milp_says(case, **options) -> int:
    """Search the case's property with every disjunct's threshold 20% of its exact minimum below it, then above it:
    'verified' only below, 'falsified' only with a real counterexample; returns how many were decided."""
    model, box, target, minima = case
    bounded = BoundedModel(model, torch.zeros(1, 3))
    decided = 0
    for sign in (-1, 1):
        spec = _robustness_spec(box, target, {j: minimum + sign * 0.2 * abs(minimum) for j, minimum in minima.items()})
        result = branch_and_bound(bounded, spec, timeout=30, batch_size=16, **options)
        if result.status == "verified":
            assert sign < 0
        if result.status == "falsified":
            assert spec.contains(result.counterexample)
            with torch.no_grad():
                assert float(spec.margin(model(result.counterexample)).min()) <= 0
        decided += result.status in ("verified", "falsified")
    return decided


class _FoldedHeads(torch.nn.Module):
    """Two attention heads folded into the batch dimension before q·kᵀ, as vit_2023's networks do."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(2, 12)
        self.query, self.key = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(18, 2)

    def forward(self, x):
        tokens = torch.relu(self.embed(x)).reshape(x.shape[0], 3, 4)
        q = self.query(tokens).reshape(-1, 3, 2, 2).permute(0, 2, 1, 3).reshape(-1, 3, 2)
        k = self.key(tokens).reshape(-1, 3, 2, 2).permute(0, 2, 1, 3).reshape(-1, 3, 2)
        scores = torch.bmm(q, k.transpose(1, 2)).reshape(x.shape[0], -1)
        return self.head(scores)


def test_products_whose_factors_fold_the_heads_into_the_batch_dimension_are_not_split():
    """Regression (vit_2023): GenBaB split such factors, and stopped with a shape mismatch (the root's shortcut passes
    dropped the folded heads; batched domains' planes met α of another shape: each domain kept one of its heads'
    α). They are no split candidates now, and each domain keeps the α of all its heads."""
    torch.manual_seed(0)
    model = _FoldedHeads().eval()
    from opwise.bounds import BoundedModel

    bounded = BoundedModel(model, torch.zeros(1, 2))
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 201), torch.linspace(-1, 1, 201), indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        y = model(grid)
    margins = y[:, 0] - y[:, 1]
    spec = threshold_spec(float(margins.min() - 0.2 * (margins.max() - margins.min())))
    assert all(node.nonlinear != "mul" for node in split_nodes(bounded.graph))
    result = branch_and_bound(bounded, spec, timeout=30, batch_size=8, alpha=FAST, branching="bbps")
    # the products stay unsplit, so the search may run out of candidates; it must branch on batched domains and
    # never claim a violation that the dense grid does not show
    assert result.stats["domains_visited"] > 8 and result.status in ("verified", "unknown")


def test_rounds_take_fewer_adam_steps_on_relu_networks_only(monkeypatch):
    """A round's Adam runs `ROUND_ITERATIONS` steps by default where every split node is a ReLU (measured to prove
    more domains per step), and AlphaOptions' default elsewhere; options the caller gives are used as they are."""
    from opwise.bounds.strategies.alpha import AlphaOptions
    from opwise.bounds.strategies.genbab import bounding as module

    seen = []
    original = module.optimize_alpha_beta

    def spy(engine, target, A, options=None, **kwargs):
        seen.append(None if options is None else options.iterations)
        return original(engine, target, A, options, **kwargs)

    monkeypatch.setattr(module, "optimize_alpha_beta", spy)
    spec = Specification(-torch.ones(1, 2), torch.ones(1, 2), [Disjunct(torch.ones(1, 1), torch.tensor([100.0]))])
    for activation, expected in ((torch.nn.ReLU(), module.ROUND_ITERATIONS), (torch.nn.Sigmoid(), AlphaOptions().iterations),
                                 (torch.nn.ReLU(), 7)):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(2, 8), activation, torch.nn.Linear(8, 1))
        given = AlphaOptions(iterations=7) if expected == 7 else None
        bounder = DomainBounder(BoundedModel(model, torch.zeros(1, 2)), spec, "alpha-crown", given)
        root = bounder.root()
        seen.clear()
        bounder.bound(_split_open_domains([root], torch.Generator().manual_seed(0)), 2)
        assert seen and all(iterations == expected for iterations in seen), (activation, seen)
    assert module.ROUND_ITERATIONS < AlphaOptions().iterations


def _deep_case(seed: int):
    """`_robustness_case` with three hidden layers: splits at the first two narrow the layers after them."""
    return _robustness_case(seed, (10, 10, 10))


def _split_with_constraints(domains, constraints, generator):
    """`_split_open_domains` that also returns each child's split constraints: (name, index, point, below)."""
    children, kept = [], []
    for domain, own in zip(domains, constraints):
        if domain.lower > 0:
            continue
        name = list(domain.intervals)[int(torch.randint(len(domain.intervals), (1,), generator=generator))]
        interval = domain.intervals[name]
        index = int(torch.randint(interval.lower.numel(), (1,), generator=generator))
        low = max(float(interval.lower.view(-1)[index]), -5.0)
        high = min(float(interval.upper.view(-1)[index]), 5.0)
        point = low + (high - low) * float(torch.rand(1, generator=generator))
        children += domain.split(name, index, point)
        kept += [own + [(name, index, point, True)], own + [(name, index, point, False)]]
    return children, kept


def test_intervals_bounded_again_after_splits_hold_on_the_samples_of_their_domain_and_only_tighten():
    """Over generations of random splits on three-layer ReLU MLPs, every interval a domain's round bounds again
    (`refine_intermediate`) holds every sample that meets the domain's split constraints (so does its margin
    bound), is inside the interval the same domain gets with intermediate bounds fixed at the root's, and is
    strictly narrower somewhere."""
    import copy

    generator = torch.Generator().manual_seed(5)
    narrower = 0
    for seed in range(3):
        model, spec, bounded, x, values = _sampled_case(seed, (10, 10, 10), 4000, generator)
        with torch.no_grad():
            margin = spec.margin(model(x))
        refined, fixed = DomainBounder(bounded, spec, "alpha-crown", FAST, refine_intermediate=True), DomainBounder(
            bounded, spec, "alpha-crown", FAST, refine_intermediate=False)
        assert refined.refined and refined.refines(4, None) and not fixed.refines(4, None)
        domains, constraints = [refined.root()], [[]]
        fixed.root()
        for _ in range(4):
            domains, constraints = _split_with_constraints(domains, constraints, generator)
            if not domains:
                break
            twins = copy.deepcopy(domains)
            refined.bound(domains, 4)
            fixed.bound(twins, 4)
            for domain, twin, own in zip(domains, twins, constraints):
                inside = torch.ones(len(x), dtype=torch.bool)
                for name, index, point, below in own:
                    inside &= values[name][:, index] <= point if below else values[name][:, index] >= point
                if not math.isfinite(domain.lower):
                    assert not inside.any(), "a domain with samples was called infeasible"
                    continue
                for name, interval in domain.intervals.items():
                    lower, upper = interval.lower.reshape(1, -1), interval.upper.reshape(1, -1)
                    assert ((values[name][inside] >= lower - 1e-4) & (values[name][inside] <= upper + 1e-4)).all(), name
                    if math.isfinite(twin.lower):
                        other = twin.intervals[name]
                        assert (interval.lower >= other.lower - 1e-4).all() and (interval.upper <= other.upper + 1e-4).all()
                        narrower += bool(((interval.upper - interval.lower) < (other.upper - other.lower) - 1e-3).any())
                if inside.any():
                    assert float(margin[inside].min()) >= domain.lower - 1e-4
    assert narrower, "no interval got narrower: the test did not exercise the refinement"


def test_deep_relu_search_with_refined_intermediate_bounds_agrees_with_milp():
    """On three-layer ReLU MLPs, properties 20% of the exact smallest margin (MILP) above or below it: 'verified'
    only above it, 'falsified' only with a real counterexample, with and without `refine_intermediate`."""
    decided = sum(_decided_as_milp_says(_deep_case(seed), refine_intermediate=refine)
                  for seed in (3, 4) for refine in (True, False))
    assert decided >= 6



@pytest.mark.parametrize("chunk", [2, None])
def test_shortcuts_are_sound_linear_bounds_computed_only_for_the_elements_asked(monkeypatch, chunk):
    """The root's shortcuts (BBPS) bound every split node's input between two linear functions of the input on
    4,000 samples of the box. Nodes whose rows take more than one pass (chunk 2 here) are bounded only in the
    elements branching asks for, each once; the others at once."""
    from opwise.bounds.strategies.genbab import bounding as module

    if chunk is not None:
        monkeypatch.setattr(module, "SHORTCUT_CHUNK", chunk)
    generator = torch.Generator().manual_seed(3)
    x = BOX[0] + (BOX[1] - BOX[0]) * torch.rand(4000, 2, generator=generator)
    for model, bounded, grid_min, spread in cases(range(3)):
        bounder = DomainBounder(bounded, threshold_spec(grid_min - 0.3 * spread), "crown")
        bounder.root()
        values = pre_activations(bounded, x)
        for name, shortcut in bounder.shortcuts().items():
            assert (shortcut._compute is not None) == (chunk is not None)
            if chunk is not None:
                asked = []
                compute = shortcut._compute
                shortcut._compute = lambda elements: asked.append(elements.tolist()) or compute(elements)
                picked = torch.tensor([[0, shortcut.elements + 0, shortcut.elements - 1]])
                shortcut.rows(picked)
                shortcut.rows(picked)  # known by now: no second pass
                assert asked == [sorted({0, shortcut.elements - 1})]
            every = torch.arange(shortcut.elements)
            coefficient, bias = shortcut.rows(torch.cat([every, every + shortcut.elements]))
            line = x @ coefficient.T + bias  # [samples, 2 * elements]
            z = values[name]
            assert (line[:, : shortcut.elements] <= z + 1e-5).all()
            assert (z <= line[:, shortcut.elements :] + 1e-5).all()


@pytest.mark.parametrize("chunk", [2, None])
def test_shortcuts_of_a_float64_network_are_float64(monkeypatch, chunk):
    """A DOUBLE ONNX network is bounded in float64: the shortcuts' unit rows must be too (they were float32, and the
    pass over the network's float64 weights raised; the planted-counterexample fuzzer's seed 38)."""
    from opwise.bounds.strategies.genbab import bounding as module

    if chunk is not None:
        monkeypatch.setattr(module, "SHORTCUT_CHUNK", chunk)
    example = torch.zeros(1, 2, dtype=torch.float64)
    bounded = BoundedModel(trace(tiny_network(torch.nn.ReLU, (4, 3)).double(), example), example)  # a Graph keeps float64
    spec = threshold_spec(-10.0).to(dtype=torch.float64)
    bounder = DomainBounder(bounded, spec, "crown")
    bounder.root()
    x = BOX[0].double() + (BOX[1] - BOX[0]).double() * torch.rand(1000, 2, generator=torch.Generator().manual_seed(0),
                                                                  dtype=torch.float64)
    values = pre_activations(bounded, x)
    for name, shortcut in bounder.shortcuts().items():
        every = torch.arange(shortcut.elements)
        coefficient, bias = shortcut.rows(torch.cat([every, every + shortcut.elements]))
        assert coefficient.dtype == bias.dtype == torch.float64
        line = x @ coefficient.T + bias
        assert (line[:, : shortcut.elements] <= values[name] + 1e-9).all()
        assert (values[name] <= line[:, shortcut.elements :] + 1e-9).all()


def test_rounds_refine_intermediate_bounds_only_where_a_round_of_it_fits_in_a_share_of_the_time_left():
    """By default (refine_intermediate None) the first round decides, once: re-bound when the root's intermediate
    pass times the batch fits in `REFINE_SHARE` of the time left, or when there is no deadline; an explicit choice
    is kept."""
    from opwise.bounds.strategies.genbab.bounding import REFINE_SHARE

    model, bounded, grid_min, spread = next(cases([0]))
    spec = threshold_spec(grid_min - 0.3 * spread)
    bounders = [DomainBounder(bounded, spec, "crown") for _ in range(4)]
    for bounder in bounders:
        bounder.root()
    assert bounders[0].intermediate_seconds > 0
    deadline = time.monotonic() + 60
    bounders[0].intermediate_seconds = 60 * REFINE_SHARE / 64 * 2  # a round of 64 would take twice its share
    bounders[1].intermediate_seconds = 60 * REFINE_SHARE / 64 / 2
    bounders[2].intermediate_seconds = 1e6
    assert not bounders[0].refines(64, deadline) and bounders[1].refines(64, deadline) and bounders[2].refines(64, None)
    bounders[1].intermediate_seconds = 1e6
    assert bounders[1].refines(64, deadline)  # decided once
    forced = DomainBounder(bounded, spec, "crown", refine_intermediate=True)
    forced.root()
    forced.intermediate_seconds = 1e6
    assert forced.refines(64, deadline)


def test_a_search_that_chooses_tries_both_ways_in_trial_rounds_and_keeps_the_one_that_pays(monkeypatch):
    """With `refine_intermediate` None (and time for it), the first round bounds its first chunk both with and
    without re-bounding the intermediate nodes; the rounds after it use what `refine_pays` chose until the next
    trial round. The trial's copies leave the domains as a round bounded the current way leaves them."""
    from opwise.bounds.strategies.genbab import bounding

    verdicts, refines, costs = iter([False, True]), [], []
    monkeypatch.setattr(bounding, "refine_pays", lambda *bounds, cost: costs.append(cost) or next(verdicts))
    original = bounding.DomainBounder.engine_for
    monkeypatch.setattr(bounding.DomainBounder, "engine_for",
                        lambda self, domains, size, refine: refines.append(refine) or original(self, domains, size, refine))
    model, bounded, grid_min, spread = next(cases([0]))
    spec = threshold_spec(grid_min - 0.3 * spread)
    chooser, fixed = DomainBounder(bounded, spec, "crown"), DomainBounder(bounded, spec, "crown", refine_intermediate=True)
    generator = torch.Generator().manual_seed(0)
    domains = _split_randomly(_split_randomly([chooser.root()], generator), generator)
    fixed.root()
    copies = [dataclasses.replace(domain, intervals=dict(domain.intervals)) for domain in domains]
    refines.clear()
    chooser.bound(domains, 8)
    assert refines == [False, True] and not chooser.refining  # the copies the other way, then the domains as before
    fixed.bound(copies, 8)
    assert [d.lower for d in domains] == [d.lower for d in copies] and chooser.visited == fixed.visited
    for round_ in range(2, 9):
        refines.clear()
        chooser.bound(_split_randomly(domains, generator)[:4], 8)
        assert refines == ([True, False] if round_ == 8 else [False]), round_
    assert chooser.refining and chooser.rounds == 8
    assert len(costs) == 2 and all(0 < cost < math.inf for cost in costs)  # re-bounding's time over the plain pass's


def test_proved_domains_are_weighed_by_the_subtrees_they_save_not_by_the_rate():
    """eran's mnist_relu_9_200 idx_186, first round: re-bounding proved 47 of 64 domains against 8, in 4.2-5.9x the
    time. By domains per second (47/5.9 < 8) it did not pay, and the search timed out after 7,617 domains instead of
    proving the property in 245; the 56 domains the plain pass leaves split again and again. Equal counts never pay
    by that rule, whatever the cost (the mean gain decides)."""
    from opwise.bounds.strategies.genbab.bounding import refine_pays

    inherited = [-1.0] * 64
    refined, plain = [0.5] * 47 + [-0.5] * 17, [0.5] * 8 + [-0.5] * 56
    assert refine_pays(inherited, refined, plain, cost=5.9) and refine_pays(inherited, refined, plain, cost=4.2)
    assert not refine_pays(inherited, [0.5] * 60 + [-0.5] * 4, [0.5] * 56 + [-0.5] * 8, cost=4.6)  # both prune well
    assert not refine_pays(inherited, plain, plain, cost=1.0)


def test_a_first_round_probe_measures_re_bounding_where_the_root_estimate_says_it_does_not_fit(monkeypatch):
    """The root's pass times the batch overestimates a batched round (3.6-7.7x on a 9x200 MLP), and the decision
    flipped with the machine's load. Where the estimate does not fit, the first domains (a power of two the estimate
    lets fit) are bounded both ways; the measured pass, scaled to the chunk, decides `refines`, and what paid decides
    whether the rounds re-bound. A probe that measures a slow pass keeps re-bounding off."""
    from opwise.bounds.strategies.genbab import bounding

    model, bounded, grid_min, spread = next(cases([0]))
    spec = threshold_spec(grid_min - 0.3 * spread)
    generator = torch.Generator().manual_seed(0)
    for measured, fits in ((0.0, True), (1e6, False)):
        bounder = DomainBounder(bounded, spec, "crown")
        domains = _split_randomly(_split_randomly(_split_randomly([bounder.root()], generator), generator), generator)
        deadline = time.monotonic() + 60
        bounder.intermediate_seconds = 60 * bounding.REFINE_SHARE / 8 * 1.5  # a chunk of 8 overruns; 4 fit
        sizes = []
        original = bounder._trial
        monkeypatch.setattr(bounder, "_trial", lambda padded, real, size, deadline: sizes.append((real, size)) or
                            (True, measured + 0 * original(padded, real, size, deadline)[1]))
        bounder.bound(domains, 8, deadline)
        assert sizes == [(4, 4)] and bounder._fits is fits and bounder.refining is fits


def test_domains_that_keep_their_inherited_bound_get_more_adam_steps(monkeypatch):
    """A round whose domains mostly keep the bound they inherited (their own pass fell below it) counts them as
    stalled and doubles the Adam steps of the next round's α/β; a round that raises its domains' bounds halves
    them back to the first rounds' number. The steps reach `optimize_alpha_beta`."""
    from opwise.bounds.strategies.genbab import bounding

    steps = []
    original = bounding.optimize_alpha_beta
    monkeypatch.setattr(bounding, "optimize_alpha_beta",
                        lambda engine, target, A, options, **kw: steps.append(options and options.iterations)
                        or original(engine, target, A, options, **kw))
    model, bounded, grid_min, spread = next(cases([0]))
    # violated: margins stay < 0; re-bounding chosen (no trial round, which would bound the first chunk twice)
    bounder = DomainBounder(bounded, threshold_spec(grid_min + spread), "alpha-crown", refine_intermediate=True)
    root = bounder.root()
    first = bounder.round_iterations
    generator = torch.Generator().manual_seed(0)
    children = _split_randomly([root], generator)
    for child in children:
        child.lower = -1e-9  # an inherited bound above anything a pass of this violated property proves
    steps.clear()
    bounder.bound(children, 8)
    assert all(child.stalled and child.lower == -1e-9 for child in children)
    assert steps == [first] and bounder.round_iterations == 2 * first
    grandchildren = _split_randomly(children, generator)
    for child in grandchildren:
        child.lower = -math.inf  # nothing inherited: every pass raises the bound
    steps.clear()
    bounder.bound(grandchildren, 8)
    assert all(not child.stalled and child.lower > -math.inf for child in grandchildren)
    assert steps == [2 * first] and bounder.round_iterations == first
