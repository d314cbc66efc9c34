"""Writes into tensors: in-place slice writes (`copy`, `slice_scatter`), `index_put`, `scatter` and their sums.

Every one is affine with a nonnegative linear part in the tensors it writes and is written into, so IBP maps
lower to lower and upper to upper. Writes that add (`index_put(accumulate=True)`, which `index_add` becomes,
`scatter_add`, `scatter_reduce` by sum or mean) and writes without repeated targets take the generic affine
backward (the vjp). Writes that replace values go by provenance instead (see `opwise.tracing.provenance`):
`aten.copy` has no derivative, and with repeated indices a vjp credits every duplicate although one write
wins, which would be unsound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx

from opwise.bounds.transfers.affine import Affine
from opwise.bounds.transfers.registry import Interval, Step, bound_transfer
from opwise.errors import UnsupportedOperation
from opwise.rules.scatter import DATA_ARGUMENTS, accumulates
from opwise.tracing.graph import op_packet_key
from opwise.tracing.provenance import Provenance, provenance

if TYPE_CHECKING:
    from opwise.bounds.transfers.forward import LinearBounds

bound_transfer("aten.slice_scatter", "aten.select_scatter")(Affine)
# fills of an input-shaped tensor: constant outputs (zero linear part, the fill as offset)
bound_transfer("aten.full_like", "aten.zeros_like", "aten.ones_like", "aten.fill.Scalar")(Affine)


@bound_transfer(*DATA_ARGUMENTS)
class Write(Affine):
    """Replacing writes by provenance (a gather forward, its adjoint backward); accumulating ones as affine."""

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        if accumulates(step.node.target, step.args, step.node.kwargs):
            return super().ibp(step, intervals)
        routing, positions, offset = self._routing(step, intervals[0].lower)
        shape = step.shape

        def side(index: int) -> torch.Tensor:
            values = [getattr(intervals[step.inputs.index(node)], ("lower", "upper")[index]) for node in positions]
            return routing.gather(values, offset).reshape(shape)

        return Interval(side(0), side(1))

    def backward(self, step: Step, A: torch.Tensor):
        if accumulates(step.node.target, step.args, step.node.kwargs):
            return super().backward(step, A)
        routing, positions, offset = self._routing(step, A)
        shares = routing.scatter(A.reshape(A.shape[0], -1))
        coefficients: list[torch.Tensor | None] = [None] * len(step.inputs)
        for node, share in zip(positions, shares):
            index = step.inputs.index(node)
            share = share.to(A.dtype)
            coefficients[index] = share if coefficients[index] is None else coefficients[index] + share
        coefficients = [torch.zeros(A.shape[0], *shape, dtype=A.dtype, device=A.device) if c is None else c
                        for c, shape in zip(coefficients, step.shapes)]
        return coefficients, A * offset.reshape(A.shape[1:]) if offset.any() else None

    def forward(self, step: Step, inputs: list[LinearBounds]) -> LinearBounds:
        """Forward-mode bounds: coefficient rows and biases gathered as the values are (the vmapped op could
        resolve repeated indices differently from the op itself)."""
        from opwise.bounds.transfers.forward import LinearBounds, forward_affine  # forward.py needs the registry

        if accumulates(step.node.target, step.args, step.node.kwargs):
            return forward_affine(step, self, inputs)
        routing, positions, offset = self._routing(step, inputs[0].lower_bias)
        shape = step.shape
        rows = inputs[0].lower_coefficient.shape[0]

        def gathered(name: str, otherwise: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
            if not positions:
                return otherwise.expand(*lead, -1).reshape(*lead, *shape)
            values = [getattr(inputs[step.inputs.index(node)], name) for node in positions]
            return routing.gather(values, otherwise).reshape(*lead, *shape)

        zeros = torch.zeros_like(offset)
        return LinearBounds(gathered("lower_coefficient", zeros, (rows,)), gathered("lower_bias", offset, ()),
                            gathered("upper_coefficient", zeros, (rows,)), gathered("upper_bias", offset, ()),
                            inputs[0].positions)

    def _routing(self, step: Step, like: torch.Tensor) -> tuple[Provenance, list[fx.Node], torch.Tensor]:
        """The provenance over the data arguments holding bounded nodes, those nodes, and the output for
        zero inputs (the constants written), flat; built once per node."""
        if "routing" not in step.cache:
            data = [i for i in DATA_ARGUMENTS[op_packet_key(step.op)] if i < len(step.args)]
            outside = [a for i, a in enumerate(step.node.args) if i not in data] + list(step.node.kwargs.values())
            if _holds_bounded(outside, step.inputs):
                raise UnsupportedOperation(step.node.name, step.op, engine="bound",
                                           hint="the written positions depend on the bounded input")
            routed = [i for i in data if isinstance(step.args[i], fx.Node)]
            args = list(step.args)
            for i in routed:
                args[i] = torch.zeros(step.shapes[step.inputs.index(step.args[i])], dtype=like.dtype, device=like.device)
            offset = step.node.target(*args, **step.node.kwargs).reshape(-1).to(like.dtype)
            routing = provenance(step.node.target, args, dict(step.node.kwargs), routed)
            step.cache["routing"] = (routing, [step.args[i] for i in routed], offset)
        return step.cache["routing"]


def _holds_bounded(values: list, inputs: list[fx.Node]) -> bool:
    """Whether a bounded node appears anywhere in `values` (nested lists of indices included)."""
    found: list[bool] = []
    fx.node.map_arg(values, lambda node: found.append(node in inputs))
    return any(found)
