"""Domains with nothing left to split, decided by an LP over the input (genbab/leaf.py): a proof holds on every
sample of the domain, and on a fully split ReLU network (where the LP is exact) an open disjunct's optimiser is a
real counterexample. The search then decides what it used to leave 'unknown'."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.strategies.genbab.bounding import DomainBounder
from opwise.bounds.strategies.genbab.branching import choose_splits
from opwise.bounds.strategies.genbab.leaf import decide_leaf
from opwise.bounds.strategies.genbab.search import branch_and_bound
from tests.bounds.strategies.genbab.test_bounding import _robustness_case, _robustness_spec
from tests.bounds.strategies.genbab.test_search import assert_domains_bound_their_samples, pre_activations


def _leaves(bounder: DomainBounder, count: int, values: dict[str, torch.Tensor], generator) -> list:
    """`count` domains with nothing left to split, reached from the root unbounded (so no β has proved them): every
    other one through random children (most fix phases that no input reaches), the rest through the children that
    hold a random sample (`values`: pre-activations per node name), which some input therefore reaches."""
    leaves, root, input_set = [], bounder.root(), bounder.input_set(1)
    samples = len(next(iter(values.values())))
    for walk in range(count):
        sample = int(torch.randint(samples, (1,), generator=generator)) if walk % 2 else None
        domain = root
        while True:
            (decision,) = choose_splits([domain], bounder.nodes, branching="largest-interval", split_point="table",
                                        input_set=input_set)
            if decision is None:
                break
            below, above = domain.split(decision.input, decision.index, decision.point)
            if sample is None:
                domain = (below, above)[int(torch.randint(2, (1,), generator=generator))]
            else:
                index = decision.index[0] if isinstance(decision.index, list) else decision.index
                domain = below if float(values[decision.input][sample, index]) <= decision.point else above
        leaves.append(domain)
    return leaves


def _inside(domain, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which samples' pre-activations lie in every interval of `domain` ([samples] bool)."""
    inside = torch.ones(len(next(iter(values.values()))), dtype=torch.bool)
    for name, interval in domain.intervals.items():
        lower, upper = interval.lower.reshape(1, -1), interval.upper.reshape(1, -1)
        inside &= ((values[name] >= lower - 1e-5) & (values[name] <= upper + 1e-5)).all(1)
    return inside


def _decided_soundly(bounder: DomainBounder, leaf, model, values: dict[str, torch.Tensor], margin: torch.Tensor):
    """The LP's verdict on `leaf`, checked against the samples (`values`, their `margin`): an unreachable leaf holds
    none, a proof holds on those inside, an open leaf's candidates lie in the input set. Returns ("unreached" |
    "proved" | "open", the answer, the smallest margin a candidate reaches)."""
    answer = decide_leaf(bounder, leaf)
    if answer.proved and answer.margin == float("inf"):
        assert not _inside(leaf, values).any()
        return "unreached", answer, None
    if answer.proved:
        assert_domains_bound_their_samples([dataclasses.replace(leaf, lower=answer.margin)], values, margin)
        return "proved", answer, None
    assert bounder.spec.contains(answer.candidate)
    with torch.no_grad():
        return "open", answer, float(bounder.spec.margin(model(answer.candidate)).min())


@pytest.mark.parametrize("seed", [1, 2, 4])
@pytest.mark.parametrize("shift", [-0.2, 0.2])
def test_leaf_proofs_hold_on_their_samples_and_open_leaves_give_real_counterexamples(seed, shift):
    """Leaves of random splits: those the LP finds unreachable hold no sample, its proofs hold on every sample inside,
    and where it leaves a disjunct open (only where the property fails) its optimiser violates the property."""

    model, box, target, minima = _robustness_case(seed, (8, 8))
    spec = _robustness_spec(box, target, {j: m + shift * abs(m) for j, m in minima.items()})
    bounded = BoundedModel(model, torch.zeros(1, 3))
    bounder = DomainBounder(bounded, spec, "alpha-crown")
    generator = torch.Generator().manual_seed(seed)
    x = box[0] + (box[1] - box[0]) * torch.rand(4000, 3, generator=generator)
    values = pre_activations(bounded, x)
    with torch.no_grad():
        margin = spec.margin(model(x))
    proved, opened, unreached = [], 0, 0
    for leaf in _leaves(bounder, 12, values, generator):
        assert not leaf.lower > 0  # the root's bound, inherited: only the LP can prove a leaf
        answer = decide_leaf(bounder, leaf)
        if answer.proved and answer.margin == float("inf"):  # no input reaches the leaf: no sample may lie in it
            unreached += 1
            assert not _inside(leaf, values).any()
        elif answer.proved:
            proved.append(dataclasses.replace(leaf, lower=answer.margin))
        else:
            opened += 1
            assert spec.contains(answer.candidate)
            with torch.no_grad():  # every ReLU's phase is fixed on the leaf: the LP is exact, its optimiser violates
                assert float(spec.margin(model(answer.candidate)).min()) <= 1e-3
            assert shift > 0, "an open leaf where the property holds (20% below its exact minimum)"
    assert_domains_bound_their_samples(proved, values, margin)
    assert unreached and (proved or opened), (unreached, len(proved), opened)


def test_searches_that_ended_with_nothing_left_to_split_now_agree_with_milp():
    """Seed 1 at 20% below its exact minimum ended 'unknown' (nothing left to split, margin -0.00035): β's few Adam
    steps had not proved a fully split domain. Every property here is now decided, as MILP says."""
    decided = 0
    for seed in (1, 2):
        model, box, target, minima = _robustness_case(seed)
        bounded = BoundedModel(model, torch.zeros(1, 3))
        for sign in (-1, 1):
            spec = _robustness_spec(box, target, {j: m + sign * 0.2 * abs(m) for j, m in minima.items()})
            result = branch_and_bound(bounded, spec, timeout=30, batch_size=16)
            assert result.status == ("verified" if sign < 0 else "falsified"), result.stats
            decided += 1
    assert decided == 4


@pytest.mark.parametrize("norm", [2.0, 1.0])
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("shift", [-0.2, 0.2])
def test_leaves_over_l2_and_l1_balls_are_decided_soundly(norm, seed, shift):
    """A ball is no polytope (before: no LP posed, every leaf left open). Cut down to by tangent planes, with the
    Lagrangian bound: leaves found unreachable hold no sample of the ball, proofs hold on the ball's samples inside,
    and an open leaf's candidates lie in the ball and reach the LP's bound (every phase fixed: the LP is exact)."""
    from opwise.bounds.input_set import InputSet
    from opwise.bounds.spec import Specification

    model, box, target, minima = _robustness_case(seed, (8, 8))
    ball = InputSet.ball((box[0] + box[1]) / 2, 0.8 if norm == 2 else 1.2, norm=norm)
    generator = torch.Generator().manual_seed(seed)
    x = ball.sample(4000, generator)
    with torch.no_grad():
        sampled = {j: float((model(x)[:, target] - model(x)[:, j]).min()) for j in minima}
    spec = Specification.over(ball, _robustness_spec(box, target, {j: m + shift * abs(m) for j, m in sampled.items()}).unsafe)
    bounded = BoundedModel(model, torch.zeros(1, 3))
    bounder = DomainBounder(bounded, spec, "alpha-crown")
    values = pre_activations(bounded, x)
    with torch.no_grad():
        margin = spec.margin(model(x))
    outcomes = set()
    for leaf in _leaves(bounder, 12, values, generator):
        outcome, answer, reached = _decided_soundly(bounder, leaf, model, values, margin)
        outcomes.add(outcome)
        if outcome == "open":
            assert answer.reason and reached <= max(answer.margin, 0.0) + 1e-3
            if _inside(leaf, values).any():  # its samples reach no lower than the LP's bound
                assert float(margin[_inside(leaf, values)].min()) >= answer.margin - 1e-4
    assert outcomes & {"unreached", "proved"} and ("open" in outcomes) == (shift > 0), outcomes


def test_leaves_of_a_conv_net_are_decided_soundly():
    """The same on a small conv net (its coefficients travel as windows): unreachable leaves hold no sample, proofs
    hold on the samples inside, an open leaf's optimiser violates the property."""
    from opwise.bounds.spec import Specification, robustness_disjuncts

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 4 * 4, 3)).eval()
    x0 = torch.rand(1, 1, 4, 4)
    spec = Specification(x0 - 0.3, x0 + 0.3, robustness_disjuncts(3, int(model(x0).argmax())))
    bounded = BoundedModel(model, x0)
    bounder = DomainBounder(bounded, spec, "alpha-crown")
    x = spec.x_lower + (spec.x_upper - spec.x_lower) * torch.rand(4000, 1, 4, 4)
    values = pre_activations(bounded, x)
    with torch.no_grad():
        margin = spec.margin(model(x))
    outcomes = set()
    for leaf in _leaves(bounder, 10, values, torch.Generator().manual_seed(1)):
        outcome, _, reached = _decided_soundly(bounder, leaf, model, values, margin)
        outcomes.add(outcome)
        assert outcome != "open" or reached <= 1e-4
    assert outcomes == {"unreached", "proved", "open"}
