"""Tests of opwise/bounds/engine/free_input.py: forward mode over a few free inputs narrows what CROWN refines."""

from __future__ import annotations

import pytest
import torch

from opwise.bounds.engine import BoundPropagation
from opwise.bounds.engine import free_input
from opwise.bounds.input_set import InputSet
from opwise.tracing import trace
from tests.bounds.helpers import randomize_, sample_box


class _BiasField(torch.nn.Module):
    """cifar_biasfield's shape, small: a few parameters -> a linear layer -> an image -> convolutions and ReLUs."""

    def __init__(self, inputs: int = 4):
        super().__init__()
        self.field = torch.nn.Linear(inputs, 2 * 8 * 8)
        self.convolutions = torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, stride=2, padding=1),
            torch.nn.ReLU(), torch.nn.Conv2d(6, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 3, 4))

    def forward(self, x):
        return self.convolutions(self.field(x).view(-1, 2, 8, 8)).flatten(1)


def _pass(graph, lower, upper, A, limit: int, monkeypatch) -> tuple[torch.Tensor, int]:
    """(CROWN's lower bound of A·output, the positions its intermediate bounds refined) with `FREE_INPUT_LIMIT` set."""
    monkeypatch.setattr(free_input, "FREE_INPUT_LIMIT", limit)
    engine = BoundPropagation(graph, InputSet(lower, upper), "crown")
    refined = []
    original = engine.refine
    engine.refine = lambda node, base, selected, alphas=None, **kwargs: refined.append(
        int(selected.sum() if selected.dtype == torch.bool else selected.numel())) or original(node, base, selected, alphas, **kwargs)
    return engine.bound(graph.output, A).lower, sum(refined)


@pytest.mark.parametrize("seed", range(4))
def test_crown_over_few_inputs_is_sound_and_refines_fewer_neurons(seed, monkeypatch):
    """Sampled outputs lie inside the bounds of random small convolutional nets over 4 inputs; forward mode settles
    the affine first layers and decides neurons IBP leaves unstable, so CROWN refines fewer, never looser."""
    model = randomize_(_BiasField().eval(), seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, generator=generator)
    lower, upper = x - 0.3, x + 0.3
    graph = trace(model, lower)
    A = torch.randn(5, 2, 3, generator=generator)
    narrowed, fewer = _pass(graph, lower, upper, A, free_input.FREE_INPUT_LIMIT, monkeypatch)
    plain, every = _pass(graph, lower, upper, A, 0, monkeypatch)
    assert fewer < every
    assert bool((narrowed >= plain - 1e-4 * (1 + plain.abs())).all())
    points = sample_box(lower, upper, 4000, generator)
    values = torch.einsum("sbo,nbo->snb", A, model(points.reshape(-1, 4)).reshape(4000, 2, 3).detach())
    assert bool((values >= narrowed.unsqueeze(1) - 1e-4).all())


def test_an_affine_function_of_few_inputs_takes_its_forward_interval_without_a_pass():
    """The first convolution after the linear layer is an affine function of the input: its interval is its exact
    range, found by forward mode, with no CROWN pass (`forward.exact`; the input's own identity bounds are exact)."""
    model = randomize_(_BiasField().eval(), 0)
    lower, upper = -torch.ones(1, 4), torch.ones(1, 4)
    graph = trace(model, lower)
    engine = BoundPropagation(graph, InputSet(lower, upper), "crown")
    engine.refine = lambda *args, **kwargs: pytest.fail("no refinement expected")
    convolution = next(n for n in graph.call_nodes() if "convolution" in graph.info(n).op)
    interval = engine.interval(convolution)
    corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * 4)
    values = model.convolutions[0](model.field(corners).view(-1, 2, 8, 8)).detach()
    torch.testing.assert_close(interval.lower[0], values.amin(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(interval.upper[0], values.amax(0), rtol=1e-5, atol=1e-5)
