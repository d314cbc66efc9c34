"""Windowed coefficients (opwise/bounds/transfers/patches.py) and the convolution backward on windows: the
same numbers as the dense path, on convolutions and transposed convolutions with padding, stride,
dilation and groups, and CROWN with windows is sound and equals CROWN without them."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from opwise.bounds import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.transfers.affine import AddSubtract, BatchNorm, ConstantPad
from opwise.bounds.transfers import convolution
from opwise.bounds.transfers.convolution import AveragePool, Convolution, window_backward
from opwise.bounds.transfers.nonlinear import Elementwise
from opwise.bounds.transfers import patches as patches_module
from opwise.bounds.transfers.patches import Patches
from opwise.tracing import trace
from tests.bounds.helpers import assert_sound, randomize_

# (in channels, out channels, kernel, stride, padding, dilation, groups, output padding, transposed)
CONVOLUTIONS = {
    "conv padded": (3, 4, 3, 1, 1, 1, 1, 0, False),
    "conv strided": (2, 4, 3, 2, 1, 1, 1, 0, False),
    "conv dilated, unpadded": (2, 3, 3, 1, 0, 2, 1, 0, False),
    "conv grouped, strided, dilated": (4, 6, 2, 3, 2, 2, 2, 0, False),
    "transposed strided": (3, 4, 4, 2, 0, 1, 1, 0, True),
    "transposed padded, output padding, grouped": (4, 6, 3, 2, 1, 1, 2, 1, True),
    "transposed dilated, stride 3": (2, 3, 3, 3, 2, 2, 1, 0, True),
    "transposed 1x1, stride 2": (2, 3, 1, 2, 0, 1, 1, 1, True),
}


def _convolution(name: str, seed: int):
    cin, cout, k, s, p, d, g, op, transposed = CONVOLUTIONS[name]
    generator = torch.Generator().manual_seed(seed)
    if transposed:
        weight = torch.randn(cin, cout // g, k, k, generator=generator)
        return weight, lambda x: F.conv_transpose2d(x, weight, None, s, p, op, g, d), (s, s), (p, p), (d, d), g
    weight = torch.randn(cout, cin // g, k, k, generator=generator)
    return weight, lambda x: F.conv2d(x, weight, None, s, p, d, g), (s, s), (p, p), (d, d), g


@pytest.mark.parametrize("name", CONVOLUTIONS)
@pytest.mark.parametrize("window", [1, 2, 3])
def test_window_backward_equals_the_vjp(name, window):
    weight, function, stride, padding, dilation, groups = _convolution(name, seed=len(name) + window)
    transposed = CONVOLUTIONS[name][-1]
    x = torch.zeros(2, CONVOLUTIONS[name][0], 12, 11)
    out_shape = function(x).shape
    generator = torch.Generator().manual_seed(window)
    specs = 11
    # windows anywhere, partly outside the map included (their out-of-map entries zeroed, as the engine keeps them)
    top = torch.randint(-window + 1, out_shape[2], (specs,), generator=generator)
    left = torch.randint(-window + 1, out_shape[3], (specs,), generator=generator)
    values = torch.randn(specs, 2, out_shape[1], window, window, generator=generator)
    patches = Patches(values, top, left, out_shape[2], out_shape[3]).inside_map()
    A = patches.to_dense()
    _, vjp = torch.func.vjp(function, x)
    expected = torch.stack([vjp(row)[0] for row in A])
    back = window_backward(patches, weight, transposed, stride, padding, dilation, groups, tuple(x.shape[1:]))
    assert back is not None
    torch.testing.assert_close(back.to_dense(), expected, rtol=1e-5, atol=1e-5)
    # a window that would cover the whole input map is left to the dense backward
    whole = Patches(values[:, :, :, :1, :1], top, left, out_shape[2], out_shape[3]).inside_map()
    assert window_backward(whole, weight, transposed, stride, padding, dilation, groups, (x.shape[1], 1, 1)) is None


@pytest.mark.parametrize("name", [name for name, spec in CONVOLUTIONS.items() if not spec[-1]])
@pytest.mark.parametrize("window", [1, 3])
def test_window_backward_by_the_window_matrix_equals_the_transposed_convolution(name, window, monkeypatch):
    """Small windows go back as one product with the window's Jacobian, kept in the step's cache per window
    size; the transposed convolution (forced by a zero size limit) gives the same numbers."""
    weight, function, stride, padding, dilation, groups = _convolution(name, seed=window)
    x = torch.zeros(2, CONVOLUTIONS[name][0], 12, 11)
    out_shape = function(x).shape
    generator = torch.Generator().manual_seed(window)
    top = torch.randint(-window + 1, out_shape[2], (9,), generator=generator)
    left = torch.randint(-window + 1, out_shape[3], (9,), generator=generator)
    patches = Patches(torch.randn(9, 2, out_shape[1], window, window, generator=generator), top, left,
                      out_shape[2], out_shape[3]).inside_map()
    arguments = (weight, False, stride, padding, dilation, groups, tuple(x.shape[1:]))
    cache = {}
    by_matrix = [window_backward(patches, *arguments, cache) for _ in range(2)]
    assert len(cache) == 1 and next(iter(cache.values())) is not None
    monkeypatch.setattr(convolution, "WINDOW_MATRIX_LIMIT", 0)
    convolved = window_backward(patches, *arguments, {})
    for back in by_matrix:
        torch.testing.assert_close(back.values, convolved.values, rtol=1e-5, atol=1e-5)
        assert torch.equal(back.top, convolved.top) and torch.equal(back.left, convolved.left)


@pytest.mark.parametrize("output_padding", [0, 1])
@pytest.mark.parametrize("name", [name for name, spec in CONVOLUTIONS.items() if not spec[-1]])
def test_transposed_convolution_into_few_channels_equals_torchs(name, output_padding):
    """The backward of a convolution into at most `FEW_CHANNELS` channels is a matrix product and a fold on the
    CPU: the same numbers as conv_transpose2d, with stride, padding, dilation and output padding."""
    cin, cout, k, s, p, d, g, _, _ = CONVOLUTIONS[name]
    generator = torch.Generator().manual_seed(len(name))
    A = torch.randn(6, cout, 5, 4, generator=generator)
    weight = torch.randn(cout, cin // g, k, k, generator=generator)
    output_padding = min(output_padding, max(s, d) - 1)
    arguments = ((s, s), (p, p), (output_padding, output_padding), g, (d, d))
    expected = F.conv_transpose2d(A, weight, None, *arguments[:3], g, arguments[4])
    assert g > 1 or cin <= convolution.FEW_CHANNELS  # the fold path, except where groups keep torch's
    torch.testing.assert_close(convolution.transposed_convolution(A, weight, *arguments), expected, rtol=1e-5, atol=1e-5)


#: `GATHER_DIRECT` values that force each way of gathering windows: elementwise indexing, and the table of blocks
GATHER_WAYS = pytest.mark.parametrize("direct", [0, 10**9], ids=["indexed", "blocks"])


@GATHER_WAYS
def test_gather_and_dense_agree_with_slicing(direct, monkeypatch):
    monkeypatch.setattr(patches_module, "GATHER_DIRECT", direct)
    generator = torch.Generator().manual_seed(0)
    patches = Patches(torch.randn(5, 1, 2, 3, 2, generator=generator), torch.tensor([-2, 0, 1, 3, 4]),
                      torch.tensor([0, -1, 2, 4, 5]), 5, 6).inside_map()
    full = patches.to_dense()
    tensor = torch.randn(1, 2, 5, 6, generator=generator)
    padded = F.pad(tensor, (3, 3, 3, 3))
    for spec in range(5):
        top, left = int(patches.top[spec]) + 3, int(patches.left[spec]) + 3
        window = padded[:, :, top : top + 3, left : left + 2]
        inside = F.pad(torch.ones(1, 2, 5, 6), (3, 3, 3, 3))[:, :, top : top + 3, left : left + 2]
        torch.testing.assert_close(patches.gather(tensor)[spec], window * inside)
        # the dense rows are the window put in place, zero elsewhere
        assert torch.equal(F.pad(full[spec], (3, 3, 3, 3))[..., top : top + 3, left : left + 2], patches.values[spec])
        assert torch.equal(full[spec].abs().sum() > 0, patches.values[spec].abs().sum() > 0)
    per_spec = torch.randn(5, 1, 2, 5, 6, generator=generator)
    torch.testing.assert_close(patches.gather(per_spec)[2], F.pad(per_spec[2], (3, 3, 3, 3))[:, :, 4:7, 5:7])
    box = (torch.zeros(1, 2, 5, 6) - 1, torch.ones(1, 2, 5, 6))
    expected = (full.clamp(min=0) * box[0] + full.clamp(max=0) * box[1]).flatten(2).sum(-1)
    torch.testing.assert_close(patches.minimum_over_box(*box), expected)



@pytest.mark.parametrize("name", CONVOLUTIONS)
def test_windows_placed_per_sample_equal_the_vjp(name):
    """Each sample's specs may sit at their own positions (per-sample intermediate bounds): the backward of
    such windows is still each dense row's vjp."""
    weight, function, stride, padding, dilation, groups = _convolution(name, seed=len(name))
    transposed = CONVOLUTIONS[name][-1]
    x = torch.zeros(3, CONVOLUTIONS[name][0], 12, 11)
    out_shape = function(x).shape
    generator = torch.Generator().manual_seed(len(name))
    specs, window = 7, 2
    top = torch.randint(-window + 1, out_shape[2], (specs, 3), generator=generator)
    left = torch.randint(-window + 1, out_shape[3], (specs, 3), generator=generator)
    patches = Patches(torch.randn(specs, 3, out_shape[1], window, window, generator=generator), top, left,
                      out_shape[2], out_shape[3]).inside_map()
    A = patches.to_dense()
    for spec in range(specs):
        for sample in range(3):
            corner = (int(top[spec, sample]) + window, int(left[spec, sample]) + window)
            padded = F.pad(A[spec, sample], (window,) * 4)
            assert torch.equal(padded[:, corner[0] : corner[0] + window, corner[1] : corner[1] + window], patches.values[spec, sample])
    _, vjp = torch.func.vjp(function, x)
    expected = torch.stack([vjp(row)[0] for row in A])
    back = window_backward(patches, weight, transposed, stride, padding, dilation, groups, tuple(x.shape[1:]))
    assert back is not None and back.per_sample
    torch.testing.assert_close(back.to_dense(), expected, rtol=1e-5, atol=1e-5)


@GATHER_WAYS
def test_gather_per_sample_agrees_with_the_dense_rows(direct, monkeypatch):
    monkeypatch.setattr(patches_module, "GATHER_DIRECT", direct)
    generator = torch.Generator().manual_seed(1)
    positions = torch.randint(0, 2 * 5 * 6, (4, 3), generator=generator)
    signs = torch.randn(4, 3, generator=generator)
    patches = Patches.one_hot(positions, signs, 3, (2, 5, 6))
    full = patches.to_dense()
    assert torch.equal(full.flatten(2), torch.zeros(4, 3, 60).scatter(2, positions[..., None], signs[..., None]))
    for tensor in (torch.randn(3, 2, 5, 6, generator=generator), torch.randn(1, 2, 5, 6, generator=generator),
                   torch.randn(4, 3, 2, 5, 6, generator=generator)):
        windows = patches.gather(tensor)
        expected = (full * tensor).flatten(2).sum(-1)
        torch.testing.assert_close((patches.values * windows).flatten(2).sum(-1), expected)
    box = (torch.rand(3, 2, 5, 6, generator=generator) - 1, torch.rand(3, 2, 5, 6, generator=generator))
    expected = (full.clamp(min=0) * box[0] + full.clamp(max=0) * box[1]).flatten(2).sum(-1)
    torch.testing.assert_close(patches.minimum_over_box(*box), expected)

def test_windows_shared_by_blocks_of_specs_equal_one_window_per_spec():
    """Rows of every channel at the same map positions, bounded from both sides, repeat their corners: the
    lines and the box are gathered once per block (`repeats`) and give what per-spec windows give."""
    generator = torch.Generator().manual_seed(3)
    shape = (3, 5, 4)
    positions = torch.tensor([0, 7, 13, 19])
    every_channel = torch.cat([positions + channel * 20 for channel in range(3)])
    signs = torch.cat([torch.ones(12), -torch.ones(12)])
    shared = Patches.one_hot(torch.cat([every_channel, every_channel]), signs, 2, shape)
    assert shared.repeats == 6
    shared = shared.moved(torch.randn(24, 2, 3, 3, 2, generator=generator), shared.top - 1, shared.left)
    alone = dataclasses.replace(shared, repeats=1)
    torch.testing.assert_close(shared.inside_map().values, alone.inside_map().values)
    shared, alone = shared.inside_map(), alone.inside_map()
    box = (torch.randn(2, *shape, generator=generator) - 2, torch.randn(2, *shape, generator=generator) + 2)
    torch.testing.assert_close(shared.minimum_over_box(*box), alone.minimum_over_box(*box))
    expected = (shared.to_dense().clamp(min=0) * box[0] + shared.to_dense().clamp(max=0) * box[1]).flatten(2).sum(-1)
    torch.testing.assert_close(shared.minimum_over_box(*box), expected)
    for tensor in (box[0], torch.randn(24, 2, *shape, generator=generator)):  # per neuron, per spec (α's lines)
        windows = (shared.blocked() * shared.windows(tensor)).reshape(shared.values.shape)
        torch.testing.assert_close(windows, alone.values * alone.gather(tensor))


@pytest.mark.parametrize("through_origin", [True, False])
def test_lines_selected_on_windows_equal_the_dense_selection(through_origin):
    """A relaxation's lines taken per window (their differences formed per neuron first, a ReLU's zero lower
    intercept not gathered) give the coefficients and bias of the dense selection, windows in and out of the map."""
    from opwise.bounds.relaxations.base import LinearRelaxation
    from opwise.bounds.transfers.nonlinear import _windowed_select, select_lines

    generator = torch.Generator().manual_seed(5)
    shape = (3, 5, 4)
    signs = torch.cat([torch.ones(6), -torch.ones(6)])
    windows = Patches.one_hot(torch.randint(0, 60, (12,), generator=generator), signs, 2, shape)
    windows = windows.moved(torch.randn(12, 2, 3, 3, 2, generator=generator), windows.top - 1, windows.left).inside_map()
    parts = [torch.randn(2, *shape, generator=generator) for _ in range(4)]
    if through_origin:
        parts[1] = torch.zeros(2, *shape)
    lines = LinearRelaxation(*parts)
    (coefficient,), bias = _windowed_select(windows, lines, through_origin)
    (expected,), expected_bias = select_lines(windows.to_dense(), lines, True, through_origin)
    torch.testing.assert_close(coefficient.to_dense(), expected)
    torch.testing.assert_close(bias, expected_bias)


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_crown_with_shared_windows_equals_crown_with_a_window_per_spec(method, generator_like, monkeypatch):
    model, bounded = generator_like
    randomize_(model, 7)
    x = torch.rand(2, 2, 8, 7, generator=torch.Generator().manual_seed(7))
    alpha = AlphaOptions(iterations=3)  # α's lines carry a spec dimension: windows per spec, in blocks
    shared = bounded.compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method=method, alpha=alpha)
    monkeypatch.setattr(patches_module, "_repeats", lambda corners: 1)
    alone = bounded.compute_bounds(x_lower=x - 0.1, x_upper=x + 0.1, method=method, alpha=alpha)
    torch.testing.assert_close(shared.lower, alone.lower, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared.upper, alone.upper, rtol=1e-5, atol=1e-5)


def _generator_like() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=2), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2, dilation=2, padding=2), torch.nn.Tanh(),
        torch.nn.ConvTranspose2d(6, 3, 3, stride=2, padding=1, output_padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(3, 4, 2, stride=2, groups=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3)).eval()


@pytest.fixture(scope="module")
def generator_like():
    """One trace for every seed (randomize_ changes the parameters the traced graph refers to)."""
    model = _generator_like()
    model(torch.zeros(2, 2, 8, 7))
    return model, BoundedModel(model, torch.zeros(2, 2, 8, 7))


@pytest.mark.parametrize("seed", range(4))
def test_crown_with_windows_equals_dense_crown_and_is_sound(seed, generator_like, monkeypatch):
    model, bounded = generator_like
    randomize_(model, seed)
    x = torch.rand(2, 2, 8, 7, generator=torch.Generator().manual_seed(seed))
    eps = 0.05 + 0.05 * seed
    methods = ("crown", "alpha-crown") if seed == 0 else ("crown",)  # α-CROWN passes windows with per-spec lines
    results = assert_sound(model, x - eps, x + eps, methods=methods, samples=2_000, seed=seed, bounded=bounded)
    for transfer in (Convolution, BatchNorm, Elementwise):
        monkeypatch.setattr(transfer, "takes_patches", False)
    reference = bounded.compute_bounds(x_lower=x - eps, x_upper=x + eps, method="crown")
    torch.testing.assert_close(results["crown"].lower, reference.lower, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["crown"].upper, reference.upper, rtol=1e-5, atol=1e-5)


def test_first_affine_layer_interval_is_crowns_and_not_taken_from_ibp_on_an_l2_ball():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 4 * 4, 2))
    x = torch.rand(1, 1, 8, 8)
    graph = trace(model, x)
    convolution = next(n for n in graph.call_nodes() if graph.info(n).op.startswith("aten.convolution"))
    box = BoundPropagation(graph, InputSet.ball(x, 0.1))
    assert box.exact_by_ibp(convolution)
    interval = box.interval(convolution)
    count = interval.lower.numel()
    eye = torch.eye(count).reshape(count, 1, *interval.lower.shape[1:])
    lower, upper = box.backward(convolution, eye)[:, 0], -box.backward(convolution, -eye)[:, 0]
    torch.testing.assert_close(interval.lower.flatten(), lower, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(interval.upper.flatten(), upper, rtol=1e-5, atol=1e-6)
    assert not BoundPropagation(graph, InputSet.ball(x, 0.1, norm=2.0)).exact_by_ibp(convolution)


@pytest.mark.parametrize("seed", range(4))
def test_free_windows_hold_the_free_elements_and_the_points_share_exactly(seed):
    """`free_windows`: the windows, made dense again, are A on the free elements (zero elsewhere), and the share
    it returns is A on the fixed elements times their value: the two add up to A·z for every z in the interval."""
    from opwise.bounds.transfers.patches import free_windows

    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(3, 4, 2, 9, 9, generator=generator)
    lower = torch.randn(4, 2, 9, 9, generator=generator)
    upper = lower.clone()
    for sample in range(4):  # a free block of up to 3 x 2 positions per sample, some channels only
        top, left = int(torch.randint(0, 7, (1,), generator=generator)), int(torch.randint(0, 8, (1,), generator=generator))
        upper[sample, sample % 2, top : top + 3, left : left + 2] += 1.0
    windows, share = free_windows(A, lower, upper, min_elements=0)
    free = upper > lower
    torch.testing.assert_close(windows.to_dense(), A * free)
    torch.testing.assert_close(share, (A * torch.where(free, 0.0, lower)).flatten(2).sum(-1))
    assert tuple(windows.values.shape[-2:]) == (3, 2)
    everywhere = torch.zeros_like(upper) + 1.0
    assert free_windows(A, lower, lower + everywhere, min_elements=0) is None  # free everywhere: no window


def test_free_coefficients_read_at_features_equal_the_dense_coefficients():
    from opwise.bounds.transfers.patches import FreeCoefficients

    values = torch.arange(12.0).reshape(2, 2, 3)
    coefficients = FreeCoefficients(values, torch.tensor([[4, 1, -1], [0, 5, 2]]), (2, 6))
    flat = coefficients.to_dense()
    features = torch.tensor([[1, 4, 3], [2, 0, 5]])
    torch.testing.assert_close(coefficients.at(features), flat.gather(2, features.unsqueeze(0).expand(2, -1, -1)))
    assert float(flat[0, 0, 1]) == 1.0 and float(flat[:, 0].abs().sum()) == float(values[:, 0, :2].abs().sum())


class _Residual(torch.nn.Module):
    """TinyYOLO-like: residual blocks with a 1×1-convolution shortcut and with an identity shortcut, a zero
    pad, average pooling and a padding crop, so windows meet from paths of different reach."""

    def __init__(self):
        super().__init__()
        self.shortcut, self.first = torch.nn.Conv2d(2, 4, 1, bias=False), torch.nn.Conv2d(2, 4, 3, padding=1)
        self.second, self.third = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fourth = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.head = torch.nn.Linear(4 * 5 * 3, 3)

    def forward(self, x):
        x = self.shortcut(x) + self.second(torch.relu(self.first(x)))
        x = torch.relu(x - 0.5 * self.third(torch.relu(x)) + 0.25)
        x = torch.relu(F.pad(F.avg_pool2d(F.pad(x, (1, 0, 0, 0)), 2), (0, -1, 1, 0)))
        return self.head(torch.relu(self.fourth(x)).flatten(1))


@pytest.mark.parametrize("seed", range(3))
def test_windows_through_residual_sums_pads_and_pooling_equal_dense_crown(seed, monkeypatch):
    """Windows from a shortcut and a branch are summed over their union (`Patches.plus`); sums, constant pads and
    average pooling keep them windows; the bounds are CROWN's without windows, and sound."""
    torch.manual_seed(seed)
    model = _Residual().eval()
    x = torch.rand(2, 2, 8, 7, generator=torch.Generator().manual_seed(seed))
    bounded = BoundedModel(model, x)
    eps = 0.05 + 0.05 * seed
    methods = ("crown", "alpha-crown") if seed == 0 else ("crown",)
    results = assert_sound(model, x - eps, x + eps, methods=methods, samples=2_000, seed=seed, bounded=bounded)
    sums = []
    original = patches_module.Patches.plus
    monkeypatch.setattr(patches_module.Patches, "plus", lambda self, other: sums.append(1) or original(self, other))
    bounded.compute_bounds(x_lower=x - eps, x_upper=x + eps, method="crown")
    assert sums  # the windows met and were summed as windows
    monkeypatch.setattr(patches_module.Patches, "plus", lambda self, other: None)
    for transfer in (Convolution, BatchNorm, Elementwise, AddSubtract, ConstantPad, AveragePool):
        monkeypatch.setattr(transfer, "takes_patches", False)
    reference = bounded.compute_bounds(x_lower=x - eps, x_upper=x + eps, method="crown")
    torch.testing.assert_close(results["crown"].lower, reference.lower, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["crown"].upper, reference.upper, rtol=1e-5, atol=1e-5)


def test_windows_at_different_offsets_per_spec_are_summed_densely():
    first = Patches(torch.ones(2, 1, 1, 2, 2), torch.tensor([0, 3]), torch.tensor([0, 3]), 6, 6)
    second = Patches(torch.ones(2, 1, 1, 1, 1), torch.tensor([1, 1]), torch.tensor([1, 1]), 6, 6)
    assert first.plus(second) is None
    torch.testing.assert_close(patches_module.add_coefficients(first, second), first.to_dense() + second.to_dense())


@pytest.mark.parametrize("seed", range(5))
def test_dense_rows_with_a_small_support_become_windows_of_the_same_values(seed):
    """`Patches.from_dense`: a row touching a few positions (two channels of one pixel: a class difference after a
    permute) is a window holding exactly those values; a row spread over the map is left dense (None)."""
    generator = torch.Generator().manual_seed(seed)
    A = torch.zeros(40, 2, 3, 9, 11)
    for row in range(40):
        top, left = int(torch.randint(0, 8, (1,), generator=generator)), int(torch.randint(0, 10, (1,), generator=generator))
        A[row, :, :, top : top + 2, left : left + 2] = torch.randn(2, 3, 2, 2, generator=generator)
    windows = Patches.from_dense(A)
    assert windows is not None and windows.values.shape[-2:] == (2, 2)
    assert torch.equal(windows.to_dense(), A)
    A[0, 0, 0, 0, 0], A[0, 0, 0, -1, -1] = 1.0, 1.0  # one row over the whole map
    assert Patches.from_dense(A) is None
    assert Patches.from_dense(torch.zeros(3, 1, 2, 4, 4)) is None  # nothing to window


def test_channels_sliced_off_a_map_carry_windows_and_bound_as_the_presliced_net(monkeypatch):
    """A net that slices channels off its input (a mask channel kept apart) is bounded as the same net given the
    sliced image: the slice places windows into zeros instead of making them dense, and changes no bound."""
    from opwise.bounds.transfers.affine import Slice

    arrived, backward = [], Slice.backward
    monkeypatch.setattr(Slice, "backward", lambda self, step, A: arrived.append(type(A)) or backward(self, step, A))
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1), torch.nn.Flatten(), torch.nn.Linear(2 * 36, 3)).eval()

    class Sliced(torch.nn.Module):
        def forward(self, x):
            return body(x[:, 1:])

    x = torch.rand(1, 4, 6, 6)
    lower, upper = x - 0.05, x + 0.05
    results = assert_sound(Sliced(), lower, upper, methods=("crown",), samples=2000)
    alone = BoundedModel(body, lower[:, 1:]).compute_bounds(x_lower=lower[:, 1:], x_upper=upper[:, 1:], method="crown")
    torch.testing.assert_close(results["crown"].lower, alone.lower, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["crown"].upper, alone.upper, rtol=1e-5, atol=1e-5)
    assert Patches in arrived  # the intermediate bounds' windows reached the slice as windows
