"""Folding turns input-free computations into constants and keeps everything an input reaches."""

from __future__ import annotations

import torch

import opwise


class CausalScores(torch.nn.Module):
    """An arange-built causal mask (input-free) added to scores that a mask input also shifts."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x, mask):
        causal = torch.ones(4, 4).tril().log()
        return x @ self.weight.t().exp() + causal + mask.float()


def test_input_free_work_becomes_constants_and_masks_stay_inputs():
    model, x, mask = CausalScores(), torch.randn(4, 4), torch.ones(4, 4, dtype=torch.bool)
    graph = opwise.trace(model, x, mask=mask)
    constant_producers = [n for n in graph.call_nodes() if all(a.op == "get_attr" for a in n.all_input_nodes)]
    assert constant_producers == []
    ops = {graph.info(n).op for n in graph.call_nodes()}
    assert not ops & {"aten.tril.default", "aten.log.default", "aten.exp.default", "aten.ones.default"}
    assert "aten._to_copy.default" in ops  # mask.float() depends on the mask input, so it stays
    other = torch.rand(4, 4) > 0.5
    assert torch.allclose(graph(x, other), model(x, other))


def test_a_folded_constant_inherits_the_name_of_its_only_source():
    model, x = CausalScores(), torch.randn(4, 4)
    graph = opwise.trace(model, x, mask=torch.ones(4, 4))
    sources = [graph.info(n).source for n in graph.nodes if n.op == "get_attr"]
    assert "weight" in sources


def test_folded_values_are_the_computed_values():
    class Shifted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(4))

        def forward(self, x):
            return x + self.weight.exp() * torch.arange(4.0)

    model = Shifted()
    graph = opwise.trace(model, torch.randn(4))
    (constant,) = [n for n in graph.nodes if n.op == "get_attr"]
    assert torch.allclose(graph.constant(constant), model.weight.detach().exp() * torch.arange(4.0))
    assert graph.info(constant).source == "weight"
