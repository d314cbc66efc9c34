"""Group norm (σ held constant, as layer norm in AttnLRP) and vector norms, against hand-derived formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import opwise


class _GroupNormHead(nn.Module):
    def __init__(self, groups: int = 2):
        super().__init__()
        self.norm = nn.GroupNorm(groups, 6)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.norm(x).sum((2, 3))


def test_group_norm_is_the_epsilon_rule_through_the_normalizer_with_sigma_constant():
    """y = w(x − μ)/σ per group; with σ constant, Aᵀg at x_k is (1/σ)(s_k − mean over the group of s), s = w ⊙ g,
    so R_k = x_k/σ · (s_k − mean s) for g = R/y; with bias 0 it sums to the explained output."""
    torch.manual_seed(0)
    model, x = _GroupNormHead().eval(), torch.randn(2, 6, 4, 4)
    explanation = opwise.explain(model, x, target=1, composite="epsilon", epsilon=1e-12)
    norm, y = model.norm, model.norm(x)
    relevance_out = torch.zeros_like(y)
    relevance_out[:, 1] = y[:, 1]  # the sum over space spreads the explained output in proportion to y
    s = (norm.weight[:, None, None] * relevance_out / y).reshape(2, 2, -1)
    grouped = x.reshape(2, 2, -1)
    sigma = torch.sqrt(grouped.var(-1, unbiased=False, keepdim=True) + norm.eps)
    expected = (grouped / sigma * (s - s.mean(-1, keepdim=True))).reshape(x.shape)
    torch.testing.assert_close(explanation.relevance, expected.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(explanation.conservation[:, 0], explanation.conservation[:, 1], rtol=1e-5, atol=0)


class _Norm(nn.Module):
    def __init__(self, order):
        super().__init__()
        self.order = order

    def forward(self, x):
        return torch.linalg.vector_norm(x, ord=self.order, dim=1, keepdim=True)


@pytest.mark.parametrize("order", [1, 2, 3.5, float("inf")])
def test_vector_norm_shares_relevance_by_powers_of_magnitude(order):
    torch.manual_seed(1)
    x = torch.randn(3, 5)
    x[2] = torch.tensor([2.0, -2.0, 1.0, 0.0, 0.5])  # p = ∞: a tie, split evenly
    explanation = opwise.explain(_Norm(order), x, target=0, composite="epsilon")
    weight = (x.abs() == x.abs().amax(1, keepdim=True)).float() if order == float("inf") else x.abs() ** order
    expected = weight / weight.sum(1, keepdim=True) * torch.linalg.vector_norm(x, ord=order, dim=1, keepdim=True)
    torch.testing.assert_close(explanation.relevance, expected)
    torch.testing.assert_close(explanation.conservation[:, 0], explanation.conservation[:, 1])


def test_vector_norm_of_a_zero_vector_gives_zero_not_nan():
    x = torch.zeros(1, 4)
    relevance = opwise.explain(_Norm(2), x, target=0, composite="epsilon").relevance
    assert torch.equal(relevance, torch.zeros_like(x))


def test_vector_norm_order_without_a_rule_names_node_and_order():
    with pytest.raises(opwise.UnsupportedOperation, match=r"linalg_vector_norm.*ord=-1"):
        opwise.explain(_Norm(-1), torch.randn(2, 4), target=0, composite="epsilon")
