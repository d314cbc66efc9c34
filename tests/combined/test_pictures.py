"""Pictures: six titled panels with colour bars for images, bar charts for vectors, token labels for sequences."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import torch

import opwise
from opwise.combined.pictures import certified_map_figure, counterexample_figure

TITLES = ["input x", "counterexample x'", "perturbation x' - x", "relevance at x", "relevance at x'", "difference"]


def _titles(figure):
    return [axes.get_title().split(" (")[0] for axes in figure.axes if axes.get_title()]


def test_image_counterexample_has_six_titled_panels_with_colour_bars(tmp_path):
    model = opwise.models.builtin("cnn")
    x, _ = opwise.models.demo_inputs("cnn", n=1)
    x_prime = (x + 0.3 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    figure = counterexample_figure(opwise.explain_counterexample(model, x, x_prime), tmp_path / "c.png")
    assert _titles(figure) == TITLES
    assert len(figure.axes) == 12  # each panel has its colour bar
    picture = matplotlib.image.imread(tmp_path / "c.png")
    assert picture.shape[1] > 800 and float(np.std(picture[..., :3])) > 0.05


def test_vector_counterexample_is_drawn_as_bar_charts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))  # ACAS Xu-sized
    x = torch.rand(1, 5)
    figure = counterexample_figure(opwise.explain_counterexample(model, x, x + 0.2))
    assert _titles(figure) == TITLES
    assert all(len(axes.patches) == 5 for axes in figure.axes)  # five bars per panel, no images


def test_token_counterexample_labels_each_token():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4, 2))
    x = torch.randn(1, 3, 4)
    figure = counterexample_figure(opwise.explain_counterexample(model, x, x + 0.1, tokens=["the", "cat", "sat"]))
    labels = [[t.get_text() for t in axes.get_xticklabels()] for axes in figure.axes if axes.patches]
    assert labels and all(row == ["the", "cat", "sat"] for row in labels)


def test_certified_map_figure_shows_radius_attack_and_relevance(tmp_path):
    model = torch.nn.Linear(4, 2)
    result = opwise.certified_map(model, torch.full((1, 4), 0.5), eps_max=0.5, steps=2)
    figure = certified_map_figure(result, torch.tensor([[1.0, -1.0, 0.5, 0.0]]), tmp_path / "m.png")
    assert [t.split(" (")[0] for t in _titles(figure)] == ["input", "certified radius", "PGD radius", "relevance"]
    assert (tmp_path / "m.png").stat().st_size > 1000
