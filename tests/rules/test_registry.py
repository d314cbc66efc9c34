"""Registry lookup, coverage on transformer-like models, and the error for a missing rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import opwise
from opwise.rules import coverage, relevance_rule, rule_for, rule_name


def test_lookup_falls_back_from_overload_to_packet():
    assert rule_for("aten.add.Tensor") is not None
    assert rule_for("aten.view.default") == rule_for("aten.view.anything")
    assert rule_for("aten.special_bessel_j0.default") is None


@pytest.mark.parametrize(
    "model, example",
    [
        (nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), torch.randn(2, 5, 8)),
        (nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 3)), torch.randint(0, 10, (2, 4))),
        (nn.Sequential(nn.RMSNorm(8), nn.Linear(8, 8), nn.SiLU(), nn.Softmax(-1)), torch.randn(2, 8)),
    ],
    ids=["encoder-layer", "embedding", "rms"],
)
def test_full_coverage_on_transformer_like_models(model, example):
    graph = opwise.trace(model.eval(), example)
    report = coverage(graph)
    assert report.fraction == 1.0, str(report)
    assert all(rule_name(graph, n) != "MISSING" for n in graph.call_nodes())
    relevance = opwise.explain(graph, example, composite="attn-lrp", target=0).relevance
    assert relevance.shape == example.shape and torch.isfinite(relevance).all()


def test_coverage_names_what_is_missing_and_a_user_rule_fixes_it():
    class Bessel(nn.Module):
        def forward(self, x):
            return torch.special.bessel_j0(x)

    graph = opwise.trace(Bessel(), torch.randn(2, 3))
    assert "aten.special_bessel_j0" in str(coverage(graph))

    @relevance_rule("aten.special_bessel_j0.default")
    def bessel_identity(call, relevance):
        return [relevance]

    try:
        assert coverage(graph).fraction == 1.0
    finally:
        from opwise.rules import registry

        del registry._RULES["aten.special_bessel_j0.default"]
