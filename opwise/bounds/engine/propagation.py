"""The bound pass over one Graph and one input set: IBP forward, CROWN backward, intermediate bounds
resolved lazily as promises (each node once, cached), α and β parameters passed in per pass.

Reads like an fx Interpreter: a `Step` per node, dispatched to the node's registered transfer. All
state (constant values, intervals, steps) lives here and is written only here: everything a pass
depends on goes in at construction (graph, input set, intermediate-bound policy, known intervals,
split constraints, recorded nodes) or as arguments of a pass (α, β); a pass returns a `LinearBound`.
The strategies (α-CROWN, β, input splitting, GenBaB) use the engine through these methods only.
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import Iterable, Mapping

import torch
from torch import fx

from opwise.bounds.input_set import InputSet
from opwise.bounds.transfers.affine import Affine
from opwise.bounds.transfers.contraction import Contraction
from opwise.bounds.transfers.exp_sum import ExpSum
from opwise.bounds.transfers.forward import LinearBounds, forward_bounds
from opwise.bounds.transfers.nonlinear import ELEMENTWISE, has_relaxation, node_relaxation
from opwise.bounds.transfers.patches import Patches, add_coefficients, dense, summed_product
from opwise.bounds.engine.cut import CutPasses
from opwise.bounds.engine.deadline import check_deadline
from opwise.bounds.engine.free_input import FreeInputPasses
from opwise.bounds.engine.fused import FusedSteps
from opwise.bounds.engine.reach import reach
from opwise.bounds.engine.result import LinearBound
from opwise.bounds.engine.sizes import CROWN_LIMIT, SPEC_CHUNK, WINDOW_MIN_SPECS
from opwise.bounds.engine.splits import SplitEnds, apply_split_constraint
from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.transfers.registry import Interval, Step, transfer_for
from opwise.errors import InputError, OpwiseError, UnsupportedOperation
from opwise.tracing.graph import Graph, op_packet_key

#: intermediate-bound policies: CROWN, forward mode, IBP, or "mixed" (CROWN for nodes with at most
#: `crown_limit` elements per sample, forward mode for wider ones)
POLICIES = ("crown", "forward", "ibp", "mixed")



#: operators that only rearrange their input's elements, one to one (IBP through them is exact)
REARRANGING = frozenset(f"aten.{name}" for name in (
    "view", "_unsafe_view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "squeeze", "unsqueeze",
    "clone", "contiguous", "alias", "detach", "movedim"))

#: operators whose every output element is a copy of one input element: a copy's CROWN bound is its source's
COPYING = REARRANGING | frozenset(f"aten.{name}" for name in (
    "expand", "repeat", "tile", "select", "slice", "narrow", "index_select", "diagonal", "flip", "roll"))

#: operators whose every output element is a copy of one element of one of several inputs (or a constant)
JOINING = frozenset({"aten.cat", "aten.stack", "aten.concat", "aten.concatenate"})


#: how far (relative to 1 + |bound|) a node's linear bounds may reach past its interval bounds before the engine
#: warns that rounding pulled them apart (below it, the two differ by the rounding of the bounds themselves)
ROUNDING_NOTICE = 1e-4


class BoundPropagation(CutPasses, FreeInputPasses, FusedSteps):
    """Bounds of any node of `graph` over `input_set`; `intermediate` is one of `POLICIES`.

    "forward" bounds intermediate nodes by forward-mode linear bounds (one pass per input element, not
    one specification per neuron: far cheaper than "crown" for low-dimensional inputs, looser); "mixed"
    uses CROWN for nodes of at most `crown_limit` elements per sample and forward mode for the others.

    `splits` (branch-and-bound) narrows some nodes' intervals per batch element: every interval of such a
    node is intersected with its split, so its consumers' relaxations and everything after them bound
    only the inputs whose value at that node lies in the split; batch elements where the intersection
    is empty are flagged in `infeasible` (no input reaches them: any bound holds there). The same splits
    enter a pass as β-CROWN constraints when the pass is given β multipliers (`betas`).
    `known` gives intervals already proven for some nodes (they are used as they are, narrowed by the
    splits); `outer` gives intervals that hold over a larger input set (a pass over a larger box around the
    same point): they narrow interval propagation, so CROWN refines only the neurons they leave undecided;
    `record` names nodes whose coefficients every pass returns in `LinearBound.recorded`. `output_specs`
    ([specs, *output shape]): the rows every pass of the graph's output will bound, where the caller knows them;
    intermediate nodes are then bounded only at the positions those rows reach (engine/reach.py).
    Nodes may be given as fx nodes or by name. Passes check the caller's `deadline` (engine/deadline.py)
    between nodes and chunks and raise TimeLimitReached past it.

    On a box where most input elements are fixed but not all (`FREE_INPUT_LIMIT`), a pass's
    `input_coefficient` is exact over the box but zero on the fixed elements, whose share is in the bias
    (over a point, where nothing is free, a pass is the model's linearization: every coefficient is kept).

    >>> import torch, opwise
    >>> from opwise.bounds.input_set import InputSet
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    >>> graph = opwise.trace(model, torch.zeros(1, 2))
    >>> engine = BoundPropagation(graph, InputSet.ball(torch.zeros(1, 2), 0.1))
    >>> result = engine.bound(graph.output, torch.ones(1, 1, 1))
    >>> bool(result.lower <= model(torch.zeros(1, 2))), tuple(result.linear[0].shape)
    (True, (1, 1, 2))
    """

    def __init__(self, graph: Graph, input_set: InputSet, intermediate: str = "crown",
                 splits: Mapping[fx.Node | str, Interval] | None = None, *,
                 known: Mapping[fx.Node | str, Interval] | None = None, record: Iterable[fx.Node | str] = (),
                 crown_limit: int = CROWN_LIMIT, outer: Mapping[fx.Node | str, Interval] | None = None,
                 output_specs: torch.Tensor | None = None):
        explained = graph.explained_inputs
        if len(explained) != 1 or len(graph.input_nodes) != 1:
            raise InputError(f"bounds need a graph with exactly one (bounded) input, this one has {len(graph.input_nodes)}")
        if intermediate not in POLICIES:
            raise InputError(f"unknown intermediate-bound policy {intermediate!r}; choose one of {', '.join(POLICIES)}")
        self.graph, self.input_set, self.intermediate, self.crown_limit = graph, input_set, intermediate, crown_limit
        self.input_node = explained[0]
        self.batch = input_set.lower.shape[0]
        self.device = input_set.lower.device
        self._order = {node: index for index, node in enumerate(graph.nodes)}
        self._values: dict[fx.Node, object] = {}
        self._steps: dict[fx.Node, Step] = {}
        self._transfers: dict[fx.Node, object] = {}
        self._ibp: dict[fx.Node, Interval] = {self.input_node: input_set.interval}
        self._tight: dict[fx.Node, Interval] = {self.input_node: input_set.interval}
        self._reference: dict[fx.Node, Interval] = {}  # `reference_interval`'s, of nodes with no tight interval
        #: the positions of a node whose interval a pass of this engine bounded ([groups, n]), or True where all
        #: are exact: an elementwise consumer's pass could not tighten them (`neurons_needed`)
        self._settled: dict[fx.Node, torch.Tensor | bool] = {}
        self._ancestors: dict[fx.Node, list[fx.Node]] = {}
        self._linear: dict[fx.Node, LinearBounds] = {}
        self._prefix: dict[fx.Node, LinearBounds | None] | None = None
        self._few_free: bool | None = None
        self._real: dict[fx.Node, bool] = {}
        self._cut_lines: dict[fx.Node, tuple[torch.Tensor, ...]] = {}
        self._contractions: dict[fx.Node, Contraction | None] = {}
        self._exp_sums: dict[fx.Node, ExpSum | None] = {}
        self.splits = {self._node(node): interval for node, interval in (splits or {}).items()}
        self._split_ends: dict[fx.Node, SplitEnds] = {}  # the β terms' view of each split, made on first use
        self.infeasible = torch.zeros(input_set.lower.shape[0], dtype=torch.bool, device=self.device)
        self.record = frozenset(self._node(node) for node in record)
        self._evaluate_constants()
        self.outer = {self._node(node): interval for node, interval in (outer or {}).items()}
        self.output_specs = output_specs
        self._reach: dict[fx.Node, torch.Tensor] | None = None
        for node, interval in (known or {}).items():
            node = self._node(node)
            self._tight[node] = self._narrow(node, interval)

    def _node(self, node: fx.Node | str) -> fx.Node:
        return self.graph.node(node) if isinstance(node, str) else node

    # ------------------------------------------------------------------ nodes
    def bounded(self, node) -> bool:
        return isinstance(node, fx.Node) and self.graph.info(node).depends_on_input

    def _is_tuple(self, node: fx.Node) -> bool:
        return node.op == "call_function" and self.graph.info(node).shape is None and node.target is not operator.getitem

    def _evaluate_constants(self) -> None:
        device = self.input_set.lower.device
        for node in self.graph.nodes:
            if node.op == "get_attr":
                constant = self.graph.constant(node)
                self._values[node] = constant.detach() if isinstance(constant, torch.Tensor) else constant
            elif node.op == "call_function" and not self.bounded(node):
                args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: self._values[a])
                kwargs = dict(kwargs)
                if "device" in kwargs and isinstance(kwargs["device"], torch.device):
                    kwargs["device"] = device
                self._values[node] = node.target(*args, **kwargs)

    def _unsupported(self, node: fx.Node, op: str, hint: str) -> UnsupportedOperation:
        info = self.graph.info(node)
        return UnsupportedOperation(node.name, op, info.module_path, engine="bound", hint=hint)

    def step(self, node: fx.Node) -> Step:
        """The node as its transfer sees it (getitem of a multi-output op is fused with that op)."""
        if node in self._steps:
            return self._steps[node]
        source, pick = node, None
        if node.target is operator.getitem and self._is_tuple(node.args[0]):
            source, pick = node.args[0], node.args[1]
        inputs = list(dict.fromkeys(a for a in source.all_input_nodes if self.bounded(a)))
        op = self.graph.info(source).op

        def function(*tensors: torch.Tensor) -> torch.Tensor:
            bound = dict(zip(inputs, tensors))
            args, kwargs = fx.node.map_arg((source.args, source.kwargs), lambda a: bound[a] if a in bound else self._values[a])
            result = source.target(*args, **kwargs)
            return result if pick is None else result[pick]

        args = fx.node.map_arg(source.args, lambda a: a if a in inputs else self._values[a])
        transfer = transfer_for(op)
        relaxation = None
        if transfer is None and has_relaxation(op):
            transfer, relaxation = ELEMENTWISE, node_relaxation(op, source)
        if transfer is None:
            from opwise.bounds.coverage import coverage  # the whole list, so that one run names every gap

            missing = sorted({name for _, name in coverage(self.graph).missing})
            raise self._unsupported(node, op, f"the graph's operators without one: {', '.join(missing)}; bound the part "
                                    "of the model before it (a comparison of the outputs is a property of the "
                                    "logits: state it as one) or register a rule with @bound_transfer or "
                                    "@register_relaxation")
        self._transfers[node] = transfer
        info = self.graph.info(node)
        step = Step(node, op, inputs, [self.graph.info(i).shape for i in inputs], function, tuple(args),
                    self.interval, relaxation, shape=info.shape, module_path=info.module_path)
        self._steps[node] = step
        return step

    def ancestors(self, target: fx.Node) -> list[fx.Node]:
        """Bounded nodes `target` depends on (itself included), in topological order."""
        if target not in self._ancestors:
            seen, stack = {target}, [target]
            while stack:
                node = stack.pop()
                if node is self.input_node:
                    continue
                for parent in self.step(node).inputs:
                    if parent not in seen:
                        seen.add(parent)
                        stack.append(parent)
            self._ancestors[target] = sorted(seen, key=self._order.__getitem__)
        return self._ancestors[target]

    # ------------------------------------------------------------------ IBP
    def interval_ibp(self, target: fx.Node) -> Interval:
        """Interval propagation up to `target` (each node once). Where plain IBP leaves a relaxation's domain
        (IBP blows up over deep stacks: a layer norm's variance loses its +eps to float32 cancellation and rsqrt
        sees a zero lower bound), the node is propagated again from its inputs' CROWN-tightened intervals."""
        for node in self.ancestors(target):
            if node not in self._ibp:
                step = self.step(node)
                try:
                    interval = self._transfers[node].ibp(step, [self._ibp[i] for i in step.inputs])
                except OpwiseError:
                    if self.intermediate == "ibp":
                        raise
                    interval = self._transfers[node].ibp(step, [self.interval(i) for i in step.inputs])
                outer = self.outer.get(node)
                if outer is not None:
                    interval = Interval(*tightened(interval.lower, interval.upper, outer.lower, outer.upper))
                # a NaN end is interval arithmetic that overflowed (inf − inf): nothing known there, not a number
                interval = Interval(interval.lower.nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf),
                                    interval.upper.nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf))
                self._ibp[node] = self._narrow(node, interval)
        return self._ibp[target]

    def reference_interval(self, target: fx.Node) -> Interval:
        """IBP of `target` from the tightest intervals its ancestors have so far (a settled node's own, else this
        reference of it), met with plain IBP: what decides which neurons a CROWN pass bounds (`neurons_needed`),
        and what the neurons it leaves unbounded keep. Plain IBP widens layer by layer from the input box, so on a
        deep net it calls unstable many neurons that the earlier layers' CROWN intervals show to be stable
        (auto_LiRPA takes its reference bounds the same way): on a CIFAR ResNet of 32-128 channels, 8,192 neurons of
        a layer against 2,660. Sound: each step is IBP over sound intervals."""
        self.interval_ibp(target)
        for node in self.ancestors(target):
            if node is self.input_node or node in self._reference or (node in self._tight and node is not target):
                continue
            step = self.step(node)
            inputs = [self._tight.get(i, self._reference.get(i, self._ibp[i])) for i in step.inputs]
            plain = self._ibp[node]
            if all(interval is self._ibp[i] for interval, i in zip(inputs, step.inputs)):  # nothing tighter to start from
                self._reference[node] = plain
                continue
            try:  # the layout the model gives a view's input, which a tightened interval need not have
                interval = self._transfers[node].ibp(step, [Interval(i.lower.contiguous(), i.upper.contiguous())
                                                            for i in inputs])
            except OpwiseError:
                interval = plain
            self._reference[node] = Interval(*tightened(plain.lower, plain.upper, interval.lower, interval.upper))
        return self._reference.get(target, self._ibp[target])

    def _narrow(self, node: fx.Node, interval: Interval) -> Interval:
        """The interval intersected with the node's split (if any); an empty result becomes a point."""
        split = self.splits.get(node)
        if split is None:
            return interval
        lower, upper = torch.maximum(interval.lower, split.lower), torch.minimum(interval.upper, split.upper)
        self.infeasible |= (lower > upper).reshape(lower.shape[0], -1).any(1)
        return Interval(lower, torch.maximum(lower, upper))

    # ------------------------------------------------------------------ promises
    def interval(self, node: fx.Node) -> Interval:
        """The best interval of a node: IBP, tightened by CROWN unless the policy is IBP. Cached."""
        if node in self._tight:
            return self._tight[node]
        ibp = self.interval_ibp(node)
        policy = self.policy(node)
        if policy != "ibp" and (self.copies_input(node) or self.image_of_input(node)):
            step = self.step(node)
            sources = [self.interval(i) for i in step.inputs]
            # a view needs the layout its input has in the model, which a split or tightened interval need not have
            copied = self._transfers[node].ibp(step, [Interval(s.lower.contiguous(), s.upper.contiguous()) for s in sources])
            # own memory: a broadcast copy is a view with stride 0, and branch-and-bound writes splits into intervals
            lower, upper = (t.contiguous() for t in tightened(ibp.lower, ibp.upper, copied.lower, copied.upper))
            self._tight[node] = self._narrow(node, Interval(lower, upper))
            return self._tight[node]
        if policy == "ibp" or self.exact_by_ibp(node):
            self._tight[node] = ibp
            if policy != "ibp":
                self._settled[node] = True
            return ibp
        ibp = self.reference_interval(node)
        image = self.denominator_image(node)
        if image is None and self.transfer(node) is ELEMENTWISE:  # f's image of its input's settled interval (the
            step = self.step(node)                                   # reference may predate it), which no pass beats
            image = ELEMENTWISE.ibp(step, [self._tight[step.inputs[0]]]) if step.inputs[0] in self._tight else None
        if image is not None:
            ibp = Interval(*tightened(ibp.lower, ibp.upper, image.lower, image.upper))
        if policy == "forward":
            forward = self.forward_linear(node).concretize(self.input_set)
            lower, upper = tightened(ibp.lower, ibp.upper, forward.lower, forward.upper)
            self._warn_if_apart(node, ibp, lower, upper)
            self._tight[node] = self._narrow(node, Interval(lower.detach(), upper.detach()))
            return self._tight[node]
        forward = self.few_free_forward(node)
        if forward is not None:  # refine only what forward mode leaves undecided; an affine node needs no pass
            interval = forward.concretize(self.input_set)
            lower, upper = tightened(ibp.lower, ibp.upper, interval.lower, interval.upper)
            self._warn_if_apart(node, ibp, lower, upper)
            if forward.exact:
                self._tight[node] = self._narrow(node, Interval(lower.detach(), upper.detach()))
                self._settled[node] = True
                return self._tight[node]
            ibp = Interval(lower, upper)
        groups = self.groups(node, ibp)
        needed = self.neurons_needed(node, ibp, groups)
        selected = self.selection(needed)
        if selected.any() if selected.dtype == torch.bool else selected.numel():
            self.prepare(node)
        positions = int(selected.sum(1).max()) if selected.dtype == torch.bool else selected.numel()
        cut = self.cut_for(node, positions, groups)
        forward = None if cut is None else self.forward_from_cut(node, cut, groups)
        if forward is not None:
            interval = forward.concretize(self.input_set)
            lower, upper = tightened(ibp.lower, ibp.upper, interval.lower, interval.upper)
            self._warn_if_apart(node, ibp, lower, upper)
            self._tight[node] = self._narrow(node, Interval(lower.detach(), upper.detach()))
            return self._tight[node]
        refined = self.refine(node, ibp, selected, needed=needed)
        self._warn_if_apart(node, ibp, refined.lower, refined.upper)
        self._tight[node] = self._narrow(node, Interval(refined.lower.detach(), refined.upper.detach()))
        self._settled[node] = needed
        return self._tight[node]

    def _warn_if_apart(self, node: fx.Node, ibp: Interval, lower: torch.Tensor, upper: torch.Tensor) -> None:
        """Warn where linear bounds and interval arithmetic missed each other at a node (`tightened` took their
        hull there) by more than rounding of the bounds themselves (`ROUNDING_NOTICE` of their size: near-point
        intervals of fixed inputs miss each other by an ulp): the float32 computation rounded a value away that
        exact arithmetic keeps. Under splits (branch-and-bound domains) a miss has another cause: both bounds
        hold on every input of the domain, so where they miss each other it has none; it is flagged `infeasible`."""
        excess = torch.maximum(ibp.lower - lower, upper - ibp.upper)
        scale = 1 + torch.maximum(ibp.lower.abs(), ibp.upper.abs())
        apart = excess > ROUNDING_NOTICE * scale
        if self.splits and apart.shape[:1] == (self.batch,):
            self.infeasible |= apart.reshape(self.batch, -1).any(1)
        elif bool(apart.any()):
            warnings.warn(f"node {node.name} ({self.graph.info(node).op}): its linear bounds and its interval bounds do "
                          "not overlap, which only floating-point rounding causes (a constant such as 1e30 or an "
                          "attention mask of the dtype's minimum absorbing a value); the bounds follow exact "
                          "arithmetic there and may miss the float32 outputs", RuntimeWarning, stacklevel=2)

    def policy(self, node: fx.Node) -> str:
        """How this node's intermediate bound is computed: "ibp", "forward" or "crown"."""
        if self.intermediate != "mixed":
            return self.intermediate
        return "crown" if math.prod(self.graph.info(node).shape[1:]) <= self.crown_limit else "forward"

    def known_interval(self, node: fx.Node) -> Interval | None:
        """The node's interval if the engine has settled it (computed, or given as known), else None."""
        return self._tight.get(node)

    def known_intervals(self) -> dict[str, Interval]:
        """Every interval the engine has settled, by node name (the input's excluded): what later engines
        over the same input set may take as `known`."""
        return {node.name: interval for node, interval in self._tight.items() if node is not self.input_node}

    def transfer(self, node: fx.Node):
        """The bound transfer the engine uses for a node."""
        self.step(node)
        return self._transfers[node]

    def tighten(self, node: fx.Node, interval: Interval) -> Interval:
        """Replace the node's interval by a tighter sound one (α-CROWN's intermediate bounds), narrowed by the
        node's split; every later pass's relaxations use it. Returns the interval stored."""
        self._tight[node] = self._narrow(node, interval)
        return self._tight[node]

    def split(self, node: fx.Node) -> Interval | None:
        """The interval a node's split keeps it in (None when the node is not split)."""
        return self.splits.get(node)

    def split_nodes(self, target: fx.Node) -> list[fx.Node]:
        """The split nodes a pass to `target` goes through (where β multipliers can enter)."""
        ancestors = set(self.ancestors(target))
        return [node for node in self.splits if node in ancestors and node is not self.input_node]

    def copies_input(self, node: fx.Node) -> bool:
        """Whether every element of the node is a copy of one element of its only bounded input (`COPYING`), or of
        one of its inputs (`JOINING`: a concatenation): its CROWN interval is then its inputs', copied. A matrix
        product of two bounded tensors is rewritten into broadcast copies of both (expand.py): bounding each copy
        with one spec per element took 17 times the specs of its source (30 of the 200 s of a CROWN pass on
        vit_2023's ibp_3_3_8); a concatenation before a pooling (SqueezeNet's fire modules) was bounded again in full.

        >>> import torch, opwise
        >>> from opwise.bounds.input_set import InputSet
        >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Flatten(0)), torch.zeros(1, 2))
        >>> engine = BoundPropagation(graph, InputSet.ball(torch.zeros(1, 2), 0.1))
        >>> [engine.copies_input(node) for node in graph.call_nodes()]
        [False, True]
        """
        step = self.step(node)
        if step.relaxation is not None or not step.inputs:
            return False
        key = op_packet_key(step.op)
        return (len(step.inputs) == 1 and key in COPYING) or key in JOINING

    def image_of_input(self, node: fx.Node) -> bool:
        """Whether the node's interval is the image of its input's: an elementwise function whose range on an interval
        is known exactly (`monotone`, or an `image`), over an input that CROWN bounds at every position (the
        relaxation asks for no subset: no `needs_refinement`); or a transfer that says its interval is the image of
        its input's (`exact_image`: a remainder); or one whose lines are constants drawn from its input's interval
        (`constant_lines`: an index), which no pass through it can beat, whichever policy bounds the input. CROWN through the function's lines could only be
        looser: a line below f on [l, u] is below f's minimum there (auto_LiRPA bounds such activations by
        interval propagation too). On vit_2023's ibp_3_3_8 softmax's reciprocals took 867 specs each.

        >>> import torch, opwise
        >>> from opwise.bounds.input_set import InputSet
        >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh()), torch.zeros(1, 2))
        >>> engine = BoundPropagation(graph, InputSet.ball(torch.zeros(1, 2), 0.1))
        >>> [engine.image_of_input(node) for node in graph.call_nodes()]
        [False, True]
        """
        step = self.step(node)
        relaxation = step.relaxation
        if len(step.inputs) != 1:
            return False
        if relaxation is None:
            transfer = self._transfers[node]
            if getattr(transfer, "constant_lines", False):  # constants from its input's interval: no pass is tighter
                return True
            if not getattr(transfer, "exact_image", False):
                return False
        elif hasattr(relaxation, "needs_refinement") or not (getattr(relaxation, "monotone", False)
                                                           or hasattr(relaxation, "image")):
            return False
        source = step.inputs[0]
        return source is self.input_node or self.policy(source) == "crown"

    def exact_by_ibp(self, node: fx.Node) -> bool:
        """Whether IBP already gives CROWN's interval: an affine operator of one bounded input whose interval
        is the input box itself, only rearranged (a first linear or convolution layer). Over a box the
        interval of such an operator is exact, so a backward pass with one spec per neuron (auto_LiRPA
        skips it too) would only repeat it. Not over an Lp ball with p < inf, where CROWN is tighter."""
        if self.input_set.center is not None and not math.isinf(self.input_set.norm):
            return False
        step = self.step(node)
        if step.relaxation is not None or not isinstance(self._transfers[node], Affine) or len(step.inputs) != 1:
            return False
        source = step.inputs[0]
        while source is not self.input_node:
            step = self.step(source)
            if op_packet_key(step.op) not in REARRANGING or len(step.inputs) != 1:
                return False
            source = step.inputs[0]
        return True

    def groups(self, node: fx.Node, interval: Interval) -> int:
        """Per sample when the node keeps the batch first, else (batch folded by a reshape) the whole node."""
        return self.batch if interval.lower.shape[:1] == (self.batch,) else 1

    def refine(self, node: fx.Node, base: Interval, selected: torch.Tensor, alphas: dict | None = None,
               needed: torch.Tensor | None = None) -> Interval:
        """`base` tightened by CROWN bounds of the `selected` flat positions (one spec per position and side);
        with `needed` ([groups, n]), only at the positions each group needs: a sample's intervals then do not depend
        on the other samples of its batch (the positions bounded are their union), and nor do the later nodes'
        references (`reference_interval`), which start from them.

        `selected` holds positions every group bounds ([n], from `neurons_to_refine`), or is a bool mask
        [groups, n] of the positions each group bounds on its own (from `selection`: rows padded to the group
        with the most, see `_refine_per_group`). With `alphas` (α-CROWN on intermediate bounds: one α set for
        this node's specs, 2 × selected, lower bounds first) the shared positions go in one pass and the
        result is differentiable in α.
        """
        if selected.dtype == torch.bool:
            return self._refine_per_group(node, base, selected)
        groups = self.groups(node, base)
        lower = base.lower.clone(memory_format=torch.contiguous_format)
        upper = base.upper.clone(memory_format=torch.contiguous_format)
        flat_lower, flat_upper = lower.view(groups, -1), upper.view(groups, -1)
        self.step(node)
        # one-hot rows of a [C, H, W] map go back as windows where the node's transfer takes them; only where the
        # first axis is the batch (a batch of 1 also gives one group when windows or heads are folded into that axis)
        windowed = lower.dim() == 4 and lower.shape[0] == groups == self.batch and \
            getattr(self._transfers[node], "takes_patches", False)
        chunks = [selected] if alphas is not None else selected.split(_chunk_size(lower.shape[2:] if windowed else ()))
        cut = None if alphas is not None else self.cut_for(node, selected.numel(), groups)
        for chunk in chunks if selected.numel() else ():
            check_deadline()
            count = chunk.numel()
            if windowed:
                signs = torch.cat([lower.new_ones(count), -lower.new_ones(count)])
                A = Patches.one_hot(torch.cat([chunk, chunk]), signs, groups, tuple(lower.shape[1:]))
            else:
                A = torch.zeros(2 * count, groups, flat_lower.shape[1], dtype=lower.dtype, device=lower.device)
                rows = torch.arange(count, device=lower.device)
                A[rows, :, chunk] = 1.0
                A[rows + count, :, chunk] = -1.0
                A = A.reshape(2 * count, *lower.shape)
            bound = self.backward(node, A, groups, alphas) if cut is None else self.backward_through(node, A, groups, cut)
            old_lower, old_upper = flat_lower[:, chunk], flat_upper[:, chunk]
            new_lower, new_upper = tightened(old_lower, old_upper, bound[:count].T, -bound[count:].T)
            if needed is not None:
                keep = needed[:, chunk]
                new_lower, new_upper = torch.where(keep, new_lower, old_lower), torch.where(keep, new_upper, old_upper)
            flat_lower[:, chunk], flat_upper[:, chunk] = new_lower, new_upper
        return Interval(lower, upper)

    def _refine_per_group(self, node: fx.Node, base: Interval, needed: torch.Tensor) -> Interval:
        """`refine` where each group bounds its own positions (`needed` [groups, n]): spec k of group g is the
        k-th position g needs, so a pass has as many specs as the neediest group, not as the union of all
        groups (on a batch of boxes that each perturb a different patch, the union is many times larger).
        Groups that need fewer get zero rows, whose bounds are dropped."""
        groups = needed.shape[0]
        lower = base.lower.clone(memory_format=torch.contiguous_format)
        upper = base.upper.clone(memory_format=torch.contiguous_format)
        flat_lower, flat_upper = lower.view(groups, -1), upper.view(groups, -1)
        counts = needed.sum(1)
        # per group, its needed positions first (in order), then the others as padding: [specs, groups]
        order = torch.argsort((~needed).to(torch.int8), dim=1, stable=True)[:, : int(counts.max())].T
        valid = torch.arange(order.shape[0], device=order.device)[:, None] < counts[None, :]
        windowed = lower.shape[0] == groups and lower.dim() == 4 and getattr(self.transfer(node), "takes_patches", False)
        samples = torch.arange(groups, device=order.device)[None, :]
        size = _chunk_size(lower.shape[2:] if windowed else ())
        cut = self.cut_for(node, order.shape[0], groups)
        for positions, keep in zip(order.split(size), valid.split(size)):
            check_deadline()
            count = positions.shape[0]
            signs = keep.to(lower.dtype)
            if windowed:
                A = Patches.one_hot(torch.cat([positions, positions]), torch.cat([signs, -signs]), groups, tuple(lower.shape[1:]))
            else:
                A = torch.zeros(2 * count, groups, flat_lower.shape[1], dtype=lower.dtype, device=lower.device)
                rows = torch.arange(count, device=lower.device)[:, None]
                A[rows, samples, positions] = signs
                A[rows + count, samples, positions] = -signs
                A = A.reshape(2 * count, *lower.shape)
            bound = self.backward(node, A, groups) if cut is None else self.backward_through(node, A, groups, cut)
            old_lower, old_upper = flat_lower.gather(1, positions.T), flat_upper.gather(1, positions.T)
            new_lower, new_upper = tightened(old_lower, old_upper, bound[:count].T, -bound[count:].T)
            flat_lower.scatter_(1, positions.T, torch.where(keep.T, new_lower, old_lower))
            flat_upper.scatter_(1, positions.T, torch.where(keep.T, new_upper, old_upper))
        return Interval(lower, upper)

    def forward_linear(self, target: fx.Node) -> LinearBounds:
        """Forward-mode linear bounds of `target` in terms of the input (each node once, cached); a node
        without a forward transfer carries its interval (from its inputs' intervals) as constant bounds."""
        for node in self.ancestors(target):
            if node in self._linear:
                continue
            check_deadline()
            if node is self.input_node:
                self._linear[node] = LinearBounds.identity(self.input_set)
                continue
            step = self.step(node)
            bounds = forward_bounds(step, self._transfers[node], [self._linear[i] for i in step.inputs])
            if bounds is None:
                box = self._transfers[node].ibp(step, [self.interval(i) for i in step.inputs])
                ibp = self.interval_ibp(node)
                box = Interval(torch.maximum(box.lower, ibp.lower), torch.minimum(box.upper, ibp.upper))
                bounds = LinearBounds.constant(box, self._linear[self.input_node])
            self._linear[node] = bounds
        return self._linear[target]

    def neurons_needed(self, node: fx.Node, ibp: Interval, groups: int) -> torch.Tensor:
        """Per group, the flat positions whose interval some consumer's relaxation depends on and a pass could
        tighten: [groups, n] (at an elementwise node, only where `unsettled_input` says a pass can)."""
        needed = torch.zeros(groups, ibp.lower.numel() // groups, dtype=torch.bool, device=ibp.lower.device)
        unsettled = self.unsettled_input(node, groups, ibp)
        for user in node.users:
            if not self.bounded(user) or user.op != "call_function":
                continue
            step = self.step(user)
            refine = getattr(step.relaxation, "needs_refinement", None)
            if refine is None:  # every position, but those a pass cannot tighten
                needed.fill_(True)
                return needed if unsettled is None else needed & unsettled
            needed |= refine(ibp.lower, ibp.upper).reshape(groups, -1)
        if unsettled is not None:
            needed &= unsettled
        reached = self.reached(node)
        return needed if reached is None else needed & reached.reshape(groups, -1)

    def unsettled_input(self, node: fx.Node, groups: int, interval: Interval) -> torch.Tensor | None:
        """At an elementwise node y = f(x) whose `interval` is f's image of x's, the positions ([groups, n]) where a
        pass of y could tighten it: those whose x no pass of this engine bounded, and where f is not constant on a
        proper interval of x; None at any other node, or where x's positions do not line up with y's.

        Where a pass bounded x, a pass of y cannot do better: it carries f's line at that position back to x, and
        the line is drawn on x's interval, while the pass bounds x no tighter than the one that gave it. Where f is
        constant on x's interval (a ReLU's below 0), its lines are that constant. So only the positions of x that
        no pass bounded (a stable ReLU's, whose consumers still need y: max pooling, a product) are left to a pass
        of y; where x is a point, too (interval arithmetic may have rounded it there, which a pass would show)."""
        if self.transfer(node) is not ELEMENTWISE:
            return None
        source = self.step(node).inputs[0]
        settled = self._settled.get(source)
        if settled is None or self.graph.info(source).shape != self.graph.info(node).shape:
            return None
        if settled is True:
            return torch.zeros((), dtype=torch.bool, device=self.device)
        if settled.shape[0] != groups:
            return None
        x = self._tight.get(source)
        if x is None:
            return ~settled
        constant = (interval.lower == interval.upper) & (x.lower < x.upper)
        return ~settled & ~constant.reshape(groups, -1)

    def reached(self, node: fx.Node) -> torch.Tensor | None:
        """The positions of `node` (a bool mask of its shape) that `output_specs` reach; None where no specs
        were given or the node is not an ancestor of the output (then every position may matter)."""
        if self.output_specs is None:
            return None
        if self._reach is None:
            self._reach = reach(self, self.graph.output, self.output_specs.to(self.device))
        if node not in self._reach and node in self.ancestors(self.graph.output):
            return torch.zeros(self.interval_ibp(node).lower.shape, dtype=torch.bool, device=self.device)
        return self._reach.get(node)

    def neurons_to_refine(self, node: fx.Node, ibp: Interval, groups: int) -> torch.Tensor:
        """Flat positions (union over the groups) whose interval some consumer's relaxation depends on."""
        return self.neurons_needed(node, ibp, groups).any(0).nonzero().flatten()

    @staticmethod
    def selection(needed: torch.Tensor) -> torch.Tensor:
        """What `refine` bounds: each group's own positions (the mask `needed` [groups, n]) when the neediest
        group needs fewer than the union of all groups, else the union's positions (shared specs are cheaper
        to build and carry: fewer index operations per spec)."""
        union = needed.any(0)
        if needed.shape[0] > 1 and int(needed.sum(1).max()) < int(union.sum()):
            return needed
        return union.nonzero().flatten()

    def prepare(self, target: fx.Node) -> None:
        """Resolve, in topological order, every interval the relaxations on the way to `target` ask for."""
        for node in self.ancestors(target):
            if node is self.input_node:
                continue
            step = self.step(node)
            for needed in self._transfers[node].needs_bounds(step):
                self.interval(needed)

    # ------------------------------------------------------------------ CROWN
    def backward_to_intervals(self, target: fx.Node, A: torch.Tensor) -> torch.Tensor:
        """Lower bound of `A · target` from IBP: A is carried back through the affine operators that end
        the graph (so a margin spec folds into the last linear layer, as in auto_LiRPA's IBP) and met
        with the IBP intervals of the nonlinear nodes it reaches. [specs, batch]."""
        self.interval_ibp(target)
        coefficients = {target: A}
        bound = torch.zeros(A.shape[0], self.batch, dtype=A.dtype, device=A.device)
        for node in reversed(self.ancestors(target)):
            coefficient = coefficients.pop(node, None)
            if coefficient is None:
                continue
            step = self.step(node) if node is not self.input_node else None
            if step is None or not isinstance(self._transfers[node], Affine):
                box = self._ibp[node]
                terms = coefficient.clamp(min=0) * box.lower + coefficient.clamp(max=0) * box.upper
                bound = bound + terms.reshape(A.shape[0], self.batch, -1).sum(-1)
                continue
            parts, terms = self._transfers[node].backward(step, coefficient)
            if terms is not None:
                bound = bound + terms.reshape(terms.shape[0], self.batch, -1).sum(-1)
            for parent, part in zip(step.inputs, parts):
                if part is not None:
                    coefficients[parent] = coefficients[parent] + part if parent in coefficients else part
        return bound

    def backward(self, target: fx.Node, A: torch.Tensor | Patches, groups: int | None = None,
                 alphas: dict | None = None, betas: dict | None = None) -> torch.Tensor:
        """`bound(...).lower`: the lower bound of `A · target` over the input set, [specs, groups] (nothing
        recorded: the coefficients would be dropped, and a recorded window is made dense)."""
        return self.bound(target, A, groups, alphas, betas, record=False).lower

    def bound(self, target: fx.Node, A: torch.Tensor | Patches, groups: int | None = None,
              alphas: dict[fx.Node, AlphaPair] | None = None,
              betas: dict[fx.Node, AlphaPair] | None = None, record: bool = True) -> LinearBound:
        """One backward (CROWN) pass: the lower bound of `A · target` over the input set, [specs, groups], with
        the linear bound it comes from. A is [specs, *target shape] (or `Patches`: rows zero outside a window
        each, carried as windows by the transfers that take them).

        A group is one sample (`groups` = batch, the default) or the whole batch at once (`groups` = 1,
        for nodes whose batch dimension a reshape folded away; specs then name single neurons).
        `alphas` are relaxation parameters per relaxed node; `betas` the multipliers (>= 0) of the split
        constraints per split node, as β-CROWN ([specs, *node shape] each side). `record`: the result holds the
        coefficients of the engine's recorded nodes (False: a pass whose caller keeps only the bound).
        """
        groups = self.batch if groups is None else groups
        walked = self._walk(target, A, groups, alphas, betas, record=self.record if record else frozenset())
        if isinstance(walked, LinearBound):  # ended at the first layers (`_free_prefix`)
            return walked
        input_coefficient, bias, recorded = walked
        if input_coefficient is None:  # nothing reached the input (through constant lines only): the bias is exact
            values = A.values if isinstance(A, Patches) else A
            zero = values.new_zeros(values.shape[0], *self.input_set.lower.shape)
            return LinearBound(bias, zero, bias, recorded)
        if isinstance(input_coefficient, Patches) and self.input_set.is_box:
            lower = input_coefficient.minimum_over_box(self.input_set.lower, self.input_set.upper) + bias
        else:
            lower = self.input_set.minimum(dense(input_coefficient), groups) + bias
        return LinearBound(lower, input_coefficient, bias, recorded)

    def _walk(self, target: fx.Node, A: torch.Tensor | Patches, groups: int, alphas: dict | None = None,
              betas: dict | None = None, stop: fx.Node | None = None,
              record: frozenset = frozenset()) -> tuple[object, torch.Tensor, dict]:
        """The backward pass of `bound` down to the input (or to `stop`, a cut: `cut_for`): the coefficients
        that reach it, the bias collected on the way [specs, groups], and the recorded coefficients; or, where
        the pass ends at the first layers (`_free_prefix`), its `LinearBound`. `record`: the nodes whose
        coefficients it records."""
        self.prepare(target)
        coefficients = {target: A}
        values = A.values if isinstance(A, Patches) else A
        bias = torch.zeros(values.shape[0], groups, dtype=values.dtype, device=values.device)
        input_coefficient, recorded = None, {}
        # (not with recorded nodes: one among the first layers would miss the share of a path that stopped early)
        prefix = self._free_prefix() if groups == self.batch and not record and stop is None else {}
        free = None  # with `prefix`: the coefficients of each sample's free input elements [specs, groups, rows]
        offer_windows = groups == self.batch and values.shape[0] >= WINDOW_MIN_SPECS  # `Patches.from_dense`
        for node in reversed(self.ancestors(target)):
            check_deadline()
            coefficient = coefficients.pop(node, None)
            if coefficient is None:
                continue
            if node is self.input_node:
                if not prefix:
                    input_coefficient = coefficient
                    continue
                # coefficients that reached the input itself: their free elements join `free`, the rest the bias
                identity = prefix[node]
                if isinstance(coefficient, Patches):  # read off the windows, never made dense
                    part = coefficient.at(identity.positions.clamp(min=0))
                    share = summed_product(coefficient.blocked(), coefficient.windows(identity.lower_bias))
                    bias = bias + share.reshape(values.shape[0], groups)
                else:
                    flat = coefficient.reshape(values.shape[0], groups, -1)
                    part = flat.gather(2, identity.positions.clamp(min=0).unsqueeze(0).expand(flat.shape[0], -1, -1))
                    bias = bias + (flat * identity.lower_bias.reshape(1, groups, -1)).sum(-1)
                free = part if free is None else free + part
                continue
            if node is stop:  # a cut: nothing reaches what lies before it but through it
                if coefficients:
                    raise OpwiseError(f"node {node.name} is not a cut of {target.name}: coefficients also reach "
                                      f"{', '.join(n.name for n in coefficients)}")
                return coefficient, bias, recorded
            if node in record:
                recorded[node] = dense(coefficient).detach()
            step = self.step(node)
            step.alpha = None if alphas is None else alphas.get(node)
            transfer = self._transfers[node]
            if not getattr(transfer, "takes_patches", False):
                coefficient = dense(coefficient)
            elif offer_windows and isinstance(coefficient, torch.Tensor) and coefficient.dim() == 5 \
                    and coefficient.shape[1] == self.batch:
                windows = Patches.from_dense(coefficient)  # rows that touch a few positions
                # rows spread wide stay so further back (each convolution widens them): not looked at again
                coefficient, offer_windows = (coefficient, False) if windows is None else (windows, True)
            beta = None if betas is None else betas.get(node)
            if beta is not None:
                if node not in self._split_ends:
                    self._split_ends[node] = SplitEnds.of(self.splits[node])
                coefficient, own = apply_split_constraint(coefficient, self._split_ends[node], beta)
                bias = bias + own.reshape(own.shape[0], groups, -1).sum(-1)
            exact = self._exact_forward(node) if prefix and not isinstance(coefficient, Patches) else None
            if exact is not None:  # A·node = (A·C)·x_free + A·bias: no pass on to the input
                flat = coefficient.reshape(coefficient.shape[0], groups, -1)
                rows = exact.lower_coefficient.reshape(exact.lower_coefficient.shape[0], groups, -1)
                part = torch.einsum("sgn,rgn->sgr", flat, rows)
                free = part if free is None else free + part
                bias = bias + (flat * exact.lower_bias.reshape(1, groups, -1)).sum(-1)
                continue
            if (isinstance(coefficient, torch.Tensor) and getattr(transfer, "takes_patches", False) and alphas is None
                    and betas is None and not record and groups == self.batch and self._frees_little()):
                coefficient, share = self._free_windows(node, coefficient)
                bias = bias + share
            fused = self._fused_contraction(node, coefficient, alphas, betas, stop, record)
            if fused is None:
                fused = self._fused_exp_sum(node, coefficient, alphas, betas, stop, record, recorded)
            parents, parts, terms = (step.inputs, *transfer.backward(step, coefficient)) if fused is None else fused
            if terms is not None:
                bias = bias + terms.reshape(terms.shape[0], groups, -1).sum(-1)
            if fused is None and not record and getattr(transfer, "constant_lines", False):
                continue  # an index or a comparison: its lines are constants, its parts zeros not worth a pass
            for parent, part in zip(parents, parts):
                if part is not None:
                    coefficients[parent] = add_coefficients(coefficients[parent], part) if parent in coefficients else part
        if prefix:  # the coefficients of the free elements, and the input coefficients they are
            return self._free_bound(free, bias, recorded)
        return input_coefficient, bias, recorded


def _chunk_size(spatial: tuple[int, ...]) -> int:
    """Positions per intermediate-bound pass: half of `SPEC_CHUNK` (each position is bounded from both sides),
    rounded down to whole channels of a windowed map of `spatial` size, so that a pass over every channel at
    the same positions shares its windows (`Patches.repeats`).

    >>> _chunk_size(()), _chunk_size((7, 7)), _chunk_size((64, 64))
    (2048, 2009, 2048)
    """
    size, per_channel = SPEC_CHUNK // 2, math.prod(spatial)
    return size // per_channel * per_channel if 0 < per_channel <= size else size


def tightened(lower: torch.Tensor, upper: torch.Tensor, new_lower: torch.Tensor,
              new_upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lower, upper] ∩ [new_lower, new_upper], elementwise; where the two do not meet, their hull. Two sound
    bounds of one value can miss each other only through floating-point rounding: a huge constant (an
    attention mask of finfo.min) absorbs a value in float32, so interval arithmetic sees the rounded value
    while a linear bound keeps the exact one. An empty intersection (lower above upper) made every relaxation
    after it NaN; the hull holds both.

    >>> tightened(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.02]), torch.tensor([2.0, 0.05]))
    (tensor([0.5000, 0.0000]), tensor([1.0000, 0.0500]))
    """
    # fmax/fmin: a NaN end (interval arithmetic that overflowed, inf − inf) leaves the other bound's end
    low, high = torch.fmax(lower, new_lower), torch.fmin(upper, new_upper)
    apart = low > high
    return torch.where(apart, torch.minimum(lower, new_lower), low), torch.where(apart, torch.maximum(upper, new_upper), high)
