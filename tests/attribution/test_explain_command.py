"""`opwise explain` on a small model: prints prediction, explained logit and conservation; writes the map."""

from __future__ import annotations

import numpy
import pytest
import torch
from torch import nn

from opwise.cli import main
from opwise.cli import explain as command


@pytest.fixture
def small_model(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3)).eval()
    monkeypatch.setattr(command, "load_model", lambda spec: (model, (torch.rand(1, 1, 8, 8),)))
    written = {}

    def heatmap(relevance, image=None, path=None, **options):
        written["shape"], written["path"] = tuple(relevance.shape), path

    from opwise.attribution import pictures

    monkeypatch.setattr(pictures, "heatmap", heatmap)
    return written


def test_explain_prints_and_writes(small_model, tmp_path, capsys):
    image = tmp_path / "digit.npy"
    numpy.save(image, numpy.random.rand(8, 8).astype("float32"))
    assert main(["explain", "--input", str(image), "--target", "2", "--out", str(tmp_path / "r.png")]) == 0
    text = capsys.readouterr().out
    assert "prediction:" in text and "explained: output 2" in text and "conservation:" in text
    assert small_model == {"shape": (1, 8, 8), "path": str(tmp_path / "r.png")}


def test_bad_input_is_one_line_and_exit_2(small_model, tmp_path, capsys):
    image = tmp_path / "wrong.npy"
    numpy.save(image, numpy.zeros((5, 5), "float32"))
    assert main(["explain", "--input", str(image)]) == 2
    assert "expects (1, 1, 8, 8)" in capsys.readouterr().err
    assert main(["explain", "--target", "7"]) == 2
