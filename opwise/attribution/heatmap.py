"""Pictures of relevance: image heatmaps, colored tokens and pixel-flipping curves, as PNG via matplotlib.

Figures are built with the Agg canvas directly (no pyplot, no display, no global figure state), so
rendering works on headless machines and inside servers. Relevance is signed: red is evidence for the
explained output, blue against it, white none, on a color scale symmetric around zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from opwise.attribution.faithfulness import area_between
from opwise.errors import InputError

ArrayLike = torch.Tensor | np.ndarray


def heatmap(
    relevance: ArrayLike,
    image: ArrayLike | None = None,
    path: str | Path | None = None,
    *,
    cmap: str = "bwr",
    overlay_alpha: float = 0.5,
    title: str | Sequence[str] | None = None,
) -> Figure:
    """Render image relevance with a colorbar on a zero-centered color scale; save a PNG when ``path`` is given.

    ``relevance`` is ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]`` (channels are summed); a batch of more
    than one sample becomes a grid, one titled panel per sample. ``image`` (same layout, grayscale or RGB,
    any value range) is drawn underneath; the relevance on top is ``overlay_alpha`` opaque where it is zero,
    rising to fully opaque at the largest magnitude, so strong evidence stands out and the input shows
    through elsewhere.

    >>> figure = heatmap(torch.tensor([[1.0, -1.0], [0.5, 0.0]]), title="digit")
    >>> figure.axes[0].images[0].get_clim()
    (-1.0, 1.0)
    """
    maps = _relevance_maps(relevance)
    images = _images(image, maps) if image is not None else [None] * len(maps)
    titles = _titles(title, len(maps))
    columns = min(len(maps), 4)
    rows = -(-len(maps) // columns)
    figure = Figure(figsize=(3.6 * columns, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (relevance_map, picture) in enumerate(zip(maps, images)):
        axes = figure.add_subplot(rows, columns, index + 1)
        limit = float(np.abs(relevance_map).max())
        if limit == 0.0:
            warnings.warn(
                f"heatmap: relevance of panel {index} is zero everywhere; the map is blank "
                "(check the target and that the explanation did not vanish)",
                RuntimeWarning,
                stacklevel=2,
            )
            limit = 1.0
        alpha = 1.0
        if picture is not None:
            axes.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
            alpha = overlay_alpha + (1.0 - overlay_alpha) * np.clip(np.abs(relevance_map) / limit, 0.0, 1.0)
        shown = axes.imshow(relevance_map, cmap=cmap, vmin=-limit, vmax=limit, alpha=alpha, interpolation="nearest")
        figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
        axes.set_xticks([])
        axes.set_yticks([])
        if titles[index]:
            axes.set_title(titles[index])
    _save(figure, path)
    return figure


def token_heatmap(tokens: Sequence[str], relevance: ArrayLike, path: str | Path | None = None, *, cmap: str = "bwr") -> Figure:
    """Text with each token's background colored by its signed relevance, wrapped into lines.

    ``relevance`` is ``[T]`` or ``[1, T]`` for ``T`` tokens; the color scale is symmetric around zero.

    >>> figure = token_heatmap(["the", "cat", "sat"], torch.tensor([0.1, 1.0, -0.5]))
    >>> [text.get_text() for text in figure.texts]
    ['the', 'cat', 'sat']
    """
    values = _as_array(relevance, "token_heatmap")
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 1 or values.shape[0] != len(tokens):
        raise InputError(f"token_heatmap: relevance shape {values.shape} does not fit {len(tokens)} tokens; give [T] or [1, T]")
    limit = float(np.abs(values).max()) if values.size else 0.0
    if limit == 0.0:
        warnings.warn("token_heatmap: relevance is zero for every token; all tokens are drawn white", RuntimeWarning, stacklevel=2)
        limit = 1.0
    colors = colormaps[cmap](Normalize(-limit, limit)(values))
    width_px, line_px, margin_px, gap_px = 800.0, 28.0, 12.0, 6.0
    figure = Figure(figsize=(width_px / 100, 1.0), dpi=100)
    canvas = FigureCanvasAgg(figure)
    renderer = canvas.get_renderer()
    texts = []
    for token, color, value in zip(tokens, colors, values):
        ink = "white" if abs(value) > 0.6 * limit else "black"
        text = figure.text(0, 0, token, fontsize=12, family="monospace", va="top", color=ink,
                           bbox=dict(facecolor=color, edgecolor="none", boxstyle="round,pad=0.2"))
        texts.append((text, text.get_window_extent(renderer).width))
    places, x, line = [], margin_px, 0
    for _, width in texts:
        if x + width > width_px - margin_px and x > margin_px:
            x, line = margin_px, line + 1
        places.append((x, line))
        x += width + gap_px
    height_px = 2 * margin_px + (line + 1) * line_px
    figure.set_size_inches(width_px / 100, height_px / 100)
    for (text, _), (x, row) in zip(texts, places):
        text.set_position((x / width_px, 1 - (margin_px + row * line_px) / height_px))
    _save(figure, path)
    return figure


def plot_abpc(curves: Mapping[str, Mapping[str, ArrayLike]], path: str | Path | None = None) -> Figure:
    """Pixel-flipping curves per method, MoRF solid and LeRF dashed, with each method's ABPC in the legend.

    ``curves`` maps a method name to ``{"most": ..., "least": ...}`` as returned by ``abpc`` (``[B, K+1]``
    or ``[K+1]``); batches are averaged. The x axis is the fraction of patches replaced. The legend sits
    right of the axes, so a benchmark's dozen methods do not hide the curves.

    >>> curves = {"LRP": {"most": torch.tensor([6.0, 3.0, 1.0, 0.0]), "least": torch.tensor([6.0, 5.0, 3.0, 0.0])}}
    >>> [text.get_text() for text in plot_abpc(curves).axes[0].get_legend().get_texts()]
    ['LRP MoRF (ABPC 1.000)', 'LRP LeRF']
    """
    if not curves:
        raise InputError("plot_abpc: no curves given; pass {method: {'most': curve, 'least': curve}}")
    figure = Figure(figsize=(9.6, max(4.4, 0.32 * len(curves) + 1.2)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    palette = colormaps["tab10" if len(curves) <= 10 else "tab20"]
    shade = 0.12 if len(curves) <= 3 else 0.04
    for index, (method, pair) in enumerate(curves.items()):
        if set(pair) != {"most", "least"}:
            raise InputError(f"plot_abpc: curves of '{method}' must have exactly the keys 'most' and 'least', got {sorted(pair)}")
        most, least = (_mean_curve(pair[order], method) for order in ("most", "least"))
        score = float(area_between(torch.from_numpy(most), torch.from_numpy(least)))
        fraction = np.linspace(0.0, 1.0, most.shape[0])
        color = palette(index % palette.N)
        axes.plot(fraction, most, color=color, label=f"{method} MoRF (ABPC {score:.3f})")
        axes.plot(fraction, least, color=color, linestyle="--", label=f"{method} LeRF")
        axes.fill_between(fraction, most, least, color=color, alpha=shade)
    axes.set_xlabel("fraction of patches replaced")
    axes.set_ylabel("target logit")
    axes.set_title("pixel flipping")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    _save(figure, path)
    return figure


def _mean_curve(curve: ArrayLike, method: str) -> np.ndarray:
    values = _as_array(curve, f"plot_abpc ('{method}')")
    if values.ndim == 2:
        values = values.mean(axis=0)
    if values.ndim != 1 or values.shape[0] < 2:
        raise InputError(f"plot_abpc: curve of '{method}' has shape {values.shape}; expected [K+1] or [B, K+1] with K >= 1")
    return values


def _as_array(values: ArrayLike, where: str) -> np.ndarray:
    """A float64 numpy copy; NaN or inf is an InputError (a map with holes would mislead)."""
    array = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{where}: relevance contains NaN or inf; fix the explanation before plotting it")
    return array


def _relevance_maps(relevance: ArrayLike) -> list[np.ndarray]:
    """One ``[H, W]`` map per sample, channels summed."""
    values = _as_array(relevance, "heatmap")
    if values.ndim == 2:
        return [values]
    if values.ndim == 3:
        return [values.sum(axis=0)]
    if values.ndim == 4:
        return list(values.sum(axis=1))
    raise InputError(f"heatmap: relevance must be [H, W], [C, H, W] or [B, C, H, W], got shape {values.shape}")


def _images(image: ArrayLike, maps: list[np.ndarray]) -> list[np.ndarray]:
    """Input images as ``[H, W]`` gray or ``[H, W, 3]`` RGB in [0, 1], one per relevance map."""
    values = _as_array(image, "heatmap (image)")
    if values.ndim == 2:
        values = values[None, None]
    elif values.ndim == 3:
        values = values[None]
    if values.ndim != 4 or values.shape[0] != len(maps) or values.shape[1] not in (1, 3):
        raise InputError(
            f"heatmap: image shape {values.shape} does not fit {len(maps)} relevance map(s); "
            "give [H, W], [C, H, W] or [B, C, H, W] with C = 1 (gray) or 3 (RGB)"
        )
    pictures = []
    for picture, relevance_map in zip(values, maps):
        if picture.shape[1:] != relevance_map.shape:
            raise InputError(f"heatmap: image size {picture.shape[1:]} differs from relevance size {relevance_map.shape}")
        low, high = picture.min(), picture.max()
        picture = (picture - low) / (high - low) if high > low else np.zeros_like(picture)
        pictures.append(picture[0] if picture.shape[0] == 1 else picture.transpose(1, 2, 0))
    return pictures


def _titles(title: str | Sequence[str] | None, count: int) -> list[str | None]:
    if title is None:
        return [f"sample {index}" for index in range(count)] if count > 1 else [None]
    if isinstance(title, str):
        return [title if count == 1 else f"{title} ({index})" for index in range(count)]
    if len(title) != count:
        raise InputError(f"heatmap: got {len(title)} titles for {count} panels")
    return list(title)


def _save(figure: Figure, path: str | Path | None) -> None:
    """Write a PNG at the figure's own dpi, so pixel positions match the figure's transforms."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=figure.dpi, format="png")
