"""linear_radius: a radius read off one pass's linear bound is proved on every smaller box of the patch."""

from __future__ import annotations

import math

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.combined.certified_map import _boxes, patch_masks
from opwise.combined.linear_radius import PatchLinearBound, linear_pass, patch_features, patch_linear_bound
from opwise.combined.patch_attack import robust_margins
from tests.combined.test_certified_map import _cnn, _sensitive

PROBE = 0.3


def test_radius_stops_where_the_domain_stops_the_worst_move():
    """margin >= 1 - 4·(x0 - x0') on [0, 1]: x0 = 0.1 can fall by 0.1 at most, so the bound never reaches zero
    through x0 and the radius is the probe; the other feature rises to 1 and costs 2 per unit (radius 0.5)."""
    bound = PatchLinearBound(torch.tensor([[1.0], [1.0]], dtype=torch.float64),
                             torch.tensor([[[4.0]], [[2.0]]], dtype=torch.float64),
                             torch.tensor([[[0.1]], [[0.9]]], dtype=torch.float64))
    radius = bound.radius(torch.tensor([0.8, 0.8]))
    assert radius[0] == pytest.approx(0.8)
    assert radius[1] == pytest.approx(0.5, rel=1e-4) and radius[1] < 0.5


def test_centre_is_recovered_from_the_lower_bound():
    """The bound at x is the box's minimum plus every patch feature's worst move to the box edge."""
    x = torch.tensor([[0.5, 0.05, 0.9]])
    masks = torch.tensor([[True, True, False]])
    index, real = patch_features(masks)
    slope = torch.tensor([[[2.0, 3.0], [-1.0, 0.5]]])  # two margins, features 0 and 1
    eps = torch.tensor([0.1])
    # minimum over [0.4, 0.6] x [0, 0.15] x {0.9} of centre + slope·(x' - x), centre = (1, 2)
    lower = torch.tensor([[1.0 - 2 * 0.1 - 3 * 0.05, 2.0 - 1 * 0.1 - 0.5 * 0.05]])
    bound = patch_linear_bound(lower, slope, x, index, real, eps, (0.0, 1.0))
    assert bound.centre[0].tolist() == pytest.approx([1.0, 2.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_failed_probe_still_certifies_a_sound_radius(seed):
    """One CROWN pass at a radius too large to prove: the radius its linear bound proves is below the probe,
    above zero somewhere, and points sampled in the boxes of that radius (corners included) keep the
    prediction."""
    model, x = _sensitive(_cnn, (1, 1, 7, 7), seed)
    target = int(model(x).argmax())
    masks = patch_masks((1, 7, 7), 2)
    index, real = patch_features(masks)
    bounded = BoundedModel(model, x)
    probe = torch.full((masks.shape[0],), PROBE)
    lower, upper = _boxes(x, masks, probe, (0.0, 1.0))
    margins, slope = linear_pass(bounded, lower, upper, index, target, "crown", 4)
    radius = patch_linear_bound(margins, slope, x, index, real, probe, (0.0, 1.0)).radius(probe)
    failed = margins.amin(1) <= 0
    assert failed.any() and (radius[failed] < PROBE).all() and (radius[failed] > 0).any()
    generator = torch.Generator().manual_seed(seed)
    for row in range(masks.shape[0]):
        low, high = _boxes(x, masks[row : row + 1], radius[row : row + 1], (0.0, 1.0))
        u = torch.rand(64, *x.shape[1:], generator=generator)
        u[:16] = u[:16].round()
        points = low + (high - low) * u
        assert (robust_margins(model, points, target) > 0).all(), row
        assert not math.isnan(float(radius[row]))
