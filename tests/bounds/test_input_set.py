"""InputSet's search side: projection onto a ball ∩ box (the nearest point, checked against a dense grid of
the set), membership after float32 rounding, the linear minimiser against the set's exact minimum, sampling."""

from __future__ import annotations

import math

import pytest
import torch

from opwise.bounds.input_set import InputSet


def _grid_of_set(input_set: InputSet, points: int = 801) -> torch.Tensor:
    """Dense grid points of a 2-D set (float64): the box's grid, kept where inside the ball."""
    lower, upper = input_set.lower[0].double(), input_set.upper[0].double()
    axes = [torch.linspace(float(lower[i]), float(upper[i]), points, dtype=torch.float64) for i in range(2)]
    grid = torch.cartesian_prod(*axes)
    distance = torch.linalg.vector_norm(grid - input_set.center.double(), ord=input_set.norm, dim=1)
    return grid[distance <= input_set.eps]


@pytest.mark.parametrize("norm", [1.0, 2.0])
def test_projection_is_the_nearest_point_of_ball_and_box(norm):
    generator = torch.Generator().manual_seed(0)
    for trial in range(6):
        center = torch.rand(1, 2, generator=generator)
        eps = 0.2 + 0.5 * float(torch.rand(1, generator=generator))
        domain = (0.0, 1.0) if trial % 2 else None  # clipped balls and whole ones
        input_set = InputSet.ball(center, eps, norm=norm, domain=domain)
        grid = _grid_of_set(input_set)
        z = center + 1.5 * torch.randn(40, 2, generator=generator)
        projected = input_set.project(z)
        assert input_set.contains(projected)
        ours = (projected.double() - z.double()).norm(dim=1)
        best = torch.cdist(z.double(), grid).amin(1)
        spacing = float((input_set.upper - input_set.lower).max()) / 800
        assert (ours <= best + 1e-6).all()  # no grid point of the set is nearer
        assert (ours >= best - 2 * spacing).all()  # and the grid comes as near as its spacing allows


@pytest.mark.parametrize("norm", [1.0, 2.0, 3.0])
def test_projection_keeps_points_of_the_set_and_lands_inside_after_rounding(norm):
    generator = torch.Generator().manual_seed(1)
    for center, eps in ((torch.rand(1, 5, generator=generator), 0.3), (1000 + torch.rand(1, 5, generator=generator), 1e-4)):
        input_set = InputSet.ball(center, eps, norm=norm)
        inside = input_set.sample(50, generator)
        assert input_set.contains(inside)
        assert torch.allclose(input_set.project(inside), inside, atol=1e-6 * float(center.abs().max()))
        far = input_set.project(center + torch.randn(200, 5, generator=generator))
        assert input_set.contains(far)  # in float32, not only in exact arithmetic
        if eps > 1e-3:  # (near 1000, float32 steps are 6e-5: the sphere of radius 1e-4 is not representable)
            on_sphere = torch.linalg.vector_norm((far.double() - center.double()), ord=norm, dim=1)
            assert (on_sphere > 0.99 * eps).all()  # a point outside the ball ends on its surface


@pytest.mark.parametrize("norm", [1.0, 2.0, 3.0])
def test_minimizer_attains_the_exact_minimum_of_a_linear_function(norm):
    generator = torch.Generator().manual_seed(2)
    center = torch.randn(1, 6, generator=generator)
    input_set = InputSet.ball(center, 0.4, norm=norm)
    A = torch.randn(8, 6, generator=generator)
    point = input_set.minimizer(A)
    assert input_set.contains(point, tolerance=1e-6)
    exact = input_set.minimum(A[:, None, :])[:, 0]  # A·c − ε‖A‖_q
    assert torch.allclose((A * point).sum(1), exact, atol=1e-5)


def test_ascent_step_is_the_dual_norm_direction():
    gradient = torch.tensor([[3.0, -4.0, 1.0]])
    for norm, dual in ((1.0, math.inf), (2.0, 2.0), (3.0, 1.5)):
        input_set = InputSet.ball(torch.zeros(1, 3), 0.5, norm=norm)
        step = input_set.ascent_step(gradient)
        assert float(torch.linalg.vector_norm(step, ord=norm)) == pytest.approx(0.5, rel=1e-6)
        assert float((gradient * step).sum()) == pytest.approx(0.5 * float(torch.linalg.vector_norm(gradient, ord=dual)), rel=1e-5)
    box = InputSet.ball(torch.zeros(1, 3), 0.5)  # a box steps by each input's width (here 2ε) along the sign
    assert box.ascent_step(gradient).tolist() == [[1.0, -1.0, 1.0]]


def test_box_keeps_its_corner_and_clip():
    box = InputSet(torch.tensor([[0.0, -1.0]]), torch.tensor([[1.0, 1.0]]))
    assert box.is_box and InputSet.ball(torch.zeros(1, 2), 0.5).is_box  # an L∞ ball is its box
    assert box.minimizer(torch.tensor([[1.0, -1.0]])).tolist() == [[0.0, 1.0]]
    assert box.project(torch.tensor([[2.0, -3.0]])).tolist() == [[1.0, -1.0]]
    assert box.contains(box.sample(100, torch.Generator().manual_seed(0)))
