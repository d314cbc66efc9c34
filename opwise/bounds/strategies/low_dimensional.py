"""Bounds for inputs with few free elements, batched over many boxes: what input splitting needs.

With a handful of free inputs (the cGAN's 4 latents, dist_shift's 8 of 792), forward-mode linear bounds
carry only [free × neurons] coefficients (fixed inputs are folded into constants, see
`transfers/forward.py`), so every intermediate bound of a wide node costs about one forward pass per free
input. Backward CROWN, which needs one specification per neuron, is kept for narrow nodes (at most
`crown_limit` elements per sample: the small classifier layers and the scalar before an output sigmoid),
where it is cheap and tighter, and for the specification rows themselves. On the cGAN this takes a
fraction of a second per box (one full CROWN pass: ~20 s) and is tight through the generator, but its
intervals grow about 4× per discriminator layer; the orchestrator (`verify_specification`) therefore tries one α-CROWN pass over the
whole box before splitting.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import fx

from opwise.bounds.engine import CROWN_LIMIT, BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.strategies.input_split import LinearLowerBounds
from opwise.tracing.graph import Graph

if TYPE_CHECKING:
    from opwise.bounds.bounded_model import BoundedModel

#: largest batch a bound pass of a search is padded to (graphs are specialized per power of two up to it)
MAX_BATCH = 1024


def free_input_bounds(graph: Graph, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor,
                      crown_limit: int = CROWN_LIMIT) -> LinearLowerBounds:
    """Lower bounds of C·f(x) over each box, [B, rows], with the linear lower bounds they come from: input
    coefficients [B, rows, inputs] and bias [B, rows] (for coefficient branching and domain clipping).
    `graph` is specialised to the batch size B.

    A NaN bound (a relaxation met a degenerate interval) is returned as -inf: never a number it is not.

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    >>> graph = opwise.trace(model, torch.zeros(2, 3))
    >>> lower = torch.tensor([[0.0, 1.0, -1.0], [0.5, 1.0, -1.0]])           # x1 and x2 fixed
    >>> upper = torch.tensor([[0.5, 1.0, -1.0], [1.0, 1.0, -1.0]])
    >>> bounds, coefficients, bias, *_ = free_input_bounds(graph, lower, upper, torch.eye(2))
    >>> points = torch.stack([lower + (upper - lower) * t for t in torch.linspace(0, 1, 50)])
    >>> bool((bounds[None] <= model(points.reshape(-1, 3)).reshape(50, 2, 2)).all()), tuple(coefficients.shape)
    (True, (2, 2, 3))
    """
    batch = x_lower.shape[0]
    engine = BoundPropagation(graph, InputSet(x_lower, x_upper), "mixed", crown_limit=crown_limit)
    output = graph.output
    shape = graph.info(output).shape
    A = C[:, None, :].expand(C.shape[0], batch, C.shape[1]).reshape(C.shape[0], *shape)
    result = engine.bound(output, A)
    lower = result.lower.T
    coefficient, bias = result.linear
    coefficient = coefficient.reshape(C.shape[0], batch, -1).transpose(0, 1)
    return LinearLowerBounds(torch.nan_to_num(lower, nan=-math.inf), coefficient, bias.reshape(C.shape[0], batch).T)


def fold_fixed_inputs(graph: Graph, fixed: torch.Tensor, values: torch.Tensor) -> Graph | None:
    """The graph as a function of its free inputs only: each affine layer that reads the input directly gets
    the columns of the free inputs as its weight and the fixed inputs' contribution in its bias.

    `fixed` [inputs] marks inputs held at `values` [inputs] (the same in every box); None when the graph has
    other than one input, or it is not a matrix [batch, inputs] read only by `aten.linear` with constant
    weights (nothing is folded then).
    Bound passes over the folded graph carry coefficients for the free inputs alone: on dist_shift (8 free
    of 792) that removes the widest matrices of every backward pass.

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    >>> graph = opwise.trace(model, torch.zeros(2, 4))
    >>> fixed, values = torch.tensor([False, True, True, False]), torch.tensor([0.0, 0.5, -1.0, 0.0])
    >>> folded = fold_fixed_inputs(graph, fixed, values)
    >>> z = torch.randn(2, 2)
    >>> x = torch.stack([z[:, 0], torch.full((2,), 0.5), torch.full((2,), -1.0), z[:, 1]], dim=1)
    >>> torch.allclose(folded(z), model(x))
    True
    """
    inputs = graph.explained_inputs
    if len(inputs) != 1 or len(graph.input_nodes) != 1:
        return None
    placeholder, info = inputs[0], graph.info(inputs[0])
    if info.shape is None or len(info.shape) != 2 or not len(placeholder.users):
        return None
    if any(user.target is not torch.ops.aten.linear.default or user.args[0] is not placeholder
           or any(isinstance(a, fx.Node) and a.op != "get_attr" for a in user.args[1:]) for user in placeholder.users):
        return None
    free = ~fixed

    def fold(module: fx.GraphModule) -> bool:
        new_placeholder = next(n for n in module.graph.nodes if n.op == "placeholder")
        for index, user in enumerate(list(new_placeholder.users)):
            weight = graph.constant(user.args[1])
            bias = graph.constant(user.args[2]) if len(user.args) > 2 and user.args[2] is not None else 0
            names = (f"_folded_weight_{index}", f"_folded_bias_{index}")
            module.register_buffer(names[0], weight[:, free].contiguous())
            module.register_buffer(names[1], bias + weight[:, fixed] @ values[fixed].to(weight.dtype))
            with module.graph.inserting_before(user):
                attributes = [module.graph.get_attr(name) for name in names]
            user.args = (new_placeholder, *attributes)
        batch = new_placeholder.meta["val"].shape[0]
        new_placeholder.meta["val"] = torch.empty((batch, int(free.sum())), dtype=info.dtype, device="meta")
        return True

    return graph.rewrite(fold)


class LowDimensionalBounds:
    """`LinearLowerBounds` of C·f(x) per box: forward-mode intermediate bounds over the free inputs, CROWN on
    narrow nodes and the rows (`free_input_bounds`), the bound function of input splitting. Inputs fixed
    alike in every box are folded into the first affine layers (`fold_fixed_inputs`, kept while the fixed
    values stay the same) where the network reads its input with them, so no pass carries their coefficients."""

    def __init__(self, bounded: BoundedModel):
        self.bounded = bounded
        self._folded: tuple[tuple | None, object] = (None, None)

    def positions(self, count: int) -> int:
        """How many boxes a call with `count` boxes bounds, padding included (`Graph.positions_for`): input
        splitting fills them with domains."""
        folded = self._folded[1]
        return (folded if folded is not None else self.bounded.graph).positions_for(count, MAX_BATCH)

    def __call__(self, x_lower: torch.Tensor, x_upper: torch.Tensor, C: torch.Tensor) -> LinearLowerBounds:
        device = self.bounded.device
        x_lower, x_upper, C = x_lower.to(device), x_upper.to(device), C.to(device)
        graph = self.bounded.graph
        flat_lower, flat_upper = x_lower.reshape(len(x_lower), -1), x_upper.reshape(len(x_upper), -1)
        fixed = ((flat_lower == flat_upper) & (flat_lower == flat_lower[:1])).all(dim=0)
        def unfolded(g, lo, up):
            self.bounded.check_samples_independent(g)
            return free_input_bounds(g, lo, up, C)

        if not fixed.any() or fixed.all():
            return graph.map_batches(unfolded, x_lower, x_upper, max_batch=MAX_BATCH)
        values, free = flat_lower[0], ~fixed
        key = (fixed.cpu().numpy().tobytes(), values[fixed].cpu().numpy().tobytes())
        if self._folded[0] != key:
            self._folded = (key, fold_fixed_inputs(graph, fixed, values))
        folded = self._folded[1]
        if folded is None:
            return graph.map_batches(unfolded, x_lower, x_upper, max_batch=MAX_BATCH)

        def run(g, lo, up):
            self.bounded.check_samples_independent(g)
            bounds, reduced, bias, *_ = free_input_bounds(g, lo, up, C)
            coefficients = reduced.new_zeros(*reduced.shape[:2], len(free))
            coefficients[..., free] = reduced
            return LinearLowerBounds(bounds, coefficients, bias)

        return folded.map_batches(run, flat_lower[:, free], flat_upper[:, free], max_batch=MAX_BATCH)
