"""Shared checks for bound tests: sampled and attacked points must lie inside the bounds."""

from __future__ import annotations

import torch

from opwise.bounds import BoundedModel
from opwise.bounds.attack import input_gradient

METHOD_NAMES = ("ibp", "crown-ibp", "forward-crown", "crown", "alpha-crown")


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """New random parameters in place (traced graphs keep referring to them, so one trace serves many models)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / max(1, parameter[0].numel()) ** 0.5)
    return model


def sample_box(lower: torch.Tensor, upper: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """count points per sample of the box, corners included: [count, *lower.shape]."""
    u = torch.rand((count, *lower.shape), generator=generator)
    u[: count // 10] = u[: count // 10].round()  # vertices, where linear bounds are often attained
    return lower + (upper - lower) * u


def attacked_points(function, lower, upper, C, steps=30):
    """Signed-gradient descent and ascent on every spec row inside the box: [2*specs, *lower.shape]."""
    specs = C.shape[-2]
    x = ((lower + upper) / 2).unsqueeze(0).repeat(2 * specs, *[1] * lower.dim())
    sign = torch.cat([torch.ones(specs), -torch.ones(specs)])
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        y = torch.stack([function(x[i]).flatten(1) for i in range(x.shape[0])])  # [2S, B, K]
        rows = torch.einsum("bsk,nbk->nbs", C, y)
        own = rows[torch.arange(2 * specs), :, torch.arange(2 * specs) % specs]  # point n pushes row n mod S
        objective = (sign[:, None] * own).sum()
        gradient = input_gradient(objective, x)  # zero through an integer cast
        x = torch.max(torch.min(x - 0.1 * (upper - lower) * gradient.sign(), upper), lower)
    return x.detach()


def assert_sound(model, x_lower, x_upper, methods=METHOD_NAMES, samples=10_000, seed=0, C=None, tolerance=1e-4,
                 attack=True, bounded=None):
    """Every method's bounds contain the outputs at sampled and attacked inputs; returns {method: Bounds}."""
    generator = torch.Generator().manual_seed(seed)
    bounded = bounded or BoundedModel(model, x_lower)
    results = {}
    with torch.no_grad():
        points = sample_box(x_lower, x_upper, samples, generator)
        outputs = model(points.reshape(-1, *x_lower.shape[1:])).reshape(samples, x_lower.shape[0], -1)
    for method in methods:
        bounds = bounded.compute_bounds(x_lower=x_lower, x_upper=x_upper, method=method, C=C)
        matrix = bounds_matrix(C, x_lower.shape[0], outputs.shape[-1])
        values = torch.einsum("bsk,nbk->nbs", matrix, outputs)
        if attack:
            found = attacked_points(model, x_lower, x_upper, matrix)
            with torch.no_grad():
                attacked = torch.stack([model(p) for p in found]).flatten(2)
            values = torch.cat([values, torch.einsum("bsk,nbk->nbs", matrix, attacked)])
        scale = tolerance * (1 + values.abs())
        assert (values >= bounds.lower - scale).all(), f"{method}: lower bound above an output by {(bounds.lower - values).max()}"
        assert (values <= bounds.upper + scale).all(), f"{method}: upper bound below an output by {(values - bounds.upper).max()}"
        results[method] = bounds
    return results


def bounds_matrix(C, batch: int, outputs: int) -> torch.Tensor:
    if C is None:
        return torch.eye(outputs).expand(batch, outputs, outputs)
    return C if C.dim() == 3 else C.expand(batch, *C.shape)


def assert_bounded_and_explained(graph, x, radius: float, samples: int = 2000):
    """An imported graph's IBP and CROWN bounds on the box of `radius` around x hold its sampled outputs, and its
    explanation at x is finite and shaped as x."""
    import opwise

    assert_sound(lambda z: graph.for_batch(z.shape[0])(z), x - radius, x + radius, methods=("ibp", "crown"),
                 samples=samples, attack=False, bounded=BoundedModel(graph, x))
    explanation = opwise.explain(graph, x)
    assert explanation.relevance.shape == x.shape and torch.isfinite(explanation.relevance).all()
