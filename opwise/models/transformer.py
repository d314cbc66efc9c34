"""The built-in tiny transformer: the 8 image rows are the tokens.

Attention is written out with matmul and softmax (not `nn.MultiheadAttention`), so the traced graph
shows the operations LRP's attention rules and the bilinear bound relaxations are about.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(d)) v per head, then an output projection.

    >>> SelfAttention(16, 2)(torch.zeros(3, 8, 16)).shape
    torch.Size([3, 8, 16])
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.project = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        return x.reshape(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(width // self.heads)
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.project(mixed.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x)) with GELU."""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class DigitsTransformer(nn.Module):
    """Rows as tokens: linear embedding + learned positions, one block, mean pool, norm, linear head.

    Input (N, 1, 8, 8) with pixels in [0, 1]; output (N, 10) logits.

    >>> DigitsTransformer()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, width: int = 16, heads: int = 2, hidden: int = 32, classes: int = 10, rows: int = 8):
        super().__init__()
        self.embed = nn.Linear(rows, width)
        self.position = nn.Parameter(torch.zeros(1, rows, width))
        self.block = Block(width, heads, hidden)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(images.flatten(1, 2)) + self.position
        return self.head(self.norm(self.block(tokens).mean(dim=1)))
