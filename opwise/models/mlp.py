"""The built-in MLP with sigmoid and tanh activations, for general-nonlinearity verification."""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """64-32-32-10: flatten, linear-sigmoid, linear-tanh, linear head.

    Small on purpose: branch-and-bound over smooth activations splits many neurons.

    >>> DigitsMLP()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, hidden: tuple[int, int] = (32, 32), classes: int = 10):
        super().__init__()
        first, second = hidden
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, first),
            nn.Sigmoid(),
            nn.Linear(first, second),
            nn.Tanh(),
            nn.Linear(second, classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)
