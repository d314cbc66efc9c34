"""Matrix products of two bounded tensors carried back in one step (opwise/bounds/transfers/contraction.py): the
same coefficients and bias as the node-by-node walk through the broadcast product's planes, and sound bounds on
random attention layers."""

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.engine.propagation import BoundPropagation
from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.relaxations.bilinear import relax_bilinear
from opwise.bounds.transfers.contraction import Contraction, contraction_backward
from opwise.bounds.transfers.product import _select_planes
from tests.bounds.helpers import assert_sound, randomize_


def _box(generator, *shape):
    lower = torch.randn(*shape, generator=generator)
    return lower, lower + torch.rand(*shape, generator=generator)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("per_spec_alpha", [False, True])
def test_contraction_backward_equals_the_walk_through_the_broadcast_product(seed, per_spec_alpha):
    generator = torch.Generator().manual_seed(seed)
    heads, rows, inner, columns, specs = 2, 3, 4, 5, 7
    x_lower, x_upper = _box(generator, heads, rows, inner, 1)
    y_lower, y_upper = _box(generator, heads, 1, inner, columns)
    full = (heads, rows, inner, columns)
    alpha = None
    if per_spec_alpha:
        alpha = AlphaPair(torch.rand(specs, *full, generator=generator), torch.rand(specs, *full, generator=generator))
    planes = relax_bilinear(x_lower.expand(full), x_upper.expand(full), y_lower.expand(full), y_upper.expand(full), alpha)
    A = torch.randn(specs, heads, rows, columns, generator=generator)
    contraction = Contraction(None, None, (None, None), (None, None), ((heads, rows, inner, 1), (heads, 1, inner, columns)),
                              full, (2,))
    left, right, terms = contraction_backward(A, planes, contraction)
    broadcast = A.unsqueeze(3).expand(specs, *full)
    walk_x, walk_y, walk_terms = _select_planes(broadcast, planes)
    torch.testing.assert_close(left, walk_x.sum(4, keepdim=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(right, walk_y.sum(2, keepdim=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.reshape(specs, heads, -1).sum(-1).sum(-1), walk_terms.sum(-1), rtol=1e-5, atol=1e-5)


def test_contraction_backward_takes_factors_with_fewer_dims_than_the_product():
    # expand may add leading dims: [inner] to [rows, inner, columns]
    generator = torch.Generator().manual_seed(0)
    x_lower, x_upper = _box(generator, 4)
    y_lower, y_upper = _box(generator, 3, 4, 5)
    full = (3, 4, 5)
    planes = relax_bilinear(x_lower[:, None].expand(full), x_upper[:, None].expand(full), y_lower, y_upper)
    contraction = Contraction(None, None, (None, None), (None, None), ((4, 1), (3, 4, 5)), full, (1,))
    A = torch.randn(2, 3, 5, generator=generator)
    left, right, _ = contraction_backward(A, planes, contraction)
    walk_x, walk_y, _ = _select_planes(A.unsqueeze(2).expand(2, *full), planes)
    torch.testing.assert_close(left, walk_x.sum((1, 3)).reshape(2, 4, 1))
    torch.testing.assert_close(right, walk_y)


class _Attention(torch.nn.Module):
    """Multi-head softmax attention with a residual and a ReLU MLP, heads folded into the batch as exported ViTs do."""

    def __init__(self, width=8, heads=2):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (torch.nn.Linear(width, width) for _ in range(3))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.ReLU(), torch.nn.Linear(2 * width, width))
        self.head = torch.nn.Linear(width, 3)

    def split(self, t):
        batch, tokens, width = t.shape
        return t.reshape(batch, tokens, self.heads, -1).transpose(1, 2).reshape(batch * self.heads, tokens, -1)

    def forward(self, x):
        batch, tokens, width = x.shape
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / 2, dim=-1)
        mixed = torch.bmm(weights, v).reshape(batch, self.heads, tokens, -1).transpose(1, 2).reshape(batch, tokens, width)
        x = x + mixed
        x = x + self.mlp(x)
        return self.head(x.mean(1))


def _fused_and_walked(bounded, lower, upper, method, monkeypatch):
    fused = bounded.compute_bounds(x_lower=lower, x_upper=upper, method=method)
    with monkeypatch.context() as patch:
        patch.setattr(BoundPropagation, "contraction", lambda self, node: None)
        walked = bounded.compute_bounds(x_lower=lower, x_upper=upper, method=method)
    return fused, walked


@pytest.mark.parametrize("seed", range(3))
def test_attention_bounds_are_the_walks_and_sound(seed, monkeypatch):
    model = _Attention().eval()
    randomize_(model, seed)
    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(seed))
    lower, upper = x - 0.05, x + 0.05
    bounded = BoundedModel(model, x)
    fused, walked = _fused_and_walked(bounded, lower, upper, "crown", monkeypatch)
    torch.testing.assert_close(fused.lower, walked.lower, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.upper, walked.upper, rtol=1e-4, atol=1e-4)
    assert_sound(model, lower, upper, methods=("crown", "alpha-crown"), samples=3000, seed=seed, attack=seed == 0,
                 bounded=bounded)
