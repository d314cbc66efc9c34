"""McCormick planes: sound for every α in [0, 1], exact at the box corners, CROWN's planes by default."""

from __future__ import annotations

import torch

from opwise.bounds.relaxations.base import AlphaPair
from opwise.bounds.relaxations.bilinear import clamp_bilinear_alpha, init_bilinear_alpha, relax_bilinear


def random_boxes(seed: int, count: int = 300):
    generator = torch.Generator().manual_seed(seed)
    corners = torch.randn(4, count, generator=generator, dtype=torch.float64) * torch.tensor([0.1, 1.0, 10.0]).double().repeat(count // 3)
    lx, ux = torch.minimum(corners[0], corners[1]), torch.maximum(corners[0], corners[1])
    ly, uy = torch.minimum(corners[2], corners[3]), torch.maximum(corners[2], corners[3])
    ux[::11] = lx[::11]
    return lx, ux, ly, uy, generator


def evaluate(planes, x, y):
    low = planes.lower_x[:, None] * x + planes.lower_y[:, None] * y + planes.lower_intercept[:, None]
    high = planes.upper_x[:, None] * x + planes.upper_y[:, None] * y + planes.upper_intercept[:, None]
    return low, high


def test_planes_are_sound_for_default_and_random_alpha():
    for seed in range(3):
        lx, ux, ly, uy, generator = random_boxes(seed)
        s, t = torch.rand(2, 1, 2000, generator=generator, dtype=torch.float64)
        x, y = lx[:, None] + (ux - lx)[:, None] * s, ly[:, None] + (uy - ly)[:, None] * t
        alphas = [None, AlphaPair(torch.rand(lx.shape, generator=generator, dtype=torch.float64), torch.rand(lx.shape, generator=generator, dtype=torch.float64))]
        for alpha in alphas:
            low, high = evaluate(relax_bilinear(lx, ux, ly, uy, alpha), x, y)
            slack = 1e-9 * (1 + (x * y).abs())
            assert (low <= x * y + slack).all() and (x * y <= high + slack).all()


def test_planes_are_exact_at_the_corners_they_pass_through():
    lx, ux, ly, uy, _ = random_boxes(4)
    ones, zeros = torch.ones_like(lx), torch.zeros_like(lx)
    first = relax_bilinear(lx, ux, ly, uy, AlphaPair(ones, ones))
    second = relax_bilinear(lx, ux, ly, uy, AlphaPair(zeros, zeros))
    for planes, lower_corner, upper_corner in ((first, (lx, ly), (lx, uy)), (second, (ux, uy), (ux, ly))):
        low, _ = evaluate(planes, lower_corner[0][:, None], lower_corner[1][:, None])
        _, high = evaluate(planes, upper_corner[0][:, None], upper_corner[1][:, None])
        assert torch.allclose(low[:, 0], lower_corner[0] * lower_corner[1], atol=1e-9)
        assert torch.allclose(high[:, 0], upper_corner[0] * upper_corner[1], atol=1e-9)


def test_default_equals_alpha_one_and_clamp_projects_to_unit_interval():
    lx, ux, ly, uy = torch.tensor([-1.0]), torch.tensor([2.0]), torch.tensor([-3.0, 0.5]), torch.tensor([1.0, 4.0])
    alpha = init_bilinear_alpha(lx, ux, ly, uy)
    assert alpha.lower.shape == (2,)
    assert torch.equal(relax_bilinear(lx, ux, ly, uy, alpha).lower_x, relax_bilinear(lx, ux, ly, uy).lower_x)
    alpha.lower.fill_(3.0)
    alpha.upper.fill_(-1.0)
    clamp_bilinear_alpha(alpha)
    assert torch.equal(alpha.lower, torch.ones(2)) and torch.equal(alpha.upper, torch.zeros(2))
