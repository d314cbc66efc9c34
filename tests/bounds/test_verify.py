"""verify(): falsified only with a counterexample a forward pass confirms, verified only with a positive
proven margin that sampling agrees with, and clear errors for bad requests."""

import math

import pytest
import torch

import opwise
from opwise.bounds import BoundedModel
from opwise.bounds.spec import Specification, robustness_disjuncts
from opwise.errors import InputError
from tests.bounds.helpers import randomize_


def _model(seed):
    return randomize_(torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3)), seed)


def test_statuses_agree_with_forward_passes():
    model = _model(0)
    bounded = BoundedModel(model, torch.zeros(1, 4))
    seen = set()
    for seed in range(12):
        x = torch.randn(1, 4, generator=torch.Generator().manual_seed(seed))
        eps = [0.01, 0.1, 0.5][seed % 3]
        result = opwise.verify(bounded, x, eps=eps)
        seen.add(result.status)
        target = int(model(x).argmax())
        assert result.target == target
        if result.status == "falsified":
            counter = result.counterexample
            assert ((counter - x).abs() <= eps + 1e-6).all()
            assert int(model(counter).argmax()) != target or float(model(counter)[0, target]) <= float(
                model(counter).topk(2).values[0, 1])
        else:
            samples = x + eps * (2 * torch.rand(5000, 4) - 1)
            with torch.no_grad():
                y = model(samples)
            margins = y[:, target:target + 1] - y
            if result.status == "verified":
                assert result.margin_lower > 0
                margins[:, target] = float("inf")
                assert (margins.amin(1) >= result.margin_lower - 1e-5).all()
    assert {"verified", "falsified"} <= seen


def test_methods_and_stats_are_reported():
    x = torch.randn(1, 4)
    result = opwise.verify(_model(1), x, eps=1e-4, method="crown")
    assert result.status == "verified" and result.stats["methods"] == ["crown"] and result.stats["seconds"] >= 0
    for alias, ours in (("CROWN", ["crown"]), ("backward", ["crown"]), ("CROWN-Optimized", ["alpha-crown"])):
        assert opwise.verify(_model(1), x, eps=1e-4, method=alias).stats["methods"] == ours  # auto_LiRPA's names


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": -1.0}, "nonnegative"),
    ({"eps": 0.1, "target": 3}, "out of range"),
    ({"eps": 0.1, "method": "nope"}, "unknown method"),
])
def test_bad_requests(kwargs, message):
    with pytest.raises(InputError, match=message):
        opwise.verify(_model(0), torch.zeros(1, 4), **kwargs)


def test_more_than_one_sample_is_refused():
    with pytest.raises(InputError, match="one sample"):
        opwise.verify(_model(0), torch.zeros(2, 4), eps=0.1)


def test_complete_search_on_few_inputs_splits_them_and_agrees_with_a_grid():
    """Two inputs: the orchestrator picks input splitting (the affine–ReLU chain fast path); every verdict
    agrees with a dense grid of the box, and a counterexample is real."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(2, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12), torch.nn.ReLU(),
                                torch.nn.Linear(12, 2)).eval()
    bounded = BoundedModel(model, torch.zeros(1, 2))
    grid = torch.cartesian_prod(torch.linspace(-1, 1, 301), torch.linspace(-1, 1, 301))
    with torch.no_grad():
        margin = model(grid)[:, 0] - model(grid)[:, 1]
    from opwise.bounds.spec import Disjunct
    from opwise.bounds.verify import verify_specification

    spread = float(margin.max() - margin.min())
    crown = bounded.compute_bounds(x_lower=-torch.ones(1, 2), x_upper=torch.ones(1, 2), C=torch.tensor([[1.0, -1.0]]))
    assert float(crown.lower) < float(margin.min()) - 0.002 * spread  # CROWN alone cannot prove the first threshold
    for threshold, expected in ((float(margin.min()) - 0.002 * spread, "verified"), (float(margin.min()) + 0.02 * spread, "falsified")):
        spec = Specification(-torch.ones(1, 2), torch.ones(1, 2), [Disjunct(torch.tensor([[1.0, -1.0]]), torch.tensor([threshold]))])
        result = verify_specification(bounded, spec, methods=("crown",), complete=True, timeout=60)
        assert result.status == expected
        if expected == "verified":
            assert result.stats["search"] == "input-split" and result.margin_lower is None
        else:
            y = model(result.counterexample)
            assert float(y[0, 0] - y[0, 1]) <= threshold
    with pytest.raises(InputError, match="does not take"):
        verify_specification(bounded, spec, methods=("crown",), attack=False,
                             complete={"strategy": "input-split", "split_point": "table"})


def test_the_time_limit_holds_with_branch_and_bound():
    """A property just below the true minimum on a 20-input net: the answer comes within the time limit
    (bound passes are interrupted between layers), as 'timeout' or a decision."""
    import time

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 3)).eval()
    x = torch.rand(1, 20)
    start = time.monotonic()
    result = opwise.verify(model, x, eps=0.3, bab=True, timeout=2.0)
    elapsed = time.monotonic() - start
    assert result.status in ("verified", "falsified", "timeout", "unknown")
    assert elapsed < 2.0 + max(0.2, 1.0) + 1.0, f"{elapsed:.2f} s for a 2 s limit"  # tracing once, then within 1 s


def _two_input_net(activation: type, seed: int, scale: float) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 10), activation(), torch.nn.Linear(10, 10), activation(),
                                torch.nn.Linear(10, 3)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(scale)
    return model


def _disk_margin(model, x: torch.Tensor, eps: float, target: int, norm: float, rings: int = 120) -> float:
    """The true smallest margin over the Lp disk of radius eps around x (2 inputs): a dense polar grid of rings
    of unit-Lp directions, the boundary included."""
    angles = torch.linspace(0, 2 * math.pi, 6 * rings)
    unit = torch.stack([angles.cos(), angles.sin()], 1)
    unit = unit / torch.linalg.vector_norm(unit, ord=norm, dim=1, keepdim=True)
    points = (x + eps * torch.linspace(0, 1, rings)[:, None, None] * unit[None]).reshape(-1, 2)
    with torch.no_grad():
        y = model(points)
    others = torch.cat([y[:, :target], y[:, target + 1:]], 1)
    return float((y[:, target] - others.amax(1)).min())


def _critical_radius(model, x: torch.Tensor, target: int, norm: float) -> float:
    """The radius where the disk's true margin reaches 0 (bisection: the disks are nested)."""
    low, high = 0.0, 10.0
    for _ in range(25):
        middle = (low + high) / 2
        low, high = (middle, high) if _disk_margin(model, x, middle, target, norm) > 0 else (low, middle)
    return low


def _verify_agrees_with_the_disk(bounded, model, x, eps, norm, target, timeout=60.0):
    """verify(norm, bab=True) at eps: 'verified' only where the disk's true margin is positive, 'falsified' only
    with a witness inside the disk whose margin is negative; returns the result."""
    result = opwise.verify(bounded, x, eps=eps, norm=norm, bab=True, timeout=timeout)
    true_margin = _disk_margin(model, x, eps, target, norm)
    if result.status == "verified":
        assert true_margin > 0 and result.margin_lower <= true_margin + 1e-5
    if result.status == "falsified":
        witness = result.counterexample
        assert float(torch.linalg.vector_norm(witness.double() - x.double(), ord=norm)) <= eps
        with torch.no_grad():
            y = model(witness)[0]
        assert float(y[target] - torch.cat([y[:target], y[target + 1:]]).max()) <= 0
    return result


@pytest.mark.parametrize("activation, seed, scale, norm", [
    (torch.nn.ReLU, 0, 1.0, 2.0), (torch.nn.Sigmoid, 2, 3.0, 2.0), (torch.nn.ReLU, 1, 1.0, 1.0)])
def test_lp_branch_and_bound_decides_on_either_side_of_the_true_radius(activation, seed, scale, norm):
    """On 2-input nets, the true radius r* where the prediction first changes on the Lp disk comes from a dense
    grid; at 0.6·r* verify(norm, bab=True) proves it, at 1.4·r* it falsifies with a witness in the disk."""
    model = _two_input_net(activation, seed, scale)
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(seed))
    target = int(model(x).argmax())
    radius = _critical_radius(model, x, target, norm)
    assert radius < 2.0  # the prediction changes within reach
    bounded = BoundedModel(model, x)
    assert _verify_agrees_with_the_disk(bounded, model, x, 0.6 * radius, norm, target).status == "verified"
    assert _verify_agrees_with_the_disk(bounded, model, x, 1.4 * radius, norm, target).status == "falsified"


def test_l2_branch_and_bound_splits_neurons_where_the_bounds_alone_fail():
    """Close to the true radius (0.92·r*) CROWN and α-CROWN over the disk leave the ReLU net unknown; GenBaB,
    splitting neurons while bounding over the disk, proves it (before: 'unknown' without a search)."""
    model = _two_input_net(torch.nn.ReLU, 0, 1.0)
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(0))
    target = int(model(x).argmax())
    eps = 0.92 * _critical_radius(model, x, target, 2.0)
    bounded = BoundedModel(model, x)
    assert opwise.verify(bounded, x, eps=eps, norm=2).status == "unknown"
    result = _verify_agrees_with_the_disk(bounded, model, x, eps, 2.0, target)
    assert result.status == "verified" and "input_split" not in result.stats  # 2 free inputs: a box would split them
    assert result.stats["bab"]["domains_visited"] > 1


def test_input_splitting_refuses_a_ball():
    """Input splitting halves boxes, which would bound points outside the ball: forced, it is refused (the
    automatic choice for 2 free inputs would be input splitting on a box, GenBaB on a ball: see above)."""
    from opwise.bounds.spec import robustness_disjuncts
    from opwise.bounds.verify import verify_specification

    model = _two_input_net(torch.nn.ReLU, 0, 1.0)
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(0))
    bounded = BoundedModel(model, x)
    spec = Specification.over(bounded.input_set(x, 0.4, 2.0), robustness_disjuncts(3, int(model(x).argmax())))  # CROWN: unknown
    with pytest.raises(InputError, match="input splitting splits boxes"):
        verify_specification(bounded, spec, methods=("crown",), attack=False, complete={"strategy": "input-split"})


@pytest.mark.slow
@pytest.mark.parametrize("norm", [1.0, 2.0])
@pytest.mark.parametrize("activation, scale", [(torch.nn.ReLU, 1.0), (torch.nn.Sigmoid, 3.0)])
def test_lp_branch_and_bound_agrees_with_a_dense_grid_on_random_nets(norm, activation, scale):
    """Random 2-input nets whose prediction changes within radius 2.5: every verdict at 0.6, 0.92 and 1.4 times
    the true radius agrees with the dense grid of the disk, and the clear sides (0.6, 1.4) are decided."""
    checked = 0
    for seed in range(9):
        model = _two_input_net(activation, seed, scale)
        x = torch.rand(1, 2, generator=torch.Generator().manual_seed(seed))
        target = int(model(x).argmax())
        radius = _critical_radius(model, x, target, norm)
        if radius > 2.5:
            continue
        bounded = BoundedModel(model, x)
        for factor, expected in ((0.6, "verified"), (0.92, None), (1.4, "falsified")):
            result = _verify_agrees_with_the_disk(bounded, model, x, factor * radius, norm, target, timeout=30.0)
            assert result.status == expected if expected else result.status != "unknown", (seed, factor, result.stats)
        checked += 1
    assert checked >= 2


def test_an_unfinished_ball_search_says_why():
    """A search that gives up reports its reason in the result (not a bare 'unknown')."""
    model = _two_input_net(torch.nn.ReLU, 0, 1.0)
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(0))
    eps = 0.92 * _critical_radius(model, x, int(model(x).argmax()), 2.0)  # the bounds alone leave it unknown
    result = opwise.verify(BoundedModel(model, x), x, eps=eps, norm=2, bab={"max_memory": 1})
    assert result.status == "unknown" and "max_memory=1" in result.stats["reason"]


def test_genbab_after_verifys_attack_does_not_repeat_it(monkeypatch):
    """verify_specification attacks before bounding; GenBaB's own first attack (same PGD, same seed) would find
    the same nothing again at up to a quarter of its time: it is skipped (the attacks between rounds are kept)."""
    import opwise.bounds.strategies.genbab.search as search

    seeds = []

    def recorded(*args, seed=0, **kwargs):
        seeds.append(seed)
        return pgd_attack(*args, seed=seed, **kwargs)

    pgd_attack = search.pgd_attack
    monkeypatch.setattr(search, "pgd_attack", recorded)
    model = _two_input_net(torch.nn.ReLU, 0, 1.0)
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(0))
    target = int(model(x).argmax())
    eps = 0.92 * _critical_radius(model, x, target, 2.0)
    result = _verify_agrees_with_the_disk(BoundedModel(model, x), model, x, eps, 2.0, target)
    assert result.status == "verified" and result.stats["bab"]["rounds"] >= 1
    assert 0 not in seeds  # only the search's later attacks, if any (seeded by their round)


def test_genbab_does_not_repeat_the_attack_before_it(monkeypatch):
    """verify runs PGD (seed 0) before GenBaB, whose first attack used the same starts and steps with less time,
    so it repeated the same work; GenBaB now skips it: no seed is attacked twice, and the verdict stays."""
    import importlib

    from opwise.bounds.attack import pgd_attack

    search = importlib.import_module("opwise.bounds.strategies.genbab.search")
    verify_module = importlib.import_module("opwise.bounds.verify")  # opwise.bounds.verify is also the function

    seeds = []

    def counted(*args, seed=0, **kwargs):
        seeds.append(seed)
        return pgd_attack(*args, seed=seed, **kwargs)

    monkeypatch.setattr(search, "pgd_attack", counted)
    monkeypatch.setattr(verify_module, "pgd_attack", counted)
    model = _two_input_net(torch.nn.ReLU, 0, 1.0)
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(0))
    target = int(model(x).argmax())
    eps = 0.92 * _critical_radius(model, x, target, 2.0)  # the bounds alone leave it unknown: GenBaB branches
    result = _verify_agrees_with_the_disk(BoundedModel(model, x), model, x, eps, 2.0, target)
    assert result.status == "verified" and result.stats["bab"]["domains_visited"] > 1
    assert seeds[0] == 0 and len(seeds) == len(set(seeds)), seeds  # before: [0, 0], the second a repeat
    spec = Specification.over(BoundedModel(model, x).input_set(x, eps, 2.0), robustness_disjuncts(3, target))
    assert pgd_attack(model, spec).margin == pgd_attack(model, spec).margin  # a repeat finds nothing new


def test_genbab_runs_the_only_crown_pass_of_a_property_crown_proves():
    """No CROWN pass before GenBaB: its root starts with that pass, and a property it proves ends there. (80
    free inputs: GenBaB alone; 17 to 64 are split first.)"""
    from opwise.bounds.verify import verify_specification

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(80, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    x = torch.rand(1, 80)
    target = int(model(x).argmax())
    spec = Specification(x - 1e-4, x + 1e-4, robustness_disjuncts(3, target))
    result = verify_specification(BoundedModel(model, x), spec, complete=True, timeout=60)
    assert result.status == "verified" and result.margin_lower > 0
    assert result.stats["methods"] == [] and result.stats["search"] == "genbab" and result.stats["bab"]["domains_visited"] == 1


def _middle_problem(threshold_shift: float):
    """24 free inputs (more than max_split_inputs=16, at most 4 times as many) in a box of radius 0.1: a small
    Linear/Tanh/ReLU network and the unsafe set y <= (sampled minimum + threshold_shift)."""
    from opwise.bounds.spec import Disjunct

    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 1)).eval()
    centre = torch.randn(1, 24)
    lower, upper = centre - 0.05, centre + 0.05
    samples = lower + (upper - lower) * torch.rand(4000, 24)
    with torch.no_grad():
        values = model(samples)[:, 0]
    spread = float(values.max() - values.min())
    spec = Specification(lower, upper, [Disjunct(torch.ones(1, 1), torch.tensor([float(values.min()) + threshold_shift * spread]))])
    return model, BoundedModel(model, torch.zeros(1, 24)), spec


def test_a_box_with_a_few_dozen_free_inputs_is_split_first_then_searched_by_genbab(monkeypatch):
    """pensieve_big_parallel (32 of 96 inputs free) went to GenBaB, whose root outlasted the timeout, while input
    splitting proves it in 93 domains: between max_split_inputs and PORTFOLIO_FACTOR times as many free
    inputs, input splitting gets INPUT_SPLIT_SHARE of the time and GenBaB the rest. Both verdicts are checked
    against samples, and GenBaB takes over when input splitting has no time."""
    import importlib

    orchestrator = importlib.import_module("opwise.bounds.verify")  # the module (opwise.bounds.verify is the function)

    model, bounded, safe = _middle_problem(-1.0)
    samples = safe.x_lower + (safe.x_upper - safe.x_lower) * torch.rand(20000, 24)
    with torch.no_grad():
        assert float(model(samples).min()) > float(safe.unsafe[0].d)      # the samples agree with 'verified'
    result = orchestrator.verify_specification(bounded, safe, methods=(), complete=True, timeout=60)
    assert result.status == "verified" and result.stats["search"] == orchestrator.THEN_GENBAB
    assert "input_split" not in result.stats                              # input splitting decided it alone
    model, bounded, unsafe = _middle_problem(0.05)
    result = orchestrator.verify_specification(bounded, unsafe, methods=(), complete=True, timeout=60)
    assert result.status == "falsified" and unsafe.contains(result.counterexample)
    assert float(model(result.counterexample).detach()) <= float(unsafe.unsafe[0].d)
    from opwise.bounds.strategies.result import BabResult

    shares = []

    def unfinished(bound_fn, function, spec, *, timeout, **options):  # input splitting that runs out of time
        shares.append(timeout)
        return BabResult("timeout", None, {"domains": 7})

    monkeypatch.setattr(orchestrator, "input_split_bab", unfinished)
    result = orchestrator.verify_specification(bounded, safe, methods=(), complete=True, timeout=60)
    assert result.status == "verified" and result.stats["input_split"] == {"domains": 7}   # then GenBaB proved it
    assert shares[0] <= 60 * orchestrator.INPUT_SPLIT_SHARE
    assert orchestrator._search_strategy(Specification(torch.zeros(1, 65), torch.ones(1, 65), []), {}, 16) == "genbab"


def test_verify_boxes_searches_many_alike_boxes_together_and_the_others_one_by_one():
    """Boxes with few free inputs and the same output rows, BATCHED_BOXES or more, are one search; fewer, or a
    box with many free inputs, or different rows, go one by one through verify_specification."""
    import importlib

    from opwise.bounds.spec import Disjunct

    orchestrator = importlib.import_module("opwise.bounds.verify")
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).eval()
    bounded = BoundedModel(model, torch.zeros(1, 20))

    def box(k: int, free: int, row: float = 1.0):
        centre = torch.full((1, 20), k / 10)
        lower, upper = centre.clone(), centre.clone()
        lower[0, :free] -= 0.01
        upper[0, :free] += 0.01
        return Specification(lower, upper, [Disjunct(torch.tensor([[row]]), torch.tensor([-1000.0]))])

    alike = [box(k, 2) for k in range(orchestrator.BATCHED_BOXES)]
    others = [box(20, 30), box(21, 2, row=-1.0)]
    decided = list(orchestrator.verify_boxes(bounded, alike + others, timeout=60))
    assert [indices for indices, _ in decided] == [list(range(len(alike))), [len(alike)], [len(alike) + 1]]
    assert all(result.status == "verified" for _, result in decided)
    assert decided[0][1].stats["boxes"] == len(alike)
    few = list(orchestrator.verify_boxes(bounded, alike[:3], timeout=60))
    assert [indices for indices, _ in few] == [[0], [1], [2]]


def test_a_slow_attack_leaves_the_bound_passes_time():
    """Without a search the attack took all the time: on a loaded CPU the digits transformer's PGD ran the whole
    20 s and 5 of 16 samples ended "unknown" with margin -inf, no bound pass run, though CROWN proves each. The
    attack now takes a quarter; a result with no bound pass says "timeout" with no margin, never -inf."""
    import time

    from opwise.bounds.function_bounds import FunctionBounds
    from opwise.bounds.verify import verify_specification

    def slow_identity(x):
        time.sleep(0.05)  # every attack step: about 40 steps fit in the time
        return x.reshape(len(x), -1)

    def exact(lower, upper, C):  # C·x over the box, exactly
        return (torch.where(C > 0, C * lower[:, None], C * upper[:, None])).sum(-1)

    model = FunctionBounds(slow_identity, exact)
    spec = Specification(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.1, 0.1]]), robustness_disjuncts(2, 0))
    result = verify_specification(model, spec, timeout=2.0)
    assert result.status == "verified" and math.isclose(result.margin_lower, 0.9, abs_tol=1e-6)
    assert result.stats["seconds"] < 1.5

    slower = FunctionBounds(lambda x: time.sleep(1.5) or slow_identity(x), exact)  # one step outlasts the time
    result = verify_specification(slower, spec, timeout=1.0)
    assert result.status == "timeout" and result.margin_lower is None and result.stats["methods"] == []


def test_a_disjunct_whose_rows_contradict_each_other_is_dropped_before_the_search():
    """`y >= 0.5 and y <= -0.5` holds for no output: a search bounding rows one at a time took 20 s to prove it by
    input splitting; the property is verified at once, and a second, satisfiable disjunct is still decided."""
    from opwise.bounds.spec import Disjunct
    from opwise.bounds.verify import verify_specification

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    bounded = BoundedModel(model, torch.zeros(1, 8))
    box = (-torch.ones(1, 8), torch.ones(1, 8))
    empty = Disjunct(torch.tensor([[-1.0], [1.0]]), torch.tensor([-0.5, -0.5]))
    result = verify_specification(bounded, Specification(*box, [empty]), complete=True, timeout=30)
    assert result.status == "verified" and result.stats["contradictory_disjuncts"] == 1
    anything = Disjunct(torch.ones(1, 1), torch.tensor([1e6]))   # y <= 10^6: every point violates
    result = verify_specification(bounded, Specification(*box, [empty, anything]), complete=True, timeout=30)
    assert result.status == "falsified"
