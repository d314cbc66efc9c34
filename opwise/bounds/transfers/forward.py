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
from opwise.bounds.transfers.affine import AddSubtract, Affine, SignedAffine
from opwise.bounds.transfers.nonlinear import Elementwise
from opwise.bounds.transfers.registry import Interval, Step
from opwise.errors import OpwiseError


@dataclasses.dataclass
class LinearBounds:
    """`lower_coefficient·x + lower_bias <= value <= upper_coefficient·x + upper_bias` for every x in the
    input set; coefficients [rows, batch, *shape], biases [batch, *shape]. A row is an input element:
    every one in order when `positions` is None, else row j of sample b stands for the flat input position
    `positions[b, j]` ([batch, rows]: each sample's free elements of a box, padded with -1 where a sample has
    fewer, whose coefficients are zero; the fixed elements live in the biases).

    >>> x = InputSet(torch.zeros(1, 2), torch.ones(1, 2))
    >>> LinearBounds.identity(x).concretize(x).upper.tolist()
    [[1.0, 1.0]]
    >>> fixed = InputSet(torch.tensor([[0.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    >>> bounds = LinearBounds.identity(fixed)      # x1 = 2 fixed in sample 0, x0 = 0 in sample 1
    >>> bounds.positions.tolist(), bounds.concretize(fixed).upper.tolist()
    ([[0], [1]], [[1.0, 2.0], [0.0, 1.0]])
    """

    lower_coefficient: torch.Tensor
    lower_bias: torch.Tensor
    upper_coefficient: torch.Tensor
    upper_bias: torch.Tensor
    positions: torch.Tensor | None = None

    @classmethod
    def identity(cls, input_set: InputSet) -> "LinearBounds":
        """The input itself: one coefficient row per input element, or, on a box where some elements are
        fixed, one row per free element of each sample (as many rows as the sample with the most: a batch of
        boxes that each free a different patch costs one patch's rows, not their union's) and the fixed
        values as the bias. An Lp ball with p < ∞ keeps every row: its minimum is not the box's."""
        lower = input_set.lower
        batch, count = lower.shape[0], lower[0].numel()
        flat_lower, flat_upper = lower.reshape(batch, -1), input_set.upper.reshape(batch, -1)
        free = flat_upper > flat_lower
        box = input_set.center is None or math.isinf(input_set.norm)
        rows = int(free.sum(1).max()) if batch else 0
        if not box or rows == count:
            eye = torch.eye(count, dtype=lower.dtype, device=lower.device)
            coefficient = eye.reshape(count, 1, *lower.shape[1:]).expand(count, *lower.shape)
            bias = torch.zeros_like(lower)  # one tensor for both sides: `exact`
            return cls(coefficient, bias, coefficient, bias)
        # per sample, its free positions first (in order), the others after them, cut at `rows`
        order = torch.argsort((~free).to(torch.int8), dim=1, stable=True)[:, :rows]
        valid = torch.arange(rows, device=lower.device)[None, :] < free.sum(1, keepdim=True)
        positions = torch.where(valid, order, -1)
        one_hot = torch.zeros(rows, batch, count, dtype=lower.dtype, device=lower.device)
        one_hot.scatter_(2, order.T.unsqueeze(2), valid.T.unsqueeze(2).to(lower.dtype))
        coefficient = one_hot.reshape(rows, *lower.shape)
        bias = torch.where(free, 0.0, flat_lower).reshape(lower.shape)
        return cls(coefficient, bias, coefficient, bias, positions)

    @property
    def exact(self) -> bool:
        """Whether both sides are one linear function (the input, or affine maps of it only)."""
        return self.lower_coefficient is self.upper_coefficient and self.lower_bias is self.upper_bias

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
        """Box minimum over the free elements only: each row's coefficient meets its element's bounds (padding
        rows, position -1, have zero coefficients: any bound serves them)."""
        batch = input_set.lower.shape[0]
        view = [self.positions.shape[1], batch] + [1] * (self.lower_bias.dim() - 1)
        index = self.positions.clamp(min=0)
        low = input_set.lower.reshape(batch, -1).gather(1, index).T.reshape(view)
        high = input_set.upper.reshape(batch, -1).gather(1, index).T.reshape(view)

        def minimum(coefficient: torch.Tensor) -> torch.Tensor:
            return (coefficient.clamp(min=0) * low + coefficient.clamp(max=0) * high).sum(0)

        return Interval(minimum(self.lower_coefficient) + self.lower_bias, -minimum(-self.upper_coefficient) + self.upper_bias)


def _linear_part(step: Step, like: torch.Tensor):
    """The op applied to a batch of coefficient rows [inputs, batch, ...], without its offset f(0)."""
    if "forward" not in step.cache:
        zeros = [torch.zeros(shape, dtype=like.dtype, device=like.device) for shape in step.shapes]
        step.cache["forward"] = (torch.func.vmap(step.function), step.function(*zeros).detach())
    vmapped, offset = step.cache["forward"]
    return _over_rows(lambda *rows: vmapped(*rows) - offset, offset)


def _over_rows(function, like: torch.Tensor):
    """`function` vmapped over coefficient rows, and zero rows (a box with no free input) kept as zero rows:
    vmap cannot map over an empty dimension."""
    def mapped(*rows: torch.Tensor) -> torch.Tensor:
        if rows[0].shape[0] == 0:
            return like.new_zeros(0, *like.shape)
        return function(*(r.contiguous() for r in rows))
    return mapped


def forward_affine(step: Step, transfer: Affine, inputs: list[LinearBounds]) -> LinearBounds:
    """Monotone affine ops map each side on its own; signed ones go through centre and radius."""
    linear = _linear_part(step, inputs[0].lower_bias)
    if all(i.exact for i in inputs):  # a function of the input itself (a first layer): one side serves both
        coefficient = linear(*(i.lower_coefficient for i in inputs))
        bias = step.function(*(i.lower_bias for i in inputs))
        return LinearBounds(coefficient, bias, coefficient, bias, inputs[0].positions)
    if isinstance(transfer, AddSubtract):  # each operand's side by the sign of its factor, as IBP takes them
        signs = transfer.signs(step)
        low = [(i.lower_coefficient, i.lower_bias) if s >= 0 else (i.upper_coefficient, i.upper_bias) for s, i in zip(signs, inputs)]
        high = [(i.upper_coefficient, i.upper_bias) if s >= 0 else (i.lower_coefficient, i.lower_bias) for s, i in zip(signs, inputs)]
        return LinearBounds(linear(*(c for c, _ in low)), step.function(*(b for _, b in low)),
                            linear(*(c for c, _ in high)), step.function(*(b for _, b in high)), inputs[0].positions)
    if not isinstance(transfer, SignedAffine):
        return LinearBounds(linear(*(i.lower_coefficient for i in inputs)), step.function(*(i.lower_bias for i in inputs)),
                            linear(*(i.upper_coefficient for i in inputs)), step.function(*(i.upper_bias for i in inputs)),
                            inputs[0].positions)
    center_coefficient = linear(*((i.lower_coefficient + i.upper_coefficient) / 2 for i in inputs))
    center_bias = step.function(*((i.lower_bias + i.upper_bias) / 2 for i in inputs))
    radius_rows = [((i.upper_coefficient - i.lower_coefficient) / 2).contiguous() for i in inputs]
    radius_bias = transfer.radius(step, [(i.upper_bias - i.lower_bias) / 2 for i in inputs])
    radius_coefficient = _over_rows(torch.func.vmap(lambda *rows: transfer.radius(step, list(rows))), radius_bias)(*radius_rows)
    return LinearBounds(center_coefficient - radius_coefficient, center_bias - radius_bias,
                        center_coefficient + radius_coefficient, center_bias + radius_bias, inputs[0].positions)


def forward_elementwise(step: Step, inputs: list[LinearBounds]) -> LinearBounds:
    """Relaxation lines composed with the input's bounds: a line with a nonnegative slope takes the same
    side, a negative slope the other."""
    (z,) = inputs
    x = step.bounds(step.inputs[0])
    lines = step.relaxation.relax(x.lower, x.upper)
    if all(bool((part == value).all()) for part, value in zip(
            (lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept), (1, 0, 1, 0))):
        return z  # the identity on this interval (a clamp that never bites): the bounds as they are

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
    if not forward_bounds_supported(transfer, step):
        return None
    if isinstance(transfer, Elementwise):
        return forward_elementwise(step, inputs)
    if hasattr(transfer, "forward"):  # a transfer with its own forward mode (scatter.py's writes)
        return transfer.forward(step, inputs)
    return forward_affine(step, transfer, inputs)
