"""Pictures of relevance: image heatmaps, colored tokens and pixel-flipping curves, as PNG via matplotlib.

Figures are built with the Agg canvas directly (no pyplot, no display, no global figure state), so
rendering works on headless machines and inside servers. Relevance is signed: red is evidence for the
explained output, blue against it, white none, on a colour scale symmetric around zero that ends at a
high percentile of |relevance| (outliers take the end colour). Inputs are drawn beside their maps.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure

from opwise.attribution.faithfulness import area_between
from opwise.errors import InputError

ArrayLike = torch.Tensor | np.ndarray


# One-sided maps from exact white at zero (matplotlib's Reds/Blues start off-white), ending as ColorBrewer's.
_ONE_SIDED = {
    name: LinearSegmentedColormap.from_list(name, ["#ffffff", middle, end])
    for name, middle, end in [("white-red", "#fb6a4a", "#67000d"), ("white-blue", "#6baed6", "#08306b"),
                              ("white-purple", "#9e9ac8", "#3f007d")]
}
SIGNS = {
    # sign mode -> (what is drawn, colour map, colour-bar label); every map is white at zero
    "all": (lambda r: r, "bwr", "relevance"),
    "positive": (lambda r: np.maximum(r, 0.0), "white-red", "positive relevance"),
    "negative": (lambda r: np.maximum(-r, 0.0), "white-blue", "|negative relevance|"),
    "absolute": (np.abs, "white-purple", "|relevance|"),
}


def _colormap(name: str):
    return _ONE_SIDED.get(name) or colormaps[name]
DEFAULT_CLIP = 99.5


def heatmap(
    relevance: ArrayLike,
    image: ArrayLike | None = None,
    path: str | Path | None = None,
    *,
    title: str | Sequence[str] | None = None,
    suptitle: str | None = None,
    clip: float | None = DEFAULT_CLIP,
    sign: str = "all",
    cmap: str | None = None,
) -> Figure:
    """Render image relevance with a labelled colour bar, zero drawn white; save a PNG when ``path`` is given.

    ``relevance`` is ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]`` (channels are summed); a batch of more
    than one sample becomes a grid, one titled panel per sample. ``image`` (same layout, grayscale or RGB,
    any value range) is drawn beside each map (input | relevance), never under it, so the colours keep
    their meaning. ``clip`` is the percentile of |relevance| where the colour scale ends (as Captum's
    ``outlier_perc``; None for the maximum), so one extreme pixel cannot wash out the rest; values beyond
    it take the end colour and the colour bar shows arrows. ``sign``: "all" (signed, red for and blue
    against the explained output), "positive", "negative" (its magnitude) or "absolute".

    >>> figure = heatmap(torch.tensor([[1.0, -1.0], [0.5, 0.0]]), title="digit")
    >>> figure.axes[0].images[0].get_clim(), figure.axes[0].get_title()
    ((-1.0, 1.0), 'digit')
    """
    if sign not in SIGNS:
        raise InputError(f"heatmap: sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    if clip is not None and not 0.0 < clip <= 100.0:
        raise InputError(f"heatmap: clip is a percentile in (0, 100], got {clip}")
    maps = _relevance_maps(relevance)
    images = _images(image, maps) if image is not None else [None] * len(maps)
    titles = _titles(title, len(maps))
    transform, default_cmap, label = SIGNS[sign]
    per_sample = 2 if image is not None else 1
    columns = min(len(maps), 4)
    rows = -(-len(maps) // columns)
    figure = Figure(figsize=(3.6 * columns * (1.7 if image is not None else 1.0), 3.3 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (relevance_map, picture) in enumerate(zip(maps, images)):
        position = (index // columns) * columns * per_sample + (index % columns) * per_sample + 1
        if picture is not None:
            shown_input = figure.add_subplot(rows, columns * per_sample, position)
            shown_input.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0.0, vmax=1.0,
                               interpolation="nearest")
            shown_input.set_title("input")
            shown_input.set_xticks([])
            shown_input.set_yticks([])
        axes = figure.add_subplot(rows, columns * per_sample, position + per_sample - 1)
        values = transform(relevance_map)
        low, high, clipped = _color_limits(values, clip, sign, index)
        shown = axes.imshow(values, cmap=_colormap(cmap or default_cmap), vmin=low, vmax=high, interpolation="nearest")
        extend = ("both" if sign == "all" else "max") if clipped else "neither"
        bar = figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, extend=extend)
        bar.set_label(label + (f" (clipped at p{clip:g})" if clipped else ""), fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
        if titles[index]:
            axes.set_title(titles[index], fontsize=9)
    if suptitle:
        figure.suptitle(suptitle, fontsize=10)
    _save(figure, path)
    return figure


def _color_limits(values: np.ndarray, clip: float | None, sign: str, index: int) -> tuple[float, float, bool]:
    """(low, high, clipped): the scale ends at the ``clip`` percentile of |values| (its maximum when that
    percentile is zero, as in sparse maps), symmetric around zero for signed maps."""
    magnitude = np.abs(values)
    largest = float(magnitude.max())
    limit = float(np.percentile(magnitude, clip)) if clip is not None else largest
    if limit == 0.0:
        limit = largest
    if limit == 0.0:
        warnings.warn(
            f"heatmap: relevance of panel {index} is zero everywhere; the map is blank "
            "(check the target and that the explanation did not vanish)",
            RuntimeWarning,
            stacklevel=3,
        )
        limit = 1.0
    return (-limit if sign == "all" else 0.0), limit, largest > limit * (1 + 1e-9)


def token_heatmap(
    tokens: Sequence[str],
    relevance: ArrayLike,
    path: str | Path | None = None,
    *,
    title: str | None = None,
    clip: float | None = None,
    sign: str = "all",
    cmap: str | None = None,
) -> Figure:
    """Text with each token's background coloured by its relevance, wrapped into lines, with a colour bar.

    ``relevance`` is ``[T]`` or ``[1, T]`` for ``T`` tokens. ``sign`` and ``clip`` work as in ``heatmap``
    (no clipping by default: a sentence has few tokens, and each one counts).

    >>> figure = token_heatmap(["the", "cat", "sat"], torch.tensor([0.1, 1.0, -0.5]), title="next token")
    >>> [text.get_text() for text in figure.texts][:3], figure.texts[-1].get_text()
    (['the', 'cat', 'sat'], 'next token')
    """
    if sign not in SIGNS:
        raise InputError(f"token_heatmap: sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    values = _as_array(relevance, "token_heatmap")
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 1 or values.shape[0] != len(tokens):
        raise InputError(f"token_heatmap: relevance shape {values.shape} does not fit {len(tokens)} tokens; give [T] or [1, T]")
    transform, default_cmap, label = SIGNS[sign]
    shown = transform(values)
    if values.size and not np.abs(shown).any():
        warnings.warn("token_heatmap: relevance is zero for every token; all tokens are drawn white", RuntimeWarning, stacklevel=2)
    low, high, clipped = _color_limits(shown, clip, sign, 0) if np.abs(shown).any() else (-1.0, 1.0, False)
    if sign != "all":
        low = 0.0
    colormap = _colormap(cmap or default_cmap)
    colors = colormap(Normalize(low, high, clip=True)(shown))
    width_px, line_px, margin_px, gap_px, title_px, bar_px = 800.0, 28.0, 12.0, 6.0, 26.0 if title else 0.0, 64.0
    figure = Figure(figsize=(width_px / 100, 1.0), dpi=100)
    canvas = FigureCanvasAgg(figure)
    renderer = canvas.get_renderer()
    texts = []
    for token, color, value in zip(tokens, colors, shown):
        ink = "white" if abs(value) > 0.6 * max(abs(low), abs(high)) else "black"
        text = figure.text(0, 0, token, fontsize=12, family="monospace", va="top", color=ink,
                           bbox=dict(facecolor=color, edgecolor="none", boxstyle="round,pad=0.2"))
        texts.append((text, text.get_window_extent(renderer).width))
    places, x, line = [], margin_px, 0
    for _, width in texts:
        if x + width > width_px - margin_px and x > margin_px:
            x, line = margin_px, line + 1
        places.append((x, line))
        x += width + gap_px
    height_px = 2 * margin_px + title_px + (line + 1) * line_px + bar_px
    figure.set_size_inches(width_px / 100, height_px / 100)
    for (text, _), (x, row) in zip(texts, places):
        text.set_position((x / width_px, 1 - (margin_px + title_px + row * line_px) / height_px))
    if title:
        figure.text(margin_px / width_px, 1 - margin_px / height_px, title, fontsize=11, va="top", weight="bold")
    bar_axes = figure.add_axes((0.25, (margin_px + 30.0) / height_px, 0.5, 10.0 / height_px))
    mappable = ScalarMappable(Normalize(low, high), colormap)
    bar = figure.colorbar(mappable, cax=bar_axes, orientation="horizontal",
                          extend=("both" if sign == "all" else "max") if clipped else "neither")
    bar.ax.tick_params(labelsize=7)
    bar.set_label(label, fontsize=8)
    _save(figure, path)
    return figure


def feature_bars(
    relevance: ArrayLike,
    path: str | Path | None = None,
    *,
    names: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """One bar per input feature (vector inputs, where a heatmap would be a single coloured strip): red for
    evidence for the explained output, blue against it, with the value at the bar's end.

    >>> figure = feature_bars(torch.tensor([0.5, -0.25, 0.0]), names=["speed", "angle", "range"])
    >>> [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    ['speed', 'angle', 'range']
    """
    values = _as_array(relevance, "feature_bars").reshape(-1)
    labels = list(names) if names is not None else [f"input {index}" for index in range(values.size)]
    if len(labels) != values.size:
        raise InputError(f"feature_bars: {len(labels)} names for {values.size} features")
    figure = Figure(figsize=(6.4, 1.2 + 0.32 * values.size), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    colors = [colormaps["bwr"](0.9 if value > 0 else 0.1) for value in values]
    positions = np.arange(values.size)
    axes.barh(positions, values, color=colors)
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    axes.axvline(0.0, color="black", linewidth=0.8)
    for position, value in zip(positions, values):
        axes.annotate(f"{value:+.3g}", (value, position), xytext=(4 if value >= 0 else -4, 0),
                      textcoords="offset points", va="center", ha="left" if value >= 0 else "right", fontsize=8)
    axes.margins(x=0.2)
    axes.set_xlabel("relevance (red for, blue against)")
    if title:
        axes.set_title(title, fontsize=10)
    _save(figure, path)
    return figure


def plot_abpc(
    curves: Mapping[str, Mapping[str, ArrayLike]],
    path: str | Path | None = None,
    *,
    model: str | None = None,
    baseline: str | None = None,
    composite: str | None = None,
) -> Figure:
    """Pixel-flipping curves per method, MoRF solid and LeRF dashed, with each method's ABPC in the legend.

    ``curves`` maps a method name to ``{"most": ..., "least": ...}`` as returned by ``abpc`` (``[B, K+1]``
    or ``[K+1]``); batches are averaged. The x axis is the fraction of patches replaced. The legend sits
    right of the axes, so a benchmark's dozen methods do not hide the curves. The title names the
    ``model``, the ``baseline`` that replaced the patches and the ``composite`` when given.

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
    named = [f"model {model}" if model else None, f"composite {composite}" if composite else None,
             f"{baseline} baseline" if baseline else None]
    axes.set_title("pixel flipping" + (": " + ", ".join(n for n in named if n) if any(named) else ""))
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
