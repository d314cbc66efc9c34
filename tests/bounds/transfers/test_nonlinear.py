"""Elementwise operators through their relaxations (opwise/bounds/transfers/nonlinear.py)."""

import torch

from opwise.bounds.relaxations.registry import relaxation_for
from opwise.bounds.transfers.nonlinear import fold_points
from opwise.bounds.transfers.registry import Interval


def test_point_intervals_get_the_constant_function_value_and_others_keep_their_lines():
    lower, upper = torch.tensor([0.0, -3e38, 0.0]), torch.tensor([0.0, -3e38, 1.0])
    relaxation = relaxation_for("aten.exp.default")
    lines = fold_points(relaxation.relax(lower, upper), Interval(lower, upper), relaxation.function)
    assert lines.lower_slope[:2].tolist() == [0.0, 0.0] and lines.upper_slope[:2].tolist() == [0.0, 0.0]
    assert lines.lower_intercept[:2].tolist() == [1.0, 0.0] and lines.upper_intercept[:2].tolist() == [1.0, 0.0]
    unfolded = relaxation.relax(lower, upper)
    assert lines.upper_slope[2] == unfolded.upper_slope[2] and lines.lower_intercept[2] == unfolded.lower_intercept[2]
