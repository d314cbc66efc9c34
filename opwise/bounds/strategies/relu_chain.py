"""Affine–ReLU chains (ACAS Xu, plain MLPs) as weight matrices, with batched CROWN bounds for input splitting.

Input-splitting branch-and-bound bounds hundreds of thousands of small boxes. Through the graph engine
each round pays per-node Python dispatch and a CROWN pass per layer over every neuron; for a graph that is
a chain `affine → ReLU → … → affine` the same bounds are a few batched matrix products. `ReluChain.of_graph`
recognises such a graph with the engine's own transfer registry (every non-ReLU node has an affine transfer
and one bounded input), reads each affine segment's matrix off the graph as its Jacobian, and checks the chain
against the graph on random inputs (once per graph and dtype: a property of 50 boxes asks 50 times). Bounds are computed in `dtype` and then lowered by
its rounding slack (float32 is about twice as fast as float64 here).

Intermediate bounds come from forward linear bounds (each neuron's lower and upper linear function of the
input, cheap for few inputs) intersected with interval bounds; the property rows get a CROWN backward pass.
`bound_and_smear` adds per-input branching weights from interval bounds on the rows' gradients over each box.
"""

from __future__ import annotations

import dataclasses
import weakref

import torch
from torch import fx

from opwise.bounds.relaxations.registry import relaxation_for
from opwise.bounds.strategies.input_split import LinearLowerBounds
from opwise.bounds.transfers.affine import Affine
from opwise.bounds.transfers.registry import transfer_for
from opwise.tracing.graph import Graph

RELU = "aten.relu.default"
RELU_RELAXATION = relaxation_for(RELU, (), {})
#: a chain's affine maps are dense matrices read off one evaluation per input element: a graph whose layers would
#: need more entries than this in one matrix is no chain (a CIFAR convolution's 3,072 x 8,192 matrix took
#: 25 s to read and 200 MB, for a fast path meant for small fully connected nets)
MAX_MATRIX_ENTRIES = 2**21

#: relative amount taken off every bound for the rounding of its dtype. float32 bounds of the 45 ACAS Xu
#: networks (16 property boxes, 2,048 sub-boxes each of three sizes) stayed within 5.9e-5·(1+|bound|) of float64 ones.
SLACK = {torch.float64: 1e-9, torch.float32: 1e-4}
#: least share of an input's gradient smear that its branching weight's centre gradient counts (bound_and_smear)
CENTRE_FLOOR = 0.01

_CHAINS: "weakref.WeakKeyDictionary[Graph, dict[torch.dtype, ReluChain | None]]" = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class ReluChain:
    """`f(x) = W_L relu(… relu(W_1 x + b_1) …) + b_L` on flattened inputs; `weights[k]` is [out, in].

    >>> import torch
    >>> chain = ReluChain([torch.eye(2), torch.ones(1, 2)], [torch.zeros(2), torch.zeros(1)], (1, 2))
    >>> chain(torch.tensor([[1.0, -2.0]])).tolist()                       # relu(1) + relu(-2)
    [[1.0]]
    >>> lower, A, _ = chain.bound(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]), -torch.ones(1, 1))
    >>> round(float(lower), 6)                                             # -(x0 + x1) >= -2 on [0, 1]²
    -2.0
    """

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    input_shape: tuple[int, ...]
    intermediate: str = "backward"
    dtype: torch.dtype = torch.float64
    #: chains side by side (`parallel`): per affine layer, the slice of its outputs each chain owns; a hidden
    #: neuron's CROWN pass then runs through its own chain's blocks only (the others' weights are zero)
    blocks: list[list[slice]] | None = None
    _cast: list | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        self.weights = [w.detach().to(torch.float64) for w in self.weights]
        self.biases = [b.detach().to(torch.float64) for b in self.biases]

    @classmethod
    def of_graph(cls, graph: Graph, dtype: torch.dtype = torch.float64) -> "ReluChain | None":
        """The chain a graph computes, bounding in `dtype`, or None when it is not one (branches, other
        nonlinearities, many inputs); read once per graph and dtype."""
        known = _CHAINS.setdefault(graph, {})
        if dtype not in known:
            known[dtype] = cls._read(graph, dtype)
        return known[dtype]

    @classmethod
    def parallel(cls, chains: list["ReluChain"], coordinates: list[torch.Tensor], inputs: int) -> "ReluChain | None":
        """Chains run side by side on one input of `inputs` elements, chain k reading the elements `coordinates[k]`
        (in its own flat order), their outputs joined: itself a chain, its first matrix the chains' stacked (each
        spread over the elements it reads) and the others block diagonal. None unless all have the same depth.

        >>> double = ReluChain([torch.eye(1), 2 * torch.eye(1)], [torch.zeros(1), torch.zeros(1)], (1, 1))
        >>> both = ReluChain.parallel([double, double], [torch.tensor([0]), torch.tensor([1])], 2)
        >>> both(torch.tensor([[1.0, -1.0]])).tolist()                         # 2·relu(1), 2·relu(-1)
        [[2.0, 0.0]]
        """
        depth = len(chains[0].weights)
        if any(len(chain.weights) != depth or chain.dtype != chains[0].dtype for chain in chains):
            return None
        spread = []
        for chain, index in zip(chains, coordinates):
            first = chain.weights[0]
            spread.append(first.new_zeros(first.shape[0], inputs).index_add_(1, index.to(first.device), first))
        weights = [torch.cat(spread)] + [torch.block_diag(*(chain.weights[k] for chain in chains)) for k in range(1, depth)]
        biases = [torch.cat([chain.biases[k] for chain in chains]) for k in range(depth)]
        blocks = []
        for k in range(depth):
            starts = [0]
            for chain in chains:
                starts.append(starts[-1] + len(chain.biases[k]))
            blocks.append([slice(a, b) for a, b in zip(starts, starts[1:])])
        return cls(weights, biases, (1, inputs), chains[0].intermediate, chains[0].dtype, blocks)

    def remember(self, graph: Graph) -> bool:
        """Record this chain as the one `graph` computes (`of_graph` then returns it), where it matches the graph on
        random inputs: a graph of parallel chains (two networks on one input) is not recognised by reading it.

        >>> import opwise
        >>> graph = opwise.trace(torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False)), torch.zeros(1, 2))
        >>> with torch.no_grad(): _ = graph.module(torch.zeros(1, 2))
        >>> ReluChain([torch.zeros(1, 2)], [torch.zeros(1)], (1, 2)).remember(graph)   # not what the graph computes
        False
        """
        if not self._matches(graph):
            return False
        _CHAINS.setdefault(graph, {})[self.dtype] = self
        return True

    @classmethod
    def _read(cls, graph: Graph, dtype: torch.dtype) -> "ReluChain | None":
        nodes = _chain_nodes(graph)
        if nodes is None:
            return None
        constants = _constants(graph)
        weights, biases, start, segment = [], [], graph.explained_inputs[0], []
        for node in nodes:
            if graph.info(node).op != RELU:
                segment.append(node)
                continue
            if not segment or _entries(graph, start, segment) > MAX_MATRIX_ENTRIES:
                return None
            weight, bias = _affine_map(graph, constants, segment, start)
            weights.append(weight)
            biases.append(bias)
            start, segment = node, []
        if not segment or _entries(graph, start, segment) > MAX_MATRIX_ENTRIES:
            return None
        weight, bias = _affine_map(graph, constants, segment, start)
        weights.append(weight)
        biases.append(bias)
        chain = cls(weights, biases, tuple(graph.info(graph.explained_inputs[0]).shape), dtype=dtype)
        return chain if chain._matches(graph) else None

    def _matches(self, graph: Graph) -> bool:
        generator = torch.Generator().manual_seed(0)
        for _ in range(4):
            x = torch.randn(self.input_shape, generator=generator).to(graph.device, graph.info(graph.explained_inputs[0]).dtype)
            with torch.no_grad():
                expected = graph.module(x).reshape(-1).to(torch.float64)
            if not torch.allclose(self(x.to(torch.float64)).reshape(-1), expected, rtol=1e-4, atol=1e-4):
                return False
        return True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs [B, outputs] of a batch [B, *input_shape[1:]], computed in float64, in x's dtype."""
        h = x.reshape(len(x), -1).to(torch.float64)
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = h @ weight.T + bias
            if k < len(self.weights) - 1:
                h = h.clamp(min=0)
        return h.to(x.dtype)

    def bound(self, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor,
              known: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Lower bounds of C·f(x) over each box [B, rows], their linear bounds' input coefficients [B, rows, inputs],
        and every hidden pre-activation's bounds [B, 2, neurons]. Bounds proved on a box hold on its sub-boxes:
        pass a parent's as `known` for its children, and fewer neurons stay unstable and need a CROWN pass."""
        layers = self._layers()
        lower = x_lower.reshape(len(x_lower), -1).to(self.dtype)
        upper = x_upper.reshape(len(x_upper), -1).to(self.dtype)
        relaxations, pre_activation = self._relaxations(layers, lower, upper, known)
        A = C.to(self.dtype).expand(len(lower), *C.shape)
        bound, coefficients = self._backward(layers, A, len(layers), relaxations, lower, upper)
        bound = bound.to(torch.float64)
        return bound - SLACK[self.dtype] * (1 + bound.abs()), coefficients, pre_activation

    def bound_and_smear(self, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor,
                        known: torch.Tensor | None = None) -> LinearLowerBounds:
        """`bound` as `LinearLowerBounds` (so input splitting clips the boxes), the pre-activation bounds as
        its state, and per-input branching weights [B, rows, inputs]: the geometric mean of each row's gradient smear (the largest |∂(C·f)/∂x_i| over the box, from
        interval bounds on the gradient, as in ReluVal) and its |∂(C·f)/∂x_i| at the box centre. Input splitting
        bisects the input with the largest width × weight. A coefficient averages the gradient over the box and
        can be near zero on the input where the network bends most (then one input is halved again and again while
        the loose one is never split); the smear alone also favours inputs whose large gradient is nearly constant.

        >>> import torch
        >>> chain = ReluChain([torch.tensor([[1.0, -1.0]]), torch.ones(1, 1)], [torch.zeros(1), torch.zeros(1)], (1, 2))
        >>> box = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.5]])           # f(x) = relu(x0 - x1)
        >>> chain.bound_and_smear(*box, torch.ones(1, 1)).weights.tolist()   # |gradient| <= 1 on the box, 1 at its centre
        [[[1.0, 1.0]]]
        """
        bound, coefficients, pre_activation = self.bound(x_lower, x_upper, C, known)
        lower = x_lower.reshape(len(x_lower), -1).to(torch.float64)
        upper = x_upper.reshape(len(x_upper), -1).to(torch.float64)
        if lower.shape[1] == 1:  # one input: nothing to choose between (lindex's 60,000 boxes: 20 % of the pass)
            weights = torch.ones_like(coefficients)
        else:
            centre = ((lower + upper) / 2).to(self.dtype)
            low, high, at_centre = self._gradient_intervals(C, pre_activation, centre)
            smear = torch.maximum(low.abs(), high.abs())
            # the centre's gradient counts at least CENTRE_FLOOR of the smear: where it is 0 (the centre's ReLUs off
            # along an input that still bends the function elsewhere in the box) the input was never split, and the
            # search halved the others down to nothing (a network summing ReLUs of the input's rows: depth 180)
            weights = (smear * torch.maximum(at_centre.abs(), CENTRE_FLOOR * smear)).sqrt()
        # the bias that puts the linear bound's minimum over the box at the (rounding-lowered) bound
        A = coefficients.to(torch.float64)
        bias = bound - torch.minimum(A * lower[:, None], A * upper[:, None]).sum(-1)
        return LinearLowerBounds(bound, coefficients, bias, weights, pre_activation)

    def _gradient_intervals(self, C: torch.Tensor, pre_activation: torch.Tensor,
                            centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bounds on the gradient of C·f over each box, and the gradient at its centre, each [B, rows, inputs]: carried
        back from the output, each ReLU's derivative 1 (active), 0 (inactive) or anything in [0, 1] (unstable)."""
        layers = self._layers()
        low = high = at_centre = C.to(self.dtype).expand(len(pre_activation), *C.shape) @ layers[-1][0]
        sizes = [len(bias) for _, bias in layers[:-1]]
        hidden, centre_active = centre, []
        for weight, bias in layers[:-1]:
            hidden = hidden @ weight.T + bias
            centre_active.append((hidden > 0)[:, None])
            hidden = hidden.clamp(min=0)
        for (weight, _), z_lower, z_upper, on in reversed(list(zip(layers, pre_activation[:, 0].split(sizes, 1),
                                                                   pre_activation[:, 1].split(sizes, 1), centre_active))):
            active, inactive = (z_lower >= 0)[:, None], (z_upper <= 0)[:, None]
            low = torch.where(active, low, torch.where(inactive, 0, low.clamp(max=0)))
            high = torch.where(active, high, torch.where(inactive, 0, high.clamp(min=0)))
            positive, negative = weight.clamp(min=0), weight.clamp(max=0)
            low, high = low @ positive + high @ negative, high @ positive + low @ negative
            at_centre = (at_centre * on) @ weight
        return low, high, at_centre

    def _layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(W, b) per affine layer in the dtype bounds are computed in (cast once)."""
        if self._cast is None or self._cast[0][0].dtype != self.dtype:
            self._cast = [(w.to(self.dtype), b.to(self.dtype)) for w, b in zip(self.weights, self.biases)]
        return self._cast

    def _relaxations(self, layers, lower, upper, known) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor]:
        """Per ReLU layer (slope_lower, slope_upper, offset_upper) of `slope_lower·z <= relu(z) <= slope_upper·z + offset_upper`.

        Pre-activation bounds are forward linear bounds (coefficients [B, neurons, inputs] and constants)
        concretized over the box and intersected with interval arithmetic and the `known` bounds; the unstable
        neurons' are then tightened by CROWN (from the third layer on: on the second it equals the forward bound).
        Returns the relaxations and the final pre-activation bounds [B, 2, neurons].
        """
        batch, inputs = lower.shape
        centre, radius = (lower + upper) / 2, (upper - lower) / 2
        # linear lower/upper bounds of the current layer as functions of x: coefficients [B, inputs, neurons]
        # (transposed, so each product with a weight is one matrix product), constants [B, neurons]
        low_a = up_a = torch.eye(inputs, dtype=self.dtype, device=lower.device).expand(batch, inputs, inputs)
        low_c = up_c = torch.zeros(batch, inputs, dtype=self.dtype, device=lower.device)
        box_lower, box_upper = lower, upper
        relaxations, found, start = [], [], 0
        for weight, bias in layers[:-1]:
            positive, negative = weight.clamp(min=0).T, weight.clamp(max=0).T
            low_a, up_a = low_a @ positive + up_a @ negative, up_a @ positive + low_a @ negative
            low_c, up_c = low_c @ positive + up_c @ negative + bias, up_c @ positive + low_c @ negative + bias
            z_lower = torch.maximum(low_c + (centre[:, None, :] @ low_a).squeeze(1) - (radius[:, None, :] @ low_a.abs()).squeeze(1),
                                    box_lower @ positive + box_upper @ negative + bias)
            z_upper = torch.minimum(up_c + (centre[:, None, :] @ up_a).squeeze(1) + (radius[:, None, :] @ up_a.abs()).squeeze(1),
                                    box_upper @ positive + box_lower @ negative + bias)
            if known is not None:
                stop = start + len(bias)
                z_lower = torch.maximum(z_lower, known[:, 0, start:stop])
                z_upper = torch.minimum(z_upper, torch.maximum(known[:, 1, start:stop], z_lower))
                start = stop
            if self.intermediate == "backward" and len(relaxations) > 1:
                z_lower, z_upper = self._refine(layers, len(relaxations), z_lower, z_upper, relaxations, centre, radius)
            slope_lower, slope_upper, offset = _relu_relaxation(z_lower, z_upper)
            relaxations.append((slope_lower, slope_upper, offset))
            found.append(torch.stack([z_lower, z_upper], dim=1))
            low_a, low_c = low_a * slope_lower[:, None, :], low_c * slope_lower
            up_a, up_c = up_a * slope_upper[:, None, :], up_c * slope_upper + offset
            box_lower, box_upper = z_lower.clamp(min=0), z_upper.clamp(min=0)
        if not found:  # an affine network (one layer, no ReLU): no pre-activation to bound
            return relaxations, lower.new_zeros(batch, 2, 0)
        return relaxations, torch.cat(found, dim=2)

    def _refine(self, layers, layer, z_lower, z_upper, relaxations, centre, radius) -> tuple[torch.Tensor, torch.Tensor]:
        """Tighten the unstable neurons' bounds of pre-activation `layer` by CROWN (one row per domain and neuron)."""
        domain, neuron = ((z_lower < 0) & (z_upper > 0)).nonzero(as_tuple=True)
        if not len(domain):
            return z_lower, z_upper
        z_lower, z_upper = z_lower.clone(), z_upper.clone()
        everything = slice(None)
        for block in range(len(self.blocks[0])) if self.blocks is not None else (None,):
            if block is None:
                ours, columns = (domain, neuron), [everything] * layer
            else:
                mine = self.blocks[layer][block]
                keep = (neuron >= mine.start) & (neuron < mine.stop)
                ours, columns = (domain[keep], neuron[keep]), [self.blocks[k][block] for k in range(layer)]
            if not len(ours[0]):
                continue
            lower, upper = self._crown_rows(layers, layer, *ours, columns, relaxations, centre, radius)
            z_lower[ours] = torch.maximum(z_lower[ours], lower)
            z_upper[ours] = torch.minimum(z_upper[ours], upper)
        return z_lower, z_upper

    def _crown_rows(self, layers, layer, domain, neuron, columns, relaxations, centre, radius):
        """CROWN lower and upper bounds of pre-activation `layer`'s neurons (one per domain), carried back through
        the hidden neurons `columns[k]` of each layer k below (a parallel chain's own block; all for one chain)."""
        count = len(domain)
        rows, offsets = layers[layer][0][:, columns[layer - 1]][neuron], layers[layer][1][neuron]
        A, owner, constant = torch.cat([rows, -rows]), torch.cat([domain, domain]), torch.cat([offsets, -offsets])
        for k in range(layer - 1, -1, -1):
            slope_lower, slope_upper, offset = (r[:, columns[k]][owner] for r in relaxations[k])
            positive, negative = A.clamp(min=0), A.clamp(max=0)
            constant = constant + (negative * offset).sum(-1)
            A = positive * slope_lower + negative * slope_upper
            constant = constant + A @ layers[k][1][columns[k]]
            A = A @ layers[k][0][columns[k]][:, columns[k - 1] if k > 0 else slice(None)]
        bound = constant + (A * centre[owner]).sum(-1) - (A.abs() * radius[owner]).sum(-1)
        return bound[:count], -bound[count:]

    def _backward(self, layers, A, count, relaxations, lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
        """CROWN: carry A [B, rows, outputs of affine layer `layers`] back to the input; (lower bound, input coefficients)."""
        constant = A.new_zeros(A.shape[:2])
        for k in range(count - 1, -1, -1):
            constant = constant + A @ layers[k][1]
            A = A @ layers[k][0]
            if k == 0:
                break
            slope_lower, slope_upper, offset = relaxations[k - 1]
            positive, negative = A.clamp(min=0), A.clamp(max=0)
            constant = constant + (negative * offset[:, None, :]).sum(-1)
            A = positive * slope_lower[:, None, :] + negative * slope_upper[:, None, :]
        centre, radius = (lower + upper) / 2, (upper - lower) / 2
        return _concretize(A, constant, centre, radius, -1), A


def _concretize(A: torch.Tensor, constant: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor, sign: int) -> torch.Tensor:
    """min (sign -1) or max (sign 1) of `A x + constant` over the box `centre ± radius`, per row."""
    return (A @ centre[..., None]).squeeze(-1) + sign * (A.abs() @ radius[..., None]).squeeze(-1) + constant


def _relu_relaxation(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The engine's ReLU relaxation (relaxations/relu.py, CROWN's choice of lower slope) as the chain uses it:
    (lower slope, upper slope, upper intercept); a ReLU's lower line always passes through 0."""
    lines = RELU_RELAXATION.relax(lower, upper)
    return lines.lower_slope, lines.upper_slope, lines.upper_intercept


def _chain_nodes(graph: Graph) -> list[fx.Node] | None:
    """The bounded call nodes in order, when they form one chain of affine operators and ReLUs ending at the output."""
    if len(graph.explained_inputs) != 1 or len(graph.input_nodes) != 1:
        return None
    previous = graph.explained_inputs[0]
    nodes = []
    for node in graph.nodes:
        if node.op != "call_function" or not graph.info(node).depends_on_input:
            continue
        bounded = [a for a in node.all_input_nodes if graph.info(a).depends_on_input]
        op = graph.info(node).op
        if bounded != [previous] or not (op == RELU or isinstance(transfer_for(op), Affine)):
            return None
        if len([user for user in previous.users if user.op != "output"]) != 1:
            return None
        nodes.append(node)
        previous = node
    return nodes if nodes and previous is graph.output else None


def _entries(graph: Graph, start: fx.Node, segment: list[fx.Node]) -> int:
    """The entries of the affine segment's matrix: its input's elements times its output's."""
    return torch.Size(graph.info(start).shape).numel() * torch.Size(graph.info(segment[-1]).shape).numel()


def _affine_map(graph: Graph, constants: dict, segment: list[fx.Node], start: fx.Node) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of the affine segment after `start`: b its value at 0, W its Jacobian (by forward-mode AD over the
    narrower side, so a 60,100-wide layer costs one pass per column or row of W, never an identity matrix of its
    width), or probed at the basis vectors one at a time where an operator has no AD formula."""
    zero = torch.zeros(tuple(graph.info(start).shape), device=graph.device, dtype=torch.float64)

    def segment_at(value: torch.Tensor) -> torch.Tensor:
        return _evaluate(graph, constants, segment, start, value).reshape(-1)

    with torch.no_grad():
        bias = segment_at(zero)
    strategy = "forward-mode" if zero.numel() <= bias.numel() else "reverse-mode"
    try:
        weight = torch.autograd.functional.jacobian(segment_at, zero, vectorize=True, strategy=strategy)
    except (RuntimeError, NotImplementedError):
        with torch.no_grad():
            columns = [segment_at(zero.flatten().index_fill(0, torch.tensor([i], device=zero.device), 1.0)
                                  .reshape(zero.shape)) - bias for i in range(zero.numel())]
        return torch.stack(columns, 1), bias
    return weight.reshape(bias.numel(), zero.numel()).detach(), bias


def _constants(graph: Graph) -> dict[fx.Node, object]:
    """Values of the nodes that do not depend on the input (weights, and what is computed from them), floating
    tensors in float64 so that the matrices read off the graph are the network's weights exactly."""
    values: dict[fx.Node, object] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            constant = graph.constant(node)
            floating = isinstance(constant, torch.Tensor) and constant.is_floating_point()
            values[node] = constant.detach().to(torch.float64) if floating else constant
        elif node.op == "call_function" and not graph.info(node).depends_on_input:
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
            values[node] = node.target(*args, **kwargs)
    return values


def _evaluate(graph: Graph, constants: dict, segment: list[fx.Node], start: fx.Node, value: torch.Tensor) -> torch.Tensor:
    """The value at the segment's last node when `start` holds `value`."""
    values = {**constants, start: value}
    for node in segment:
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
        values[node] = node.target(*args, **kwargs)
    return values[segment[-1]].to(torch.float64)
