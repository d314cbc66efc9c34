"""Intermediate bounds through a cut: a node every input-dependent path into the bounded node passes through.

A refinement with many more one-hot specs than the cut has positions (softmax's score differences are n times
the scores they come from) carries each spec back only to the cut and meets the cut's own linear bounds there,
or carries those bounds forward to the node; the cut's 2·n specs go back through the rest of the graph once.
`CutPasses` is a part of `BoundPropagation` (engine/propagation.py) and works on its state.
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.bounds.engine.deadline import check_deadline
from opwise.bounds.engine.sizes import SPEC_CHUNK
from opwise.bounds.transfers.forward import LinearBounds, forward_bounds, forward_bounds_supported
from opwise.bounds.transfers.patches import Patches, dense

#: an intermediate bound with at least this many positions per group to refine may go through a cut (`cut_for`)
CUT_MIN_POSITIONS = 2048
#: ... when the cut has at most this fraction of those positions
CUT_RATIO = 8
#: ... and its linear bounds (two dense input coefficients per cut position) take at most this many bytes
CUT_MEMORY = 2 ** 28


class CutPasses:
    """The cut part of `BoundPropagation`: finding a cut, the cut's linear bounds, and passes through it."""

    def cut_for(self, node: fx.Node, positions: int, groups: int) -> fx.Node | None:
        """A node every input-dependent path into `node` passes through (a cut), nearest to `node`, with at most
        1/`CUT_RATIO` of the `positions` (per group) a refinement of `node` bounds, when there are at least
        `CUT_MIN_POSITIONS` of them; else None.

        Through a cut, each spec of the refinement is carried back only as far as the cut, and meets the cut's
        own linear bounds there (`backward_through`): the cut's 2·n specs go back through the rest of the graph
        once, instead of every one of the node's specs. Softmax's score differences x_j − x_i (expand.py) are
        n times as many as the scores x they all come from: on vit_2023's ibp_3_3_8 the differences took 14,739
        specs per layer, 200 of the 250 s of a CROWN pass.

        A cut that is an affine function of the input (no relaxed node at or before it: a slice of the input) saves
        no relaxation's work, and meeting its lines densely costs what the windows of a pass to the input save: on
        carvana_unet's 160,709 conv neurons, a cut at the input's slice took 113 s of a pass that times out.
        """
        if positions < CUT_MIN_POSITIONS:
            return None
        open_nodes = {node}
        for candidate in reversed(self.ancestors(node)):
            if candidate is self.input_node:
                return None
            if candidate is not node and len(open_nodes) == 1 and self._relaxed_up_to(candidate):
                interval = self.interval_ibp(candidate)
                size = interval.lower.numel() // groups
                footprint = 2 * size * self.input_set.lower.numel() * interval.lower.element_size()
                if (self.groups(candidate, interval) == groups and size * CUT_RATIO <= positions
                        and footprint <= CUT_MEMORY):
                    return candidate
            open_nodes.discard(candidate)
            open_nodes.update(self.step(candidate).inputs)
        return None

    def _relaxed_up_to(self, cut: fx.Node) -> bool:
        """Whether a node at or before `cut` has a relaxation (else the cut is an affine function of the input)."""
        return any(n is not self.input_node and self.step(n).relaxation is not None for n in self.ancestors(cut))

    def cut_lines(self, cut: fx.Node, groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """CROWN's linear bounds of every position of `cut` in terms of the input, cached: lower coefficients
        [n, batch, *input shape], lower biases [n, groups], upper coefficients, upper biases (n positions per
        group): `lower · x + lower bias <= cut <= upper · x + upper bias` over the input set."""
        if cut not in self._cut_lines:
            interval = self.interval_ibp(cut)
            size = interval.lower.numel() // groups
            parts = []
            for chunk in torch.arange(size, device=self.device).split(SPEC_CHUNK // 2):
                check_deadline()
                count = chunk.numel()
                A = torch.zeros(2 * count, groups, size, dtype=interval.lower.dtype, device=self.device)
                rows = torch.arange(count, device=self.device)
                A[rows, :, chunk] = 1.0
                A[rows + count, :, chunk] = -1.0
                result = self.bound(cut, A.reshape(2 * count, *interval.lower.shape), groups, record=False)
                coefficient = dense(result.input_coefficient).detach()
                parts.append((coefficient[:count], result.bias[:count].detach(),
                              -coefficient[count:], -result.bias[count:].detach()))
            self._cut_lines[cut] = tuple(torch.cat(part) for part in zip(*parts))
        return self._cut_lines[cut]

    def forward_from_cut(self, node: fx.Node, cut: fx.Node, groups: int) -> LinearBounds | None:
        """Linear bounds of `node` carried forward (transfers/forward.py) from the cut's own (`cut_lines`) through the
        nodes between; None where one of them has no forward transfer, or where the bounds would not fit in
        `CUT_MEMORY` per tensor. The one-hot specs of a refinement are as many as the node's positions, and carried
        back densely: [positions × positions] per pass; forward, the coefficients are [inputs × positions]."""
        batch = self.batch
        cut_interval = self.interval_ibp(cut)
        if groups != batch and batch != 1:
            return None
        inputs = self.input_set.lower[0].numel()
        between = [n for n in self.ancestors(node) if self._order[n] > self._order[cut]]
        element = cut_interval.lower.element_size()
        if any(inputs * self.interval_ibp(n).lower.numel() * element > CUT_MEMORY for n in between):
            return None
        if batch != 1 and any(self.interval_ibp(n).lower.shape[0] != batch for n in between):
            return None  # a node that folds the batch away: forward bounds keep it first
        for n in between:
            self.step(n)
            if not forward_bounds_supported(self._transfers[n], self._steps[n]):
                return None
        lower, lower_bias, upper, upper_bias = self.cut_lines(cut, groups)
        shape = cut_interval.lower.shape
        size = lower.shape[0]

        def rows(coefficient: torch.Tensor) -> torch.Tensor:  # [n, batch, *input] -> [inputs, *cut shape]
            return coefficient.reshape(size, groups, inputs).permute(2, 1, 0).reshape(inputs, *shape)

        linear = {cut: LinearBounds(rows(lower), lower_bias.T.reshape(shape), rows(upper), upper_bias.T.reshape(shape))}
        for n in between:
            check_deadline()
            step = self.step(n)
            bounds = forward_bounds(step, self._transfers[n], [linear[i] for i in step.inputs])
            if bounds is None:
                return None
            linear[n] = bounds
        return linear[node]

    def backward_through(self, target: fx.Node, A: torch.Tensor | Patches, groups: int, cut: fx.Node) -> torch.Tensor:
        """Lower bound of `A · target` ([specs, groups]), carried back to the cut (`cut_for`) and met there with
        the cut's linear bounds (`cut_lines`): positive coefficients take the lower bounds, negative ones the
        upper. Sound wherever the cut's bounds are; no tighter than `backward`, which picks every relaxation's
        line by the sign of the whole spec's coefficient rather than of each cut position's."""
        coefficient, bias, _ = self._walk(target, A, groups, stop=cut)
        if coefficient is None:  # nothing reached the cut (constant lines on every path)
            return bias
        lower, lower_bias, upper, upper_bias = self.cut_lines(cut, groups)
        coefficient = dense(coefficient)  # a convolution's patches, where the walk stopped right after one
        specs, size = coefficient.shape[0], lower.shape[0]
        flat = coefficient.reshape(specs, groups, size)
        positive, negative = flat.clamp(min=0), flat.clamp(max=0)
        bias = bias + (positive * lower_bias.T).sum(-1) + (negative * upper_bias.T).sum(-1)
        input_shape = lower.shape[1:]
        if groups == 1:  # a spec spans the batch: one product with every sample's coefficients
            combined = (_product(positive[:, 0], lower.reshape(size, -1))
                        + _product(negative[:, 0], upper.reshape(size, -1))).reshape(specs, *input_shape)
        else:
            lower, upper = lower.reshape(size, groups, -1), upper.reshape(size, groups, -1)
            combined = (torch.einsum("sgp,pgi->sgi", positive, lower)
                        + torch.einsum("sgp,pgi->sgi", negative, upper)).reshape(specs, *input_shape)
        return self.input_set.minimum(combined, groups) + bias


def _product(coefficients: torch.Tensor, lines: torch.Tensor) -> torch.Tensor:
    """coefficients [specs, n] @ lines [n, m]; as a sparse product where few coefficients are nonzero (a score
    difference has two).

    >>> _product(torch.tensor([[0.0, 2.0, 0.0]]), torch.ones(3, 2))
    tensor([[2., 2.]])
    """
    if coefficients.numel() and (coefficients != 0).sum() * 20 < coefficients.numel():
        return torch.sparse.mm(coefficients.to_sparse(), lines)
    return coefficients @ lines
