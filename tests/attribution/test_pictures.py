"""Heatmaps, token maps and ABPC plots: PNGs are written, readable, and colored by the sign of relevance."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from matplotlib import image as matplotlib_image

from opwise.attribution.pictures import heatmap, plot_abpc, token_heatmap
from opwise.errors import InputError


def png_color_at(figure, path, axes, column: float, row: float) -> np.ndarray:
    """RGB of the saved PNG at data point (column, row) of an axes (the PNG is saved at the figure's dpi)."""
    pixels = matplotlib_image.imread(path)
    x, y = axes.transData.transform((column, row))
    return pixels[int(round(pixels.shape[0] - y)), int(round(x)), :3]


def is_red(color: np.ndarray) -> bool:
    return color[0] > color[2] + 0.2


def is_blue(color: np.ndarray) -> bool:
    return color[2] > color[0] + 0.2


def split_relevance(size: int = 16) -> torch.Tensor:
    """Left half positive, right half negative."""
    relevance = torch.ones(size, size)
    relevance[:, size // 2:] = -1.0
    return relevance


def test_positive_relevance_is_red_and_negative_blue_in_the_png(tmp_path):
    path = tmp_path / "map.png"
    figure = heatmap(split_relevance(), path=path, title="split")
    assert path.exists() and path.stat().st_size > 1000
    pixels = matplotlib_image.imread(path)
    width, height = figure.get_size_inches() * figure.dpi
    assert pixels.shape[:2] == (round(height), round(width))
    axes = figure.axes[0]
    assert is_red(png_color_at(figure, path, axes, 3, 8))
    assert is_blue(png_color_at(figure, path, axes, 12, 8))
    assert axes.get_title() == "split"
    assert len(figure.axes) == 2  # the map and its colorbar


def test_color_scale_is_symmetric_around_zero():
    relevance = torch.tensor([[3.0, -1.0], [0.5, 0.0]])
    low, high = heatmap(relevance, clip=None).axes[0].images[0].get_clim()
    assert (low, high) == (-3.0, 3.0)
    low, high = heatmap(relevance).axes[0].images[0].get_clim()  # clipped at a percentile: still symmetric
    assert low == -high and 0.5 < high < 3.0


def test_channels_are_summed_and_a_leading_batch_of_one_is_one_panel(tmp_path):
    relevance = torch.zeros(3, 8, 8)
    relevance[0] = 1.0
    relevance[1] = -3.0  # the sum is negative everywhere
    relevance[2, :, :4] = 4.0  # ... except the left half, where it is +2
    for shape, name in [((3, 8, 8), "chw.png"), ((1, 3, 8, 8), "bchw.png")]:
        path = tmp_path / name
        figure = heatmap(relevance.reshape(shape), path=path)
        axes = figure.axes[0]
        assert len(figure.axes) == 2
        np.testing.assert_allclose(axes.images[0].get_array(), relevance.sum(0).numpy())
        assert is_red(png_color_at(figure, path, axes, 1, 4))
        assert is_blue(png_color_at(figure, path, axes, 6, 4))


@pytest.mark.parametrize("image", [
    torch.linspace(0, 255, 16 * 16).view(16, 16),  # grayscale in 0..255
    torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1,  # RGB in -1..1
])
def test_the_input_is_drawn_beside_the_map_not_under_it(tmp_path, image):
    path = tmp_path / "side_by_side.png"
    figure = heatmap(split_relevance() * torch.linspace(0, 1, 16), image, path=path)
    picture_axes, relevance_axes = figure.axes[0], figure.axes[1]
    assert picture_axes.get_title() == "input" and len(picture_axes.images) == 1
    shown = picture_axes.images[0].get_array()
    assert shown.min() == pytest.approx(0.0) and shown.max() == pytest.approx(1.0)  # any range is normalised
    assert len(relevance_axes.images) == 1 and relevance_axes.images[0].get_alpha() is None  # opaque, alone
    bounds = [axes.get_window_extent(figure.canvas.get_renderer()) for axes in (picture_axes, relevance_axes)]
    assert bounds[0].x1 <= bounds[1].x0  # side by side
    assert is_red(png_color_at(figure, path, relevance_axes, 6, 8))
    assert is_blue(png_color_at(figure, path, relevance_axes, 12, 8))
    np.testing.assert_allclose(png_color_at(figure, path, relevance_axes, 0, 8), 1.0, atol=0.02)  # zero is white


def test_a_batch_becomes_a_grid_of_titled_panels(tmp_path):
    path = tmp_path / "grid.png"
    relevance = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    figure = heatmap(relevance, torch.rand(5, 3, 8, 8), path=path)
    panels = [axes for axes in figure.axes if axes.images and axes.get_title() not in ("", "input")]
    assert [axes.get_title() for axes in panels] == [f"sample {index}" for index in range(5)]
    assert path.stat().st_size > 1000
    titled = heatmap(relevance[:2], title=["seven", "one"])
    assert [axes.get_title() for axes in titled.axes if axes.get_title()] == ["seven", "one"]


def test_all_zero_relevance_warns_but_still_renders(tmp_path):
    path = tmp_path / "zero.png"
    with pytest.warns(RuntimeWarning, match="zero everywhere"):
        heatmap(torch.zeros(8, 8), path=path)
    assert path.exists()


@pytest.mark.parametrize(
    ("relevance", "image", "message"),
    [
        (torch.full((4, 4), float("nan")), None, "NaN"),
        (torch.tensor([[1.0, float("inf")]]), None, "NaN"),
        (torch.zeros(4), None, r"\[H, W\]"),
        (torch.ones(4, 4), torch.ones(2, 4, 4), "C = 1"),
        (torch.ones(4, 4), torch.ones(5, 5), "size"),
        (torch.ones(2, 1, 4, 4), torch.ones(4, 4), "relevance map"),
    ],
)
def test_bad_heatmap_input_raises_input_error(relevance, image, message):
    with pytest.raises(InputError, match=message):
        heatmap(relevance, image)


def test_wrong_number_of_titles():
    with pytest.raises(InputError, match="titles"):
        heatmap(torch.ones(3, 1, 4, 4), title=["a", "b"])


def test_token_colors_follow_the_sign_and_wrap_into_lines(tmp_path):
    tokens = ["good", "bad", "neutral"] * 12
    relevance = torch.tensor([1.0, -1.0, 0.0] * 12)
    path = tmp_path / "tokens.png"
    figure = token_heatmap(tokens, relevance[None], path)
    colors = [np.asarray(text.get_bbox_patch().get_facecolor()) for text in figure.texts]
    assert is_red(colors[0]) and is_blue(colors[1])
    np.testing.assert_allclose(colors[2][:3], 1.0, atol=0.01)  # zero is white
    heights = sorted({round(text.get_position()[1], 4) for text in figure.texts})
    assert len(heights) > 1
    assert path.exists() and path.stat().st_size > 1000
    pixels = matplotlib_image.imread(path)
    assert pixels.shape[1] == 800


def test_token_heatmap_errors():
    with pytest.raises(InputError, match="3 tokens"):
        token_heatmap(["a", "b", "c"], torch.ones(4))
    with pytest.raises(InputError, match="NaN"):
        token_heatmap(["a"], torch.tensor([float("nan")]))
    with pytest.warns(RuntimeWarning, match="zero"):
        token_heatmap(["a", "b"], torch.zeros(2))


def test_plot_abpc_writes_curves_with_abpc_in_the_legend(tmp_path):
    curves = {
        "LRP": {"most": torch.tensor([[6.0, 3.0, 1.0, 0.0], [6.0, 3.0, 1.0, 0.0]]),
                "least": torch.tensor([[6.0, 5.0, 3.0, 0.0], [6.0, 5.0, 3.0, 0.0]])},
        "random": {"most": np.array([6.0, 4.0, 2.0, 0.0]), "least": np.array([6.0, 4.0, 2.0, 0.0])},
    }
    path = tmp_path / "abpc.png"
    figure = plot_abpc(curves, path)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["LRP MoRF (ABPC 1.000)", "LRP LeRF", "random MoRF (ABPC 0.000)", "random LeRF"]
    lines = figure.axes[0].get_lines()
    assert lines[0].get_linestyle() == "-" and lines[1].get_linestyle() == "--"
    np.testing.assert_allclose(lines[0].get_xdata(), [0.0, 1 / 3, 2 / 3, 1.0])
    assert path.exists() and path.stat().st_size > 1000


def test_plot_abpc_errors():
    with pytest.raises(InputError, match="no curves"):
        plot_abpc({})
    with pytest.raises(InputError, match="keys"):
        plot_abpc({"LRP": {"most": torch.zeros(3)}})
    with pytest.raises(InputError, match="shape"):
        plot_abpc({"LRP": {"most": torch.zeros(1), "least": torch.zeros(1)}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_abpc({"LRP": {"most": torch.zeros(2), "least": torch.zeros(2)}})


def test_plot_abpc_keeps_a_dozen_methods_apart_with_the_legend_beside_the_axes(tmp_path):
    steps = np.linspace(1.0, 0.0, 5)
    curves = {f"method {k}": {"most": steps * (1 - k / 20), "least": steps} for k in range(12)}
    figure = plot_abpc(curves, tmp_path / "many.png")
    axes = figure.axes[0]
    colors = {tuple(line.get_color()) for line in axes.get_lines()}
    assert len(colors) == 12  # one color per method, MoRF and LeRF sharing it
    renderer = figure.canvas.get_renderer()
    assert axes.get_legend().get_window_extent(renderer).x0 >= axes.get_window_extent(renderer).x1


def test_scale_is_clipped_at_the_percentile_and_the_colour_bar_says_so():
    relevance = torch.linspace(-1, 1, 400).reshape(20, 20)
    relevance[3, 4] = 30.0  # one outlier must not wash out the map
    figure = heatmap(relevance)
    low, high = figure.axes[0].images[0].get_clim()
    expected = float(np.percentile(relevance.abs().numpy(), 99.5))
    assert high == pytest.approx(expected) and low == pytest.approx(-expected) and high < 30.0
    bar = figure.axes[0].images[0].colorbar
    assert bar.extend == "both" and "clipped at p99.5" in bar.ax.get_ylabel()
    unclipped = heatmap(relevance, clip=None)
    assert unclipped.axes[0].images[0].get_clim() == (-30.0, 30.0)
    assert unclipped.axes[0].images[0].colorbar.extend == "neither"


@pytest.mark.parametrize("sign, cmap, shown", [
    ("positive", "white-red", [[1.0, 0.0], [0.5, 0.0]]),
    ("negative", "white-blue", [[0.0, 2.0], [0.0, 0.0]]),
    ("absolute", "white-purple", [[1.0, 2.0], [0.5, 0.0]]),
    ("all", "bwr", [[1.0, -2.0], [0.5, 0.0]]),
])
def test_sign_modes_choose_what_is_drawn_on_a_scale_white_at_zero(sign, cmap, shown):
    image = heatmap(torch.tensor([[1.0, -2.0], [0.5, 0.0]]), sign=sign, clip=None).axes[0].images[0]
    np.testing.assert_allclose(image.get_array(), shown)
    assert image.get_cmap().name == cmap
    np.testing.assert_allclose(image.get_cmap()(image.norm(0.0))[:3], 1.0, atol=0.02)
    assert image.get_clim()[0] == (-2.0 if sign == "all" else 0.0)


def test_figure_title_and_bad_options():
    figure = heatmap(torch.ones(2, 2), suptitle="builtin:cnn · target 3")
    assert figure.get_suptitle() == "builtin:cnn · target 3"
    with pytest.raises(InputError, match="sign"):
        heatmap(torch.ones(2, 2), sign="both")
    with pytest.raises(InputError, match="percentile"):
        heatmap(torch.ones(2, 2), clip=0)


def test_token_map_has_a_title_and_a_colour_scale(tmp_path):
    path = tmp_path / "tokens_scale.png"
    figure = token_heatmap(["the", "cat"], torch.tensor([0.5, -2.0]), path, title="next token 'sat'")
    assert [t.get_text() for t in figure.texts] == ["the", "cat", "next token 'sat'"]
    bars = [axes for axes in figure.axes if axes.get_xlabel()]
    assert len(bars) == 1 and "relevance" in bars[0].get_xlabel()
    assert bars[0].get_xlim() == pytest.approx((-2.0, 2.0))
    positive = token_heatmap(["the", "cat"], torch.tensor([0.5, -2.0]), sign="positive")
    colors = [np.asarray(text.get_bbox_patch().get_facecolor()) for text in positive.texts]
    np.testing.assert_allclose(colors[1][:3], 1.0, atol=0.01)  # negative relevance is not drawn


def test_plot_abpc_title_names_model_composite_and_baseline():
    curves = {"LRP": {"most": torch.tensor([2.0, 1.0, 0.0]), "least": torch.tensor([2.0, 2.0, 0.0])}}
    title = plot_abpc(curves, model="cnn", composite="epsilon-plus-flat", baseline="blur").axes[0].get_title()
    assert title == "pixel flipping: model cnn, composite epsilon-plus-flat, blur baseline"


def test_feature_bars_one_bar_per_feature_coloured_by_sign(tmp_path):
    from opwise.attribution.pictures import feature_bars

    path = tmp_path / "bars.png"
    figure = feature_bars(torch.tensor([0.5, -0.25, 0.0]), path, names=["speed", "angle", "range"], title="acas")
    axes = figure.axes[0]
    bars = axes.patches
    assert [bar.get_width() for bar in bars] == pytest.approx([0.5, -0.25, 0.0])
    assert is_red(np.asarray(bars[0].get_facecolor())) and is_blue(np.asarray(bars[1].get_facecolor()))
    assert axes.get_title() == "acas" and [t.get_text() for t in axes.texts] == ["+0.5", "-0.25", "+0"]
    assert path.stat().st_size > 1000
    with pytest.raises(InputError, match="2 names for 3 features"):
        feature_bars(torch.zeros(3), names=["a", "b"])
