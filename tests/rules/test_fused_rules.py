"""The fused rules (stacked weight sets, stabilizer in the bias, in-place division, cached parameters) give
the relevance of the unfused textbook formulas, written out here with one op call and one autograd vjp per
part, to 1e-6 of the relevance's scale, for inputs with and without negative entries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from opwise.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus
from opwise.rules.linear_ops import addmm, convolution, linear
from tests.rules.calls import Call

aten = torch.ops.aten


def _stabilize(value, epsilon):
    return value + torch.where(value >= 0, epsilon, -epsilon)


def _vjp(forward, x, weight, grad):
    source = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        return torch.autograd.grad(forward(source, weight, None), source, grad)[0]


def reference(rule, forward, x, w, b, relevance):
    """Unfused rule formulas: every part its own forward call and vjp."""
    f = forward
    output = f(x, w, b)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    bp, bn = (None, None) if b is None else (b.clamp(min=0), b.clamp(max=0))
    if isinstance(rule, Epsilon):
        return x * _vjp(f, x, w, relevance / _stabilize(output, rule.epsilon))
    if isinstance(rule, ZPlus):
        scaled = relevance / _stabilize(f(xp, wp, bp) + f(xn, wn, None), rule.stabilizer)
        return xp * _vjp(f, xp, wp, scaled) + xn * _vjp(f, xn, wn, scaled)
    if isinstance(rule, AlphaBeta):
        positive = relevance / _stabilize(f(xp, wp, bp) + f(xn, wn, None), rule.stabilizer)
        negative = relevance / _stabilize(f(xp, wn, bn) + f(xn, wp, None), rule.stabilizer)
        return rule.alpha * (xp * _vjp(f, xp, wp, positive) + xn * _vjp(f, xn, wn, positive)) - rule.beta * (
            xp * _vjp(f, xp, wn, negative) + xn * _vjp(f, xn, wp, negative))
    if isinstance(rule, Gamma):
        g = rule.gamma
        up, un = w + g * wp, w + g * wn
        bu, bd = (None, None) if b is None else (b + g * bp, b + g * bn)
        positive = (output > 0) * relevance / _stabilize(f(xp, up, bu) + f(xn, un, None), rule.stabilizer)
        negative = (output < 0) * relevance / _stabilize(f(xp, un, bd) + f(xn, up, None), rule.stabilizer)
        return (xp * _vjp(f, xp, up, positive) + xn * _vjp(f, xn, un, positive)
                + xp * _vjp(f, xp, un, negative) + xn * _vjp(f, xn, up, negative))
    if isinstance(rule, WSquare):
        ones = torch.ones_like(x)
        bias = None if b is None else b**2
        return _vjp(f, ones, w**2, relevance / _stabilize(f(ones, w**2, bias), rule.stabilizer))
    if isinstance(rule, Flat):
        ones = torch.ones_like(x)
        return _vjp(f, ones, torch.ones_like(w), relevance / _stabilize(f(ones, torch.ones_like(w), None), 1e-6))
    if isinstance(rule, ZBox):
        low, high = torch.full_like(x, rule.low), torch.full_like(x, rule.high)
        scaled = relevance / _stabilize(output - f(low, wp, bp) - f(high, wn, bn), rule.stabilizer)
        return x * _vjp(f, x, w, scaled) - low * _vjp(f, low, wp, scaled) - high * _vjp(f, high, wn, scaled)
    raise AssertionError(rule)


RULES = [Epsilon(), ZPlus(), AlphaBeta(2.0, 1.0), AlphaBeta(1.0, 0.0), Gamma(0.25), Flat(), WSquare(), ZBox(-3.0, 3.0)]


def _input(shape, nonnegative):
    x = torch.randn(shape)
    return torch.relu(x) if nonnegative else x  # relu: about half the entries exactly zero


def _close(ours, expected):
    scale = expected.abs().max()
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6 * float(scale))


@pytest.mark.parametrize("nonnegative", [True, False], ids=["x>=0", "mixed-x"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_fused_convolution_equals_the_unfused_formulas(rule, bias, nonnegative):
    torch.manual_seed(0)
    x, w = _input((2, 4, 7, 7), nonnegative), torch.randn(6, 4, 3, 3)
    b = torch.randn(6) * 0.1 if bias else None
    rest = [[2, 2], [1, 1], [1, 1], False, [0, 0], 1]

    def forward(x, w, b):
        return F.conv2d(x, w, b, stride=2, padding=1)

    call = Call(aten.convolution.default, [x, w, b, *rest], [True] + [False] * 8, rule=rule)
    relevance = torch.randn_like(call.output)
    expected = reference(rule, forward, x, w, b, relevance)
    _close(convolution(call, relevance)[0], expected)
    _close(convolution(call, relevance)[0], expected)  # second call: from the node's cache


@pytest.mark.parametrize("nonnegative", [True, False], ids=["x>=0", "mixed-x"])
@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_fused_dense_layers_equal_the_unfused_formulas(rule, nonnegative):
    torch.manual_seed(1)
    x, w, b = _input((3, 2, 5), nonnegative), torch.randn(4, 5), torch.randn(4) * 0.1
    call = Call(aten.linear.default, [x, w, b], [True, False, False], rule=rule)
    relevance = torch.randn_like(call.output)
    _close(linear(call, relevance)[0], reference(rule, F.linear, x, w, b, relevance))
    flat = x.reshape(6, 5)
    call = Call(aten.addmm.default, [b, flat, w.T], [False, True, False], rule=rule)
    _close(addmm(call, relevance.reshape(6, 4))[1], reference(rule, F.linear, flat, w, b, relevance.reshape(6, 4)))


@pytest.mark.parametrize("rule", [ZPlus(), AlphaBeta(2.0, 1.0), Gamma(0.25)], ids=repr)
def test_grouped_convolution_is_not_stacked_and_still_matches(rule):
    torch.manual_seed(2)
    x, w = torch.relu(torch.randn(2, 4, 6, 6)), torch.randn(6, 2, 3, 3)
    rest = [[1, 1], [1, 1], [1, 1], False, [0, 0], 2]

    def forward(x, w, b):
        return F.conv2d(x, w, b, padding=1, groups=2)

    call = Call(aten.convolution.default, [x, w, None, *rest], [True] + [False] * 8, rule=rule)
    relevance = torch.randn_like(call.output)
    _close(convolution(call, relevance)[0], reference(rule, forward, x, w, None, relevance))


@pytest.mark.parametrize("nonnegative", [True, False], ids=["x>=0", "mixed-x"])
@pytest.mark.parametrize("rule", [ZPlus(), AlphaBeta(2.0, 1.0), Gamma(0.25), Epsilon()], ids=repr)
def test_transposed_convolution_matches(rule, nonnegative):
    torch.manual_seed(4)
    x, w, b = _input((2, 4, 5, 5), nonnegative), torch.randn(4, 3, 3, 3), torch.randn(3) * 0.1
    rest = [[2, 2], [1, 1], [1, 1], True, [1, 1], 1]

    def forward(x, w, b):
        return F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)

    call = Call(aten.convolution.default, [x, w, b, *rest], [True] + [False] * 8, rule=rule)
    relevance = torch.randn_like(call.output)
    _close(convolution(call, relevance)[0], reference(rule, forward, x, w, b, relevance))


def test_cached_parameters_follow_in_place_weight_updates():
    torch.manual_seed(3)
    x, w = torch.relu(torch.randn(3, 5)), torch.randn(4, 5)
    call = Call(aten.linear.default, [x, w, None], [True, False, False], rule=ZPlus())
    relevance = torch.rand(3, 4)
    before = linear(call, relevance)[0]
    with torch.no_grad():
        w.mul_(-1)
    after = linear(call, relevance)[0]
    _close(after, reference(ZPlus(), F.linear, x, w, None, relevance))
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("rule", [ZPlus(), AlphaBeta(2.0, 1.0), Gamma(0.25)], ids=repr)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_behind_a_relu_the_shortcuts_equal_the_unfused_formulas(rule, bias):
    """Relevance only where the output is positive (what a following ReLU leaves): AlphaBeta takes z⁺ from
    the forward output and Gamma skips its negative part; both must still give the textbook numbers."""
    torch.manual_seed(5)
    x, w = torch.relu(torch.randn(2, 4, 7, 7)), torch.randn(6, 4, 3, 3)
    b = torch.randn(6) * 0.1 if bias else None
    rest = [[1, 1], [1, 1], [1, 1], False, [0, 0], 1]

    def forward(x, w, b):
        return F.conv2d(x, w, b, padding=1)

    call = Call(aten.convolution.default, [x, w, b, *rest], [True] + [False] * 8, rule=rule)
    relevance = torch.randn_like(call.output) * (call.output > 0)
    _close(convolution(call, relevance)[0], reference(rule, forward, x, w, b, relevance))


def test_alpha_beta_from_the_output_stays_exact_when_negative_contributions_are_tiny():
    """z⁺ = z − z⁻ where W⁻x is 10⁶ times smaller than W⁺x: still the directly computed z⁺'s numbers."""
    x = torch.tensor([[1.0, 1.0, 0.5]])
    w = torch.tensor([[100.0, -1e-4, 3.0], [2.0, -3e-5, 7.0]])
    call = Call(aten.linear.default, [x, w, None], [True, False, False], rule=AlphaBeta(2.0, 1.0))
    relevance = torch.tensor([[1.0, 2.0]])
    _close(linear(call, relevance)[0], reference(AlphaBeta(2.0, 1.0), F.linear, x, w, None, relevance))


def test_alpha_beta_calls_the_op_for_z_plus_where_subtraction_would_cancel():
    """Relevance on a negative output whose W⁺x is 10⁶ times smaller than |W⁻x|: z − z⁻ would lose z⁺ to
    rounding, so z⁺ gets its own call (two calls in all) and the numbers stay the textbook ones."""
    x = torch.tensor([[1.0, 1.0, 0.5]])
    w = torch.tensor([[1e-6, -100.0, -3.0], [2.0, -1.0, 7.0]])
    b = torch.tensor([0.0, 0.1])
    relevance = torch.tensor([[1.0, 2.0]])
    for output_axes, vjps in (((-1, 0), 1), (None, 2)):
        op, counts = _counted(x, w, b, output_axes)
        ours = AlphaBeta(2.0, 1.0).relevance(op, F.linear(x, w, b), relevance)
        assert counts == {"calls": 2, "vjps": vjps}
        _close(ours, reference(AlphaBeta(2.0, 1.0), F.linear, x, w, b, relevance))


def _counted(x, w, b, output_axes=(-1, 0)):
    """A linear LinearOp that counts its forward calls and vjps (`output_axes` None: it cannot pair vjps)."""
    from opwise.rules.operation import LinearOp

    counts = {"calls": 0, "vjps": 0}

    def forward(x, w, b):
        counts["calls"] += 1
        return F.linear(x, w, b)

    def vjp(w, grad, x):
        counts["vjps"] += 1
        return grad @ w

    return LinearOp(forward, w, b, x, vjp, owns_vjp=True, input_axes=(-1, 1), output_axes=output_axes), counts


@pytest.mark.parametrize("rule, behind_relu, calls, vjps, unpaired_vjps", [
    (ZPlus(), True, 1, 1, 1), (ZPlus(), False, 1, 1, 1),
    (Gamma(0.25), True, 1, 1, 1), (Gamma(0.25), False, 1, 1, 2),
    (AlphaBeta(2.0, 1.0), True, 1, 1, 2), (AlphaBeta(2.0, 1.0), False, 1, 1, 2),
], ids=str)
@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired"])
@pytest.mark.parametrize("nonnegative", [True, False], ids=["x>=0", "mixed-x"])
def test_sign_split_rules_make_the_counted_calls(rule, behind_relu, calls, vjps, unpaired_vjps, paired, nonnegative):
    """The cost the speed targets rest on (issue 4): calls of the op beyond the forward, and vjps (mixed-sign
    inputs stack x⁺ and x⁻ along the input channels, so they make as many; ops that stack output channels
    make two vjps one, ops that cannot make both)."""
    torch.manual_seed(6)
    # 64 inputs: W⁺x and W⁻x are sums of ~32 terms each, so z⁺ never nears |z⁻| / 64 (see the test above
    # for where it does)
    x, w, b = _input((4, 64), nonnegative), torch.randn(3, 64), torch.randn(3) * 0.1
    output = F.linear(x, w, b)
    relevance = torch.randn_like(output) * ((output > 0) if behind_relu else 1)
    op, counts = _counted(x, w, b, (-1, 0) if paired else None)
    ours = rule.relevance(op, output, relevance)
    assert counts == {"calls": calls, "vjps": vjps if paired else unpaired_vjps}
    _close(ours, reference(rule, F.linear, x, w, b, relevance))
