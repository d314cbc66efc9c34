"""input_split_bab against exact MILP answers on many random tiny ReLU nets; statuses and errors."""

from __future__ import annotations

import pytest
import torch

from opwise.bounds.strategies.input_split import clip_domains, input_split_bab
from opwise.bounds.spec import Disjunct, Specification
from opwise.errors import InputError
from tests.bounds.strategies.bab_reference import crown_bound_fn, interval_bound_fn, milp_min_margin, random_mlp


def random_problem(seed: int, inputs: int = 2, outputs: int = 3):
    """A random net and unsafe set, shifted so the exact (MILP) worst margin is +-(5..25)% of its sampled range.

    Returns (model, spec, exact worst margin); the sign alternates with the seed, so both answers occur.
    """
    model = random_mlp(seed, (inputs, 8, 8, outputs))
    generator = torch.Generator().manual_seed(seed)
    lower = torch.rand(1, inputs, generator=generator, dtype=torch.float64) - 1
    upper = lower + 0.2 + torch.rand(1, inputs, generator=generator, dtype=torch.float64)
    disjuncts = []
    for _ in range(1 + seed % 2):
        C = torch.randn(1 + seed % 3, outputs, generator=generator, dtype=torch.float64)
        disjuncts.append(Disjunct(C, torch.zeros(C.shape[0], dtype=torch.float64)))
    spec = Specification(lower, upper, disjuncts)
    samples = lower + (upper - lower) * torch.rand(256, inputs, generator=generator, dtype=torch.float64)
    values = spec.margin(model(samples).detach())
    spread = float(values.max() - values.min())
    shift = milp_min_margin(model, spec) + (1 if seed % 2 else -1) * spread * (0.05 + 0.2 * float(torch.rand(1, generator=generator)))
    for disjunct in disjuncts:
        disjunct.d += shift
    return model, spec, milp_min_margin(model, spec)


def assert_matches_milp(result, model, spec: Specification, exact: float, seed: int) -> None:
    """The search's answer is the MILP's (verified where the exact worst margin is positive), and a counterexample
    lies in the input set and violates the property."""
    assert result.status == ("verified" if exact > 0 else "falsified"), (seed, exact, result)
    if result.status == "falsified":
        x = result.counterexample
        assert spec.contains(x) and float(spec.margin(model(x).detach())) <= 0


@pytest.mark.parametrize("branching", ["gradient", "widest"])
def test_matches_milp_on_random_relu_nets(branching):
    outcomes = {"verified": 0, "falsified": 0}
    for seed in range(20):
        model, spec, exact = random_problem(seed)
        result = input_split_bab(interval_bound_fn(model), model, spec, timeout=30, branching=branching,
                                 batch_size=64)
        assert_matches_milp(result, model, spec, exact, seed)
        outcomes[result.status] += 1
    assert min(outcomes.values()) >= 8, outcomes


def test_boxes_cut_by_relations_between_inputs_match_milp_on_random_relu_nets():
    """A box cut by a random relation a·x <= b through it: input splitting drops the domains no point of which meets
    it and bounds the others over the cut (the MILP sees the same cut); counterexamples meet it."""
    from opwise.bounds.input_set import InputSet
    from opwise.bounds.linear_constraints import LinearConstraints

    outcomes = {"verified": 0, "falsified": 0}
    for seed in range(16):
        model, spec, _ = random_problem(seed, inputs=3)
        generator = torch.Generator().manual_seed(1000 + seed)
        G = torch.randn(1, 3, generator=generator, dtype=torch.float64)
        h = G @ ((spec.x_lower + spec.x_upper) / 2).flatten()
        region = InputSet(spec.x_lower, spec.x_upper, constraints=LinearConstraints.within(G, h, spec.x_lower, spec.x_upper))
        cut = Specification.over(region, spec.unsafe)
        samples = region.sample(256, generator)
        values = cut.margin(model(samples).detach())
        shift = milp_min_margin(model, cut) + (1 if seed % 2 else -1) * float(values.max() - values.min()) * 0.1
        for disjunct in cut.unsafe:
            disjunct.d += shift
        exact = milp_min_margin(model, cut)
        result = input_split_bab(crown_bound_fn(model), model, cut, timeout=30, batch_size=64)
        assert_matches_milp(result, model, cut, exact, seed)
        outcomes[result.status] += 1
    assert min(outcomes.values()) >= 5, outcomes


@pytest.mark.parametrize("inputs", [2, 4])
def test_clipped_linear_bounds_match_milp_on_random_relu_nets(inputs):
    """A bound function giving linear bounds (`LinearLowerBounds`) turns on domain clipping: the answers
    stay exact, and clipping happens."""
    clipped = 0
    for seed in range(20 if inputs == 2 else 8):
        model, spec, exact = random_problem(seed, inputs=inputs)
        result = input_split_bab(crown_bound_fn(model), model, spec, timeout=30, batch_size=64)
        assert_matches_milp(result, model, spec, exact, seed)
        clipped += result.stats.get("clipped", 0)
    assert clipped > 0


def test_the_crown_reference_bounds_hold_on_samples():
    for seed in range(10):
        model, spec, _ = random_problem(seed, inputs=3)
        C = torch.cat([d.C for d in spec.unsafe])
        lower, coefficients, bias, *_ = crown_bound_fn(model)(spec.x_lower, spec.x_upper, C)
        x = spec.x_lower + (spec.x_upper - spec.x_lower) * torch.rand(2000, 3, dtype=torch.float64)
        values = model(x).detach() @ C.T
        assert (values >= x @ coefficients[0].T + bias[0] - 1e-9).all()
        assert (x @ coefficients[0].T + bias[0] >= lower[0] - 1e-9).all()


def test_clipping_keeps_every_point_that_can_violate():
    """Random linear bounds on random boxes: every sampled point where all rows of an open disjunct are
    non-positive lies in the clipped box, its disjunct is not ruled out, and a disjunct ruled out has no
    such point."""
    generator = torch.Generator().manual_seed(0)
    shrank = 0
    for trial in range(200):
        count, inputs, rows = 4, 1 + trial % 5, 1 + trial % 3
        owner = torch.randint(0, 2, (rows,), generator=generator)
        lower = torch.randn(count, inputs, generator=generator)
        upper = lower + torch.rand(count, inputs, generator=generator) * (trial % 4 > 0)   # some fixed inputs
        A = torch.randn(count, rows, inputs, generator=generator) * (torch.rand(count, rows, inputs, generator=generator) > 0.2)
        offset = torch.randn(count, rows, generator=generator)
        open_ = torch.rand(count, 2, generator=generator) > 0.3
        lo, up, ruled_out = clip_domains(lower, upper, A, offset, owner, open_)
        assert ((lo >= lower) & (up <= upper)).all() and not (ruled_out & ~open_).any()
        shrank += int(((lo > lower) | (up < upper)).sum())
        x = lower[:, None] + (upper - lower)[:, None] * torch.rand(count, 5000, inputs, generator=generator)
        violated = torch.einsum("brn,bsn->bsr", A, x) + offset[:, None] <= 0                 # [B, samples, rows]
        for k in range(2):
            mine = owner == k
            inside = violated[..., mine].all(-1) & open_[:, k, None]                          # [B, samples]
            assert not (inside & ruled_out[:, k, None]).any()
            within = ((x >= lo[:, None]) & (x <= up[:, None])).all(-1)
            assert (within | ~inside).all(), trial
    assert shrank > 20   # and clipping does cut (65 of the 3200 box bounds with seed 0)


@pytest.mark.slow
@pytest.mark.parametrize("branching", ["gradient", "widest"])
def test_matches_milp_on_random_relu_nets_with_four_inputs(branching):
    for seed in range(10):
        model, spec, exact = random_problem(seed, inputs=4)
        result = input_split_bab(interval_bound_fn(model), model, spec, timeout=60, branching=branching)
        assert_matches_milp(result, model, spec, exact, seed)


def test_timeout_is_reported_not_guessed():
    model, spec, _ = random_problem(0, inputs=6)
    spec.unsafe = [Disjunct(torch.zeros(1, 3, dtype=torch.float64), torch.full((1,), -1e-12, dtype=torch.float64))]

    def useless(lower, upper, C):
        return torch.full((len(lower), C.shape[0]), -1.0, dtype=lower.dtype)

    result = input_split_bab(useless, model, spec, timeout=0.5, min_width=0)
    assert result.status == "timeout" and result.counterexample is None and result.stats["domains"] > 1


def test_queue_cap_gives_unknown():
    model, spec, _ = random_problem(1)
    spec.unsafe = [Disjunct(torch.zeros(1, 3, dtype=torch.float64), torch.full((1,), -1.0, dtype=torch.float64))]
    result = input_split_bab(lambda lo, up, C: torch.full((len(lo), 1), -5.0, dtype=lo.dtype), model, spec,
                             timeout=30, max_domains=100, batch_size=8)
    assert result.status == "unknown" and "open domains" in result.stats["reason"]


def test_memory_cap_gives_unknown():
    """Domains that never get proved grow the queue past max_memory bytes (boxes of 3 float64 inputs: the
    first round's 16 children already hold more than 400 bytes)."""
    model, spec, _ = random_problem(1)
    spec.unsafe = [Disjunct(torch.zeros(1, 3, dtype=torch.float64), torch.full((1,), -1.0, dtype=torch.float64))]
    result = input_split_bab(lambda lo, up, C: torch.full((len(lo), 1), -5.0, dtype=lo.dtype), model, spec,
                             timeout=30, max_memory=400, batch_size=8)
    assert result.status == "unknown" and "max_memory=400" in result.stats["reason"]


def test_fixed_inputs_are_never_split_and_stats_are_reported():
    model, spec, _ = random_problem(4, inputs=3)
    spec.x_upper[0, 1] = spec.x_lower[0, 1]
    result = input_split_bab(interval_bound_fn(model), model, spec, timeout=30)
    assert result.status in ("verified", "falsified")
    assert {"domains", "max_depth", "time", "bound_calls", "attacks"} <= set(result.stats)


def test_unknown_branching_is_an_input_error():
    model, spec, _ = random_problem(0)
    with pytest.raises(InputError, match="branching"):
        input_split_bab(interval_bound_fn(model), model, spec, timeout=1, branching="random")


# 2_2 prop_1: splitting by linear-bound coefficients or centre gradients halved one input to depth 35 and timed
# out after 300 s; the chain's gradient weights prove it with a few hundred domains
@pytest.mark.parametrize("network, prop, expected", [("4_3", 3, "unsat"), ("1_7", 3, "sat"), ("2_2", 1, "unsat")])
def test_acas_instances_through_verify_instance_and_the_relu_chain(benchmarks_dir, network, prop, expected):
    from opwise.bounds.vnncomp import verify_instance
    from opwise.bounds.vnncomp.vnnlib import parse_vnnlib

    suite = benchmarks_dir / "acasxu"
    onnx_path = suite / "onnx" / f"ACASXU_run2a_{network}_batch_2000.onnx"
    vnnlib_path = suite / "vnnlib" / f"prop_{prop}.vnnlib"
    result = verify_instance(onnx_path, vnnlib_path, 60)
    assert result.status == expected, result
    if expected == "sat":
        (spec,) = parse_vnnlib(vnnlib_path, (1, 5))
        assert spec.contains(result.x.reshape(1, 5)) and float(spec.margin(result.y.reshape(1, -1))) <= 0


def test_a_bound_pass_reaching_the_deadline_ends_the_search_with_its_counts():
    """A bound pass that reaches the engine's deadline (TimeLimitReached) ends the search as timeout with the
    rounds and domains counted so far, not with an empty record."""
    from opwise.errors import TimeLimitReached

    model, spec, _ = random_problem(1)
    spec.unsafe = [Disjunct(torch.zeros(1, 3, dtype=torch.float64), torch.full((1,), -1.0, dtype=torch.float64))]
    calls = []

    def useless_until_the_third_call(lower, upper, C):  # proves nothing, so every round splits again
        calls.append(len(lower))
        if len(calls) == 3:
            raise TimeLimitReached("the time limit was reached during a bound pass")
        return torch.full((len(lower), C.shape[0]), -1.0, dtype=lower.dtype)

    result = input_split_bab(useless_until_the_third_call, model, spec, timeout=30, batch_size=4)
    assert result.status == "timeout" and len(calls) == 3
    assert result.stats["rounds"] == 1 and result.stats["domains"] >= calls[0] + calls[1]


def many_boxes(model, seed: int, count: int, inputs: int = 2):
    """`count` boxes sharing their rows C, each threshold d set by MILP so that the box is safe by 5 % of its
    margin's sampled spread: (specs, exact worst margins)."""
    generator = torch.Generator().manual_seed(seed)
    C = torch.randn(2, model[-1].out_features, generator=generator, dtype=torch.float64)
    specs, exact = [], []
    for _ in range(count):
        lower = torch.rand(1, inputs, generator=generator, dtype=torch.float64) * 2 - 1
        upper = lower + 0.1 + 0.3 * torch.rand(1, inputs, generator=generator, dtype=torch.float64)
        spec = Specification(lower, upper, [Disjunct(C[:1], torch.zeros(1, dtype=torch.float64)),
                                            Disjunct(C[1:], torch.zeros(1, dtype=torch.float64))])
        samples = lower + (upper - lower) * torch.rand(256, inputs, generator=generator, dtype=torch.float64)
        spread = float(spec.margin(model(samples).detach()).max() - spec.margin(model(samples).detach()).min())
        for disjunct in spec.unsafe:
            disjunct.d = disjunct.d + milp_min_margin(model, spec) - 0.05 * spread
        specs.append(spec)
        exact.append(milp_min_margin(model, spec))
    return specs, exact


@pytest.mark.parametrize("bound_fn", [interval_bound_fn, crown_bound_fn])
def test_many_boxes_are_searched_together_and_match_milp(bound_fn):
    """A list of boxes (a VNN-LIB disjunction of input boxes) is one search: every box safe gives 'verified'
    with each round bounding domains of many boxes in one call; one box made unsafe gives 'falsified' with
    a counterexample in that box, found by the same search."""
    model = random_mlp(3, (2, 8, 8, 3))
    specs, exact = many_boxes(model, 3, 24)
    assert min(exact) > 0
    result = input_split_bab(bound_fn(model), model, specs, timeout=60, batch_size=64)
    assert result.status == "verified", result
    assert result.stats["bound_calls"] < len(specs)             # one call bounds the 24 roots, not 24 calls
    unsafe = 17
    specs[unsafe].unsafe[0].d = specs[unsafe].unsafe[0].d + 2 * exact[unsafe]   # its margin is now -exact
    result = input_split_bab(bound_fn(model), model, specs, timeout=60, batch_size=64)
    assert result.status == "falsified" and result.stats["box"] == unsafe
    x = result.counterexample
    assert specs[unsafe].contains(x) and float(specs[unsafe].margin(model(x).detach())) <= 0


def test_boxes_searched_together_must_share_their_rows():
    model = random_mlp(3, (2, 8, 8, 3))
    specs, _ = many_boxes(model, 3, 2)
    specs[1].unsafe[0].C = specs[1].unsafe[0].C * 2
    with pytest.raises(InputError, match="box 1 differs"):
        input_split_bab(interval_bound_fn(model), model, specs, timeout=5)


def test_rounds_fill_the_positions_a_bound_function_pays_for():
    """A bound function that says (`positions`) it bounds n boxes at 64 × ceil(n / 64) positions gets rounds that
    fill them: mscn_128d_dual's graph, specialized to 1024 at its 867 roots, bounded ~160 children per round at
    1024 positions. Answers still match MILP."""
    sizes = []

    class Padded:
        def __init__(self, model):
            self.inner = interval_bound_fn(model)  # loose: the search needs rounds

        def positions(self, count: int) -> int:
            return -(-count // 64) * 64

        def __call__(self, lower, upper, C):
            sizes.append(len(lower))
            return self.inner(lower, upper, C)

    filled = 0
    for seed in range(6):
        model, spec, exact = random_problem(seed)
        sizes.clear()
        # round_time alone would bisect one domain per round (2 children)
        result = input_split_bab(Padded(model), model, spec, timeout=60, batch_size=1024, round_time=1e-6)
        assert_matches_milp(result, model, spec, exact, seed)
        # every round fills 64 positions unless fewer domains are open
        assert all(size % 64 == 0 or size < 64 for size in sizes[1:]), sizes
        filled += sum(size >= 64 for size in sizes[1:])
    assert filled


def test_coefficient_branching_splits_an_input_whose_coefficient_vanishes():
    """f(x) = x0 + x1² over x0 in [0, 1], x1 in [-1, 1], unsafe f <= -0.05. The bound function's linear bound
    x0 + (min x1² - w1² / 4) has no coefficient along x1, yet its slack shrinks only as x1 is split: ranked by
    width × |coefficient| alone, x1 was never split (mscn_128d_dual's two free predicates, one bisected 8 times
    and the other not once) and the search could not end; every free input now counts at least the mean."""
    from opwise.bounds.strategies.input_split import LinearLowerBounds

    def bound_fn(lower, upper, C):
        assert torch.equal(C, torch.ones(1, 1, dtype=C.dtype))
        low1, up1 = lower[:, 1], upper[:, 1]
        square = torch.where((low1 <= 0) & (up1 >= 0), 0.0, torch.minimum(low1 ** 2, up1 ** 2))
        bias = square - (up1 - low1) ** 2 / 4
        coefficients = torch.stack([torch.ones_like(bias), torch.zeros_like(bias)], dim=1)[:, None, :]
        return LinearLowerBounds((lower[:, 0] + bias)[:, None], coefficients, bias[:, None])

    function = lambda x: (x[:, :1] + x[:, 1:] ** 2)
    spec = Specification(torch.tensor([[0.0, -1.0]], dtype=torch.float64), torch.tensor([[1.0, 1.0]], dtype=torch.float64),
                         [Disjunct(torch.ones(1, 1, dtype=torch.float64), torch.tensor([-0.05], dtype=torch.float64))])
    result = input_split_bab(bound_fn, function, spec, timeout=20, branching="coefficient")
    assert result.status == "verified", result
