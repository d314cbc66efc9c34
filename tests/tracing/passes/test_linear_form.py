"""addmm / mm with a constant weight become linear; splits become slices."""

from __future__ import annotations

import torch

import opwise


class Conv1D(torch.nn.Module):
    """GPT-2's dense layer computes x @ W + b with W stored (in, out)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(4, 9))
        self.bias = torch.nn.Parameter(torch.randn(9))
        self.register_buffer("mixing", torch.randn(3, 3))

    def forward(self, x):
        out = torch.addmm(self.bias, x.view(-1, 4), self.weight).view(2, 3, 9)
        query, key, value = out.split(3, dim=2)
        return query * key + (value.reshape(6, 3) @ self.mixing.t()).view(2, 3, 3)


def test_addmm_split_and_mm_become_linear_and_slices():
    model, x = Conv1D(), torch.randn(2, 3, 4)
    graph = opwise.trace(model, x)
    assert graph.strategy == "export"
    ops = graph.op_counts()
    assert ops["aten.linear.default"] == 2 and ops["aten.slice.Tensor"] == 3
    assert not {"aten.addmm.default", "aten.mm.default", "aten.split.Tensor", "getitem"} & set(ops)
    assert torch.allclose(graph(x), model(x), atol=1e-6)


def test_product_of_two_inputs_stays_a_matmul():
    class Outer(torch.nn.Module):
        def forward(self, a, b):
            return a @ b

    a, b = torch.randn(3, 4), torch.randn(4, 2)
    graph = opwise.trace(Outer(), a, b)
    assert set(graph.op_counts()) == {"aten.mm.default"}
