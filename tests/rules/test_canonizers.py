"""Batch norm merged into the preceding convolution or linear node, as a graph rewrite."""

from __future__ import annotations

import torch
from torch import nn

import opwise
from opwise.rules import MergeBatchNorm


def _randomized(norm):
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    norm.weight.data.uniform_(0.5, 2)
    norm.bias.data.uniform_(-1, 1)
    return norm


def test_merge_keeps_the_function_and_removes_the_norm():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), _randomized(nn.BatchNorm2d(3)), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4),
        _randomized(nn.BatchNorm1d(4)),
    ).eval()
    x = torch.randn(2, 2, 4, 4)
    graph = opwise.trace(model, x)
    merged = MergeBatchNorm()(graph)
    assert "aten.batch_norm.default" in graph.op_counts()
    assert "aten.batch_norm.default" not in merged.op_counts()
    torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(graph(x), model(x))


def test_no_merge_when_the_layer_has_other_consumers():
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(1, 2, 3), _randomized(nn.BatchNorm2d(2))

        def forward(self, x):
            y = self.conv(x)
            return self.norm(y) + y

    model = Both().eval()
    x = torch.randn(1, 1, 5, 5)
    merged = MergeBatchNorm()(opwise.trace(model, x))
    assert "aten.batch_norm.default" in merged.op_counts()
    torch.testing.assert_close(merged(x), model(x))
