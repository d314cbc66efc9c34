"""Backward steps that skip a run of nodes: a matrix product of two bounded tensors (as expand.py writes it: a sum
over a product of broadcast factors) and softmax's denominator (a sum of mask · exp(clamp(x_j − x_i)))
go back in one step each to the tensors they start from, with the bound of the node-by-node walk but without its
[specs × full grid] tensors. `FusedSteps` is a part of `BoundPropagation` (engine/propagation.py) and works on
its state; `_walk` asks it first at every node and walks node by node where it answers None.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import fx

from opwise.bounds.relaxations.bilinear import relax_bilinear
from opwise.bounds.relaxations.sparse_alpha import SparseAlpha
from opwise.bounds.transfers.contraction import Contraction, contraction_backward
from opwise.bounds.transfers.exp_sum import ExpSum, compose_lines, exp_sum_backward, grid_coefficients
from opwise.bounds.transfers.patches import Patches
from opwise.bounds.transfers.registry import Interval


class FusedSteps:
    """The fused part of `BoundPropagation`: contractions and softmax denominators in one backward step."""

    def contraction(self, node: fx.Node) -> Contraction | None:
        """The matrix product of two bounded tensors that ends at `node` (a sum over a product of broadcast
        factors, as expand.py writes it), or None. Cached."""
        if node not in self._contractions:
            self._contractions[node] = Contraction.of(node, lambda n: self.graph.info(n).op,
                                                      lambda n: self.graph.info(n).shape, self.bounded)
        return self._contractions[node]

    def _fused_contraction(self, node: fx.Node, coefficient, alphas: dict | None, betas: dict | None,
                           stop: fx.Node | None = None, record: frozenset = frozenset()):
        """`node`'s backward step straight to the factors' sources when it ends a contraction (`contraction`):
        ([source coefficients], bias terms), the bound of the node-by-node walk through the product's planes
        without its [specs × full grid] tensors; None where that walk must run: the skipped nodes are recorded
        or carry β or are the pass's `stop`, a plane is infinite (0 · inf), or the coefficients are windows."""
        contraction = self.contraction(node)
        if contraction is None or isinstance(coefficient, Patches):
            return None
        inner = contraction.inner
        if stop in inner or any(n in record for n in inner) or (betas and any(n in betas for n in inner)):
            return None
        x, y = (self.interval(factor) for factor in contraction.factors)
        planes = relax_bilinear(x.lower, x.upper, y.lower, y.upper, None if alphas is None else alphas.get(contraction.product))
        if not all(bool(torch.isfinite(getattr(planes, field.name)).all()) for field in dataclasses.fields(planes)):
            return None
        left, right, terms = contraction_backward(coefficient, planes, contraction)
        return contraction.sources, [left, right], terms

    def _exp_sum_at(self, node: fx.Node) -> ExpSum | None:
        """The softmax-denominator pattern (`ExpSum`) ending at `node`, or None; cached."""
        if node not in self._exp_sums:
            self._exp_sums[node] = ExpSum.of(node, lambda n: self.graph.info(n).op, lambda n: self.graph.info(n).shape,
                                             self.bounded)
        return self._exp_sums[node]

    def denominator_image(self, node: fx.Node) -> Interval | None:
        """Where `node` is a softmax denominator Σ mask·exp(clamp(x_j − x_i)) (`ExpSum`), or that plus a number: its
        interval from the clamp's, term by term; else None. Every pass through the exp settles the clamp's interval,
        so this costs no pass. Interval arithmetic from plain IBP's differences starts the exps at 0, and CROWN's
        tangent lines over a wide difference reach below that: carvana_unet's denominators were left at [1, 1e5]
        where this gives [14,966, 134,562], and 31 of its 1,457 pixels' classes were decided where CROWN's
        differences decide 1,215."""
        step = self.step(node)
        offset = None
        if (step.op == "aten.add.Tensor" and len(step.inputs) == 1 and len(node.args) == 2
                and isinstance(node.args[1], (int, float)) and node.args[0] is step.inputs[0]):
            offset, total = step, step.inputs[0]
        else:
            total = node
        pattern = self._exp_sum_at(total) if self.bounded(total) else None
        if pattern is None:
            return None
        interval = self.interval(pattern.exp.args[0])
        for inner in (pattern.exp, pattern.terms, pattern.total):
            inner_step = self.step(inner)
            interval = self._transfers[inner].ibp(inner_step, [interval])
        if offset is not None:
            interval = self._transfers[node].ibp(offset, [interval])
        return interval

    def _fused_exp_sum(self, node: fx.Node, coefficient, alphas: dict | None, betas: dict | None,
                       stop: fx.Node | None, record: frozenset, recorded: dict):
        """`node`'s backward step straight to the difference's operands when it ends softmax's denominator
        (`ExpSum`, transfers/exp_sum.py): (operands, [their coefficients], bias terms), the bound of the node-by-node
        walk without its [specs × grid] tensors; exp's and the clamp's coefficients are made only where they are
        recorded. None where that walk must run: the sum or difference is recorded, a skipped node carries β or is
        the pass's `stop`, or a line is infinite."""
        pattern = self._exp_sum_at(node)
        if pattern is None or isinstance(coefficient, Patches):
            return None
        inner = pattern.inner
        if (stop in inner or pattern.terms in record or pattern.difference in record
                or (betas and any(n in betas for n in inner))):
            return None
        steps = [self.step(n) for n in (pattern.exp, pattern.clamp) if n is not None]
        lines = []
        for step in steps:
            step.alpha = None if alphas is None else alphas.get(step.node)
            transfer = self._transfers[step.node]
            if not hasattr(transfer, "lines"):
                return None
            # a sparse α: per-spec lines [specs, *grid] where α is stored (the specs are the sum's)
            line, finite = transfer.sparse_lines(step, coefficient) if isinstance(step.alpha, SparseAlpha) else transfer.lines(step)
            if not finite:
                return None
            lines.append(line)
        mask = next(a for a in self.step(pattern.terms).args if not isinstance(a, fx.Node))
        mask = torch.as_tensor(mask, dtype=coefficient.dtype, device=coefficient.device)
        composed = compose_lines(mask, lines[0], lines[1] if len(lines) > 1 else None)
        if composed is None:
            return None
        if pattern.exp in record or pattern.clamp in record:
            grid = grid_coefficients(coefficient, pattern) * mask
            if pattern.exp in record:
                recorded[pattern.exp] = grid.detach()
            if pattern.clamp in record:
                exp = lines[0]
                recorded[pattern.clamp] = (grid.clamp(min=0) * exp.lower_slope + grid.clamp(max=0) * exp.upper_slope).detach()
        first, second, terms = exp_sum_backward(coefficient, composed, pattern)
        return pattern.operands, [first, second], terms
