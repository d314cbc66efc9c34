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


def test_the_fx_fallback_drops_the_restride_after_a_one_by_one_adaptive_pool():
    class PoolTokens(torch.nn.Module):  # Swin's head: average the tokens of a (batch, tokens, features) tensor
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool1d(x.transpose(1, 2), 1).flatten(1)

    model, x = PoolTokens(), torch.randn(1, 4, 3)
    graph = opwise.trace(model, x, strategy="fx")
    assert not {"aten.as_strided_.default", "aten.as_strided.default"} & set(graph.op_counts())
    assert torch.allclose(graph(x), model(x), atol=1e-6)


def test_a_restride_that_moves_elements_stays():
    class Restride(torch.nn.Module):
        def forward(self, x):
            return (x * 2).as_strided((2, 2), (1, 2))

    x = torch.randn(2, 2)
    graph = opwise.trace(Restride(), x, strategy="fx")
    assert torch.equal(graph(x), Restride()(x))
