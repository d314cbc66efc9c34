"""AttnLRP rules agree op by op with LXT's explicit reference functions (lxt.explicit.functional)."""

from __future__ import annotations

import pytest
import torch

from opwise.rules import Epsilon
from opwise.rules.elementwise import identity
from opwise.rules.transformer import bmm, layer_norm, softmax
from tests.rules.calls import Call

lxt = pytest.importorskip("lxt.explicit.functional")
aten = torch.ops.aten


def _lxt_relevance(function, inputs, relevance):
    inputs = [t.clone().requires_grad_() for t in inputs]
    out = function(*inputs)
    return torch.autograd.grad(out, inputs, relevance)


def test_softmax_matches_lxt():
    torch.manual_seed(0)
    x, relevance = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    ours = softmax(Call(aten._softmax.default, [x, -1, False], [True, False, False]), relevance)[0]
    (theirs,) = _lxt_relevance(lambda t: lxt.softmax(t, -1), [x], relevance)
    torch.testing.assert_close(ours, theirs)


def test_matmul_of_two_explained_tensors_matches_lxt():
    torch.manual_seed(0)
    a, b, relevance = torch.randn(4, 5, 6), torch.randn(4, 6, 3), torch.randn(4, 5, 3)
    ours = bmm(Call(aten.bmm.default, [a, b]), relevance)
    theirs = _lxt_relevance(lambda p, q: lxt.matmul(p, q, epsilon=1e-6), [a, b], relevance)
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-5)


def test_layer_norm_matches_lxt():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 4, 8), torch.rand(8) + 0.5, torch.randn(8) * 0.1
    relevance = torch.randn(2, 4, 8)
    # LXT adds +ε whatever the sign (opwise: ε in the sign of z, as Zennit); a tiny ε makes both exact
    call = Call(aten.layer_norm.default, [x, [8], weight, bias, 1e-5, True], [True] + [False] * 5, rule=Epsilon(1e-10))
    ours = layer_norm(call, relevance)[0]
    (theirs,) = _lxt_relevance(lambda t: lxt.layer_norm_grad_fn.apply(t, weight, bias, 1e-5, 1e-10), [x], relevance)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_rms_norm_matches_lxt():
    torch.manual_seed(0)
    x, weight, relevance = torch.randn(2, 4, 8), torch.rand(8) + 0.5, torch.randn(2, 4, 8)
    ours = identity(Call(aten.rms_norm.default, [x, [8], weight, 1e-6], [True, False, False, False]), relevance)[0]
    (theirs,) = _lxt_relevance(lambda t: lxt.rms_norm_identity(t, weight, 1e-6), [x], relevance)
    torch.testing.assert_close(ours, theirs)
