"""GenBaB against brute force on tiny sigmoid/tanh MLPs with 2 inputs, whose true margin minimum a dense
grid gives: "verified" only if that minimum is above the threshold, "falsified" only with a real
counterexample; subdomain bounds sound on sampled points that fall in the subdomain."""

from __future__ import annotations

import math

import pytest
import torch

import opwise
from opwise.bounds import BoundedModel
from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.strategies.beta import BETA
from opwise.bounds.strategies.genbab import bounding
from opwise.bounds.strategies.genbab.bounding import DomainBounder
from opwise.bounds.strategies.genbab.branching import split_nodes
from opwise.bounds.strategies.genbab.domains import Domain
from opwise.bounds.strategies.genbab.search import branch_and_bound
from opwise.bounds.input_set import InputSet
from opwise.bounds.spec import Disjunct, Specification
from opwise.bounds.transfers.registry import Interval
from tests.bounds.helpers import randomize_

#: (activation, hidden widths) of the tiny networks; weights are re-randomized in place per seed
ARCHITECTURES = [(torch.nn.Sigmoid, [5]), (torch.nn.Tanh, [4]), (torch.nn.Sigmoid, [4, 3]), (torch.nn.Tanh, [3, 6])]
BOX = (-torch.ones(1, 2), torch.ones(1, 2))
FAST = AlphaOptions(iterations=10)


def tiny_network(activation, widths) -> torch.nn.Sequential:
    layers, previous = [], 2
    for width in widths:
        layers += [torch.nn.Linear(previous, width), activation()]
        previous = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(previous, 2))


def randomized(model: torch.nn.Sequential, seed: int) -> torch.nn.Sequential:
    """Random weights, scaled up so that the activations are far from linear on the box."""
    randomize_(model, seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(2.0)
    return model


def grid_margins(model, points: int = 401) -> torch.Tensor:
    """y0 - y1 on a dense grid over the box (its minimum is the true minimum up to the grid step)."""
    axis = torch.linspace(-1, 1, points)
    with torch.no_grad():
        y = model(torch.cartesian_prod(axis, axis))
    return y[:, 0] - y[:, 1]


def threshold_spec(threshold: float) -> Specification:
    """Unsafe set y0 - y1 <= threshold over the box: holds iff min (y0 - y1) > threshold."""
    return Specification(*BOX, [Disjunct(torch.tensor([[1.0, -1.0]]), torch.tensor([threshold]))])


def check_answer(model, spec: Specification, result, grid_min: float) -> None:
    threshold = float(spec.unsafe[0].d)
    if result.status == "verified":
        assert grid_min > threshold, f"verified, but the grid reaches {grid_min} <= {threshold}"
        assert result.margin_lower > 0
    if result.status == "falsified":
        x = result.counterexample
        assert spec.contains(x)
        with torch.no_grad():
            y = model(x)
        assert float(y[0, 0] - y[0, 1]) <= threshold


def cases(seeds):
    """(model, bounded model, grid minimum, margin spread) per seed; one trace per architecture."""
    built = {}
    for seed in seeds:
        index = seed % len(ARCHITECTURES)
        if index not in built:
            model = tiny_network(*ARCHITECTURES[index])
            built[index] = (model, BoundedModel(model, torch.zeros(1, 2)))
        model, bounded = built[index]
        randomized(model, seed)
        margins = grid_margins(model)
        yield model, bounded, float(margins.min()), float(margins.max() - margins.min())


def test_verifies_what_alpha_crown_alone_cannot():
    model, bounded, grid_min, spread = next(cases([0]))
    spec = threshold_spec(grid_min - 0.2 * spread)
    root = bounded.compute_bounds(x_lower=BOX[0], x_upper=BOX[1], C=spec.unsafe[0].C, method="alpha-crown")
    assert float(root.lower) - float(spec.unsafe[0].d) <= 0, "alpha-CROWN alone already verifies this case"
    result = branch_and_bound(bounded, spec, timeout=60, batch_size=8, alpha=FAST)
    assert result.status == "verified"
    assert result.stats["domains_visited"] > 1 and result.stats["branching_decisions"] >= 1
    check_answer(model, spec, result, grid_min)


def test_counterexample_is_real_just_below_the_true_minimum():
    model, bounded, grid_min, spread = next(cases([1]))
    spec = threshold_spec(grid_min + 0.02 * spread)
    result = branch_and_bound(bounded, spec, timeout=10, alpha=FAST)
    assert result.status == "falsified"
    check_answer(model, spec, result, grid_min)


def test_timeout_is_reported_not_guessed():
    model, bounded, grid_min, spread = next(cases([2]))
    spec = threshold_spec(grid_min - 1e-4 * spread)
    result = branch_and_bound(bounded, spec, timeout=0.5, attack=False, alpha=FAST)
    assert result.status in ("timeout", "verified")
    check_answer(model, spec, result, grid_min)


def test_memory_cap_gives_unknown():
    """The case α-CROWN alone cannot verify needs a queue of domains; a cap below one domain's bytes stops the
    search at once with 'unknown' and says why, instead of growing until the process is killed."""
    model, bounded, grid_min, spread = next(cases([0]))
    spec = threshold_spec(grid_min - 0.2 * spread)
    result = branch_and_bound(bounded, spec, timeout=60, batch_size=8, alpha=FAST, max_memory=1)
    assert result.status == "unknown" and "max_memory=1" in result.stats["reason"]


def test_matches_brute_force_on_a_few_networks():
    answered = 0
    for model, bounded, grid_min, spread in cases(range(2, 4)):
        for sign in (-1, 1):
            spec = threshold_spec(grid_min + sign * 0.2 * spread)
            result = branch_and_bound(bounded, spec, timeout=5, batch_size=8, alpha=FAST)
            check_answer(model, spec, result, grid_min)
            answered += result.status in ("verified", "falsified")
    assert answered >= 2


def test_strong_branching_matches_brute_force_and_bounds_its_candidates(monkeypatch):
    """"fsb" takes each domain's best splits by BBPS and keeps the one whose worst child a bound pass at the
    parent's α/β bounds highest (DomainBounder.evaluate, two children per candidate). On ReLU and sigmoid/tanh
    nets its answers agree with the grid, and its candidates' passes count as no visit."""
    evaluated = []
    original = DomainBounder.evaluate
    monkeypatch.setattr(DomainBounder, "evaluate",
                        lambda self, domains, *rest: evaluated.append(len(domains)) or original(self, domains, *rest))
    relu = tiny_network(torch.nn.ReLU, [8, 8])
    relu_cases = []
    for seed in range(2):
        randomized(relu, seed)
        margins = grid_margins(relu)
        relu_cases.append((relu, BoundedModel(relu, torch.zeros(1, 2)), float(margins.min()),
                           float(margins.max() - margins.min())))
    answered = 0
    for model, bounded, grid_min, spread in [*cases(range(2)), *relu_cases]:
        for sign in (-1, 1):
            spec = threshold_spec(grid_min + sign * 0.1 * spread)
            result = branch_and_bound(bounded, spec, branching="fsb", timeout=10, batch_size=8, alpha=FAST)
            check_answer(model, spec, result, grid_min)
            answered += result.status in ("verified", "falsified")
            assert result.stats["domains_visited"] <= 1 + 2 * result.stats["branching_decisions"]
    assert answered >= 6 and evaluated and all(count % 2 == 0 for count in evaluated)


@pytest.mark.slow
def test_matches_brute_force_on_many_networks():
    counts = {"verified": 0, "falsified": 0, "timeout": 0, "unknown": 0}
    for model, bounded, grid_min, spread in cases(range(40)):
        for sign in (-1, 1):
            spec = threshold_spec(grid_min + sign * 0.02 * spread)
            result = branch_and_bound(bounded, spec, timeout=10, batch_size=32, alpha=FAST)
            check_answer(model, spec, result, grid_min)
            counts[result.status] += 1
    print("\nBaB on 40 networks x 2 thresholds:", counts)
    assert counts["verified"] + counts["falsified"] >= 50


def test_subdomain_bounds_hold_where_the_split_holds():
    """Children of random splits (with β) bound every sampled input whose pre-activations lie in them."""
    generator = torch.Generator().manual_seed(0)
    for model, bounded, grid_min, spread in cases(range(2)):
        spec = threshold_spec(grid_min - 0.5 * spread)
        bounder = DomainBounder(bounded, spec, "alpha-crown", FAST)
        domains = random_splits(bounder.root(), generator)
        bounder.bound(domains, len(domains))
        x = BOX[0] + (BOX[1] - BOX[0]) * torch.rand(4000, 2, generator=generator)
        values = pre_activations(bounded, x)
        with torch.no_grad():
            y = model(x)
        margin = y[:, 0] - y[:, 1] - float(spec.unsafe[0].d)
        assert_domains_bound_their_samples(domains, values, margin)


DISK = InputSet.ball(torch.zeros(1, 2), 0.8, norm=2)


def disk_points(count: int, generator: torch.Generator) -> torch.Tensor:
    """Points of the L2 disk DISK (the box's points within its radius), its boundary included."""
    x = BOX[0] + (BOX[1] - BOX[0]) * torch.rand(4 * count, 2, generator=generator)
    x = x[x.norm(dim=1) <= 0.8][:count]
    angle = torch.rand(count // 4, generator=generator) * 2 * math.pi
    return torch.cat([x, 0.8 * (1 - 1e-6) * torch.stack([angle.cos(), angle.sin()], 1)])


def disk_spec(threshold: float, disk: InputSet = DISK) -> Specification:
    """Unsafe set y0 - y1 <= threshold over the disk."""
    return Specification.over(disk, [Disjunct(torch.tensor([[1.0, -1.0]]), torch.tensor([threshold]))])


def test_subdomain_bounds_over_a_disk_hold_where_the_split_holds():
    """Over an L2 disk, children of random splits bound every sampled point of the disk whose pre-activations
    lie in them, and the root is at least as tight as over the disk's bounding box."""
    generator = torch.Generator().manual_seed(1)
    for model, bounded, grid_min, spread in cases(range(2)):
        x = disk_points(4000, generator)
        with torch.no_grad():
            y = model(x)
        disk_min = float((y[:, 0] - y[:, 1]).min())
        spec = disk_spec(disk_min - 0.5 * spread)
        bounder = DomainBounder(bounded, spec, "alpha-crown", FAST)
        root = bounder.root()
        box = DomainBounder(bounded, Specification(spec.x_lower, spec.x_upper, spec.unsafe), "alpha-crown", FAST).root()
        assert root.lower >= box.lower - 1e-5
        domains = random_splits(root, generator)
        bounder.bound(domains, len(domains))
        assert DISK.contains(bounder.primal_inputs(domains))
        margin = y[:, 0] - y[:, 1] - float(spec.unsafe[0].d)
        assert_domains_bound_their_samples(domains, pre_activations(bounded, x), margin)


def test_search_over_a_disk_without_attack_falsifies_with_a_point_of_the_disk():
    """No PGD: the counterexample comes from the domains' minimisers of their linear bounds, which lie on the
    disk (a box corner would lie outside it)."""
    generator = torch.Generator().manual_seed(2)
    model, bounded, grid_min, spread = next(cases([1]))
    x = disk_points(20000, generator)
    with torch.no_grad():
        y = model(x)
    disk_min = float((y[:, 0] - y[:, 1]).min())
    spec = disk_spec(disk_min + 0.02 * spread)
    result = branch_and_bound(bounded, spec, timeout=30, attack=False, alpha=FAST)
    assert result.status == "falsified"
    assert DISK.contains(result.counterexample)
    with torch.no_grad():
        y = model(result.counterexample)
    assert float(y[0, 0] - y[0, 1]) <= float(spec.unsafe[0].d)


def random_splits(root: Domain, generator: torch.Generator, count: int = 3) -> list[Domain]:
    """The leaves after `count` splits of the first node's random elements at random points, oldest first."""
    domains = [root]
    for _ in range(count):
        domain = domains.pop(0)
        name = next(iter(domain.intervals))
        interval = domain.intervals[name]
        index = int(torch.randint(interval.lower.numel(), (1,), generator=generator))
        low, high = float(interval.lower.view(-1)[index]), float(interval.upper.view(-1)[index])
        domains += domain.split(name, index, low + (high - low) * float(torch.rand(1, generator=generator)))
    return domains


def assert_domains_bound_their_samples(domains, values: dict[str, torch.Tensor], margin: torch.Tensor) -> int:
    """Every domain's lower bound is below the margin of every sample whose node values lie in its split
    intervals (`values` from `pre_activations`); returns how many domains held samples."""
    held = 0
    for domain in domains:
        inside = torch.ones(len(margin), dtype=torch.bool)
        for name, interval in domain.intervals.items():
            lower, upper = interval.lower.reshape(1, -1), interval.upper.reshape(1, -1)  # values are flat per sample
            inside &= ((values[name] >= lower - 1e-5) & (values[name] <= upper + 1e-5)).all(1)
        if inside.any() and math.isfinite(domain.lower):
            assert float(margin[inside].min()) >= domain.lower - 1e-4
            held += 1
    return held


def pre_activations(bounded: BoundedModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every node's value at x, by name (through the bounded graph, traced for x's batch size)."""
    graph = bounded.graph_for(x.shape[0])
    values = {}
    interpreter = torch.fx.Interpreter(graph.module)
    original = interpreter.run_node

    def run_node(node):
        value = original(node)
        if node.op == "call_function" and isinstance(value, torch.Tensor):
            values[node.name] = value.detach().reshape(x.shape[0], -1)
        return value

    interpreter.run_node = run_node
    with torch.no_grad():
        interpreter.run(x)
    return values


def test_splits_narrow_the_bounds_through_bounded_model():
    model, bounded, grid_min, spread = next(cases([0]))
    whole = bounded.compute_bounds(x_lower=BOX[0], x_upper=BOX[1], method="ibp")
    values = pre_activations(bounded, torch.zeros(1, 2))
    width = values["linear"].shape[1]
    split = {"linear": Interval(torch.full((1, width), -0.1), torch.full((1, width), 0.1))}
    narrow = bounded.compute_bounds(x_lower=BOX[0], x_upper=BOX[1], method="ibp", splits=split)
    assert (narrow.width <= whole.width + 1e-6).all() and (narrow.width < whole.width).any()
    with pytest.raises(opwise.errors.InputError, match="not in the graph"):
        bounded.compute_bounds(x_lower=BOX[0], x_upper=BOX[1], splits={"nowhere": split["linear"]})


def test_verify_runs_branch_and_bound_when_asked():
    model, bounded, grid_min, spread = next(cases([0]))
    x = torch.zeros(1, 2)
    target = int(model(x).argmax())
    plain = opwise.verify(bounded, x, eps=0.3, target=target)
    complete = opwise.verify(bounded, x, eps=0.3, target=target, bab={"timeout": 5, "batch_size": 8, "alpha": FAST})
    assert complete.status in ("verified", "falsified", "timeout")
    if plain.status == "unknown":
        assert "bab" in complete.stats


@pytest.mark.slow
def test_branching_strategies_side_by_side():
    """Verified counts on a seeded set of properties just below the true minimum (printed for the report)."""
    strategies = [("bbps", "table"), ("babsr", "table"), ("largest-interval", "midpoint")]
    counts = {"alpha-crown only": 0, **{f"{b}+{s}": 0 for b, s in strategies}}
    for model, bounded, grid_min, spread in cases(range(8)):
        spec = threshold_spec(grid_min - 0.1 * spread)
        root = bounded.compute_bounds(x_lower=BOX[0], x_upper=BOX[1], C=spec.unsafe[0].C, method="alpha-crown")
        counts["alpha-crown only"] += float(root.lower) > float(spec.unsafe[0].d)
        for branching, split_point in strategies:
            result = branch_and_bound(bounded, spec, branching=branching, split_point=split_point, timeout=20,
                                      batch_size=16, alpha=FAST)
            check_answer(model, spec, result, grid_min)
            counts[f"{branching}+{split_point}"] += result.status == "verified"
            print(branching, split_point, result.status, result.stats, flush=True)
    print("\nverified of 8 (threshold 10% of the margin range below the true minimum, 20 s each):", counts)
    assert counts["bbps+table"] >= counts["alpha-crown only"]


def digits_sigmoid_mlp() -> tuple[torch.nn.Sequential, torch.Tensor, torch.Tensor]:
    """A 64-32-10 sigmoid MLP trained for a few seconds on scikit-learn's bundled 8x8 digits (no download)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Sigmoid(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:1500]), y[:1500]).backward()
        optimizer.step()
    return model, x[1500:], y[1500:]


@pytest.mark.slow
def test_digits_sigmoid_mlp_at_growing_eps():
    """Verified counts of the first 10 correctly classified test digits: α-CROWN alone vs BaB (printed)."""
    model, x, y = digits_sigmoid_mlp()
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).nonzero().flatten()[:10]
    bounded = BoundedModel(model, x[:1])
    rows = []
    for eps in (0.01, 0.02, 0.03, 0.04):
        counts = {"alpha-crown": 0, "bbps+table": 0, "largest-interval+midpoint": 0, "falsified": 0}
        for index in correct.tolist():
            sample, label = x[index : index + 1], int(y[index])
            counts["alpha-crown"] += opwise.verify(bounded, sample, eps=eps, target=label, domain=(0, 1)).status == "verified"
            for branching, split_point in (("bbps", "table"), ("largest-interval", "midpoint")):
                result = opwise.verify(bounded, sample, eps=eps, target=label, domain=(0, 1), bab={
                    "timeout": 10, "branching": branching, "split_point": split_point, "batch_size": 32, "alpha": FAST})
                counts[f"{branching}+{split_point}"] += result.status == "verified"
                if result.status == "falsified":
                    counts["falsified"] += 1
                    assert int(model(result.counterexample).argmax()) != label
        rows.append((eps, counts))
    print("\ndigits sigmoid MLP, 10 samples, 10 s per BaB:")
    for eps, counts in rows:
        print(f"  eps={eps}: {counts}")


def test_a_bound_pass_reaching_the_deadline_ends_the_search_with_its_counts(monkeypatch):
    """A bound pass that reaches the engine's deadline (TimeLimitReached) in the second round ends the search as
    timeout with the first round counted and no margin claimed for the interrupted round."""
    from opwise.errors import TimeLimitReached

    model, bounded, grid_min, spread = next(cases([2]))
    spec = threshold_spec(grid_min - 1e-4 * spread)
    original, rounds = DomainBounder.bound, []

    def bound_until_the_second_round(self, *args, **kwargs):
        rounds.append(1)
        if len(rounds) == 2:
            raise TimeLimitReached("the time limit was reached during a bound pass")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DomainBounder, "bound", bound_until_the_second_round)
    result = branch_and_bound(bounded, spec, timeout=60, batch_size=4, attack=False, alpha=FAST)
    assert result.status == "timeout" and result.margin_lower is None and len(rounds) == 2
    assert result.stats["rounds"] == 1 and result.stats["domains_visited"] > 1


class ProductNet(torch.nn.Module):
    """y = last(a(x) · g(b(x))) with a, b halves of one linear layer; g is the identity (a net made only of
    products, apart from the linear layers) or tanh (a·tanh(b))."""

    def __init__(self, width: int, gate=None):
        super().__init__()
        self.first, self.last, self.gate = torch.nn.Linear(2, 2 * width), torch.nn.Linear(width, 2), gate

    def forward(self, x):
        a, b = self.first(x).chunk(2, -1)
        return self.last(a * (b if self.gate is None else self.gate(b)))


class GateNet(torch.nn.Module):
    """One LSTM cell step written out: c = σ(f)·c0 + σ(i)·tanh(g), h = σ(o)·tanh(c), with c0 from the input too."""

    def __init__(self, width: int):
        super().__init__()
        self.first, self.last = torch.nn.Linear(2, 5 * width), torch.nn.Linear(width, 2)

    def forward(self, x):
        i, f, g, o, c0 = self.first(x).chunk(5, -1)
        c = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
        return self.last(torch.sigmoid(o) * torch.tanh(c))


def product_case(model: torch.nn.Module, seed: int, scale: float = 1.0):
    """(model, bounded model, grid minimum, margin spread) with random weights times `scale`."""
    randomize_(model, seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(scale)
    margins = grid_margins(model)
    return model, BoundedModel(model, torch.zeros(1, 2)), float(margins.min()), float(margins.max() - margins.min())


def test_net_made_only_of_products_is_split_not_crashed():
    """Regression: without product candidates the search had nothing to split and crashed in choose_splits
    ("torch.cat(): expected a non-empty list of Tensors")."""
    model, bounded, grid_min, spread = product_case(ProductNet(3), 0, scale=2.0)
    spec = threshold_spec(grid_min - 0.05 * spread)
    root = bounded.compute_bounds(x_lower=BOX[0], x_upper=BOX[1], C=spec.unsafe[0].C, method="alpha-crown")
    assert float(root.lower) - float(spec.unsafe[0].d) <= 0, "alpha-CROWN alone already verifies this case"
    result = branch_and_bound(bounded, spec, timeout=30, batch_size=8, alpha=FAST)
    assert result.status == "verified" and result.stats["branching_decisions"] >= 1
    check_answer(model, spec, result, grid_min)


class Floor(torch.nn.Module):
    def forward(self, x):
        return torch.floor(x)


def test_nothing_to_split_ends_unknown_with_a_reason():
    """Floor (a step at every integer: no split rule, and not a smooth family) leaves nothing to split: 'unknown',
    and why."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 6), Floor(), torch.nn.Linear(6, 2))
    model, bounded, grid_min, spread = product_case(model, 0, scale=2.0)
    result = branch_and_bound(bounded, threshold_spec(grid_min - 1e-3 * spread), timeout=10, attack=False, alpha=FAST)
    assert result.status == "unknown" and result.stats["reason"].startswith("nothing to split")
    assert "no node has a splittable relaxation" in result.stats["reason"]


class OneSample(torch.nn.Module):
    """`model` run on its input without the batch axis ([2], as VNN-COMP's networks declared [n] were bounded):
    no node of the graph has the batch axis first."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.reshape(-1)).reshape(1, -1)


def test_nothing_to_split_off_the_batch_axis_names_the_nodes():
    """A ReLU network whose nodes lack the batch axis ended 'nothing to split: no node has a splittable relaxation',
    which sent the reader looking for a network without nonlinearities; the reason names the ReLUs and why."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    model, _, grid_min, spread = product_case(model, 0, scale=2.0)
    bounded = BoundedModel(OneSample(model), torch.zeros(1, 2))
    assert not split_nodes(bounded.graph) and [n.function for n in split_nodes(bounded.graph, off_batch=True)] == ["relu"]
    result = branch_and_bound(bounded, threshold_spec(grid_min - 1e-3 * spread), timeout=10, attack=False, alpha=FAST)
    assert result.status == "unknown" and "(relu) do not have the input's batch axis first" in result.stats["reason"]


class Square(torch.nn.Module):
    def forward(self, x):
        return x**2


@pytest.mark.parametrize("activation", [Square, torch.nn.Hardswish, torch.nn.SELU, torch.nn.Mish])
def test_families_without_a_split_table_are_split_at_the_midpoint_and_match_brute_force(activation):
    """pow, hardswish, SELU and mish declare no split-point table; they were never split (a square net ended
    'nothing to split'). Split at the midpoint, the search decides and agrees with a dense grid."""
    answered, bounded = _answers_against_the_grid(
        lambda seed: torch.nn.Sequential(torch.nn.Linear(2, 4), activation(), torch.nn.Linear(4, 2)))
    assert len(split_nodes(bounded.graph)) == 1  # the activation is a split candidate
    assert answered >= 3


def _answers_against_the_grid(build) -> tuple[int, BoundedModel]:
    """GenBaB at thresholds 5% of the margin's spread below and above its grid minimum, on `build(seed)` for seeds
    0 and 1 (weights randomized, doubled): every answer checked; how many decided, and the last bounded model."""
    answered = 0
    for seed in range(2):
        model, bounded, grid_min, spread = product_case(build(seed), seed, scale=2.0)
        for sign in (-1, 1):
            spec = threshold_spec(grid_min + sign * 0.05 * spread)
            result = branch_and_bound(bounded, spec, timeout=8, batch_size=8, alpha=FAST)
            check_answer(model, spec, result, grid_min)
            answered += result.status in ("verified", "falsified")
    return answered, bounded


@pytest.mark.parametrize("network", ["products", "lstm-gates"])
def test_matches_brute_force_on_product_and_gate_networks(network):
    answered, _ = _answers_against_the_grid(lambda seed: ProductNet(3) if network == "products" else GateNet(2))
    assert answered >= 3


@pytest.mark.slow
def test_matches_brute_force_on_many_product_and_gate_networks():
    counts = {"verified": 0, "falsified": 0, "timeout": 0, "unknown": 0}
    for seed in range(12):
        for model in (ProductNet(4), ProductNet(3, torch.tanh), GateNet(3)):
            model, bounded, grid_min, spread = product_case(model, seed, scale=2.0)
            for sign in (-1, 1):
                spec = threshold_spec(grid_min + sign * 0.02 * spread)
                result = branch_and_bound(bounded, spec, timeout=10, batch_size=16, alpha=FAST)
                check_answer(model, spec, result, grid_min)
                counts[result.status] += 1
    print("\nBaB on 36 product/gate networks x 2 thresholds:", counts)
    assert counts["verified"] + counts["falsified"] >= 45


@pytest.mark.parametrize("network", ["products", "lstm-gates"])
def test_product_subdomain_bounds_hold_where_the_split_holds(network):
    """Children of random splits of product factors (with α and β) bound every sampled input whose factor
    values lie in them."""
    generator = torch.Generator().manual_seed(3)
    model, bounded, grid_min, spread = product_case(ProductNet(3) if network == "products" else GateNet(2), 1, scale=2.0)
    spec = threshold_spec(grid_min - 0.5 * spread)
    bounder = DomainBounder(bounded, spec, "alpha-crown", FAST)
    factors = [node.input for node in bounder.nodes if node.other is not None]
    assert factors
    domains = [bounder.root()]
    for _ in range(4):
        domain = domains.pop(0)
        name = factors[int(torch.randint(len(factors), (1,), generator=generator))]
        interval = domain.intervals[name]
        index = int(torch.randint(interval.lower.numel(), (1,), generator=generator))
        low, high = float(interval.lower.view(-1)[index]), float(interval.upper.view(-1)[index])
        domains += domain.split(name, index, low + (high - low) * float(torch.rand(1, generator=generator)))
    bounder.bound(domains, len(domains))
    products = {node.nonlinear for node in bounder.nodes if node.other is not None}
    for domain in domains:  # the splits reach α/β optimisation: β per split factor, α per product's planes
        assert {BETA + name for name in factors} | products <= set(domain.parameters)
    x = BOX[0] + (BOX[1] - BOX[0]) * torch.rand(4000, 2, generator=generator)
    with torch.no_grad():
        y = model(x)
    margin = y[:, 0] - y[:, 1] - float(spec.unsafe[0].d)
    assert_domains_bound_their_samples(domains, pre_activations(bounded, x), margin)


def test_a_tanh_b_verifies_with_product_splits_where_tanh_splits_are_stuck(monkeypatch):
    """On a·tanh(b), with intermediate bounds fixed at the root's, splitting tanh's inputs alone runs out of splits
    with the margin bound still negative; with the product's factors as candidates the same property verifies.
    (Bounding the nodes after a split again per domain, the default, verifies it with tanh splits alone.)"""
    model, bounded, grid_min, spread = product_case(ProductNet(3, torch.tanh), 0)
    spec = threshold_spec(grid_min - 0.05 * spread)
    with_products = branch_and_bound(bounded, spec, timeout=30, batch_size=16, alpha=FAST, refine_intermediate=False)
    assert with_products.status == "verified"
    check_answer(model, spec, with_products, grid_min)
    original = bounding.split_nodes
    monkeypatch.setattr(bounding, "split_nodes", lambda graph: [n for n in original(graph) if n.other is None])
    tanh_only = branch_and_bound(bounded, spec, timeout=10, batch_size=16, alpha=FAST, refine_intermediate=False)
    assert tanh_only.status != "verified"
    refined = branch_and_bound(bounded, spec, timeout=30, batch_size=16, alpha=FAST)
    assert refined.status == "verified"
    check_answer(model, spec, refined, grid_min)


def test_attacks_take_a_share_of_the_time(monkeypatch):
    """Every PGD attack of the search gets at most ATTACK_SHARE of its time (the first of the timeout), so a
    network whose attack is slow still has its domains bounded."""
    import opwise.bounds.strategies.genbab.search as search

    limits = []

    def recorded(*args, time_limit=None, **kwargs):
        limits.append(time_limit)
        return pgd_attack(*args, time_limit=time_limit, **kwargs)

    pgd_attack = search.pgd_attack
    monkeypatch.setattr(search, "pgd_attack", recorded)
    model, bounded, grid_min, spread = next(cases([0]))
    result = branch_and_bound(bounded, threshold_spec(grid_min - 0.2 * spread), timeout=60, batch_size=8, alpha=FAST)
    assert result.status == "verified" and limits
    assert all(limit <= search.ATTACK_SHARE * 60 for limit in limits)


def test_root_minimisers_of_every_row_are_checked_before_any_split():
    """Without PGD, a property violated just past its exact minimum (MILP) on a robustness-style ReLU net
    (a disjunct per other class) is falsified from the root bound's minimisers, one per unproved row, before
    any round of splitting; the counterexample is real."""
    from tests.bounds.strategies.genbab.test_bounding import _robustness_case, _robustness_spec

    falsified = 0
    for seed in (0, 1, 2):
        model, box, target, minima = _robustness_case(seed)
        spec = _robustness_spec(box, target, {j: minimum + 0.2 * abs(minimum) for j, minimum in minima.items()})
        result = branch_and_bound(BoundedModel(model, torch.zeros(1, 3)), spec, timeout=30, attack=False, batch_size=8)
        assert result.status == "falsified"
        with torch.no_grad():
            assert spec.contains(result.counterexample) and float(spec.margin(model(result.counterexample)).min()) <= 0
        falsified += result.stats["rounds"] == 0
    assert falsified >= 2


class MatrixProductNet(torch.nn.Module):
    """y = last(A(x) @ B(x)) with A [2, 3] and B [3, 2] from linear layers: a matrix product of two
    input-dependent matrices (attention's q·kᵀ), which the bound graph rewrites into broadcast copies times each other."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.last = torch.nn.Linear(2, 6), torch.nn.Linear(2, 6), torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.last((self.a(x).reshape(-1, 2, 3) @ self.b(x).reshape(-1, 3, 2)).flatten(1))


def test_a_matrix_product_split_narrows_every_copy_of_the_value():
    """Each element of A and B enters the rewritten product twice (a copy per column of B / row of A); a split
    decision names both copies and narrows both (before: one copy, the other kept the whole interval)."""
    from opwise.bounds.strategies.genbab.branching import choose_splits

    model, bounded, grid_min, spread = product_case(MatrixProductNet(), 0, scale=2.0)
    bounder = DomainBounder(bounded, threshold_spec(grid_min - 0.05 * spread), "crown")
    root = bounder.root()
    factors = [node for node in bounder.nodes if node.other is not None]
    assert len(factors) == 2
    values = pre_activations(bounded, BOX[0] + (BOX[1] - BOX[0]) * torch.rand(50, 2, generator=torch.Generator().manual_seed(0)))
    shortcuts = bounder.shortcuts()
    for node in factors:
        for branching in ("bbps", "largest-interval"):
            (decision,) = choose_splits([root], [node], branching=branching, split_point="table",
                                        input_set=bounder.input_set(1), shortcuts=shortcuts)
            copies = decision.index
            assert isinstance(copies, list) and len(copies) == 2, decision
            copied = values[node.input][:, copies]
            assert torch.equal(copied[:, 0], copied[:, 1])  # the two positions hold one value at every input
            below, above = root.split(decision.input, copies, decision.point)
            assert (below.intervals[node.input].upper.view(-1)[copies] == decision.point).all()
            assert (above.intervals[node.input].lower.view(-1)[copies] == decision.point).all()


def test_matches_brute_force_on_matrix_product_networks():
    answered = 0
    for seed in (0, 3):
        model, bounded, grid_min, spread = product_case(MatrixProductNet(), seed, scale=2.0)
        for sign in (-1, 1):
            spec = threshold_spec(grid_min + sign * 0.05 * spread)
            result = branch_and_bound(bounded, spec, timeout=15, batch_size=8, alpha=FAST)
            check_answer(model, spec, result, grid_min)
            answered += result.status in ("verified", "falsified")
    assert answered >= 3


def test_matrix_product_subdomain_bounds_hold_where_the_split_holds():
    """Children of random splits of a matrix product's factors, every copy narrowed together (with α and β),
    bound every sampled input whose node values lie in them."""
    generator = torch.Generator().manual_seed(5)
    model, bounded, grid_min, spread = product_case(MatrixProductNet(), 1, scale=2.0)
    spec = threshold_spec(grid_min - 0.5 * spread)
    bounder = DomainBounder(bounded, spec, "alpha-crown", FAST)
    factors = [node for node in bounder.nodes if node.source is not None]
    domains = [bounder.root()]
    for _ in range(5):
        domain = domains.pop(0)
        node = factors[int(torch.randint(len(factors), (1,), generator=generator))]
        interval = domain.intervals[node.input]
        index = int(torch.randint(interval.lower.numel(), (1,), generator=generator))
        copies = (node.source == node.source[index]).nonzero().flatten().tolist()
        low, high = float(interval.lower.view(-1)[index]), float(interval.upper.view(-1)[index])
        domains += domain.split(node.input, copies, low + (high - low) * float(torch.rand(1, generator=generator)))
    bounder.bound(domains, len(domains))
    x = BOX[0] + (BOX[1] - BOX[0]) * torch.rand(4000, 2, generator=generator)
    with torch.no_grad():
        y = model(x)
    margin = y[:, 0] - y[:, 1] - float(spec.unsafe[0].d)
    assert assert_domains_bound_their_samples(domains, pre_activations(bounded, x), margin) >= 3


class SequenceFirstLSTM(torch.nn.Module):
    """nn.LSTM with the sequence first: its states keep the batch on dim 1, which the engine cannot follow
    over a batch of domains (GenBaB crashed: "grad_output [64, 64, 4] vs output [1, 64, 4]")."""

    def __init__(self):
        super().__init__()
        self.rnn, self.head = torch.nn.LSTM(2, 4), torch.nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(x.shape[0], 1, 2).transpose(0, 1))
        return self.head(out[-1])


def test_a_sequence_first_lstm_is_searched_one_domain_at_a_time_and_matches_brute_force():
    model, bounded, grid_min, spread = product_case(SequenceFirstLSTM(), 3, scale=3.0)
    assert bounded.folds_samples()
    for threshold in (grid_min + 0.05 * spread, grid_min - 0.3 * spread):
        spec = threshold_spec(threshold)
        result = branch_and_bound(bounded, spec, timeout=10, batch_size=64, alpha=FAST)
        check_answer(model, spec, result, grid_min)
        assert result.status in ("verified", "falsified", "timeout")


class Clamp(torch.nn.Module):
    def forward(self, x):
        return x.clamp(-0.5, 1.0)


PIECEWISE = {"threshold": lambda: torch.nn.Threshold(0.1, -0.5), "hardshrink": lambda: torch.nn.Hardshrink(0.3),
             "softshrink": lambda: torch.nn.Softshrink(0.3), "hardtanh": torch.nn.Hardtanh, "clamp": Clamp}


@pytest.mark.parametrize("activation", PIECEWISE.values(), ids=PIECEWISE.keys())
def test_piecewise_linear_families_are_split_at_their_breakpoints_and_match_brute_force(activation):
    """threshold, hardshrink, softshrink, and hardtanh and clamp (two kinks) were no split candidates (GenBaB
    stopped with 'rounds': 0, or 'nothing to split'); split at a breakpoint inside each interval, every answer
    agrees with a dense grid."""
    answered, bounded = _answers_against_the_grid(
        lambda seed: torch.nn.Sequential(torch.nn.Linear(2, 4), activation(), torch.nn.Linear(4, 2)))
    assert len(split_nodes(bounded.graph)) == 1
    assert answered >= 3


def _as_relu_network(model: torch.nn.Sequential, low: float, high: float) -> torch.nn.Sequential:
    """The same function as Linear -> clamp(low, high) -> Linear, written with ReLUs for the MILP oracle:
    clamp(z, low, high) = relu(z - low) - relu(z - high) + low."""
    first, last = model[0], model[2]
    with torch.no_grad():
        hidden = torch.nn.Linear(2, 2 * first.out_features)
        hidden.weight.copy_(torch.cat([first.weight, first.weight]))
        hidden.bias.copy_(torch.cat([first.bias - low, first.bias - high]))
        out = torch.nn.Linear(2 * first.out_features, last.out_features)
        out.weight.copy_(torch.cat([last.weight, -last.weight], 1))
        out.bias.copy_(last.bias + low * last.weight.sum(1))
    return torch.nn.Sequential(hidden, torch.nn.ReLU(), out)


@pytest.mark.parametrize("activation, low, high", [(torch.nn.Hardtanh, -1.0, 1.0), (Clamp, -0.5, 1.0)],
                         ids=["hardtanh", "clamp"])
def test_two_kink_ramps_are_decided_just_either_side_of_the_exact_minimum(activation, low, high):
    """Thresholds 0.1% of the margin's spread either side of its exact minimum (a MILP over the same function
    written with ReLUs): with two kinks per neuron nothing was split and the search ended 'unknown'; split at one
    kink, then the other, each neuron becomes exact, and it verifies below the minimum and falsifies above."""
    from tests.bounds.strategies.bab_reference import milp_min_margin

    model = torch.nn.Sequential(torch.nn.Linear(2, 6), activation(), torch.nn.Linear(6, 2))
    model, bounded, _, spread = product_case(model, 0, scale=2.0)
    exact = milp_min_margin(_as_relu_network(model, low, high), threshold_spec(0.0))
    for sign, expected in ((-1, "verified"), (1, "falsified")):
        spec = threshold_spec(exact + sign * 1e-3 * spread)
        result = branch_and_bound(bounded, spec, timeout=20, attack=False, alpha=FAST)
        check_answer(model, spec, result, exact)
        assert result.status == expected, (sign, result.stats)
        assert expected == "falsified" or result.stats["branching_decisions"] >= 1


def test_a_leaf_lp_stopped_by_the_clock_ends_in_timeout_not_unknown(monkeypatch):
    """Regression: a domain with nothing left to split whose LP the deadline stopped (no verdict, no candidate)
    ended the search 'unknown', as if the LP had left it open; mnist_fc 256x2 prop_10_0.05 reported that at 60 s."""
    import time

    import opwise.bounds.strategies.genbab.search as search
    from opwise.bounds.strategies.genbab.leaf import LeafAnswer

    def stopped_by_the_clock(bounder, domain, deadline=None):
        time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)
        return LeafAnswer(False)

    monkeypatch.setattr(search, "decide_leaf", stopped_by_the_clock)
    model = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Hardtanh(), torch.nn.Linear(6, 2))
    model, bounded, grid_min, spread = product_case(model, 0, scale=2.0)
    result = branch_and_bound(bounded, threshold_spec(grid_min - 1e-3 * spread), timeout=3, attack=False, alpha=FAST)
    assert result.status == "timeout"


def _binarized(seed: int, integer: bool = True) -> torch.nn.Module:
    """x (1-D) -> Linear(1, 6) -> sign -> Linear(6, 4) -> sign -> Linear(4, 1), small integer-ish weights so that
    several pre-activations are exactly 0 at breakpoints inside the box (`integer` False: the first layer's six
    breakpoints are distinct, exact multiples of 1/4 in the box, and the later layers' weights random floats, so no
    later input cancels to exactly 0)."""
    generator = torch.Generator().manual_seed(seed)
    layers = [torch.nn.Linear(1, 6), torch.nn.Linear(6, 4), torch.nn.Linear(4, 1)]
    with torch.no_grad():
        if integer:
            for layer in layers:
                layer.weight.copy_(torch.randint(-2, 3, layer.weight.shape, generator=generator).float())
                layer.bias.copy_(torch.randint(-2, 3, layer.bias.shape, generator=generator).float() / 2)
        else:
            breakpoints = (torch.randperm(15, generator=generator)[:6] - 7).float() / 4
            weights = torch.tensor([-2.0, -1.0, 1.0, 2.0])[torch.randint(0, 4, (6,), generator=generator)]
            layers[0].weight.copy_(weights[:, None])
            layers[0].bias.copy_(-weights * breakpoints)
            for layer in layers[1:]:
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = layers
        def forward(self, x):
            return self.c(torch.sign(self.b(torch.sign(self.a(x)))))
    return Net().eval()


def _exact_minimum(model: torch.nn.Module, low: float, high: float) -> float:
    """A 1-D binarized net is piecewise constant between the first layer's breakpoints (the later layers' inputs
    change only there): its minimum is at a breakpoint or between two, so those points give it exactly."""
    w, b = model.a.weight[:, 0].detach(), model.a.bias.detach()
    breaks = sorted({low, high, *[float(-bi / wi) for wi, bi in zip(w, b) if wi != 0 and low <= -bi / wi <= high]})
    points = breaks + [(p + q) / 2 for p, q in zip(breaks, breaks[1:])]
    with torch.no_grad():
        return float(model(torch.tensor(points).reshape(-1, 1)).min())


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("integer", [True, False])
def test_sign_splits_decide_binarized_nets(seed, integer):
    """sign is split three ways (below 0, at 0, above 0: each side's output is then exact), so GenBaB decides
    binarized nets (before: 'nothing to split', unknown at once; then, split two ways with sign(0) = 0 kept on both
    sides, unknown where the property held). Seeded, with the exact minimum of a 1-D two-layer net: a threshold at
    or above the minimum is never verified (a point with y <= t exists), a counterexample is real, and one below
    it is verified where no later layer's input cancels to exactly 0 at a breakpoint (with integer weights there
    the side of such a 0 the search takes holds no input, which no bound in floating point tells from one that
    holds a sliver: it may stay unknown, never falsified)."""
    model = _binarized(seed, integer)
    low, high = -2.0, 2.0
    minimum = _exact_minimum(model, low, high)
    bounded = BoundedModel(model, torch.zeros(1, 1))
    box = (torch.tensor([[low]]), torch.tensor([[high]]))
    for threshold in (minimum - 0.5, minimum, minimum + 0.5):
        spec = Specification(*box, [Disjunct(torch.ones(1, 1), torch.tensor([threshold]))])  # unsafe: y <= t
        result = branch_and_bound(bounded, spec, timeout=20, alpha=FAST)
        if result.status == "unknown":  # left open after splitting, not for want of anything to split
            assert result.stats["branching_decisions"] > 0, result.stats
        if threshold >= minimum:
            assert result.status != "verified", (seed, threshold, minimum)
        elif integer:
            assert result.status != "falsified", (seed, threshold, minimum)
        else:
            assert result.status == "verified", (seed, threshold, minimum, result.stats)
        if result.status == "falsified":
            x = result.counterexample.reshape(1, 1)
            assert low <= float(x) <= high and float(model(x)) <= threshold


def test_sign_at_zero_is_kept_where_it_alone_reaches_the_threshold():
    """y = sign(s + 1/2) + sign(1/2 − s) with s = sign(x): y = 0 for x != 0 and y = 2 at x = 0 exactly. The
    violation y >= 1.5 exists only at x = 0, so a search that lost sign(0) = 0 at a split would prove it."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Identity(), torch.nn.Linear(1, 2), torch.nn.Identity(),
                              torch.nn.Linear(2, 1))

    class Net(torch.nn.Module):
        def forward(self, x):
            s = torch.sign(net[0](x))
            return net[4](torch.sign(net[2](s)))
    with torch.no_grad():
        net[0].weight.fill_(1.0); net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0], [-1.0]])); net[2].bias.fill_(0.5)
        net[4].weight.fill_(1.0); net[4].bias.zero_()
    model = Net().eval()
    assert float(model(torch.zeros(1, 1))) == 2.0 and float(model(torch.full((1, 1), 1e-6))) == 0.0
    spec = Specification(torch.tensor([[-1.0]]), torch.tensor([[1.0]]), [Disjunct(-torch.ones(1, 1), torch.tensor([-1.5]))])
    result = branch_and_bound(BoundedModel(model, torch.zeros(1, 1)), spec, timeout=10, alpha=FAST)
    assert result.status != "verified"


def test_a_violation_only_where_a_sign_is_0_is_found_by_the_search():
    """|sign(x0 + x1/2)| >= 1/2 fails only on the line where sign's input is exactly 0: the three-way split gives that
    line a domain of its own, whose leaf LP finds a point on it (no attack). |x| is split at 0 only (on either side it
    is linear), not again and again at midpoints of its input, sign's output, which it was before (685 domains)."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)
        def forward(self, x):
            return torch.abs(torch.sign(self.linear(x)))
    model = Net().eval()
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[1.0, 0.5]]))
        model.linear.bias.zero_()
    box = (torch.tensor([[-1.0, -0.3]]), torch.tensor([[0.7, 1.0]]))
    spec = Specification(*box, [Disjunct(torch.ones(1, 1), torch.tensor([0.5]))])  # unsafe: y <= 1/2
    result = branch_and_bound(BoundedModel(model, torch.zeros(1, 2)), spec, timeout=20, attack=False, alpha=FAST)
    assert result.status == "falsified" and result.stats["domains_visited"] < 50, result.stats
    x = result.counterexample.reshape(1, 2)
    assert (x >= box[0]).all() and (x <= box[1]).all() and float(model(x)) == 0.0
    proved = branch_and_bound(BoundedModel(model, torch.zeros(1, 2)),
                              Specification(*box, [Disjunct(torch.ones(1, 1), torch.tensor([-0.01]))]), timeout=20)
    assert proved.status == "verified"


def test_a_binarized_conv_net_is_proved_by_sign_splits():
    """Conv -> BatchNorm -> sign -> Linear (VNN-COMP's traffic-sign nets in small), y0 >= t unsafe with t at 80%
    of the way from the sampled maximum to CROWN's bound: 'unknown' at once before (nothing to split), proved by
    splitting sign inputs at 0 now. A counterexample the search returns for a lower t is checked."""
    from opwise.bounds.verify import verify_specification

    torch.manual_seed(0)

    class Signs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.bn, self.fc = torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Linear(48, 2)
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)
        def forward(self, x):
            return self.fc(torch.flatten(torch.sign(self.bn(self.c(x))), 1))
    model = Signs().eval()
    x0 = torch.rand(1, 2, 6, 6)
    lower, upper = x0 - 0.15, x0 + 0.15
    with torch.no_grad():
        sampled = float(model(lower + (upper - lower) * torch.rand(20000, 2, 6, 6))[:, 0].max())
    bounded = BoundedModel(model, x0)
    ceiling = float(bounded.compute_bounds(x_lower=lower, x_upper=upper, method="crown").upper[0, 0])
    for fraction in (0.8, 0.2):
        threshold = sampled + fraction * (ceiling - sampled)
        spec = Specification(lower, upper, [Disjunct(torch.tensor([[-1.0, 0.0]]), torch.tensor([-threshold]))])
        result = verify_specification(bounded, spec, complete=True, timeout=30)
        if fraction == 0.8:
            assert result.status == "verified", result.stats
        if result.status == "falsified":
            x = result.counterexample.reshape(1, 2, 6, 6)
            assert (x >= lower).all() and (x <= upper).all() and float(model(x)[0, 0]) >= threshold


def _some_proved_leaves_left_open(monkeypatch, count: int) -> list:
    """decide_leaf with the first `count` leaves that it proves reported open instead (no verdict, no candidate: a
    solver that failed); returns the list those leaves are appended to."""
    import opwise.bounds.strategies.genbab.search as search
    from opwise.bounds.strategies.genbab.leaf import LeafAnswer, decide_leaf

    opened = []

    def failing(bounder, domain, deadline=None):
        answer = decide_leaf(bounder, domain, deadline)
        if answer.proved and len(opened) < count:
            opened.append(domain)
            return LeafAnswer(False, reason="no verdict (a stand-in for a failed solver)")
        return answer

    monkeypatch.setattr(search, "decide_leaf", failing)
    return opened


def disk_case(seed: int, norm: float, eps: float = 0.6):
    """A 2-input ReLU net (8, 8) over the Lp disk around a random point: (model, bounded model, disk, grid minimum of
    y0 - y1, its spread over samples of the disk)."""
    from tests.bounds.strategies.bab_reference import random_mlp
    from tests.bounds.test_verify import _disk_margin

    model = random_mlp(seed, (2, 8, 8, 2)).float()
    center = torch.rand(1, 2, generator=torch.Generator().manual_seed(seed)) - 0.5
    disk = InputSet.ball(center, eps, norm=norm)
    minimum = _disk_margin(model, center, eps, 0, norm)  # y0 - y1 (target 0 of two classes) on a dense polar grid
    with torch.no_grad():
        y = model(disk.sample(2000, torch.Generator().manual_seed(seed)))
    return model, BoundedModel(model, center), disk, minimum, float((y[:, 0] - y[:, 1]).max()) - minimum


def test_a_leaf_left_open_is_set_aside_and_a_counterexample_elsewhere_still_falsifies(monkeypatch):
    """Regression: the first leaf the LP left open ended the whole search 'unknown', though other open domains
    held a counterexample (planted fuzzer seeds 49, 57, 117: leaves over an L2 ball, where no LP was posed). Every
    leaf the LP proves is reported open here; the search sets them aside and still finds the counterexample."""
    opened = _some_proved_leaves_left_open(monkeypatch, 10_000)
    model, bounded, disk, minimum, spread = disk_case(1, 2.0)
    spec = disk_spec(minimum + 0.01 * spread, disk)
    result = branch_and_bound(bounded, spec, timeout=30, batch_size=16, method="crown", attack=False)
    assert opened and result.status == "falsified", (len(opened), result.stats)
    assert disk.contains(result.counterexample, 1e-6) and float(spec.margin(model(result.counterexample).detach())) <= 0


def test_a_leaf_left_open_ends_unknown_naming_it_never_verified(monkeypatch):
    """Every other domain proved, the leaf set aside alone stands between the search and a proof: 'unknown', the
    reason naming it (depth, margin bound, the LP's reason), never 'verified'."""
    opened = _some_proved_leaves_left_open(monkeypatch, 1)
    model, bounded, disk, minimum, spread = disk_case(1, 2.0)
    result = branch_and_bound(bounded, disk_spec(minimum - 0.1 * spread, disk), timeout=30, batch_size=16,
                              method="crown", attack=False)
    assert len(opened) == 1 and result.status == "unknown", result.stats
    reason = result.stats["reason"]
    assert result.stats["undecided_leaves"] == 1 and "1 domain with nothing left to split" in reason, reason
    assert f"depth {opened[0].depth}" in reason and "a stand-in for a failed solver" in reason, reason
    assert result.margin_lower is not None and result.margin_lower <= 0


@pytest.mark.parametrize("norm", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_searches_over_disks_agree_with_a_dense_grid(norm, method):
    """On 2-input ReLU nets over an L2, L1 or L∞ disk, thresholds 10% of the margin's spread on either side of the
    grid's minimum: 'verified' below, 'falsified' (a witness in the disk) above. Before, L2 and L1 searches that
    reached a leaf (CROWN's, without β, reach many) ended 'unknown': no LP was posed over a ball."""
    leaves = 0
    for seed in range(4):
        model, bounded, disk, minimum, spread = disk_case(seed, norm)
        for sign in (-1, 1):
            spec = disk_spec(minimum + sign * 0.1 * spread, disk)
            result = branch_and_bound(bounded, spec, timeout=30, batch_size=16, method=method)
            assert result.status == ("verified" if sign < 0 else "falsified"), (seed, sign, result.stats)
            if result.status == "falsified":
                assert disk.contains(result.counterexample, 1e-6)
                assert float(spec.margin(model(result.counterexample).detach())) <= 0
            leaves += result.stats.get("leaf_lps", 0)
    assert leaves or method == "alpha-crown", "no search reached a leaf: the test does not exercise the leaf LP"


def test_searches_over_boxes_cut_by_input_relations_agree_with_milp():
    """A box cut by a relation a·x <= b through its centre (the leaf LP takes the relation as a row; before, it posed
    no LP there and such leaves ended the search 'unknown'): every answer is the MILP's."""
    from opwise.bounds.linear_constraints import LinearConstraints
    from tests.bounds.strategies.bab_reference import milp_min_margin, random_mlp

    leaves = 0
    for seed in range(4):
        exact, model = random_mlp(seed, (3, 8, 8, 2)), random_mlp(seed, (3, 8, 8, 2)).float()
        generator = torch.Generator().manual_seed(seed)
        lower = torch.rand(1, 3, generator=generator) - 1
        upper = lower + 1.0
        G = torch.randn(1, 3, generator=generator)
        region = InputSet(lower, upper, constraints=LinearConstraints.within(G, G @ ((lower + upper) / 2).flatten(),
                                                                              lower, upper))
        row = Disjunct(torch.tensor([[1.0, -1.0]]), torch.tensor([0.0]))
        as_double = Specification.over(InputSet(lower.double(), upper.double(), constraints=region.constraints.to(
            dtype=torch.float64)), [Disjunct(row.C.double(), row.d.double())])
        minimum = milp_min_margin(exact, as_double)
        bounded = BoundedModel(model, lower)
        for sign in (-1, 1):
            threshold = minimum + sign * 0.1 * (abs(minimum) + 0.1)
            spec = Specification.over(region, [Disjunct(row.C, torch.tensor([threshold]))])
            result = branch_and_bound(bounded, spec, timeout=30, batch_size=16, method="crown")
            assert result.status == ("verified" if sign < 0 else "falsified"), (seed, sign, result.stats)
            if result.status == "falsified":
                assert region.contains(result.counterexample, 1e-6)
                assert float(spec.margin(model(result.counterexample).detach())) <= 0
            leaves += result.stats.get("leaf_lps", 0)
    assert leaves, "no search reached a leaf: the test does not exercise the leaf LP"
