"""Branching heuristics: valid decisions, the options' errors, and BBPS's shortcut estimate."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.bounds.strategies.genbab.branching import Shortcut, SplitNode, choose_splits, split_nodes, split_points
from opwise.bounds.strategies.genbab.domains import Domain, Guide
from opwise.bounds.input_set import InputSet
from opwise.bounds.relaxations.registry import relaxation_for
from opwise.bounds.transfers.registry import Interval
from opwise.errors import InputError

SIGMOID = SplitNode("s", "z", "sigmoid", relaxation_for("aten.sigmoid.default"))
BOX = InputSet(-torch.ones(1, 2), torch.ones(1, 2))


def domain(lower, upper, coefficient, input_coefficient=(0.0, 0.0)) -> Domain:
    guide = Guide({"s": torch.tensor([coefficient])}, torch.tensor([input_coefficient]), torch.tensor(0.0))
    return Domain({"z": Interval(torch.tensor([lower]), torch.tensor([upper]))}, guide=guide)


def test_split_points_lie_inside_and_relu_splits_at_zero():
    lower, upper = torch.tensor([-3.0, 0.5, -20.0]), torch.tensor([1.0, 0.7, 30.0])
    for mode in ("table", "midpoint"):
        points = split_points(SIGMOID, lower, upper, mode)
        assert ((points > lower) & (points < upper)).all()
    assert split_points(SIGMOID, lower, upper, "midpoint").tolist() == [-1.0, 0.6000000238418579, 5.0]
    relu = SplitNode("r", "z", "relu", relaxation_for("aten.relu.default"))
    assert split_points(relu, lower, upper, "table").tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(InputError, match="split_point"):
        split_points(SIGMOID, lower, upper, "golden")


def test_every_strategy_splits_a_splittable_element_and_skips_points():
    shortcut = {"z": _identity_shortcut()}
    domains = [domain([-2.0, 0.3], [2.0, 0.3], [1.0, 5.0]), domain([-0.1, -3.0], [0.1, 4.0], [0.0, -1.0])]
    for branching in ("bbps", "babsr", "largest-interval"):
        decisions = choose_splits(domains, [SIGMOID], branching=branching, split_point="table", input_set=BOX,
                                  shortcuts=shortcut)
        assert decisions[0].index == 0  # element 1 of the first domain is a point
        assert decisions[1].index == 1  # the wide, used element
        for decision, d in zip(decisions, domains):
            interval = d.intervals["z"]
            assert interval.lower.view(-1)[decision.index] < decision.point < interval.upper.view(-1)[decision.index]
    with pytest.raises(InputError, match="branching"):
        choose_splits(domains, [SIGMOID], branching="random", split_point="table", input_set=BOX)


def test_nothing_left_to_split_gives_no_decision():
    decisions = choose_splits([domain([0.5, 0.5], [0.5, 0.5], [1.0, 1.0])], [SIGMOID], branching="babsr",
                              split_point="midpoint", input_set=BOX)
    assert decisions == [None]


def test_bbps_prefers_the_neuron_whose_relaxation_gap_costs_the_bound():
    """Two identical wide intervals; only neuron 1's output matters to the bound (coefficient 3 vs 0)."""
    d = domain([-4.0, -4.0], [4.0, 4.0], [0.0, 3.0], input_coefficient=(0.5, -0.5))
    (decision,) = choose_splits([d], [SIGMOID], branching="bbps", split_point="table", input_set=BOX,
                                shortcuts={"z": _identity_shortcut()})
    assert decision.index == 1


def _identity_shortcut():
    """z = x exactly (z_i is input i), as for a first layer with identity weights."""
    eye = torch.eye(2)
    return Shortcut(eye, torch.zeros(2), eye, torch.zeros(2))


class GatesAndSquare(torch.nn.Module):
    """σ(a)·tanh(b), a product with the graph's input itself (x·x: never a candidate), and exp (tabled)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 4)

    def forward(self, x):
        a, b = self.linear(x).chunk(2, -1)
        return torch.sigmoid(a) * torch.tanh(b) + (x * x).sum(-1, keepdim=True) + torch.exp(a)


def test_split_nodes_take_both_factors_of_products_of_input_dependent_tensors():
    graph = opwise.trace(GatesAndSquare(), torch.zeros(1, 2))
    nodes = split_nodes(graph)
    functions = sorted((n.function, n.input, n.other) for n in nodes)
    assert ("mul", "sigmoid", "tanh") in functions and ("mul", "tanh", "sigmoid") in functions
    assert sum(f == "mul" for f, _, _ in functions) == 2  # x·x of the graph's input is input splitting, not here
    assert {f for f, _, _ in functions} == {"mul", "sigmoid", "tanh", "exp"}


def test_products_split_a_factor_at_its_midpoint():
    """a·b with a in [-2, 2], b in [1, 3]; the bound's minimiser needs both: every heuristic splits a factor
    at its interval's midpoint (products get no table)."""
    nodes = [SplitNode("m", "a", "mul", None, other="b"), SplitNode("m", "b", "mul", None, other="a")]
    guide = Guide({"m": torch.tensor([[1.0]])}, torch.tensor([[0.5, -0.5]]), torch.tensor(0.0))
    intervals = {"a": Interval(torch.tensor([[-2.0]]), torch.tensor([[2.0]])), "b": Interval(torch.tensor([[1.0]]), torch.tensor([[3.0]]))}
    shortcuts = {"a": Shortcut(2 * torch.eye(2)[:1], torch.zeros(1), 2 * torch.eye(2)[:1], torch.zeros(1)),
                 "b": Shortcut(torch.eye(2)[1:], torch.full((1,), 2.0), torch.eye(2)[1:], torch.full((1,), 2.0))}
    for branching in ("bbps", "babsr", "largest-interval"):
        (decision,) = choose_splits([Domain(dict(intervals), guide=guide)], nodes, branching=branching, split_point="table",
                                    input_set=BOX, shortcuts=shortcuts)
        interval = intervals[decision.input]
        assert decision.point == pytest.approx(float(interval.lower + interval.upper) / 2)


def test_no_split_nodes_give_no_decisions():
    """Regression: with no candidates at all choose_splits crashed in torch.cat; now every domain gets None."""
    assert choose_splits([domain([0.0, 0.0], [1.0, 1.0], [1.0, 1.0])], [], branching="bbps", split_point="table",
                         input_set=BOX) == [None]
