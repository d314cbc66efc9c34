"""Forward-mode linear bounds (opwise/bounds/transfers/forward.py, the "forward-crown" method): sound on a
generator-like network (transposed convolutions, batch norm, ReLU, tanh, sigmoid), exact on affine maps,
and never looser than IBP (the engine intersects the two)."""

import torch

from opwise.bounds import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.transfers.forward import LinearBounds
from tests.bounds.helpers import assert_sound, randomize_


class Generator(torch.nn.Module):
    """A small cGAN-like generator and discriminator head: latent -> image -> score."""

    def __init__(self):
        super().__init__()
        self.project = torch.nn.Linear(3, 16)
        self.up = torch.nn.Sequential(
            torch.nn.BatchNorm2d(4), torch.nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1), torch.nn.BatchNorm2d(6),
            torch.nn.ReLU(), torch.nn.ConvTranspose2d(6, 2, 3, stride=2, padding=1, output_padding=1), torch.nn.Tanh(),
        )
        self.down = torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 2),
            torch.nn.Sigmoid(),
        )

    def forward(self, z):
        return self.down(self.up(self.project(z).view(-1, 4, 2, 2)))


def _random_generator(seed: int) -> Generator:
    model = randomize_(Generator().eval(), seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_var.uniform_(0.5, 2.0)
                layer.running_mean.normal_()
    return model


def test_forward_crown_is_sound_on_random_generators():
    for seed in range(4):
        model = _random_generator(seed)
        x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
        eps = [0.05, 0.3][seed % 2]
        assert_sound(model, x - eps, x + eps, methods=("forward-crown", "crown"), samples=2_000, seed=seed, attack=seed == 0)


def test_forward_bounds_are_exact_on_affine_maps_and_never_looser_than_ibp():
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2)).eval()
    randomize_(model, 3)
    x = torch.randn(1, 3)
    bounded = BoundedModel(model, x)
    crown = bounded.compute_bounds(x, eps=0.2, method="crown")
    forward = bounded.compute_bounds(x, eps=0.2, method="forward-crown")
    assert torch.allclose(forward.lower, crown.lower, atol=1e-5) and torch.allclose(forward.upper, crown.upper, atol=1e-5)
    generator = _random_generator(1)
    bounded = BoundedModel(generator, torch.zeros(1, 3))
    for policy in ("forward", "ibp"):
        engine = BoundPropagation(bounded.graph, InputSet.ball(torch.zeros(1, 3), 0.3), intermediate=policy)
        node = bounded.graph.output
        if policy == "forward":
            forward = engine.interval(node)
        else:
            ibp = engine.interval(node)
    assert (forward.lower >= ibp.lower - 1e-6).all() and (forward.upper <= ibp.upper + 1e-6).all()


def test_linear_bounds_of_the_input_concretize_to_its_box():
    box = InputSet(torch.tensor([[0.0, -1.0], [2.0, 3.0]]), torch.tensor([[1.0, 1.0], [2.5, 4.0]]))
    interval = LinearBounds.identity(box).concretize(box)
    assert torch.equal(interval.lower, box.lower) and torch.equal(interval.upper, box.upper)


def _patch_boxes(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One box per 2x2 patch of x [1, C, H, W]: only that patch (every channel) may move by eps."""
    _, channels, height, width = x.shape
    masks = torch.zeros(height // 2 * (width // 2), 1, channels, height, width)
    for index in range(masks.shape[0]):
        top, left = 2 * (index // (width // 2)), 2 * (index % (width // 2))
        masks[index, :, :, top : top + 2, left : left + 2] = 1.0
    masks = masks.squeeze(1)
    return x - eps * masks, x + eps * masks


def test_boxes_that_free_different_patches_cost_one_patch_of_rows_and_are_sound():
    """A batch of boxes, each freeing its own patch, is carried by as many rows as one patch has (not the
    union of all patches), each sample's rows standing for its own free elements."""
    model = randomize_(torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3, padding=1),
        torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(48, 3)).eval(), 5)
    x = torch.rand(1, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    lower, upper = _patch_boxes(x, 0.2)
    box = InputSet(lower, upper)
    identity = LinearBounds.identity(box)
    assert tuple(identity.positions.shape) == (16, 8) and identity.lower_coefficient.shape[0] == 8
    free = (upper > lower).reshape(16, -1)
    for sample in range(16):
        assert sorted(identity.positions[sample].tolist()) == free[sample].nonzero().flatten().tolist()
    assert_sound(model, lower, upper, methods=("forward-crown",), samples=500, seed=5)


def test_forward_mode_over_boxes_with_a_different_number_of_free_elements_pads_rows():
    box = InputSet(torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]]), torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 3.0]]))
    bounds = LinearBounds.identity(box)
    assert bounds.positions.tolist() == [[0, 1], [2, -1]]
    interval = bounds.concretize(box)
    assert torch.equal(interval.lower, box.lower) and torch.equal(interval.upper, box.upper)


def test_forward_crown_over_points_is_the_model_itself():
    """A box with no free element (a point) has no coefficient rows: forward mode through convolutions and
    linear layers gave a shape error (vmap over an empty dimension)."""
    model = randomize_(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2, padding=1), torch.nn.ReLU(),
                                           torch.nn.Conv2d(2, 2, 3, stride=2, padding=1), torch.nn.ReLU(),
                                           torch.nn.Flatten(), torch.nn.Linear(2, 3)).eval(), 2)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    bounds = BoundedModel(model, x).compute_bounds(x_lower=x, x_upper=x, method="forward-crown")
    torch.testing.assert_close(bounds.lower, model(x).detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bounds.upper, model(x).detach(), rtol=1e-5, atol=1e-5)


class _Differences(torch.nn.Module):
    """Sums and differences of two bounded tensors with factors of both signs, broadcast, and a clamp that never bites
    on small boxes next to a ReLU that is active on them."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)

    def forward(self, x):
        a, b = torch.relu(self.first(x) + 5), torch.tanh(self.second(x))
        grid = a[:, :, None] - b[:, None, :]
        mixed = torch.add(a, b, alpha=-2.0) + torch.rsub(a, 1.0) - (b - b)
        return torch.cat([torch.clamp_max(grid, 1e3).flatten(1), mixed, torch.sub(a, a, alpha=0.5)], 1)


def test_forward_bounds_of_sums_and_differences_are_the_centre_radius_bounds_and_sound(monkeypatch):
    # each operand's side by its factor's sign equals centre ± radius in exact arithmetic; the identity skip of a
    # clamp or an active ReLU gives the composition's bounds
    from opwise.bounds.transfers import forward

    model = _Differences().eval()
    for seed in range(5):
        randomize_(model, seed)
        x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed))
        lower, upper = x - 0.2, x + 0.2
        bounded = BoundedModel(model, x)
        new = bounded.compute_bounds(x_lower=lower, x_upper=upper, method="forward-crown")
        with monkeypatch.context() as patch:
            patch.setattr(forward, "AddSubtract", type("NoSumTransfer", (), {}))
            old = bounded.compute_bounds(x_lower=lower, x_upper=upper, method="forward-crown")
        torch.testing.assert_close(new.lower, old.lower, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(new.upper, old.upper, rtol=1e-5, atol=1e-5)
        assert_sound(model, lower, upper, methods=("forward-crown",), samples=2000, seed=seed, attack=seed == 0,
                     bounded=bounded)
