"""The bound-transfer registry and what a transfer sees of one node.

A transfer is pure: given a `Step` (the node's function of its bounded inputs, and a way to ask for
bounds of any node) it maps intervals forward (IBP) and linear coefficients backward (CROWN). The
engine owns every piece of state: caches, intermediate bounds, α parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import torch
from torch import fx

from opwise.tracing.graph import op_packet_key


@dataclasses.dataclass
class Interval:
    """Elementwise bounds `lower <= value <= upper` of one node, shaped like the node's value."""

    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def center(self) -> torch.Tensor:
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.upper - self.lower) / 2


@dataclasses.dataclass
class Step:
    """One node as a transfer sees it.

    `function(*bounded)` recomputes the node from its bounded inputs (constants filled in); `inputs` are
    those input nodes, in order; `shapes` their value shapes; `bounds(node)` resolves the promise of a
    node's interval (computed on first request, then cached); `alpha` holds the node's α parameters in
    α-CROWN (None otherwise); `relaxation` the elementwise relaxation of a nonlinear node; `cache` is
    for a transfer's own reusable work (a linearization; lines kept with the interval they were drawn
    on), kept while the engine lives.
    """

    node: fx.Node
    op: str
    inputs: list[fx.Node]
    shapes: list[tuple[int, ...]]
    function: Callable[..., torch.Tensor]
    args: tuple
    bounds: Callable[[fx.Node], Interval]
    relaxation: object | None = None
    alpha: object | None = None
    cache: dict = dataclasses.field(default_factory=dict)
    #: the node's own value shape and the module it came from (for messages)
    shape: tuple[int, ...] | None = None
    module_path: str | None = None


class BoundTransfer(Protocol):
    """What every operator family provides. Coefficients `A` are [specs, batch, *node shape]."""

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        """Interval of the node's value from intervals of its bounded inputs."""
        ...

    def backward(self, step: Step, A: torch.Tensor) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
        """For `A · node >= Σ_i A_i · input_i + Σ bias terms`: the `A_i` per bounded input, and the bias terms
        elementwise ([specs, ...] in the node's memory order, batch outermost; the engine sums them per
        sample, which also works where a reshape folded the batch into another dimension)."""
        ...

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        """Inputs whose intervals the backward step asks for (resolved before the pass starts)."""
        ...


TRANSFERS: dict[str, BoundTransfer] = {}


def bound_transfer(*op_keys: str) -> Callable:
    """Class decorator: `@bound_transfer("aten.relu.default")` registers one instance for these keys.

    >>> @bound_transfer("example.identity.default")
    ... class Identity:
    ...     pass
    >>> type(transfer_for("example.identity.default")).__name__
    'Identity'
    >>> del TRANSFERS["example.identity.default"]
    """

    def register(cls):
        instance = cls()
        for key in op_keys:
            TRANSFERS[key] = instance
        return cls

    return register


def transfer_for(op: str) -> BoundTransfer | None:
    """The transfer of an operator key, falling back from overload (`aten.add.Tensor`) to packet (`aten.add`)."""
    return TRANSFERS.get(op) or TRANSFERS.get(op_packet_key(op))


def sum_to(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum a [specs, *broadcast shape] coefficient back to [specs, *shape] (undoing broadcasting): over the leading
    axes broadcasting added, then over the axes it stretched from 1."""
    extra = tensor.dim() - 1 - len(shape)
    if extra > 0:
        tensor = tensor.sum(dim=tuple(range(1, 1 + extra)))
    return tensor.sum_to_size((tensor.shape[0], *shape))

