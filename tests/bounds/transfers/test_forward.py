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
