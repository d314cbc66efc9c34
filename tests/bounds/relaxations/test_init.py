"""Importing the package registers every family; every relaxation stays finite on huge float32 intervals."""

from __future__ import annotations

import pytest
import torch

import opwise.bounds.relaxations  # noqa: F401  (registers the families)
from opwise.bounds.relaxations.registry import RELAXATIONS, relaxation_for

EVERYWHERE = [
    ("aten.sigmoid.default", ()),
    ("aten.tanh.default", ()),
    ("aten.sin.default", ()),
    ("aten.cos.default", ()),
    ("aten.gelu.default", ()),
    ("aten.gelu.default", ("tanh",)),
    ("aten.silu.default", ()),
    ("aten.pow.Tensor_Scalar", (2,)),
]
POSITIVE = [
    ("aten.log.default", ()),
    ("aten.reciprocal.default", ()),
    ("aten.sqrt.default", ()),
    ("aten.rsqrt.default", ()),
    ("aten.pow.Tensor_Scalar", (-0.5,)),
    ("aten.exp.default", ()),
]


def test_every_family_is_registered():
    assert {key for key, _ in EVERYWHERE + POSITIVE} <= set(RELAXATIONS)


@pytest.mark.parametrize("key,args", EVERYWHERE)
def test_finite_on_huge_and_point_intervals(key, args):
    lower = torch.tensor([-1e4, -1e3, -60.0, 7.0, -1e-30], dtype=torch.float32)
    upper = torch.tensor([1e4, 1e2, 60.0, 7.0, 1e-30], dtype=torch.float32)
    relaxation = relaxation_for(key, args)
    for alpha in (None, relaxation.init_alpha(lower, upper)):
        lines = relaxation.relax(lower, upper, alpha)
        for part in (lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept):
            assert part.dtype == torch.float32 and torch.isfinite(part).all()


@pytest.mark.parametrize("key,args", POSITIVE)
def test_finite_on_wide_positive_intervals(key, args):
    lower = torch.tensor([1e-4, 0.5, 3.0, 10.0], dtype=torch.float32)
    upper = torch.tensor([80.0, 0.5, 1e3 if key != "aten.exp.default" else 80.0, 11.0], dtype=torch.float32)
    lines = relaxation_for(key, args).relax(lower, upper)
    for part in (lines.lower_slope, lines.lower_intercept, lines.upper_slope, lines.upper_intercept):
        assert torch.isfinite(part).all()


TRUE_FUNCTIONS = {
    "aten.sigmoid.default": torch.sigmoid,
    "aten.tanh.default": torch.tanh,
    "aten.sin.default": torch.sin,
    "aten.cos.default": torch.cos,
    "aten.silu.default": torch.nn.functional.silu,
}


@pytest.mark.parametrize("key", sorted(TRUE_FUNCTIONS))
def test_float32_lines_are_sound_to_float32_precision(key, soundness):
    interval_zoo, _, assert_sound = soundness
    lower, upper = interval_zoo(4, count=100, low=-20.0, high=20.0)
    lower, upper = lower.float(), upper.float()
    assert_sound(TRUE_FUNCTIONS[key], relaxation_for(key).relax(lower, upper), lower, upper)
