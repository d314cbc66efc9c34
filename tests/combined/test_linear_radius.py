"""linear_radius: a radius read off one pass's linear bound is proved on every smaller box of the patch."""

from __future__ import annotations

import math

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.combined.certified_map import _boxes, patch_masks
from opwise.combined.linear_radius import (FailedProbeIntervals, PatchLinearBound, linear_pass, patch_features,
                                           patch_linear_bound)
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
    margins, slope, _ = linear_pass(bounded, lower, upper, index, target, "crown", 4)
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


def test_a_later_probe_takes_the_intervals_of_a_larger_failed_probe_and_keeps_its_bound_sound():
    """A pass over smaller boxes may start from the intervals a failed pass over larger boxes of the same
    patches settled: only where that probe was larger; the margins it proves are never below the plain pass's
    and hold on sampled points."""
    model, x = _sensitive(_cnn, (1, 1, 7, 7), 3)
    target = int(model(x).argmax())
    masks = patch_masks((1, 7, 7), 2)
    index, _ = patch_features(masks)
    bounded = BoundedModel(model, x)
    rows = torch.arange(masks.shape[0])
    store = FailedProbeIntervals(masks.shape[0])
    large = torch.full((masks.shape[0],), PROBE)
    assert store.outer(rows, large) is None
    lower, upper = _boxes(x, masks, large, (0.0, 1.0))
    margins, _, settled = linear_pass(bounded, lower, upper, index, target, "crown", 4, settle=True)
    failed = margins.amin(1) <= 0
    store.keep(rows, large, failed, settled)
    assert torch.equal(torch.isfinite(store.probe), failed) and failed.any()
    small = large * 0.6
    outer = store.outer(rows, small)
    assert torch.isinf(outer.lower[~failed]).all() and torch.isfinite(outer.lower[failed]).any()
    assert torch.isinf(store.outer(rows, large).lower).all()  # not a smaller probe: nothing known
    lower, upper = _boxes(x, masks, small, (0.0, 1.0))
    plain, _, _ = linear_pass(bounded, lower, upper, index, target, "crown", 4)
    narrowed, _, _ = linear_pass(bounded, lower, upper, index, target, "crown", 4, outer=outer)
    assert bool((narrowed >= plain - 1e-5).all())
    points = lower.unsqueeze(1) + (upper - lower).unsqueeze(1) * torch.rand(lower.shape[0], 200, *x.shape[1:], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        outputs = model(points.reshape(-1, *x.shape[1:])).reshape(lower.shape[0], 200, -1)
    worst = (outputs[..., target : target + 1] - outputs).amin(1)  # per box and class, the smallest sampled margin
    others = [c for c in range(outputs.shape[-1]) if c != target]
    assert bool((worst[:, others] >= narrowed - 1e-5).all())
