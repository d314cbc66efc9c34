"""The HTML report: self-contained, and readable in a real browser (headless Chromium: DOM and screenshot)."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest
import torch

import opwise

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SECTIONS = ("prediction", "relevance", "verification", "certified-map", "counterexample")


def _small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 4),
    ).eval()
    return model


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A report on a small conv net at an ε large enough to falsify, so every section has content."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    x = torch.rand(1, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    page = opwise.report(_small_cnn(), x, path, composites=["epsilon", "epsilon-plus"], eps=0.3, patch=2, eps_max=0.5)
    return path, page


def _browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip(f"no headless browser found ({', '.join(BROWSERS)}); install Debian's chromium (.ci/run does)")


def _run_browser(tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    command = [_browser(), *FLAGS, f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_page_is_self_contained(written):
    path, page = written
    assert path.read_text(encoding="utf-8") == page
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_report_reads_correctly_in_headless_chromium(written, tmp_path):
    path, _ = written
    dom = _run_browser(tmp_path, "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for section in SECTIONS:
        assert f'id="{section}"' in html
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) >= 5
    # the numbers a reader needs: the prediction, the verdict with its margin bounds, the map's statistics
    assert re.search(r"predicted class <b>\d</b>", html)
    assert re.search(r'class="verdict (verified|falsified|unknown)"', html)
    assert re.search(r"<td>\d - \d</td><td>-?\d+\.\d{4}</td>", html)
    assert re.search(r"16 patches, method crown, \d+ batched bound passes", html)
    assert re.search(r"Spearman", html) and re.search(r"margin -?\d+\.\d{4} at x", html)

    shot = tmp_path / "shot.png"
    result = _run_browser(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", path.as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1200
    assert float(pixels.std()) > 0.1  # not a blank page
    assert float((pixels.mean(-1) < 0.9).mean()) > 0.05  # a good part of it is ink and pictures, not white
    rows_with_ink = (pixels.mean(-1) < 0.9).any(1)
    assert float(rows_with_ink[: pixels.shape[0] // 2].mean()) > 0.3 and rows_with_ink[pixels.shape[0] // 2 :].any()


def test_text_report_explains_tokens_and_says_why_bounds_are_absent(tmp_path):
    from opwise.combined.report import text_report

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(6, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2, bias=False))
    page = text_report(model, torch.tensor([[1, 4, 2]]), ["a", "dog", "sat"], tmp_path / "t.html",
                       target=lambda y: y[:, 1], label="class 1", composites=["epsilon"])
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert page.count("token ids are discrete") == 3 and page.count("data:image/png;base64,") == 1


def test_default_composites_draw_an_mlp_s_relevance_apart_per_feature():
    """The report's first default composite was epsilon-plus-flat: on an MLP its map was one flat colour."""
    import opwise
    from opwise.combined.report import DEFAULT_COMPOSITES

    model, inputs = opwise.load_model("builtin:mlp")
    x = (inputs[0] if isinstance(inputs, (tuple, list)) else inputs)[:1]
    for composite in DEFAULT_COMPOSITES:
        relevance = opwise.explain(model, x, composite=composite).relevance
        assert float(relevance.std()) > 1e-2 * float(relevance.abs().max()), composite


def test_report_maps_with_branch_and_bound():
    """method="bab": the certified map is branch-and-bound's (its smallest radius is the one certified_map gives
    with bab, and at least CROWN's), and the margin table shows the CROWN bounds bab splits boxes for."""
    x = torch.rand(1, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    settings = dict(patch=2, eps_max=0.5, domain=(0.0, 1.0))
    page = opwise.report(_small_cnn(), x, composites=["epsilon"], eps=0.3, method="bab", **settings)
    assert "method bab," in page and "<th>crown lower bound</th>" in page
    bab = opwise.certified_map(_small_cnn(), x, method="bab", **settings)
    crown = opwise.certified_map(_small_cnn(), x, method="crown", attack=False, **settings)
    assert f"Smallest certified radius {float(bab.radius.min()):.4f};" in page
    assert float(bab.radius.min()) >= float(crown.radius.min())
