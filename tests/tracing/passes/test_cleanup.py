"""Copies that change nothing are removed; copies that make a permuted tensor contiguous stay."""

from __future__ import annotations

import torch

import opwise


def test_dropout_and_same_type_casts_disappear():
    class Cast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))

        def forward(self, x):
            return self.layers(x).to(torch.float32) + x.float()

    graph = opwise.trace(Cast(), torch.randn(2, 3))
    assert set(graph.op_counts()) == {"aten.linear.default", "aten.add.Tensor"}


def test_contiguous_copy_of_a_permuted_tensor_stays():
    class Transpose(torch.nn.Module):
        def forward(self, x):
            return x.transpose(0, 1).contiguous().view(-1)

    x = torch.randn(2, 3)
    graph = opwise.trace(Transpose(), x)
    assert torch.equal(graph(x), Transpose()(x))
