"""Small torch models shared by the rule and attribution tests (no torchvision, no downloads)."""

from __future__ import annotations

import torch
from torch import nn


class Sum(nn.Module):
    """Residual sum as a module over a stacked last axis, so Zennit can give it the Norm rule."""

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        return stacked.sum(-1)


def vgg_like(batch_norm: bool = True, classes: int = 5) -> nn.Module:
    def block(cin, cout):
        layers = [nn.Conv2d(cin, cout, 3, padding=1)]
        layers += [nn.BatchNorm2d(cout)] if batch_norm else []
        return layers + [nn.ReLU()]

    return nn.Sequential(
        *block(3, 8), *block(8, 8), nn.MaxPool2d(2), *block(8, 16), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, classes),
    )


class BasicBlock(nn.Module):
    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        out = channels * stride
        self.conv1 = nn.Conv2d(channels, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.down = None
        if stride != 1:
            self.down = nn.Sequential(nn.Conv2d(channels, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        self.sum = Sum()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.sum(torch.stack([out, identity], dim=-1)))


def resnet_like(classes: int = 5) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        BasicBlock(8), BasicBlock(8, stride=2), BasicBlock(16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    )


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give batch norms non-trivial running statistics and affine parameters, then eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def cnn(bias: bool = False, classes: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=bias), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, bias=bias), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, classes, bias=bias),
    )


class FanOut(nn.Module):
    """Residual diamonds and one activation used by three consumers (plus the residual: four)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.branches = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1, bias=False) for _ in range(3))
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        a = torch.relu(self.stem(x))
        b = a + sum(torch.relu(branch(a)) for branch in self.branches)
        c = b + torch.relu(self.branches[0](b))
        return self.head(c.mean((2, 3)))


class Writes(nn.Module):
    """Every way a model writes into a tensor: in-place slice and element writes (copy, slice_scatter),
    index_add (index_put accumulating), a write with a repeated index (index_put), scatter with a repeated
    index, scatter_add, slice_scatter and masked_scatter. Bias-free, constants written are zeros, and each
    sample is written on its own (any batch size), so LRP conserves and bounds hold per sample."""

    def __init__(self, features: int = 3, bias: bool = False):
        super().__init__()
        self.inner = nn.Linear(features, 8, bias=bias)
        self.head = nn.Linear(33, 3, bias=bias)

    def forward(self, x):
        h = torch.relu(self.inner(x.flatten(1)))
        batch = h.shape[0]
        written = h.clone()
        written[:, :2] = 0
        written[:, 2] = h[:, 5]
        written += h
        added = torch.zeros(batch, 4).index_add(1, torch.tensor([0, 2, 0, 1, 3, 3, 2, 1]), h)
        repeated = h.clone()
        repeated[:, torch.tensor([1, 1, 4])] = h[:, 5:]
        index = torch.tensor([[3, 0, 3, 1]]).expand(batch, 4)
        scattered = torch.zeros(batch, 5).scatter(1, index, h[:, :4]).scatter_add(1, index, h[:, 4:])
        sliced = torch.slice_scatter(h[:, :4], h[:, 6:] * 2, 1, 1, 3)
        masked = torch.zeros(batch, 4).masked_scatter(torch.tensor([True, False, True, False]), h[:, 2:4])
        return self.head(torch.cat([written, added, repeated, scattered, sliced, masked], 1))


class Attention(nn.Module):
    """Single-head self-attention written with matmul and softmax, bias-free."""

    def __init__(self, width: int):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(width, width, bias=False) for _ in range(3))
        self.o = nn.Linear(width, width, bias=False)

    def forward(self, x):
        scores = self.q(x) @ self.k(x).transpose(-1, -2) / self.q.in_features**0.5
        return self.o(torch.softmax(scores, -1) @ self.v(x))


class Block(nn.Module):
    def __init__(self, width: int, norm: str = "layer"):
        super().__init__()
        make = (lambda: nn.LayerNorm(width, bias=False)) if norm == "layer" else (lambda: nn.RMSNorm(width))
        self.norm1, self.norm2 = make(), make()
        self.attention = Attention(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width, bias=False), nn.GELU(), nn.Linear(2 * width, width, bias=False))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, width: int = 16, classes: int = 4):
        super().__init__()
        self.patches = nn.Conv2d(1, width, 4, stride=4, bias=False)
        self.block = Block(width)
        self.head = nn.Linear(width, classes, bias=False)

    def forward(self, x):
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        return self.head(self.block(tokens).mean(1))


class TinyBERT(nn.Module):
    def __init__(self, vocabulary: int = 20, width: int = 16, classes: int = 3, norm: str = "layer"):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        self.position = nn.Parameter(torch.randn(1, 8, width) * 0.1)
        self.block = Block(width, norm)
        self.head = nn.Linear(width, classes, bias=False)

    def forward(self, ids):
        hidden = self.embedding(ids) + self.position[:, : ids.shape[1]]
        return self.head(self.block(hidden)[:, 0])
