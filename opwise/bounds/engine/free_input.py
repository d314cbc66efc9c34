"""Passes over boxes that free few input elements, the others fixed (one patch of an image).

Such a pass need not carry coefficients over the whole input back through the first layers: it ends where it
reaches a node that is an affine function of the input, on that node's exact forward coefficients over the free
elements (`_free_prefix`), and before a layer that mixes the whole map it carries only a window around the free
elements (`_free_windows`), the fixed elements' share going into the bias exactly. `FreeInputPasses` is a part
of `BoundPropagation` (engine/propagation.py) and works on its state.
"""

from __future__ import annotations

import math

import torch
from torch import fx

from opwise.bounds.engine.result import LinearBound
from opwise.bounds.transfers.affine import Affine
from opwise.bounds.transfers.forward import LinearBounds, forward_bounds
from opwise.bounds.transfers.nonlinear import ELEMENTWISE
from opwise.bounds.transfers.patches import FreeCoefficients, Patches, free_windows

#: a box with at most this many free elements per sample, the others fixed (one patch of an image, the latent
#: part of an input whose image part is given), ends its backward passes where they reach a node that is an
#: affine function of the input, on that node's coefficients over the free elements (`_free_prefix`)
FREE_INPUT_LIMIT = 64


class FreeInputPasses:
    """The free-input part of `BoundPropagation`: the affine prefix, windows over the free elements, the result."""

    def _free_prefix(self) -> dict[fx.Node, LinearBounds | None]:
        """The exact forward bounds of nodes that are affine functions of the input, by node (found as passes
        reach them; None: not such a node), when the input set is a box whose samples free at most
        `FREE_INPUT_LIMIT` of many more elements; else empty. A backward pass stops at the first such node it
        reaches: its coefficients then meet the node's forward coefficients over the free elements (rows per
        sample, not per input element), and the fixed elements' share goes into the bias. The result is the
        same bound, without carrying coefficients over the whole input back through the first layers."""
        if self._prefix is None:
            self._prefix = {}
            # the free elements counted first: the identity of a whole box is an [n × n] matrix
            rows, count = self._free_elements()
            if self.input_set.is_box and 0 < rows <= FREE_INPUT_LIMIT and 4 * rows <= count:
                self._prefix[self.input_node] = LinearBounds.identity(self.input_set)
        return self._prefix

    def _free_elements(self) -> tuple[int, int]:
        """(the most free elements of any sample of the input set, the elements per sample)."""
        lower, upper = self.input_set.lower, self.input_set.upper
        count = math.prod(lower.shape[1:])
        return (int((upper > lower).reshape(self.batch, -1).sum(1).max()) if self.batch and count else 0), count

    def few_free_forward(self, node: fx.Node) -> LinearBounds | None:
        """The node's forward-mode bounds where they cost little, else None: over a box whose samples free at most
        `FREE_INPUT_LIMIT` elements (one coefficient row each), for a node that keeps the batch first and is not
        elementwise. At an elementwise node y = f(x) a pass bounds only the positions of x that no pass bounded, and
        forward mode leaves them to it as well (ReLU outputs before max pooling on the built-in digits CNN: 5.9 ms of
        forward mode per CROWN pass, then every position was refined all the same).

        A CROWN interval refines only the neurons whose interval some relaxation needs (a ReLU's: those it leaves
        unstable), and IBP over a deep network leaves nearly all of them so. Forward mode over a few inputs, with
        each ReLU's lines drawn from its CROWN-refined input, decides most: on cifar_biasfield's 16 inputs (seven
        convolutions) a CROWN pass refined a quarter as many neurons of the first layers, and took 20 s instead of
        49 s with the same bound; and a node that is an affine function of the input (the first convolution)
        is bounded exactly by it, with no pass at all."""
        rows, _ = self._free_elements()
        if not self.input_set.is_box or not 0 < rows <= FREE_INPUT_LIMIT or \
                self.transfer(node) is ELEMENTWISE or \
                tuple(self.graph.info(node).shape[:1]) != (self.batch,) or not self._real_valued(node):
            return None
        return self.forward_linear(node)

    def _real_valued(self, node: fx.Node) -> bool:
        """Whether the node and every bounded node before it hold floating-point values: forward mode carries
        real coefficients, which a comparison's truth value or an index cannot take (cached per node)."""
        if node not in self._real:
            for each in self.ancestors(node):  # in order: every parent's answer comes first
                if each not in self._real:
                    dtype = self.graph.info(each).dtype
                    self._real[each] = (dtype is None or dtype.is_floating_point) and (
                        each is self.input_node or all(self._real[parent] for parent in self.step(each).inputs))
        return self._real[node]

    def _frees_little(self) -> bool:
        """Whether the input set is a box whose samples free at most a quarter of their elements, the others fixed
        (a patch of an image): then the nodes before a layer that mixes the whole map are points outside a window
        around the patch, and backward passes carry only that window (`_free_windows`)."""
        if self._few_free is None:
            rows, count = self._free_elements()
            self._few_free = self.input_set.is_box and 4 * rows <= count
        return self._few_free

    def _free_windows(self, node: fx.Node, coefficient: torch.Tensor) -> tuple[torch.Tensor | Patches, torch.Tensor]:
        """The coefficients of a [batch, C, H, W] node as windows over each sample's free elements, and the fixed
        elements' share (exact: their interval is a point) for the bias; unchanged (share 0) where the free
        elements spread too wide (`free_windows`)."""
        interval = self._tight.get(node)
        interval = self._ibp.get(node) if interval is None else interval
        found = None if interval is None else free_windows(coefficient, interval.lower, interval.upper)
        if found is None:
            return coefficient, coefficient.new_zeros(coefficient.shape[0], self.batch)
        return found

    def _exact_forward(self, node: fx.Node) -> LinearBounds | None:
        """The node's exact forward bounds if it is an affine function of the input (`_free_prefix`), else None."""
        if node not in self._prefix:
            step = self.step(node)
            transfer = self._transfers[node]
            exact = None
            # the node itself first: a node after a nonlinear one never needs its inputs' forward bounds
            if (isinstance(transfer, Affine) and step.relaxation is None and not transfer.needs_bounds(step)
                    and step.inputs and self.graph.info(node).shape[:1] == (self.batch,)):
                inputs = [self._exact_forward(i) for i in step.inputs]
                if all(i is not None for i in inputs):
                    exact = forward_bounds(step, transfer, inputs)
            self._prefix[node] = exact if exact is not None and exact.exact else None
        return self._prefix[node]

    def _free_bound(self, free: torch.Tensor | None, bias: torch.Tensor, recorded: dict) -> LinearBound:
        """A pass's result from its coefficients on each sample's free input elements `free` [specs, groups,
        rows]: their minimum over the box, and the input coefficients they are (zero on fixed elements)."""
        identity = self._prefix[self.input_node]
        batch = self.batch
        flat_lower, flat_upper = self.input_set.lower.reshape(batch, -1), self.input_set.upper.reshape(batch, -1)
        shape = tuple(self.input_set.lower.shape)
        if free is None:  # the bound does not depend on the input
            nothing = bias.new_zeros(bias.shape[0], batch, 0)
            positions = torch.zeros(batch, 0, dtype=torch.long, device=bias.device)
            return LinearBound(bias, FreeCoefficients(nothing, positions, shape), bias, recorded)
        index = identity.positions.clamp(min=0)
        valid = (identity.positions >= 0).to(free.dtype)
        free = free * valid
        low, high = flat_lower.gather(1, index), flat_upper.gather(1, index)
        lower = (free.clamp(min=0) * low + free.clamp(max=0) * high).sum(-1) + bias
        return LinearBound(lower, FreeCoefficients(free, identity.positions, shape), bias, recorded)
