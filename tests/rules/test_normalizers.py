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


def test_log_softmax_decomposes_at_its_input_like_softmax():
    """log_softmax had no relevance rule. Hand-derived: with the explained output's relevance R = y_t at t, the
    rule x ⊙ (R/y − s Σ R/y) gives x ⊙ (e_t − softmax(x)); for any R, x ⊙ Jᵀ(R/y) with J log_softmax's Jacobian."""
    from opwise.rules.transformer import log_softmax
    from tests.rules.calls import Call

    torch.manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64)
    output = torch.log_softmax(x, -1)
    one_hot = torch.nn.functional.one_hot(torch.tensor([1, 4, 0]), 5).double()
    ours = log_softmax(Call(torch.ops.aten._log_softmax.default, [x, -1, False], [True, False, False]), output * one_hot)[0]
    torch.testing.assert_close(ours, x * (one_hot - torch.softmax(x, -1)))
    relevance = torch.randn(3, 5, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda t: torch.log_softmax(t, -1), x[0])
    ours = log_softmax(Call(torch.ops.aten._log_softmax.default, [x, -1, False], [True, False, False]), relevance)[0]
    torch.testing.assert_close(ours[0], x[0] * (jacobian.T @ (relevance[0] / output[0])))


def test_a_model_ending_in_log_softmax_is_explained_like_its_scores_against_the_weighted_scores():
    torch.manual_seed(0)
    scores = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    x = torch.randn(3, 6)
    explained = opwise.explain(nn.Sequential(scores, nn.LogSoftmax(-1)).eval(), x)
    z = scores(x).detach()
    target = z.argmax(-1)
    # the same LRP below the scores, started from z ⊙ (e_t − softmax(z)) instead of z_t at t
    start = z * (nn.functional.one_hot(target, 4) - torch.softmax(z, -1))
    reference = sum(opwise.explain(scores, x, target=torch.full((3,), k)).relevance
                    * (start[:, k] / z[:, k]).reshape(3, 1) for k in range(4))
    torch.testing.assert_close(explained.relevance, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_is_explained_as_group_norm_with_one_channel_per_group(affine):
    """Instance norm (traced as batch norm over its own statistics) had no relevance rule; it is group norm with
    C groups, so both give the same relevance, and without biases it conserves."""
    torch.manual_seed(0)
    conv, head = nn.Conv2d(2, 4, 3, bias=False), nn.Linear(4 * 4 * 4, 3, bias=False)
    instance, group = nn.InstanceNorm2d(4, affine=affine), nn.GroupNorm(4, 4, affine=affine)
    if affine:
        with torch.no_grad():
            instance.weight.uniform_(0.5, 1.5)
            group.weight.copy_(instance.weight)
            instance.bias.zero_()
            group.bias.zero_()
    x = torch.randn(2, 2, 6, 6)
    one = opwise.explain(nn.Sequential(conv, instance, nn.Flatten(), head).eval(), x, composite="epsilon")
    other = opwise.explain(nn.Sequential(conv, group, nn.Flatten(), head).eval(), x, composite="epsilon")
    torch.testing.assert_close(one.relevance, other.relevance, rtol=1e-4, atol=1e-5)
    total, output = one.conservation.unbind(-1)
    torch.testing.assert_close(total, output, rtol=1e-3, atol=1e-4)
