"""Which neuron to split and where: the branching heuristics of general-nonlinearity branch-and-bound.

Candidates are the elements of the inputs of splittable nonlinear nodes. Splitting z's interval [l, u]
at p re-relaxes f on [l, p] and [p, u]; each heuristic estimates how much that raises the domain's
bound, using what the domain's last bounding pass left behind (`Guide`):

- "bbps" (GenBaB's bound propagation with shortcuts): the change of f's lines times the saved
  coefficient of f's output is added to the bound's linear function of the input, with z replaced by
  its linear bounds in terms of the input computed once at the root (the shortcut), and concretized;
  a branch's estimate is the larger of that and the "babsr" estimate (both estimate the same change;
  the split constraint, which β enforces, is only seen by the latter); the score is the worse branch's.
- "babsr": the same change of lines, but z concretized by its interval on each branch.
- "largest-interval": the widest interval, weighted by the magnitude of the output coefficient.

A domain whose best estimate is no improvement falls back to "largest-interval".
"""

from __future__ import annotations

import dataclasses

import torch

from opwise.bounds.strategies.genbab.domains import Domain
from opwise.bounds.strategies.genbab.split_points import split_point as lookup_split_point
from opwise.bounds.input_set import InputSet
from opwise.bounds.transfers.nonlinear import node_relaxation
from opwise.errors import InputError
from opwise.tracing.graph import Graph

#: operators whose input intervals branch-and-bound splits
SPLITTABLE = {
    "aten.sigmoid.default": "sigmoid", "aten.tanh.default": "tanh", "aten.sin.default": "sin",
    "aten.cos.default": "cos", "aten.gelu.default": "gelu", "aten.silu.default": "silu", "aten.relu.default": "relu",
}
BRANCHING = ("bbps", "babsr", "largest-interval")
SPLIT_POINTS = ("table", "midpoint")
#: intervals narrower than this are not split again
MIN_WIDTH = 1e-4
#: per node and domain, how many elements (by each of two cheap scores) BBPS scores with shortcuts
BBPS_CANDIDATES = 8


@dataclasses.dataclass
class SplitNode:
    """A nonlinear node (`nonlinear`, by name) whose input node (`input`) may be split; `function` is its short name."""

    nonlinear: str
    input: str
    function: str
    relaxation: object


@dataclasses.dataclass
class Shortcut:
    """Linear bounds of a node's elements in terms of the input: `lower_coefficient @ x + lower_bias <= z`
    and `z <= upper_coefficient @ x + upper_bias`; coefficients [elements, input size]."""

    lower_coefficient: torch.Tensor
    lower_bias: torch.Tensor
    upper_coefficient: torch.Tensor
    upper_bias: torch.Tensor


@dataclasses.dataclass
class Decision:
    """Split element `index` (flat) of node `input` at `point`."""

    input: str
    index: int
    point: float


def split_nodes(graph: Graph) -> list[SplitNode]:
    """The splittable nonlinear nodes of a graph whose input depends on the bounded input.

    >>> import torch, opwise
    >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid()), torch.zeros(1, 2))
    >>> [(n.nonlinear, n.input, n.function) for n in split_nodes(graph)]
    [('sigmoid', 'linear', 'sigmoid')]
    """
    nodes = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        op = graph.info(node).op
        source = node.args[0] if node.args else None
        if op in SPLITTABLE and hasattr(source, "op") and graph.info(source).depends_on_input:
            nodes.append(SplitNode(node.name, source.name, SPLITTABLE[op], node_relaxation(op, node)))
    return nodes


def split_points(node: SplitNode, lower: torch.Tensor, upper: torch.Tensor, mode: str) -> torch.Tensor:
    """Where to split each interval: 0 for ReLU, else the lookup table's point ("table") or the midpoint.

    >>> relu = SplitNode("r", "z", "relu", None)
    >>> split_points(relu, torch.tensor([-1.0]), torch.tensor([3.0]), "table").tolist()
    [0.0]
    """
    if mode not in SPLIT_POINTS:
        raise InputError(f"unknown split_point {mode!r}; choose one of {', '.join(SPLIT_POINTS)}")
    if node.function == "relu":
        return torch.zeros_like(lower)
    return lookup_split_point(node.function, lower, upper, mode=mode).to(lower.dtype)


def _line_changes(node: SplitNode, A: torch.Tensor, lower, upper, point):
    """Per branch, (slope change, intercept change) of the bound's term `A · f(z)` when f is re-relaxed."""
    relax = node.relaxation.relax
    old = relax(lower, upper)
    positive, negative = A.clamp(min=0), A.clamp(max=0)
    changes = []
    for low, high in ((lower, point), (point, upper)):
        new = relax(low, high)
        slope = positive * (new.lower_slope - old.lower_slope) + negative * (new.upper_slope - old.upper_slope)
        intercept = positive * (new.lower_intercept - old.lower_intercept) + negative * (new.upper_intercept - old.upper_intercept)
        changes.append((torch.nan_to_num(slope), torch.nan_to_num(intercept), low, high))
    return changes


def _bbps_scores(changes, guides_x: torch.Tensor, guides_bias: torch.Tensor, shortcut: Shortcut,
                 input_set: InputSet, candidates: torch.Tensor) -> torch.Tensor:
    """The worse branch's estimated bound improvement with the shortcut of z substituted, for the
    `candidates` (element indices, [domains, k]) of each domain; [domains, k]."""

    def concretize(coefficient):  # [domains, k, X] -> [domains, k], the minimum over the input set (box or ball)
        return input_set.minimum(coefficient.reshape(-1, 1, coefficient.shape[-1])).reshape(coefficient.shape[:2])

    def pick(tensor):  # [domains, n] -> [domains, k]
        return tensor.gather(1, candidates)

    base = concretize(guides_x[:, None, :]) + guides_bias[:, None]
    estimates = []
    for slope, intercept, low, high in changes:
        slope, intercept, low, high = pick(slope), pick(intercept), pick(low), pick(high)
        up = slope >= 0
        coefficient = torch.where(up[..., None], shortcut.lower_coefficient[candidates], shortcut.upper_coefficient[candidates])
        bias = torch.where(up, shortcut.lower_bias[candidates], shortcut.upper_bias[candidates])
        new = concretize(guides_x[:, None, :] + slope[..., None] * coefficient) + guides_bias[:, None] + intercept + slope * bias
        estimates.append(torch.maximum(new - base, _interval_estimate(slope, intercept, low, high)))
    return torch.minimum(*estimates)


def _interval_estimate(slope, intercept, low, high) -> torch.Tensor:
    """A branch's bound change with z concretized by the branch's own interval (the BaBSR-style estimate)."""
    return intercept + torch.minimum(slope * low, slope * high)


def _bbps_on_candidates(domains: list[Domain], node: SplitNode, changes, babsr: torch.Tensor, width: torch.Tensor,
                        shortcut: Shortcut, input_set: InputSet) -> torch.Tensor:
    """BBPS scores of each domain's most promising elements of `node` (the top `BBPS_CANDIDATES` by the
    BaBSR estimate and by weighted width; the shortcut substitution costs an input-sized vector per
    candidate); the other elements keep their BaBSR estimate, which BBPS's estimate never falls below."""
    k = min(BBPS_CANDIDATES, babsr.shape[1])
    candidates = torch.cat([babsr.topk(k, 1).indices, width.topk(k, 1).indices], 1)
    guides_x = torch.cat([d.guide.input_coefficient.reshape(1, -1) for d in domains])
    guides_bias = torch.stack([d.guide.bias.reshape(()) for d in domains])
    scores = _bbps_scores(changes, guides_x, guides_bias, shortcut, input_set, candidates)
    scores = torch.where(babsr.gather(1, candidates) > -torch.inf, scores, -torch.inf)
    return babsr.scatter(1, candidates, scores)


def choose_splits(domains: list[Domain], nodes: list[SplitNode], *, branching: str, split_point: str,
                  input_set: InputSet, shortcuts: dict[str, Shortcut] | None = None) -> list[Decision | None]:
    """One split per domain (None where nothing can be split any more), by the chosen heuristic.

    >>> import torch
    >>> from opwise.bounds.strategies.genbab.domains import Domain, Guide
    >>> from opwise.bounds.transfers.registry import Interval
    >>> from opwise.bounds.relaxations.registry import relaxation_for
    >>> node = SplitNode("s", "z", "sigmoid", relaxation_for("aten.sigmoid.default"))
    >>> guide = Guide({"s": torch.tensor([[1.0, 1.0]])}, torch.zeros(1, 2), torch.tensor(0.0))
    >>> domain = Domain({"z": Interval(torch.tensor([[-1.0, -4.0]]), torch.tensor([[1.0, 4.0]]))}, guide=guide)
    >>> box = InputSet(torch.zeros(1, 2), torch.ones(1, 2))
    >>> choose_splits([domain], [node], branching="largest-interval", split_point="midpoint", input_set=box)
    [Decision(input='z', index=1, point=0.0)]
    """
    if branching not in BRANCHING:
        raise InputError(f"unknown branching {branching!r}; choose one of {', '.join(BRANCHING)}")
    count = len(domains)
    scores, widths, points, owners = [], [], [], []
    for node in nodes:
        lower = torch.cat([d.intervals[node.input].lower for d in domains]).reshape(count, -1)
        upper = torch.cat([d.intervals[node.input].upper for d in domains]).reshape(count, -1)
        A = torch.cat([d.guide.coefficients[node.nonlinear] for d in domains]).reshape(count, -1)
        point = split_points(node, lower, upper, split_point).reshape(count, -1)
        splittable = (upper - lower > MIN_WIDTH) & (point > lower) & (point < upper)
        width = torch.where(splittable, (upper - lower) * (A.abs() + 1e-6), -torch.inf)
        if branching == "largest-interval":
            score = width
        else:
            changes = _line_changes(node, A, lower, upper, point)
            score = torch.minimum(*[_interval_estimate(*change) for change in changes])
            score = torch.where(splittable, score, -torch.inf)
            if branching == "bbps":
                score = _bbps_on_candidates(domains, node, changes, score, width, shortcuts[node.input], input_set)
        scores.append(score)
        widths.append(width)
        points.append(point)
        owners += [(node.input, i) for i in range(lower.shape[1])]
    scores, widths, points = torch.cat(scores, 1), torch.cat(widths, 1), torch.cat(points, 1)
    decisions = []
    for row in range(count):
        best = int(scores[row].argmax())
        if not scores[row, best] > 1e-8:
            best = int(widths[row].argmax())
        if widths[row, best] == -torch.inf:
            decisions.append(None)
            continue
        name, index = owners[best]
        decisions.append(Decision(name, index, float(points[row, best])))
    return decisions
