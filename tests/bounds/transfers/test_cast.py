"""dtype casts: exact where no value changes; rounding (narrower floats) and truncation (integers) bounded by their
error, so that sampled and attacked outputs lie inside every method's bounds; overflow unbounded; bool refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import opwise
from opwise.errors import UnsupportedOperation
from tests.bounds.helpers import assert_sound

CASTS = [torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8]


class _Cast(nn.Module):
    """A layer, a cast of its (scaled) output and back to float32, and a last layer: a quantized or half-precision
    block inside a float32 model. uint8 gets |h| clamped to its range [0, 255]."""

    def __init__(self, dtype: torch.dtype, scale: float):
        super().__init__()
        self.dtype, self.scale = dtype, scale
        self.first, self.last = nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.first(x) * self.scale
        h = h.abs().clamp(max=250) if self.dtype == torch.uint8 else h
        return self.last(h.to(self.dtype).to(torch.float32) / self.scale)


@pytest.mark.parametrize("dtype", CASTS, ids=str)
@pytest.mark.parametrize("scale, eps", [(1.0, 0.5), (1000.0, 0.01), (37.0, 0.001)])
def test_casts_are_bounded_soundly(dtype, scale, eps):
    torch.manual_seed(int(scale))
    model = _Cast(dtype, scale).eval()
    x = torch.randn(2, 3)
    results = assert_sound(model, x - eps, x + eps, methods=("ibp", "crown", "alpha-crown"), samples=4000)
    assert all(torch.isfinite(bounds.lower).all() for bounds in results.values())


def test_a_rounding_error_alone_is_inside_the_bounds():
    """cast(v) − v: the identity bounds of the cast (before) made it [0, 0], though float16 moves 1000.3 by 0.3."""

    class Error(nn.Module):
        def forward(self, x):
            return x.half().float() - x

    x = torch.full((1, 1), 1000.3)
    for method in ("ibp", "crown"):
        bounds = opwise.compute_bounds(Error(), x, eps=0.01, method=method)
        error = float(Error()(x))
        assert abs(error) > 0.2 and bounds.lower.item() <= error <= bounds.upper.item()
        assert bounds.upper.item() - bounds.lower.item() <= 1.0 + 1e-4  # one float16 ulp at 1000


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_exact_casts_change_no_bound(method):
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()

    class Wide(nn.Module):
        def forward(self, x):
            return layer(x.double().float().to(torch.float32))

    x = torch.randn(1, 3)
    plain, cast = (opwise.compute_bounds(m, x, eps=0.2, method=method) for m in (layer, Wide()))
    # the same up to float32 rounding (the float64 stretch computes in float64): no error term is added
    assert torch.allclose(plain.lower, cast.lower, rtol=1e-6, atol=1e-7)
    assert torch.allclose(plain.upper, cast.upper, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype, value", [(torch.float16, 7e4), (torch.uint8, -3.0), (torch.int32, 3e9)], ids=str)
def test_a_cast_that_can_leave_the_targets_range_is_unbounded(dtype, value):
    class Overflow(nn.Module):
        def forward(self, x):
            return (x * value).to(dtype).to(torch.float32)

    bounds = opwise.compute_bounds(Overflow(), torch.ones(1, 1), eps=0.1, method="crown")
    assert bounds.lower.item() == -math.inf or bounds.upper.item() == math.inf


def test_a_cast_to_bool_is_refused_naming_the_node():
    class Mask(nn.Module):
        def forward(self, x):
            return x * x.bool().float()

    with pytest.raises(UnsupportedOperation, match="casts to bool"):
        opwise.compute_bounds(Mask(), torch.ones(1, 2), eps=0.1, method="crown")
