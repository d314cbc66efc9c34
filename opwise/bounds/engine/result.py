"""What one backward pass returns (`LinearBound`)."""

from __future__ import annotations

import dataclasses

import torch
from torch import fx

from opwise.bounds.transfers.patches import dense


@dataclasses.dataclass
class LinearBound:
    """The result of one backward pass: `lower` [specs, groups] bounds A·target from below over the input
    set; it is the minimum of `input_coefficient · x + bias` (the linear lower bound before concretization;
    Patches, FreeCoefficients or dense [specs, groups, *input shape]: `dense` makes any of them a tensor);
    `recorded` holds the coefficients that reached each node named in the engine's `record` ([specs, groups,
    *node shape])."""

    lower: torch.Tensor
    input_coefficient: object
    bias: torch.Tensor
    recorded: dict[fx.Node, torch.Tensor]

    @property
    def linear(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dense input coefficients, bias)."""
        return dense(self.input_coefficient), self.bias
