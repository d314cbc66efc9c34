"""The reduction rules' closed-form vjp and memory order give the same relevance as autograd's vjp."""

from __future__ import annotations

import pytest
import torch

from opwise.rules import Epsilon, LinearOp
from opwise.rules.linear_ops import _parameterless
from tests.rules.calls import Call

aten = torch.ops.aten

CASES = [
    (aten.sum.dim_IntList, (torch.randn(2, 3, 4, 2), [-1])),
    (aten.sum.dim_IntList, (torch.randn(2, 3, 4, 2), [1, 3], True)),
    (aten.sum.default, (torch.randn(2, 3),)),
    (aten.mean.dim, (torch.randn(2, 3, 4, 5), [2, 3])),
    (aten.mean.dim, (torch.randn(2, 3, 4, 5), [-1], True)),
    (aten.mean.default, (torch.randn(4, 5),)),
]


@pytest.mark.parametrize("target, args", CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_reduction_rule_equals_the_autograd_vjp(target, args):
    torch.manual_seed(0)
    call = Call(target, args, [True] + [False] * (len(args) - 1))
    relevance = torch.randn_like(call.output)
    ours = _parameterless(call, relevance)[0]
    x = args[0]
    reference = LinearOp(lambda x, w, b: target(x, *args[1:]), None, None, x)
    expected = Epsilon(1e-6).relevance(reference, call.output, relevance)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)


def test_resizing_conserves_relevance_nearest_by_routing_and_linear_by_the_z_rule():
    """Upsampling had no relevance rule. Nearest copies values (relevance goes back to the copied pixel); the linear
    modes mix positive weights without a bias, so the z-rule conserves too; so does bicubic (kept whole), whose
    weights can be negative."""
    import opwise

    torch.manual_seed(0)
    for mode in ("nearest", "bilinear", "bicubic"):
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, bias=False), torch.nn.ReLU(),
                                    torch.nn.Upsample(scale_factor=2, mode=mode), torch.nn.Flatten(),
                                    torch.nn.Linear(2 * 6 * 6 * 4, 3, bias=False)).eval()
        explanation = opwise.explain(model, torch.rand(2, 1, 8, 8), composite="epsilon")
        total, output = explanation.conservation.unbind(-1)
        torch.testing.assert_close(total, output, rtol=1e-3, atol=1e-4)


def test_cumulative_sums_and_variances_conserve_relevance():
    """cumsum (z-rule over its positive weights) and var/std (each entry's share of the squared deviations) had no
    relevance rule; without biases both pass on exactly what they get."""
    import opwise

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(5, 6, bias=False)

        def forward(self, x):
            h = torch.relu(self.linear(x))
            return torch.cumsum(h, -1)[:, -2:] + torch.cat([h.var(-1, keepdim=True), h.std(-1, keepdim=True)], -1)

    torch.manual_seed(0)
    explanation = opwise.explain(Head().eval(), torch.rand(3, 5), composite="epsilon")
    total, output = explanation.conservation.unbind(-1)
    torch.testing.assert_close(total, output, rtol=1e-3, atol=1e-4)


def test_embedding_bag_conserves_relevance_through_its_per_sample_weights():
    """aten._embedding_bag had no relevance rule: the bag is linear in its per-sample weights (epsilon rule); token ids
    as the explained input are refused with what to do instead."""
    import opwise
    from opwise.errors import InputError, UnsupportedOperation

    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bag, self.head = torch.nn.EmbeddingBag(10, 4, mode="sum"), torch.nn.Linear(4, 2, bias=False)
            self.register_buffer("ids", torch.tensor([[1, 4, 7], [2, 2, 5]]))

        def forward(self, weights):
            return self.head(self.bag(self.ids, per_sample_weights=weights))

    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bag = torch.nn.EmbeddingBag(10, 4, mode="sum")

        def forward(self, ids):
            return self.bag(ids, per_sample_weights=torch.ones(ids.shape, dtype=torch.float32))

    torch.manual_seed(0)
    model, weights = Bag().eval(), torch.rand(2, 3)
    for target in range(2):
        total, output = opwise.explain(model, weights, target=target, composite="epsilon").conservation.unbind(-1)
        torch.testing.assert_close(total, output, rtol=1e-4, atol=1e-5)
    # one bag entry with weight w: its relevance is w·E[id]·head (the whole output, derived by hand)
    single = opwise.explain(model, torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.5]]), target=0, composite="epsilon")
    expected = torch.stack([2.0 * model.bag.weight[1] @ model.head.weight[0], 1.5 * model.bag.weight[5] @ model.head.weight[0]])
    torch.testing.assert_close(single.relevance[[0, 1], [0, 2]], expected.detach(), rtol=1e-4, atol=1e-6)
    with pytest.raises((UnsupportedOperation, InputError), match="per_sample_weights"):
        opwise.explain(Tokens(), torch.tensor([[1, 2, 3]]))


def test_three_dimensional_average_pooling_conserves_relevance():
    """avg_pool3d (which nn.LocalResponseNorm and ONNX LRN exports use over the channel window) had a bound transfer
    but no relevance rule, so explaining any net with LocalResponseNorm failed; it is pooling like avg_pool2d."""
    import opwise

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, bias=False), torch.nn.ReLU(), torch.nn.AvgPool3d(2),
                                torch.nn.Flatten(), torch.nn.Linear(2 * 8, 3, bias=False)).eval()
    explanation = opwise.explain(model, torch.rand(2, 1, 6, 6, 6), composite="epsilon")
    total, output = explanation.conservation.unbind(-1)
    torch.testing.assert_close(total, output, rtol=1e-3, atol=1e-4)
    lrn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LocalResponseNorm(3), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 4 * 4, 2)).eval()
    assert torch.isfinite(opwise.explain(lrn, torch.rand(1, 3, 6, 6)).relevance).all()
