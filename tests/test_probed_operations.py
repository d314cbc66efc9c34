"""Operations a probe of real models found without any rule (each ended in "no bound rule" / "no relevance rule"):
cdist, atan2, hypot, isnan/isinf/isfinite, logcumsumexp, erfinv, lgamma, digamma. Each, in a small module after a
linear layer, is now bounded by `opwise.compute_bounds` (sampled outputs inside IBP's and CROWN's bounds) and
explained by `opwise.explain` (finite relevance shaped as the input)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import opwise
from tests.bounds.helpers import assert_sound


class _After(nn.Module):
    """`function` of a linear layer's 4 features, then a linear head."""

    def __init__(self, function, width: int):
        super().__init__()
        self.function, self.first, self.last = function, nn.Linear(3, 4), nn.Linear(width, 2)
        self.register_buffer("prototypes", torch.randn(5, 4, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        return self.last(self.function(self, self.first(x)).flatten(1))


OPERATIONS = {
    "cdist_p2": (lambda m, h: torch.cdist(h, m.prototypes), 5),
    "cdist_p1": (lambda m, h: torch.cdist(h, m.prototypes, p=1), 5),
    "cdist_pinf": (lambda m, h: torch.cdist(h, m.prototypes, p=math.inf), 5),
    "cdist_p3": (lambda m, h: torch.cdist(h, m.prototypes, p=3), 5),
    "atan2": (lambda m, h: torch.atan2(h[:, :2], h[:, 2:]), 2),
    "hypot": (lambda m, h: torch.hypot(h[:, :2], h[:, 2:]), 2),
    "isnan_isinf_isfinite": (lambda m, h: torch.where(torch.logical_or(torch.isnan(h), torch.isinf(h)), 0.0, h) * torch.isfinite(h), 4),
    "logcumsumexp": (lambda m, h: torch.logcumsumexp(h, 1), 4),
    "erfinv": (lambda m, h: torch.special.erfinv(0.9 * torch.tanh(h)), 4),
    "lgamma": (lambda m, h: torch.lgamma(nn.functional.softplus(h) + 0.1), 4),
    "digamma": (lambda m, h: torch.digamma(nn.functional.softplus(h) + 0.1), 4),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_each_operation_is_bounded_and_explained(name):
    function, width = OPERATIONS[name]
    torch.manual_seed(0)
    model, x = _After(function, width).eval(), torch.randn(2, 3)
    results = assert_sound(model, x - 0.2, x + 0.2, methods=("ibp", "crown"), samples=2000, attack=False)
    for method in ("ibp", "crown"):
        bounds = opwise.compute_bounds(model, x, eps=0.2, method=method)
        assert torch.isfinite(bounds.lower).all() and torch.isfinite(bounds.upper).all()
        torch.testing.assert_close(bounds.lower, results[method].lower)
    explanation = opwise.explain(model, x)
    assert explanation.relevance.shape == x.shape and torch.isfinite(explanation.relevance).all()
