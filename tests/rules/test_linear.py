"""Linear rules against textbook formulas written out per connection, and conservation per rule family."""

from __future__ import annotations

import pytest
import torch

from opwise.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus
from opwise.rules.linear_ops import convolution, linear
from tests.rules.calls import Call

aten = torch.ops.aten


def _contributions(x, w, b=None):
    """z_ij = x_i w_ji per sample (batch, out, in), the bias per output."""
    z = x[:, None, :] * w[None]
    return z, (torch.zeros(w.shape[0]) if b is None else b)


def _expected(rule, x, w, b, relevance):
    z, bias = _contributions(x, w, b)
    if isinstance(rule, Epsilon):
        total = z.sum(2) + bias
        return (z * (relevance / (total + rule.epsilon * torch.where(total >= 0, 1, -1)))[:, :, None]).sum(1)
    if isinstance(rule, AlphaBeta):
        positive, negative = z.clamp(min=0), z.clamp(max=0)
        zp = positive.sum(2) + bias.clamp(min=0)
        zn = negative.sum(2) + bias.clamp(max=0)
        share = rule.alpha * positive / (zp + 1e-6)[:, :, None] - rule.beta * negative / (zn - 1e-6)[:, :, None]
        return (share * relevance[:, :, None]).sum(1)
    if isinstance(rule, WSquare):
        squares = (w**2)[None].expand_as(z)
        return (squares / (squares.sum(2) + bias**2 + 1e-6)[:, :, None] * relevance[:, :, None]).sum(1)
    if isinstance(rule, Flat):
        share = torch.ones_like(z) / z.shape[2]
        return (share * relevance[:, :, None]).sum(1)
    raise AssertionError(rule)


@pytest.mark.parametrize("rule", [Epsilon(epsilon=1e-3), AlphaBeta(2.0, 1.0), AlphaBeta(1.0, 0.0), Flat(), WSquare()])
def test_dense_rules_match_the_formula(rule):
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 5), torch.randn(4, 5), torch.randn(4) * 0.1
    relevance = torch.randn(3, 4)
    ours = linear(Call(aten.linear.default, [x, w, b], [True, False, False], rule=rule), relevance)[0]
    torch.testing.assert_close(ours, _expected(rule, x, w, b, relevance), rtol=1e-4, atol=1e-5)


def test_zplus_is_alpha1_beta0():
    torch.manual_seed(1)
    x, w = torch.randn(3, 5), torch.randn(4, 5)
    relevance = torch.randn(3, 4)
    call = lambda rule: Call(aten.linear.default, [x, w, None], [True, False, False], rule=rule)  # noqa: E731
    torch.testing.assert_close(linear(call(ZPlus()), relevance)[0], linear(call(AlphaBeta(1.0, 0.0)), relevance)[0])


def test_gamma_zero_is_epsilon_with_stabilizer_on_positive_inputs():
    torch.manual_seed(2)
    x, w = torch.rand(3, 5), torch.randn(4, 5)
    relevance = torch.randn(3, 4)
    call = lambda rule: Call(aten.linear.default, [x, w, None], [True, False, False], rule=rule)  # noqa: E731
    torch.testing.assert_close(linear(call(Gamma(gamma=0.0)), relevance)[0], linear(call(Epsilon()), relevance)[0])


CONSERVATIVE = [Epsilon(epsilon=1e-9), ZPlus(), AlphaBeta(2.0, 1.0), Gamma(0.25), Flat(), WSquare(), ZBox(-3.0, 3.0)]


@pytest.mark.parametrize("rule", CONSERVATIVE, ids=lambda r: type(r).__name__)
def test_conservation_on_convolution_without_bias(rule):
    for seed in range(5):
        torch.manual_seed(seed)
        x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
        args = [x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1]
        call = Call(aten.convolution.default, args, [True] + [False] * 8, rule=rule)
        relevance = torch.rand(2, 4, 6, 6)
        ours = convolution(call, relevance)[0]
        torch.testing.assert_close(ours.sum((1, 2, 3)), relevance.sum((1, 2, 3)), rtol=1e-4, atol=1e-5)


def test_rules_have_zennit_names_and_defaults():
    assert repr(Epsilon()) == "Epsilon(epsilon=1e-06, zero_bias=False)"
    assert Gamma().gamma == 0.25 and (AlphaBeta().alpha, AlphaBeta().beta) == (2.0, 1.0)
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        AlphaBeta(3.0, 1.0)
