"""Pictures for the combined analyses: a counterexample beside its explanation, a certified-radius map.

Images become image panels, vectors (e.g. ACAS Xu's 5 inputs) bar charts, embedding sequences one bar
per token. Signed quantities share a colour scale symmetric around zero (red for, blue against).
Figures use the Agg canvas directly, as `opwise.attribution.pictures` does, so they render headless.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from opwise.combined.certified_map import CertifiedMap
from opwise.combined.counterexample import CounterexampleExplanation


def counterexample_figure(explanation: CounterexampleExplanation, path: str | Path | None = None) -> Figure:
    """input | x′ | perturbation | relevance at x | relevance at x′ | difference, titled, with colour bars.

    >>> import torch, opwise
    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad(): _ = model.weight.copy_(torch.eye(2)); _ = model.bias.zero_()
    >>> c = opwise.explain_counterexample(model, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.4, 0.6]]))
    >>> [axes.get_title().split(" (")[0] for axes in counterexample_figure(c).axes[:6]]
    ['input x', "counterexample x'", "perturbation x' - x", 'relevance at x', "relevance at x'", 'difference']
    """
    c = explanation
    scale = max(float(c.relevance_true_x.abs().max()), float(c.relevance_true_x_prime.abs().max())) or 1.0
    panels = [
        ("input x", c.x, "data", None),
        ("counterexample x'", c.x_prime, "data", None),
        ("perturbation x' - x" + ("" if c.tokens is None else " (largest |change| per token)"), c.perturbation,
         "signed" if c.tokens is None else "magnitude", None),
        (f"relevance at x (class {c.true_class})", c.relevance_true_x, "signed", scale),
        (f"relevance at x' (class {c.true_class})", c.relevance_true_x_prime, "signed", scale),
        ("difference", c.difference, "signed", None),
    ]
    figure = Figure(figsize=(10.5, 6.6), layout="constrained")
    FigureCanvasAgg(figure)
    data_range = (min(float(c.x.min()), float(c.x_prime.min())), max(float(c.x.max()), float(c.x_prime.max())))
    for index, (title, values, kind, limit) in enumerate(panels):
        axes = figure.add_subplot(2, 3, index + 1)
        _panel(figure, axes, values[0], kind, limit, data_range, c.tokens)
        axes.set_title(title, fontsize=9)
    figure.suptitle(
        f"margin y{c.true_class} - y{c.adversarial_class}: {c.margin_at_x:.3f} at x -> {c.margin_at_x_prime:.3f} at x'; "
        f"top-{c.top_changed.numel()} overlap of relevance change and perturbation {c.overlap:.0%}", fontsize=10)
    _save(figure, path)
    return figure


def certified_map_figure(result: CertifiedMap, relevance: torch.Tensor | None = None, path: str | Path | None = None) -> Figure:
    """input | certified radius | PGD radius (the true radius lies between) | relevance, with colour bars.

    >>> import torch, opwise
    >>> model = torch.nn.Linear(4, 2)  # a constant margin of 1: certified everywhere up to eps_max
    >>> _ = torch.nn.init.zeros_(model.weight), model.bias.data.copy_(torch.tensor([1.0, 0.0]))
    >>> m = opwise.certified_map(model, torch.full((1, 4), 0.5), eps_max=0.5, steps=2, attack=False)
    >>> [axes.get_title() for axes in certified_map_figure(m).axes[:3]]
    ['input', 'certified radius (crown; 0.5 = certified up to eps_max)', 'PGD radius (none found: blank)']
    """
    sample = result.x[0]
    attack = result.per_feature(result.attack_radius.where(torch.isfinite(result.attack_radius), torch.tensor(math.nan)))
    capped = "" if bool((result.radius < result.eps_max).all()) else f"; {result.eps_max:g} = certified up to eps_max"
    panels = [
        ("input", sample, "data", None),
        (f"certified radius ({result.method}{capped})", result.per_feature(result.radius), "radius", None),
        ("PGD radius" + (" (blank: none found)" if torch.isfinite(result.attack_radius).any() else " (none found: blank)"), attack, "radius", None),
    ]
    if relevance is not None:
        correlation = result.relevance_correlation(relevance)
        panels.append((f"relevance (Spearman vs radius {correlation:.2f})", relevance.reshape(sample.shape), "signed", None))
    figure = Figure(figsize=(3.6 * len(panels), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (title, values, kind, limit) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        _panel(figure, axes, values, kind, limit, (float(sample.min()), float(sample.max())), None, vmax=result.eps_max)
        axes.set_title(title, fontsize=9)
    figure.suptitle(f"class {result.target}: certified L-inf radius per patch (<= eps_max {result.eps_max:g})", fontsize=10)
    _save(figure, path)
    return figure


def input_figure(sample: torch.Tensor, title: str = "input") -> Figure:
    """One sample (no batch axis) as an image, or a bar chart for a vector.

    >>> input_figure(torch.rand(1, 8, 8)).axes[0].get_title()
    'input'
    """
    return _single(sample, "data", title)


def relevance_figure(relevance: torch.Tensor, sample: torch.Tensor, title: str = "relevance") -> Figure:
    """Relevance of one sample beside the sample: two panels, relevance on a zero-centred scale.

    >>> [axes.get_title() for axes in relevance_figure(torch.randn(5), torch.rand(5)).axes[:2]]
    ['input', 'relevance']
    """
    figure = Figure(figsize=(7.2, 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (name, values, kind) in enumerate((("input", sample, "data"), (title, relevance.reshape(sample.shape), "signed"))):
        axes = figure.add_subplot(1, 2, index + 1)
        _panel(figure, axes, values, kind, None, (float(sample.min()), float(sample.max())), None)
        axes.set_title(name, fontsize=9)
    return figure


def _single(values: torch.Tensor, kind: str, title: str) -> Figure:
    figure = Figure(figsize=(3.6, 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    _panel(figure, axes, values, kind, None, (float(values.min()), float(values.max())), None)
    axes.set_title(title, fontsize=9)
    return figure


def _panel(figure, axes, values: torch.Tensor, kind: str, limit, data_range, tokens: Sequence[str] | None, vmax=None) -> None:
    """Draw one quantity: an image, a bar chart (vectors, per token) or an embedding matrix."""
    values = values.detach().float().cpu()
    cmap, low, high = {
        "data": ("gray", data_range[0], data_range[1]),
        "radius": ("viridis", 0.0, vmax),
        "magnitude": ("Reds", 0.0, None),
    }.get(kind, ("bwr", None, None))
    if kind == "signed":
        limit = limit or float(np.nanmax(np.abs(values.numpy()))) or 1.0
        low, high = -limit, limit
    if tokens is not None and values.dim() == 2:
        shown = axes.imshow(values.numpy(), cmap=cmap, aspect="auto", interpolation="nearest")
        axes.set_yticks(range(len(tokens)), tokens, fontsize=7)
        figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
        return
    if values.dim() == 1:
        labels = list(tokens) if tokens is not None else [str(i) for i in range(values.numel())]
        colors = ["tab:red" if v > 0 else "tab:blue" for v in values.tolist()] if kind == "signed" else "tab:gray"
        axes.bar(range(values.numel()), values.nan_to_num(0.0).numpy(), color=colors)
        axes.set_xticks(range(values.numel()), labels, fontsize=7, rotation=90 if tokens is not None else 0)
        axes.axhline(0.0, color="black", linewidth=0.5)
        return
    image = values.numpy()
    if image.ndim == 3:
        image = image.transpose(1, 2, 0) if kind == "data" and image.shape[0] == 3 else image.sum(0) if kind == "signed" else image.mean(0)
    if kind == "data" and image.ndim == 3:
        image = (image - data_range[0]) / max(1e-12, data_range[1] - data_range[0])
    shown = axes.imshow(image, cmap=cmap if image.ndim == 2 else None, vmin=low, vmax=high, interpolation="nearest")
    if image.ndim == 2:
        figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks([])
    axes.set_yticks([])


def _save(figure: Figure, path: str | Path | None) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
