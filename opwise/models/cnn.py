"""The built-in ReLU CNN for 8x8 digits: the network ReLU verification and LRP demos run on."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """conv-batchnorm-relu-maxpool twice, then a ReLU hidden layer and a linear head.

    Input (N, 1, 8, 8) with pixels in [0, 1]; output (N, 10) logits.

    >>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, channels: tuple[int, int] = (8, 16), hidden: int = 32, classes: int = 10):
        super().__init__()
        first, second = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, first, kernel_size=3, padding=1),
            nn.BatchNorm2d(first),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(second * 2 * 2, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))
