"""ELU/SELU/CELU, softplus, log-sigmoid, mish, hardswish, hardsigmoid, and abs/log1p/expm1: lines sound on every kind of
interval (torch's own functions as the reference), for CROWN's α and random α; exact interval images."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from opwise.bounds.relaxations.registry import relaxation_for
from opwise.errors import OpwiseError

SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805

CASES = {
    "hardswish": (("aten.hardswish.default", (), {}), F.hardswish),
    "hardsigmoid": (("aten.hardsigmoid.default", (), {}), F.hardsigmoid),
    "elu": (("aten.elu.default", (), {}), F.elu),
    "elu_alpha_0.3": (("aten.elu.default", (0.3,), {}), lambda x: F.elu(x, 0.3)),
    "selu": (("aten.elu.default", (SELU_ALPHA, SELU_SCALE), {}), F.selu),
    "celu_2": (("aten.celu.default", (2.0,), {}), lambda x: F.celu(x, 2.0)),
    "softplus": (("aten.softplus.default", (), {}), F.softplus),
    "softplus_beta_2_threshold_3": (("aten.softplus.default", (2.0, 3.0), {}), lambda x: F.softplus(x, 2.0, 3.0)),
    "mish": (("aten.mish.default", (), {}), F.mish),
    "abs": (("aten.abs.default", (), {}), torch.abs),
    "expm1": (("aten.expm1.default", (), {}), torch.expm1),
    "logsigmoid": (("aten.log_sigmoid_forward.default", (), {}), F.logsigmoid),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sound_for_default_and_random_alpha(name, seed, soundness):
    interval_zoo, random_alpha, assert_sound = soundness
    (key, args, kwargs), function = CASES[name]
    relaxation = relaxation_for(key, args, kwargs)
    high = 30.0 if name == "expm1" else 60.0  # exp(60) loses the lines' digits to rounding, not to unsoundness
    lower, upper = interval_zoo(seed, low=-60.0, high=high)
    assert_sound(function, relaxation.relax(lower, upper), lower, upper, samples=2001)
    assert_sound(function, relaxation.relax(lower, upper, random_alpha(relaxation, lower, upper, seed)), lower, upper,
                 samples=2001)


@pytest.mark.parametrize("seed", [0, 1])
def test_log1p_is_sound_above_minus_one_and_refuses_below(seed, soundness):
    interval_zoo, random_alpha, assert_sound = soundness
    relaxation = relaxation_for("aten.log1p.default")
    lower, upper = interval_zoo(seed, low=-0.999, high=50.0)
    assert_sound(torch.log1p, relaxation.relax(lower, upper), lower, upper, samples=2001)
    assert_sound(torch.log1p, relaxation.relax(lower, upper, random_alpha(relaxation, lower, upper, seed)), lower, upper)
    with pytest.raises(OpwiseError, match="log1p needs an input interval above -1"):
        relaxation.relax(torch.tensor([-1.5]), torch.tensor([0.0]))


def test_selu_kink_bends_down_and_elu_stays_convex():
    assert relaxation_for("aten.elu.default", (SELU_ALPHA, SELU_SCALE)).inflection_points == (0.0,)
    assert relaxation_for("aten.elu.default").inflection_points == ()
    with pytest.raises(OpwiseError, match="alpha=-1"):
        relaxation_for("aten.elu.default", (-1.0,))


def test_softplus_lines_cover_torchs_switch_to_the_identity():
    """Above beta·x = threshold torch returns x, slightly below the smooth curve: the lines leave room for it."""
    relaxation = relaxation_for("aten.softplus.default", (1.0, 1.0))  # a switch at 1, where the drop is 0.31
    lower, upper = torch.tensor([-2.0, 0.5], dtype=torch.float64), torch.tensor([3.0, 1.5], dtype=torch.float64)
    lines = relaxation.relax(lower, upper)
    x = torch.linspace(-2, 3, 50001, dtype=torch.float64)
    inside = (x[None] >= lower[:, None]) & (x[None] <= upper[:, None])
    value = F.softplus(x, 1.0, 1.0)
    assert ((lines.lower_slope[:, None] * x + lines.lower_intercept[:, None] <= value + 1e-12) | ~inside).all()
    assert ((lines.upper_slope[:, None] * x + lines.upper_intercept[:, None] >= value - 1e-12) | ~inside).all()
    assert relaxation.switch_gap == pytest.approx(math.log1p(math.exp(-1.0)))


@pytest.mark.parametrize("name", ["hardswish", "mish", "abs"])
def test_interval_image_is_the_exact_range(name):
    (key, args, kwargs), function = CASES[name]
    relaxation = relaxation_for(key, args, kwargs)
    lower = torch.tensor([-6.0, -2.0, -1.0, 0.5, -8.0, -1.3], dtype=torch.float64)
    upper = torch.tensor([5.0, -1.0, 1.0, 2.0, -4.0, -1.3], dtype=torch.float64)
    low, high = relaxation.image(lower, upper)
    x = lower[:, None] + (upper - lower)[:, None] * torch.linspace(0, 1, 200001, dtype=torch.float64)
    values = function(x)  # a grid: its extremes lie inside the range, within a grid step of its ends
    assert (low <= values.min(dim=1).values + 1e-12).all() and (high >= values.max(dim=1).values - 1e-12).all()
    assert torch.allclose(low, values.min(dim=1).values, atol=1e-4)
    assert torch.allclose(high, values.max(dim=1).values, atol=1e-4)
