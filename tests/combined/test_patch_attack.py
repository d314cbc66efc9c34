"""attack_boxes: every row searched in its own box; only confirmed counterexamples are reported found."""

from __future__ import annotations

import torch

from opwise.combined.patch_attack import attack_boxes, robust_margins


def test_rows_stay_in_their_boxes_and_found_points_break_the_prediction():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    x = torch.rand(1, 3)
    target = int(model(x).argmax())
    widths = torch.tensor([0.0, 0.01, 0.5, 2.0, 5.0])[:, None]
    lower, upper = x - widths, x + widths
    found, points = attack_boxes(model, lower, upper, target, steps=40, restarts=6)
    assert ((points >= lower) & (points <= upper)).all()
    with torch.no_grad():
        margins = robust_margins(model, points, target)
    assert torch.equal(found, margins <= 0)
    assert not found[0]  # a box of width 0 holds only x, which the model classifies as the target
    assert found[-1]  # the wide box contains other classes' regions for this net (checked by the margin above)


def test_chunks_give_the_rows_their_own_results():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    lower = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    upper = torch.tensor([[1.0, 0.5], [1.0, 1.5], [1.0, 0.9]])
    found, points = attack_boxes(model, lower, upper, 0, chunk=2)
    assert found.tolist() == [False, True, False]
    assert float(points[1, 1]) >= 1.0
