"""Low-dimensional bounds (opwise/bounds/strategies/low_dimensional.py and the fixed-input folding of forward mode):
sound on random generator/discriminator nets of the cGAN's op types (gemm, transposed convolution,
convolution, batch norm, ReLU, tanh, sigmoid) over boxes with fixed inputs, at sampled and attacked points;
equal to CROWN where every node runs CROWN and to forward-crown where none does; never looser than IBP."""

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.strategies.low_dimensional import fold_fixed_inputs, free_input_bounds
from tests.bounds.helpers import attacked_points, randomize_, sample_box

BATCH = 3


class GeneratorDiscriminator(torch.nn.Module):
    """Latent (5, some fixed) -> 2×8×8 image -> score, with every op type of the VNN-COMP cGAN."""

    def __init__(self):
        super().__init__()
        self.project = torch.nn.Linear(5, 32)
        self.up = torch.nn.Sequential(
            torch.nn.BatchNorm2d(8), torch.nn.ConvTranspose2d(8, 6, 4, stride=2), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(6, 2, 3, stride=1), torch.nn.Tanh(),
        )
        self.down = torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.BatchNorm2d(4),
            torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(24, 2),
            torch.nn.Sigmoid(),
        )

    def forward(self, z):
        return self.down(self.up(self.project(z).view(-1, 8, 2, 2)))


@pytest.fixture(scope="module")
def traced() -> tuple[GeneratorDiscriminator, BoundedModel]:
    """One trace for every test (tracing is the slow part); each test draws new weights in place."""
    model = GeneratorDiscriminator().eval()
    return model, BoundedModel(model, torch.zeros(BATCH, 5))


def _randomize(traced, seed: int):
    model, bounded = traced
    randomize_(model, seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_var.uniform_(0.5, 2.0)
                layer.running_mean.normal_()
    x = torch.randn(BATCH, 5)
    assert torch.allclose(bounded(x), model(x), atol=1e-5)  # the trace follows the new weights
    return model, bounded


def _boxes(seed: int, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes with input 1 fixed in every box (folded) and input 3 fixed in the first box only."""
    generator = torch.Generator().manual_seed(seed)
    centre = torch.randn(batch, 5, generator=generator)
    radius = torch.rand(batch, 5, generator=generator) * [0.05, 0.3, 0.8][seed % 3]
    radius[:, 1] = 0
    radius[0, 3] = 0
    return centre - radius, centre + radius


@pytest.mark.parametrize("seed", range(6))
def test_bounds_hold_at_sampled_and_attacked_points(traced, seed):
    model, bounded = _randomize(traced, seed)
    lower, upper = _boxes(seed)
    C = torch.randn(3, 2, generator=torch.Generator().manual_seed(seed))
    graph = bounded.graph
    points = torch.cat([sample_box(lower, upper, 3_000, torch.Generator().manual_seed(seed)),
                        attacked_points(model, lower, upper, C.expand(len(lower), 3, 2))])
    with torch.no_grad():
        values = model(points.reshape(-1, 5)).reshape(len(points), len(lower), 2) @ C.T  # [points, boxes, rows]
    for crown_limit in (0, 24, 10_000):
        bounds, coefficients, *_ = free_input_bounds(graph, lower, upper, C, crown_limit)
        assert (values >= bounds - 1e-5 * (1 + values.abs())).all(), f"crown_limit {crown_limit}"
        assert coefficients.shape == (len(lower), 3, 5)


@pytest.mark.parametrize("seed", range(3))
def test_all_crown_equals_crown_and_no_crown_equals_forward_crown(traced, seed):
    _, bounded = _randomize(traced, seed)
    lower, upper = _boxes(seed)
    C = torch.randn(2, 2, generator=torch.Generator().manual_seed(seed))
    for crown_limit, method in ((10_000, "crown"), (0, "forward-crown")):
        reference = bounded.compute_bounds(x_lower=lower, x_upper=upper, C=C, method=method, bound_upper=False).lower
        bounds, *_ = free_input_bounds(bounded.graph, lower, upper, C, crown_limit)
        assert torch.allclose(bounds, reference, rtol=1e-4, atol=1e-5), method


def test_every_intermediate_interval_is_no_looser_than_ibp(traced):
    _, bounded = _randomize(traced, 1)
    lower, upper = _boxes(1)
    graph = bounded.graph
    mixed = BoundPropagation(graph, InputSet(lower, upper), "mixed", crown_limit=24)
    ibp = BoundPropagation(graph, InputSet(lower, upper), intermediate="ibp")
    mixed.interval(graph.output)
    for name, interval in mixed.known_intervals().items():
        reference = ibp.interval(graph.node(name))
        assert (interval.lower >= reference.lower - 1e-6).all() and (interval.upper <= reference.upper + 1e-6).all(), name


def test_folding_fixed_inputs_leaves_the_bounds_unchanged(traced):
    """A box bounded among copies of itself (its fixed inputs folded into constants) and beside boxes that
    free every input (no folding: one row per input) gets the same forward-crown bounds."""
    _, bounded = _randomize(traced, 2)
    lower, upper = _boxes(2, batch=1)
    alone_lower, alone_upper = lower.repeat(BATCH, 1), upper.repeat(BATCH, 1)
    together_lower = torch.cat([lower, (lower - 0.1).repeat(BATCH - 1, 1)])
    together_upper = torch.cat([upper, (upper + 0.1).repeat(BATCH - 1, 1)])
    C = torch.eye(2)
    alone, *_ = free_input_bounds(bounded.graph, alone_lower, alone_upper, C, crown_limit=0)
    together, *_ = free_input_bounds(bounded.graph, together_lower, together_upper, C, crown_limit=0)
    assert torch.allclose(alone[0], together[0], atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_a_graph_with_its_fixed_inputs_folded_gives_the_same_bounds(traced, seed):
    """Inputs 1 and 3 held at the same values in every box, folded into the first linear layer: the same
    function of the free inputs and the same bounds (at every crown_limit); the coefficients of the free inputs
    are the full graph's."""
    model, bounded = _randomize(traced, seed)
    lower, upper = _boxes(seed)
    fixed = torch.tensor([False, True, False, True, False])
    lower[:, fixed], upper[:, fixed] = lower[0, fixed], lower[0, fixed]
    folded = fold_fixed_inputs(bounded.graph, fixed, lower[0])
    z = sample_box(lower[:, ~fixed], upper[:, ~fixed], 1, torch.Generator().manual_seed(seed))[0]
    x = lower.clone()
    x[:, ~fixed] = z
    assert torch.allclose(folded(z), model(x), atol=1e-5)
    C = torch.randn(3, 2, generator=torch.Generator().manual_seed(seed))
    for crown_limit in (0, 24, 10_000):
        full = free_input_bounds(bounded.graph, lower, upper, C, crown_limit)
        reduced = free_input_bounds(folded, lower[:, ~fixed], upper[:, ~fixed], C, crown_limit)
        assert torch.allclose(full.lower, reduced.lower, rtol=1e-4, atol=1e-4), crown_limit
        assert torch.allclose(full.coefficients[..., ~fixed], reduced.coefficients, rtol=1e-4, atol=1e-4)


def test_folding_needs_an_input_read_only_by_linear_layers():
    graph = BoundedModel(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(3, 1)), torch.zeros(2, 3)).graph
    assert fold_fixed_inputs(graph, torch.tensor([True, False, False]), torch.zeros(3)) is None
