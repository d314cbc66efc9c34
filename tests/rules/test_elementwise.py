"""Sums split proportionally over explained terms, products, identity and routing rules."""

from __future__ import annotations

import pytest
import torch

from opwise.rules import ROUTING, rule_for
from opwise.rules.elementwise import add, angle, identity, multiply, no_relevance
from tests.rules.calls import Call

aten = torch.ops.aten


def test_sum_of_explained_terms_splits_in_proportion():
    a, b = torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, -1.0]])
    relevance = torch.tensor([[4.0, 2.0]])
    ra, rb = add(Call(aten.add.Tensor, [a, b]), relevance)
    torch.testing.assert_close(ra, torch.tensor([[1.0, 3.0]]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rb, torch.tensor([[3.0, -1.0]]), rtol=1e-5, atol=1e-5)


def test_subtraction_and_broadcast_conserve():
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 4) + 2, torch.rand(2, 1, 4)  # sums away from zero: ε does not matter
    relevance = torch.randn(2, 3, 4)
    ra, rb = add(Call(aten.sub.Tensor, [a, b]), relevance)
    assert rb.shape == b.shape
    torch.testing.assert_close(ra.sum() + rb.sum(), relevance.sum(), rtol=1e-4, atol=1e-4)


def test_constant_term_takes_no_relevance():
    x, constant = torch.randn(2, 3), torch.randn(3)
    relevance = torch.randn(2, 3)
    rx, rc = add(Call(aten.sub.Tensor, [x, constant], [True, False]), relevance)
    assert rc is None
    torch.testing.assert_close(rx, relevance)


def test_products():
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    relevance = torch.randn(2, 3)
    ra, rb = multiply(Call(aten.mul.Tensor, [a, b]), relevance)
    torch.testing.assert_close(ra, relevance / 2)
    torch.testing.assert_close(rb, relevance / 2)
    scale = torch.randn(2, 1)
    rx, rs = multiply(Call(aten.mul.Tensor, [a, scale]), relevance)
    assert rs is None
    torch.testing.assert_close(rx, relevance)
    rx, rc = multiply(Call(aten.div.Tensor, [a, b], [True, False]), relevance)
    assert rc is None
    torch.testing.assert_close(rx, relevance)


def test_identity_and_routing():
    relevance = torch.randn(2, 3)
    assert identity(Call(aten.gelu.default, [torch.randn(2, 3)]), relevance)[0] is relevance
    for key in ("aten.view.default", "aten.permute.default", "aten.cat.default", "aten.max_pool2d.default", "getitem"):
        assert rule_for(key) == ROUTING


@pytest.mark.parametrize("activation", [torch.nn.LogSigmoid(), torch.nn.Threshold(0.1, -0.5), torch.nn.Hardshrink(0.3),
                                        torch.nn.Softshrink(0.3)], ids=lambda m: type(m).__name__)
def test_kept_whole_activations_pass_relevance_to_their_input(activation):
    """log-sigmoid (was min/max routing through its decomposition), threshold, hardshrink and softshrink (were
    comparisons and `where`) are traced whole and pass the output's relevance on unchanged: behind a bias-free
    linear layer, the input relevance sums to the explained output (negative values included)."""
    import opwise

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4, bias=False), activation).eval()
    x = torch.randn(6, 5)
    graph = opwise.trace(model, x)
    assert type(activation).__name__.lower().replace("logsigmoid", "log_sigmoid") in " ".join(
        graph.info(n).op for n in graph.call_nodes())
    for target in range(4):
        total, output = opwise.explain(model, x, target=target, composite="epsilon").conservation.unbind(-1)
        torch.testing.assert_close(total, output, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(output, model(x)[:, target])


class _Elementwise(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


@pytest.mark.parametrize("function", [torch.atan, torch.asinh, torch.sinh, torch.cosh, torch.tan, torch.asin, torch.acos,
                                      torch.atanh], ids=lambda f: f.__name__)
def test_trigonometric_and_hyperbolic_functions_pass_relevance_to_their_input(function):
    """Traced as one aten op each, they pass relevance unchanged: behind a bias-free linear layer the input relevance
    sums to the explained output (inputs scaled into (-1, 1), where every one of them is defined)."""
    import opwise

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4, bias=False), _Elementwise(function)).eval()
    x = torch.rand(6, 5) / 10
    graph = opwise.trace(model, x)
    assert f"aten.{function.__name__}.default" in [graph.info(n).op for n in graph.call_nodes()]
    total, output = opwise.explain(model, x, target=1, composite="epsilon").conservation.unbind(-1)
    torch.testing.assert_close(total, output, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("function", [torch.erfinv, torch.lgamma, torch.digamma], ids=lambda f: f.__name__)
def test_special_functions_pass_relevance_to_their_input(function):
    """erfinv, lgamma and digamma pass relevance unchanged, conserved behind a bias-free linear layer (their inputs
    lie in (0.05, 0.3): inside erfinv's (−1, 1) and the Γ functions' (0, ∞))."""
    import opwise

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4, bias=False), _Elementwise(function)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.rand(4, 5) / 5 + 0.1)
    x = torch.rand(6, 5) / 10 + 0.1
    graph = opwise.trace(model, x)
    assert f"aten.{function.__name__}.default" in [graph.info(n).op for n in graph.call_nodes()]
    total, output = opwise.explain(model, x, target=1, composite="epsilon").conservation.unbind(-1)
    torch.testing.assert_close(total, output, rtol=1e-4, atol=1e-5)


def test_trilinear_splits_each_term_uniformly_between_explained_factors():
    """y = a·w·b (one term): a and b get y/2 each; with b constant, a gets all of y (values derived by hand)."""
    from opwise.rules.elementwise import trilinear

    a, w, b = torch.tensor([[2.0]]), torch.tensor([[[3.0]]]), torch.tensor([[-1.5]])
    args = [a, w, b, [1, 3], [0], [1, 2], [2, 3]]
    output = aten._trilinear.default(*args)
    both = trilinear(Call(aten._trilinear.default, args, [True, False, True]), output)
    torch.testing.assert_close(both[0], torch.tensor([[-4.5]]), rtol=1e-5, atol=0)
    torch.testing.assert_close(both[2], torch.tensor([[-4.5]]), rtol=1e-5, atol=0)
    assert both[1] is None
    one = trilinear(Call(aten._trilinear.default, args, [True, False, False]), output)
    torch.testing.assert_close(one[0], torch.tensor([[-9.0]]), rtol=1e-5, atol=0)


def test_bilinear_layers_and_cumulative_products_conserve_relevance():
    """nn.Bilinear (aten._trilinear) and cumprod had no relevance rule; without biases they pass on what they get."""
    import opwise

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(4, 2, bias=False)
            self.cross, self.square = torch.nn.Bilinear(3, 2, 2, bias=False), torch.nn.Bilinear(3, 3, 2, bias=False)

        def forward(self, x):
            a, b = torch.relu(self.a(x)), self.b(x)
            return self.cross(a, b) + self.square(a, a) + torch.cumprod(a, -1)[:, 1:]

    torch.manual_seed(0)
    model = Head().eval()
    x = torch.rand(3, 4)
    for target in range(2):
        total, output = opwise.explain(model, x, target=target, composite="epsilon").conservation.unbind(-1)
        torch.testing.assert_close(total, output, rtol=1e-3, atol=1e-4)


def test_order_statistics_route_relevance_to_the_values_they_picked():
    """sort, topk, max/min/kthvalue/median with a dim had no relevance rule; they move values, so relevance goes
    back to the picked entries and is conserved (bias-free layers around them)."""
    import opwise

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = torch.nn.Linear(4, 6, bias=False), torch.nn.Linear(6 + 2 + 4, 2, bias=False)

        def forward(self, x):
            h = self.first(x)
            picked = [torch.sort(h, -1, descending=True).values, torch.topk(h, 2).values,
                      torch.max(h, -1, keepdim=True).values, torch.min(h, -1, keepdim=True).values,
                      torch.kthvalue(h, 2, -1, True).values, torch.median(h, -1, keepdim=True).values]
            return self.second(torch.cat(picked, -1))

    torch.manual_seed(0)
    model, x = Head().eval(), torch.randn(3, 4)
    for target in range(2):
        total, output = opwise.explain(model, x, target=target, composite="epsilon").conservation.unbind(-1)
        torch.testing.assert_close(total, output, rtol=1e-3, atol=1e-4)

    class Top(torch.nn.Module):
        def forward(self, x):
            return torch.topk(x, 1).values

    # the largest entry carries the whole output; the others none
    assert opwise.explain(Top(), torch.tensor([[1.0, 3.0, 2.0]])).relevance.tolist() == [[0.0, 3.0, 0.0]]


def test_atan2_shares_relevance_uniformly_between_explained_coordinates():
    """Hand-derived: R = [2, −4] splits into [1, −2] for each coordinate; a broadcast x sums its shares; a constant
    coordinate takes none and the other all."""
    y, x = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0]])
    relevance = torch.tensor([[2.0, -4.0]])
    ry, rx = angle(Call(aten.atan2.default, [y, x]), relevance)
    torch.testing.assert_close(ry, torch.tensor([[1.0, -2.0]]))
    torch.testing.assert_close(rx, torch.tensor([[-1.0]]))
    assert ry.sum() + rx.sum() == relevance.sum()
    ry, rx = angle(Call(aten.atan2.default, [y, torch.ones(1, 2)], [True, False]), relevance)
    assert rx is None
    torch.testing.assert_close(ry, relevance)


def test_logcumsumexp_routes_relevance_in_softmax_shares_of_each_prefix():
    """Hand-derived: x = [0, log 3] gives y_1 = log 4, whose relevance reaches x_0 and x_1 in the shares e^0/4 and
    3/4; on random inputs every target's relevance is conserved (the shares of each prefix sum to 1)."""
    import math

    import opwise

    assert rule_for("aten.logcumsumexp.default") == ROUTING

    class Running(torch.nn.Module):
        def forward(self, x):
            return torch.logcumsumexp(x, 1)

    explanation = opwise.explain(Running(), torch.tensor([[0.0, math.log(3.0)]]), target=1)
    torch.testing.assert_close(explanation.relevance, torch.tensor([[0.25, 0.75]]) * math.log(4.0))

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.last = torch.nn.Linear(4, 6, bias=False), torch.nn.Linear(6, 3, bias=False)

        def forward(self, x):
            return self.last(torch.logcumsumexp(self.first(x), -1))

    torch.manual_seed(0)
    model, x = Head().eval(), torch.randn(3, 4)
    for target in range(3):
        total, output = opwise.explain(model, x, target=target, composite="epsilon").conservation.unbind(-1)
        torch.testing.assert_close(total, output, rtol=1e-3, atol=1e-4)


def test_logical_and_boolean_bitwise_operators_take_no_relevance():
    """|, &, ^, ~ of masks trace to bitwise_*: predicates like the logical ones, so relevance stops at them too."""
    for packet in ("logical_not", "logical_and", "logical_or", "logical_xor", "bitwise_not", "bitwise_and",
                   "bitwise_or", "bitwise_xor"):
        overload = "default" if packet.endswith("not") or packet.startswith("logical") else "Tensor"
        assert rule_for(f"aten.{packet}.{overload}") is no_relevance, packet


def test_explain_passes_around_boolean_bitwise_operators_as_around_logical_ones():
    import opwise

    class Guarded(torch.nn.Module):
        def __init__(self, bitwise: bool):
            super().__init__()
            self.bitwise = bitwise
            self.first, self.last = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)

        def forward(self, x):
            h = self.first(x)
            nan, inf, positive = torch.isnan(h), torch.isinf(h), h > 0
            if self.bitwise:
                keep = ~(nan | inf) & (positive ^ (h > 5))
            else:
                keep = torch.logical_and(torch.logical_not(torch.logical_or(nan, inf)), torch.logical_xor(positive, h > 5))
            return self.last(torch.where(keep, h, 0.0))

    torch.manual_seed(0)
    bitwise, logical, x = Guarded(True), Guarded(False), torch.randn(2, 3)
    with torch.no_grad():  # no bias absorbs relevance: the explanation conserves it
        bitwise.first.bias.zero_(), bitwise.last.bias.zero_()
    logical.load_state_dict(bitwise.state_dict())
    explained = [opwise.explain(model, x, target=0, composite="epsilon") for model in (bitwise, logical)]
    assert not opwise.rules.coverage(explained[0].plan.graph).missing
    assert explained[0].relevance.abs().sum() > 0
    torch.testing.assert_close(explained[0].relevance, explained[1].relevance)
    torch.testing.assert_close(explained[0].relevance.sum(1), explained[0].explained_output, rtol=1e-4, atol=1e-6)
