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

Candidates come from two kinds of nodes (`SplitNode`): elementwise functions whose relaxation declares a
split-point table or has kinks or jumps (the input is split, at a kink inside it), and products x·y of two input-dependent tensors
(either factor's element is split, at its midpoint: see split_points.py). A product's estimate is the
change of A · (McCormick plane) when the factor's interval narrows, with both factors concretized (by
their intervals, or for BBPS by their shortcuts where the factors have the product's shape). A factor that
broadcasts a smaller tensor (the bound graph rewrites a matrix product A @ B into copies of A and B, expanded
to [i, k, j], times each other) is split on every copy of the value at once, as one split of A's or B's element
(it is scored by the copy chosen: the gain of the other copies is not added).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Callable

import torch
from torch import fx

from opwise.bounds.strategies.genbab.domains import Domain
from opwise.bounds.strategies.genbab.estimates import (
    BranchChange, function_changes, interval_estimate, product_changes, product_widths)
from opwise.bounds.strategies.genbab.split_points import split_point as lookup_split_point
from opwise.bounds.input_set import InputSet
from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.relaxations.curvature import CurvatureRelaxation
from opwise.bounds.transfers.nonlinear import has_relaxation, node_relaxation
from opwise.errors import InputError
from opwise.tracing.graph import Graph

#: products whose factors branch-and-bound splits (when both factors depend on the input)
PRODUCTS = ("aten.mul.Tensor",)
BRANCHING = ("bbps", "babsr", "largest-interval", "fsb")
SPLIT_POINTS = ("table", "midpoint")
#: intervals narrower than this are not split again
MIN_WIDTH = 1e-4
#: per node and domain, how many elements (by each of two cheap scores) BBPS scores with shortcuts
BBPS_CANDIDATES = 8


@dataclasses.dataclass
class SplitNode:
    """A nonlinear node (`nonlinear`, by name) whose input node (`input`) may be split; `function` is its short
    name ("mul" for a product, whose other factor is `other`)."""

    nonlinear: str
    input: str
    function: str
    relaxation: object
    other: str | None = None
    #: for a factor that broadcasts a smaller tensor (an `aten.expand`, as the rewrite of a matrix product makes
    #: both factors): per flat element, the flat index of the element it copies; a split narrows every copy
    source: torch.Tensor | None = None


class Shortcut:
    """Linear bounds of a node's elements in terms of the input: `lower_coefficient @ x + lower_bias <= z`
    and `z <= upper_coefficient @ x + upper_bias` (coefficients [elements, input size]), stacked as the lower
    rows then the upper rows, so that BBPS gathers each candidate's lower or upper row in one indexing.

    Built from the four tensors, or from `compute(elements)` ([m] flat element indices -> the four tensors
    for those elements), which `rows` calls for the elements not asked for before: BBPS scores a few
    candidates per node, and a network's split nodes may hold far more elements than it ever scores (on
    vit_2023's attention nets bounding every one took longer than the root).

    >>> import torch
    >>> calls = []
    >>> def identity(elements):                    # z = x exactly, for the elements asked
    ...     calls.append(elements.tolist()); eye = torch.eye(3)[elements]
    ...     return eye, torch.zeros(len(elements)), eye, torch.zeros(len(elements))
    >>> shortcut = Shortcut.lazy(3, 3, identity)
    >>> shortcut.rows(torch.tensor([[0, 4]]))[0].tolist()       # element 0's lower row, element 1's upper row
    [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]
    >>> _ = shortcut.rows(torch.tensor([[1, 3]])); calls          # element 0 and 1 once each
    [[0, 1]]
    """

    def __init__(self, lower_coefficient: torch.Tensor, lower_bias: torch.Tensor,
                 upper_coefficient: torch.Tensor, upper_bias: torch.Tensor):
        self.elements, self._compute = len(lower_bias), None
        # stored rows: element i's lower row at 2·slot[i], its upper row at 2·slot[i] + 1 (slot -1: not computed)
        self._slot = torch.arange(self.elements, device=lower_bias.device)
        self._coefficient = torch.stack([lower_coefficient, upper_coefficient], 1).flatten(0, 1)
        self._bias = torch.stack([lower_bias, upper_bias], 1).flatten()

    @classmethod
    def lazy(cls, elements: int, inputs: int, compute, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> "Shortcut":
        """A shortcut of `elements` elements over `inputs` inputs whose rows `compute` gives as they are asked for
        (memory grows with the elements asked, not with the node)."""
        shortcut = cls(torch.zeros(0, inputs, device=device, dtype=dtype), torch.zeros(0, device=device, dtype=dtype),
                       torch.zeros(0, inputs, device=device, dtype=dtype), torch.zeros(0, device=device, dtype=dtype))
        shortcut.elements, shortcut._compute = elements, compute
        shortcut._slot = torch.full((elements,), -1, dtype=torch.long, device=device)
        return shortcut

    def rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coefficients [*rows.shape, inputs] and biases [*rows.shape] of stacked rows (element i's lower row is
        i, its upper row `elements` + i)."""
        elements = rows.remainder(self.elements)
        wanted = elements.unique()
        missing = wanted[self._slot[wanted] < 0]
        if missing.numel():
            lower_coefficient, lower_bias, upper_coefficient, upper_bias = self._compute(missing)
            self._slot[missing] = torch.arange(len(self._bias) // 2, len(self._bias) // 2 + len(missing), device=missing.device)
            self._coefficient = torch.cat([self._coefficient, torch.stack([lower_coefficient, upper_coefficient], 1).flatten(0, 1)])
            self._bias = torch.cat([self._bias, torch.stack([lower_bias, upper_bias], 1).flatten()])
        stored = 2 * self._slot[elements] + (rows >= self.elements).long()
        return self._coefficient[stored], self._bias[stored]


@dataclasses.dataclass
class Decision:
    """Split element `index` (flat) of node `input` at `point`; a list of elements: the copies of one value.
    `isolate`: the point itself is a third branch (the function's value there differs from both sides')."""

    input: str
    index: int | list[int]
    point: float
    isolate: bool = False


def split_nodes(graph: Graph, *, off_batch: bool = False) -> list[SplitNode]:
    """The splittable nodes of a graph whose inputs depend on the bounded input: smooth (curvature) families,
    split at their table's point or, without a table, the midpoint, piecewise-linear functions (ReLU, hardtanh,
    clamp, shrink: one entry, split at a kink), and
    products of two such tensors (one entry per factor, with the `source` of its copies where it is a broadcast;
    the graph's input itself is never a candidate: splitting it is input splitting).

    A node whose leading axis is not the input's batch (attention heads folded into it, a network bounded as one
    sample without a batch axis) is not split: domains are batched along that axis. `off_batch` lists those alone,
    which an unknown result names.

    >>> import torch, opwise
    >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid()), torch.zeros(1, 2))
    >>> [(n.nonlinear, n.input, n.function) for n in split_nodes(graph)]
    [('sigmoid', 'linear', 'sigmoid')]
    """
    batch = graph.info(graph.explained_inputs[0]).shape[:1]

    def splittable(value) -> bool:
        return (isinstance(value, fx.Node) and value.op == "call_function" and graph.info(value).depends_on_input
                and (graph.info(value).shape[:1] != batch) == off_batch)

    nodes = []
    for node in graph.nodes:
        if node.op != "call_function" or not node.args:
            continue
        op = graph.info(node).op
        if op in PRODUCTS and len(node.args) >= 2 and all(splittable(arg) for arg in node.args[:2]):
            first, second = node.args[0].name, node.args[1].name
            nodes.append(SplitNode(node.name, first, "mul", None, other=second, source=broadcast_source(graph, node.args[0])))
            if second != first:
                nodes.append(SplitNode(node.name, second, "mul", None, other=first, source=broadcast_source(graph, node.args[1])))
        elif has_relaxation(op) and splittable(node.args[0]):
            relaxation = node_relaxation(op, node)
            if isinstance(relaxation, CurvatureRelaxation) or getattr(relaxation, "split_kink", None) is not None \
                    or hasattr(relaxation, "split_at"):
                nodes.append(SplitNode(node.name, node.args[0].name, op.split(".")[1], relaxation))
    return nodes


def broadcast_source(graph: Graph, node: fx.Node) -> torch.Tensor | None:
    """Per flat element of an `aten.expand` node (batch excluded), the flat index of the input element it
    copies; None for any other node, or an expand that copies nothing or adds dimensions.

    >>> import torch, opwise
    >>> class Outer(torch.nn.Module):
    ...     def forward(self, x): return x[:, :2, None].expand(1, 2, 3) * x[:, None, :].expand(1, 2, 3)
    >>> graph = opwise.trace(Outer(), torch.zeros(1, 3))
    >>> [broadcast_source(graph, n).tolist() for n in graph.call_nodes() if graph.info(n).op == "aten.expand.default"]
    [[0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]]
    """
    if graph.info(node).op != "aten.expand.default" or not isinstance(node.args[0], fx.Node):
        return None
    copied, shape = graph.info(node.args[0]).shape, graph.info(node).shape
    if copied is None or shape is None or len(copied) != len(shape) or copied[0] != shape[0] or copied == shape:
        return None
    return torch.arange(math.prod(copied[1:])).reshape(1, *copied[1:]).expand(1, *shape[1:]).reshape(-1)


def split_points(node: SplitNode, lower: torch.Tensor, upper: torch.Tensor, mode: str) -> torch.Tensor:
    """Where to split each interval: at the kink of a piecewise-linear function (ReLU: 0; for the families with
    several, hardtanh, clamp and shrink, the one inside nearest the middle, or NaN, not split, where none is inside:
    `split_at`), at the midpoint of a product's factor, else at the lookup table's point ("table") or the midpoint.

    >>> from opwise.bounds.relaxations.registry import relaxation_for
    >>> relu = SplitNode("r", "z", "relu", relaxation_for("aten.relu.default"))
    >>> split_points(relu, torch.tensor([-1.0]), torch.tensor([3.0]), "table").tolist()
    [0.0]
    """
    if mode not in SPLIT_POINTS:
        raise InputError(f"unknown split_point {mode!r}; choose one of {', '.join(SPLIT_POINTS)}")
    kink = getattr(node.relaxation, "split_kink", None)
    if kink is not None:
        return torch.full_like(lower, kink)
    if hasattr(node.relaxation, "split_at"):  # piecewise-linear families: at a breakpoint inside
        return node.relaxation.split_at(lower, upper)
    return lookup_split_point(node.relaxation, lower, upper, mode=mode).to(lower.dtype)


def _changes(node: SplitNode, domains: list[Domain], lower: torch.Tensor, upper: torch.Tensor, point: torch.Tensor):
    """Both branches' alternative bound changes of splitting each element of `node.input` (estimates.py)."""
    A = torch.cat([d.guide.coefficients[node.nonlinear] for d in domains])
    if node.other is None:
        return function_changes(node.relaxation, node.input, A.reshape(len(domains), -1), lower, upper, point)
    shape = (len(domains), *domains[0].intervals[node.input].lower.shape[1:])
    y = _stacked(domains, node.other)
    alphas = [d.guide.alphas.get(node.nonlinear) for d in domains]
    alpha = None if any(a is None for a in alphas) else AlphaPair(*(torch.cat([getattr(a, side) for a in alphas])
                                                                    for side in ("lower", "upper")))
    return product_changes(node.input, node.other, A, (lower.reshape(shape), upper.reshape(shape)), y, point.reshape(shape), alpha)


def _widths(node: SplitNode, domains: list[Domain], lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """The "largest-interval" score: the width weighted by the output coefficient (and, for a product's factor,
    by the other factor's width: the McCormick gap is proportional to both)."""
    A = torch.cat([d.guide.coefficients[node.nonlinear] for d in domains])
    if node.other is None:
        return (upper - lower) * (A.reshape(len(domains), -1).abs() + 1e-6)
    shape = (len(domains), *domains[0].intervals[node.input].lower.shape[1:])
    return product_widths(A, (lower.reshape(shape), upper.reshape(shape)), _stacked(domains, node.other))


def _stacked(domains: list[Domain], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([d.intervals[name].lower for d in domains]), torch.cat([d.intervals[name].upper for d in domains])


def _best_of(branches, estimate) -> torch.Tensor:
    """The worse branch's estimate, each branch at its best alternative."""
    return torch.minimum(*[torch.stack([estimate(change) for change in branch]).amax(0) for branch in branches])


def _bbps_scores(branches, guides_x: torch.Tensor, guides_bias: torch.Tensor, shortcuts: dict[str, Shortcut],
                 input_set: InputSet, candidates: torch.Tensor) -> torch.Tensor:
    """The worse branch's estimated bound improvement with the shortcuts of the changed nodes substituted,
    for the `candidates` (element indices, [domains, k]) of each domain; [domains, k]."""

    if input_set.is_box and input_set.lower.shape[0] == 1:
        # a score, not a bound: the box's minimum as centre and radius, two matrix-vector products (several
        # times faster than picking a corner per element; rounding may differ from the corner's in the last bits)
        center = ((input_set.upper + input_set.lower) / 2).reshape(-1)
        radius = ((input_set.upper - input_set.lower) / 2).reshape(-1)

        def concretize(coefficient):  # [domains, k, X] -> [domains, k], the minimum over the box
            return coefficient @ center - coefficient.abs() @ radius
    else:
        def concretize(coefficient):  # [domains, k, X] -> [domains, k], the minimum over the input set (box or ball)
            return input_set.minimum(coefficient.reshape(-1, 1, coefficient.shape[-1])).reshape(coefficient.shape[:2])

    def pick(tensor):  # [domains, n] -> [domains, k]
        return tensor.gather(1, candidates)

    base = concretize(guides_x[:, None, :]) + guides_bias[:, None]

    def estimate(change: BranchChange) -> torch.Tensor:
        intercept = pick(change.intercept)
        coefficient, bias, picked = guides_x[:, None, :], guides_bias[:, None] + intercept, []
        for slope, low, high, name in change.terms:
            slope, shortcut = pick(slope), shortcuts[name]
            rows = torch.where(slope >= 0, candidates, candidates + shortcut.elements)  # lower or upper row
            row_coefficient, row_bias = shortcut.rows(rows)
            coefficient = torch.addcmul(coefficient, slope[..., None], row_coefficient)
            bias = bias + slope * row_bias
            picked.append((slope, pick(low), pick(high), name))
        return torch.maximum(concretize(coefficient) + bias - base, interval_estimate(BranchChange(intercept, picked)))

    return _best_of(branches, estimate)


def _bbps_on_candidates(domains: list[Domain], node: SplitNode, branches, babsr: torch.Tensor, width: torch.Tensor,
                        shortcuts: dict[str, Shortcut], input_set: InputSet) -> torch.Tensor:
    """BBPS scores of each domain's most promising elements of `node` (the top `BBPS_CANDIDATES` by the
    BaBSR estimate and by weighted width; the shortcut substitution costs an input-sized vector per
    candidate); the other elements keep their BaBSR estimate, which BBPS's estimate never falls below."""
    k = min(BBPS_CANDIDATES, babsr.shape[1])
    candidates = torch.cat([babsr.topk(k, 1).indices, width.topk(k, 1).indices], 1)
    guides_x = torch.cat([d.guide.input_coefficient.reshape(1, -1) for d in domains])
    guides_bias = torch.stack([d.guide.bias.reshape(()) for d in domains])
    scores = _bbps_scores(branches, guides_x, guides_bias, shortcuts, input_set, candidates)
    scores = torch.where(babsr.gather(1, candidates) > -torch.inf, scores, -torch.inf)
    return babsr.scatter(1, candidates, scores)


def choose_splits(domains: list[Domain], nodes: list[SplitNode], *, branching: str, split_point: str,
                  input_set: InputSet, shortcuts: dict[str, Shortcut] | None = None) -> list[Decision | None]:
    """One split per domain (None where nothing can be split any more, or there are no split nodes), by the
    chosen heuristic ("fsb" chooses among the splits "bbps" ranks first: `strong_splits`).

    >>> import torch
    >>> from opwise.bounds.strategies.genbab.domains import Domain, Guide
    >>> from opwise.bounds.transfers.registry import Interval
    >>> from opwise.bounds.relaxations.registry import relaxation_for
    >>> node = SplitNode("s", "z", "sigmoid", relaxation_for("aten.sigmoid.default"))
    >>> guide = Guide({"s": torch.tensor([[1.0, 1.0]])}, torch.zeros(1, 2), torch.tensor(0.0))
    >>> domain = Domain({"z": Interval(torch.tensor([[-1.0, -4.0]]), torch.tensor([[1.0, 4.0]]))}, guide=guide)
    >>> box = InputSet(torch.zeros(1, 2), torch.ones(1, 2))
    >>> choose_splits([domain], [node], branching="largest-interval", split_point="midpoint", input_set=box)
    [Decision(input='z', index=1, point=0.0, isolate=False)]
    """
    return [ranked[0] if ranked else None for ranked in ranked_splits(
        domains, nodes, count=1, branching=branching, split_point=split_point, input_set=input_set, shortcuts=shortcuts)]


def ranked_splits(domains: list[Domain], nodes: list[SplitNode], *, count: int, branching: str, split_point: str,
                  input_set: InputSet, shortcuts: dict[str, Shortcut] | None = None) -> list[list[Decision]]:
    """Per domain, up to `count` splits, the heuristic's best first (an empty list where nothing can be split).
    Elements whose score estimates no gain rank by weighted width, after those that estimate one."""
    if branching not in BRANCHING:
        raise InputError(f"unknown branching {branching!r}; choose one of {', '.join(BRANCHING)}")
    rows = len(domains)
    if not nodes:
        return [[] for _ in range(rows)]
    heuristic = "bbps" if branching == "fsb" else branching
    scores, widths, points, starts = [], [], [], [0]  # starts: each node's first column in the concatenated scores
    for node in nodes:
        lower, upper = (t.reshape(rows, -1) for t in _stacked(domains, node.input))
        point = split_points(node, lower, upper, split_point).reshape(rows, -1)
        splittable = (upper - lower > MIN_WIDTH) & (point > lower) & (point < upper)
        width = torch.where(splittable, _widths(node, domains, lower, upper), -torch.inf)
        if heuristic == "largest-interval":
            score = width
        else:
            branches = _changes(node, domains, lower, upper, point)
            score = torch.where(splittable, _best_of(branches, interval_estimate), -torch.inf)
            if heuristic == "bbps":
                score = _bbps_on_candidates(domains, node, branches, score, width, shortcuts, input_set)
        scores.append(score)
        widths.append(width)
        points.append(point)
        starts.append(starts[-1] + lower.shape[1])
    scores, widths, points = torch.cat(scores, 1), torch.cat(widths, 1), torch.cat(points, 1)
    # a score estimating no gain ranks by width, below every score that estimates one: −1/(1 + width) is in
    # [−1, 0), increasing in the width (which is >= 0, or −inf where nothing can be split)
    key = torch.where(scores > 1e-8, scores, torch.where(widths > -torch.inf, -1 / (1 + widths.clamp(min=0)), -torch.inf))
    order = key.argmax(1, keepdim=True) if count == 1 else key.topk(min(count, key.shape[1]), 1).indices  # argmax: the first of ties
    ranked = []
    for row in range(rows):
        decisions = []
        for best in order[row].tolist():
            if widths[row, best] == -torch.inf:
                break
            owner = bisect.bisect_right(starts, best) - 1
            node, index = nodes[owner], best - starts[owner]
            if node.source is not None:  # every copy of the value, not one of them
                index = (node.source == node.source[index]).nonzero().flatten().tolist()
            decisions.append(Decision(node.input, index, float(points[row, best]),
                                      getattr(node.relaxation, "split_isolates_kink", False)))
        ranked.append(decisions)
    return ranked


def strong_splits(domains: list[Domain], ranked: list[list[Decision]],
                  evaluate: Callable[[list[Domain]], list[float]]) -> list[Decision | None]:
    """Filtered strong branching (as α,β-CROWN's "kfsb" for ReLU): of each domain's `ranked` candidate splits, the
    one whose worst child `evaluate` (one cheap bound pass per child, all in one call) bounds highest; the
    heuristic's first where they tie. Estimates rank candidates; a bound pass measures them.

    >>> import torch
    >>> from opwise.bounds.transfers.registry import Interval
    >>> domain = Domain({"z": Interval(torch.tensor([[-1.0, -1.0]]), torch.tensor([[1.0, 3.0]]))})
    >>> ranked = [[Decision("z", 0, 0.0), Decision("z", 1, 0.0)]]
    >>> widest = lambda children: [-float((c.intervals["z"].upper - c.intervals["z"].lower).max()) for c in children]
    >>> strong_splits([domain], ranked, widest)  # a stand-in bound: splitting z1 leaves no child 4 wide
    [Decision(input='z', index=1, point=0.0, isolate=False)]
    """
    children, owners = [], []
    for position, (domain, decisions) in enumerate(zip(domains, ranked)):
        if len(decisions) < 2:  # nothing to choose between
            continue
        for rank, decision in enumerate(decisions):
            split = domain.split(decision.input, decision.index, decision.point, decision.isolate)
            children += split
            owners += [(position, rank)] * len(split)
    worst = [[math.inf] * len(decisions) for decisions in ranked]
    for (position, rank), bound in zip(owners, evaluate(children) if children else []):
        worst[position][rank] = min(worst[position][rank], bound)
    chosen = []
    for decisions, bounds in zip(ranked, worst):
        chosen.append(decisions[max(range(len(decisions)), key=lambda rank: (bounds[rank], -rank))] if decisions else None)
    return chosen
