"""Forward-mode linear bounds: every node bounded by two linear functions of the bounded input, carried
forward from the input (auto_LiRPA's forward mode).

A node's bounds cost one pass per input dimension, independent of the node's size, where backward
CROWN needs one specification per neuron: for low-dimensional inputs (the cGAN generator's latent
vector) forward mode gives intermediate bounds far more cheaply, looser than backward CROWN's.
Coefficients are laid out as backward coefficients are, [inputs, batch, *shape] (one row per input
element, flat), so the same vmapped functions serve both directions. On a box whose inputs are mostly
fixed (lower == upper in every sample: dist_shift's 784 image pixels beside 8 free latents) the rows
stand for the free elements only and the fixed ones are folded into the biases, so the cost follows the
number of free inputs, not the input size.

Per operator family: an affine op with a nonnegative linear part maps lower to lower and upper to
upper; any other affine op maps the centre exactly and spreads the radius by its absolute linear part
(valid because the radius function is nonnegative over the input set); an elementwise nonlinearity
composes its relaxation lines with the side its slope's sign selects. Other operators return None and
the engine carries the node's interval as constant bounds.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from opwise.bounds.input_set import InputSet
from opwise.bounds.transfers.affine import Affine, SignedAffine
from opwise.bounds.transfers.nonlinear import Elementwise
from opwise.bounds.transfers.registry import Interval, Step
from opwise.errors import OpwiseError


@dataclasses.dataclass
class LinearBounds:
    """`lower_coefficient·x + lower_bias <= value <= upper_coefficient·x + upper_bias` for every x in the
    input set; coefficients [rows, batch, *shape], biases [batch, *shape]. A row is an input element:
    every one in order when `positions` is None, else only the flat input positions listed there (the
    free elements of a box; the others are fixed and live in the biases).

    >>> x = InputSet(torch.zeros(1, 2), torch.ones(1, 2))
    >>> LinearBounds.identity(x).concretize(x).upper.tolist()
    [[1.0, 1.0]]
    >>> fixed = InputSet(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 2.0]]))   # x1 = 2 is fixed
    >>> bounds = LinearBounds.identity(fixed)
    >>> bounds.positions.tolist(), bounds.concretize(fixed).lower.tolist()
    ([0], [[0.0, 2.0]])
    """

    lower_coefficient: torch.Tensor
    lower_bias: torch.Tensor
    upper_coefficient: torch.Tensor
    upper_bias: torch.Tensor
    positions: torch.Tensor | None = None

    @classmethod
    def identity(cls, input_set: InputSet) -> "LinearBounds":
        """The input itself: one coefficient row per input element (same for every sample), or, on a box
        where some elements are fixed in every sample, one row per free element and the fixed values as
        the bias (an Lp ball with p < ∞ keeps every row: its minimum is not the box's)."""
        lower = input_set.lower
        flat_lower, flat_upper = lower.reshape(lower.shape[0], -1), input_set.upper.reshape(lower.shape[0], -1)
        free = (flat_upper > flat_lower).any(dim=0)
        box = input_set.center is None or math.isinf(input_set.norm)
        positions = free.nonzero().flatten() if box and not bool(free.all()) else None
        count = lower[0].numel()
        eye = torch.eye(count, dtype=lower.dtype, device=lower.device)
        rows = eye if positions is None else eye[positions]
        coefficient = rows.reshape(rows.shape[0], 1, *lower.shape[1:]).expand(rows.shape[0], *lower.shape)
        bias = torch.zeros_like(lower) if positions is None else torch.where(free, 0.0, flat_lower).reshape(lower.shape)
        return cls(coefficient, bias, coefficient, bias, positions)

    @classmethod
    def constant(cls, interval: Interval, like: "LinearBounds") -> "LinearBounds":
        """An interval as (constant) linear bounds over `like`'s rows: what a node without a forward
        transfer carries on."""
        rows = like.lower_coefficient.shape[0]
        zeros = torch.zeros(rows, *interval.lower.shape, dtype=interval.lower.dtype, device=interval.lower.device)
        return cls(zeros, interval.lower, zeros, interval.upper, like.positions)

    def concretize(self, input_set: InputSet) -> Interval:
        """The interval these linear bounds imply over the input set (per element).

        A node whose first dimension is not the batch (attention folds the heads into it) is concretized
        as one flat row of the single sample; with several samples which elements belong to which is not
        known here, and that is an error rather than a guess.
        """
        shape = self.lower_bias.shape
        batch = input_set.lower.shape[0]
        if shape[0] != batch:
            if batch != 1:
                raise OpwiseError(
                    f"forward-mode bounds need the batch dimension first, but a node of shape {tuple(shape)} folds a "
                    f"batch of {batch} into its first dimension; use method='crown', or bound one sample at a time")
            rows = self.lower_coefficient.shape[0]
            flat = LinearBounds(self.lower_coefficient.reshape(rows, 1, -1), self.lower_bias.reshape(1, -1),
                                self.upper_coefficient.reshape(rows, 1, -1), self.upper_bias.reshape(1, -1), self.positions)
            interval = flat.concretize(input_set)
            return Interval(interval.lower.reshape(shape), interval.upper.reshape(shape))
        if self.positions is not None:
            return self._concretize_free(input_set)

        def minimum(coefficient: torch.Tensor) -> torch.Tensor:
            per_input = coefficient.reshape(coefficient.shape[0], shape[0], -1).permute(2, 1, 0)
            return input_set.minimum(per_input.reshape(per_input.shape[0], *input_set.lower.shape)).T.reshape(shape)

        return Interval(minimum(self.lower_coefficient) + self.lower_bias, -minimum(-self.upper_coefficient) + self.upper_bias)

    def _concretize_free(self, input_set: InputSet) -> Interval:
        """Box minimum over the free elements only: each row's coefficient meets its element's bounds."""
        batch = input_set.lower.shape[0]
        view = [len(self.positions), batch] + [1] * (self.lower_bias.dim() - 1)
        low = input_set.lower.reshape(batch, -1)[:, self.positions].T.reshape(view)
        high = input_set.upper.reshape(batch, -1)[:, self.positions].T.reshape(view)

        def minimum(coefficient: torch.Tensor) -> torch.Tensor:
            return (coefficient.clamp(min=0) * low + coefficient.clamp(max=0) * high).sum(0)

        return Interval(minimum(self.lower_coefficient) + self.lower_bias, -minimum(-self.upper_coefficient) + self.upper_bias)


def _linear_part(step: Step, like: torch.Tensor):
    """The op applied to a batch of coefficient rows [inputs, batch, ...], without its offset f(0)."""
    if "forward" not in step.cache:
        zeros = [torch.zeros(shape, dtype=like.dtype, device=like.device) for shape in step.shapes]
        step.cache["forward"] = (torch.func.vmap(step.function), step.function(*zeros).detach())
    vmapped, offset = step.cache["forward"]
    return lambda *rows: vmapped(*(r.contiguous() for r in rows)) - offset


def forward_affine(step: Step, transfer: Affine, inputs: list[LinearBounds]) -> LinearBounds:
    """Monotone affine ops map each side on its own; signed ones go through centre and radius."""
    linear = _linear_part(step, inputs[0].lower_bias)
    if not isinstance(transfer, SignedAffine):
        return LinearBounds(linear(*(i.lower_coefficient for i in inputs)), step.function(*(i.lower_bias for i in inputs)),
                            linear(*(i.upper_coefficient for i in inputs)), step.function(*(i.upper_bias for i in inputs)),
                            inputs[0].positions)
    center_coefficient = linear(*((i.lower_coefficient + i.upper_coefficient) / 2 for i in inputs))
    center_bias = step.function(*((i.lower_bias + i.upper_bias) / 2 for i in inputs))
    radius_rows = [((i.upper_coefficient - i.lower_coefficient) / 2).contiguous() for i in inputs]
    radius_coefficient = torch.func.vmap(lambda *rows: transfer.radius(step, list(rows)))(*radius_rows)
    radius_bias = transfer.radius(step, [(i.upper_bias - i.lower_bias) / 2 for i in inputs])
    return LinearBounds(center_coefficient - radius_coefficient, center_bias - radius_bias,
                        center_coefficient + radius_coefficient, center_bias + radius_bias, inputs[0].positions)


def forward_elementwise(step: Step, inputs: list[LinearBounds]) -> LinearBounds:
    """Relaxation lines composed with the input's bounds: a line with a nonnegative slope takes the same
    side, a negative slope the other."""
    (z,) = inputs
    x = step.bounds(step.inputs[0])
    lines = step.relaxation.relax(x.lower, x.upper)

    def compose(slope, intercept, same_coefficient, same_bias, other_coefficient, other_bias):
        nonnegative = slope >= 0
        coefficient = slope * torch.where(nonnegative, same_coefficient, other_coefficient)
        return coefficient, slope * torch.where(nonnegative, same_bias, other_bias) + intercept

    lower = compose(lines.lower_slope, lines.lower_intercept, z.lower_coefficient, z.lower_bias, z.upper_coefficient, z.upper_bias)
    upper = compose(lines.upper_slope, lines.upper_intercept, z.upper_coefficient, z.upper_bias, z.lower_coefficient, z.lower_bias)
    return LinearBounds(*lower, *upper, z.positions)


def forward_bounds_supported(transfer, step: Step) -> bool:
    """Whether `forward_bounds` has a transfer for this node (without computing it)."""
    return (isinstance(transfer, Elementwise) or hasattr(transfer, "forward")
            or (isinstance(transfer, Affine) and not transfer.needs_bounds(step)))


def forward_bounds(step: Step, transfer, inputs: list[LinearBounds]) -> LinearBounds | None:
    """The node's linear bounds from its bounded inputs' (None: no forward transfer for this operator).

    >>> import opwise, torch
    >>> from opwise.bounds.engine import BoundPropagation
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    >>> graph = opwise.trace(model, torch.zeros(1, 2))
    >>> engine = BoundPropagation(graph, InputSet.ball(torch.zeros(1, 2), 0.1), intermediate="forward")
    >>> bounds = engine.interval(graph.output)
    >>> bool((bounds.lower <= model(torch.zeros(1, 2))).all())
    True
    """
    if isinstance(transfer, Elementwise):
        return forward_elementwise(step, inputs)
    if hasattr(transfer, "forward"):  # a transfer with its own forward mode (scatter.py's writes)
        return transfer.forward(step, inputs)
    if isinstance(transfer, Affine) and not transfer.needs_bounds(step):
        return forward_affine(step, transfer, inputs)
    return None
