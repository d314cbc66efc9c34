"""`decompose` gives the graph torch's `run_decompositions` gives with the same table, on models that exercise
each kind of composite operator: kept whole, given a Python decomposition, decomposed inside another's
decomposition, and a custom one."""

from __future__ import annotations

import warnings

import pytest
import torch

import opwise
from opwise.tracing import export_decomposition
from opwise.tracing.decompositions import autograd_decompositions_lifted, export_table
from opwise.tracing.export_decomposition import decompose


class Attention(torch.nn.Module):
    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


class Resize(torch.nn.Module):
    def forward(self, x):
        up = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear")
        return torch.nn.functional.adaptive_avg_pool2d(up, 3) + torch.nn.functional.hardshrink(x).mean()


def _cases():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    return {
        "conv-linear": (torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                            torch.nn.Linear(4 * 6 * 6, 5)), (torch.randn(2, 3, 8, 8),)),
        "norms": (torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.RMSNorm(8), torch.nn.GELU(), torch.nn.Softmax(-1)),
                  (torch.randn(2, 8),)),
        "attention": (Attention(), tuple(torch.randn(3, 1, 2, 4, 8).unbind(0))),
        "multi-head attention": (_MHA(mha), (torch.randn(1, 4, 8),)),
        "bilinear": (_Bilinear(torch.nn.Bilinear(4, 5, 3)), (torch.randn(2, 4), torch.randn(2, 5))),
        "gru": (_First(torch.nn.GRU(4, 3, batch_first=True)), (torch.randn(1, 5, 4),)),
        "resize": (Resize(), (torch.randn(1, 2, 4, 4),)),
        "batch norm": (torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2).eval(), torch.nn.MaxPool2d(2)),
                       (torch.randn(1, 2, 4, 4),)),
    }  # fmt: skip


class _MHA(torch.nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


class _Bilinear(torch.nn.Module):
    def __init__(self, bilinear):
        super().__init__()
        self.bilinear = bilinear

    def forward(self, a, b):
        return self.bilinear(a, b)


class _First(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)[0]


CASES = _cases()


def _both(model, args):
    with autograd_decompositions_lifted(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the GRU's weights "assigned during export", as when tracing
        program = torch.export.export(model.eval(), args, strict=False)
        return decompose(program), program.run_decompositions(export_table())


@pytest.mark.parametrize("name", list(CASES))
def test_decompose_gives_torchs_graph(name):
    model, args = CASES[name]
    ours, torchs = _both(model, args)
    assert ours.graph_module.code == torchs.graph_module.code
    assert [s.kind for s in ours.graph_signature.input_specs] == [s.kind for s in torchs.graph_signature.input_specs]
    torch.testing.assert_close(ours.module()(*args), model(*args))


def test_a_composite_op_registered_later_is_decomposed_as_torch_does():
    library = torch.library.Library("opwise_decompose_test", "DEF")
    library.define("thrice(Tensor x) -> Tensor")
    library.impl("thrice", lambda x: x * 3, "CompositeImplicitAutograd")
    operator = torch.ops.opwise_decompose_test.thrice.default

    class Thrice(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.linear(operator(x), torch.ones(2, 2))

    ours, torchs = _both(Thrice(), (torch.ones(1, 2),))
    assert ours.graph_module.code == torchs.graph_module.code
    assert "thrice" not in ours.graph_module.code and "aten.linear" in ours.graph_module.code


def test_without_torchs_private_functions_the_public_call_is_used(monkeypatch):
    model, args = CASES["norms"]
    expected = opwise.trace(model, *args).module.code
    monkeypatch.setattr(export_decomposition, "_decompose_exported_program", None)
    assert not export_decomposition._private_call_available()
    assert opwise.trace(model, *args).module.code == expected
