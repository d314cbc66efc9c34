"""α/β optimisation (opwise/bounds/strategies/beta.py): one bound pass per Adam iteration (no repeated start,
no gradient of the last pass), and bounds that hold on every sample of a split region of random ReLU CNNs."""

import torch

from opwise.bounds import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.strategies.beta import optimize_alpha_beta
from opwise.bounds.transfers.registry import Interval
from tests.bounds.helpers import randomize_
from tests.bounds.strategies.test_alpha import _node_values

SHAPE = (1, 1, 5, 5)


def _cnn(seed: int) -> torch.nn.Sequential:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 2, 3, stride=2),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    return randomize_(model, seed)


def _split_engine(model, seed: int):
    """An engine over a box with the first ReLU's input split at 0 on a few random unstable neurons (each side
    chosen at random), and those split intervals."""
    generator = torch.Generator().manual_seed(seed)
    lower = torch.rand(SHAPE, generator=generator) - 1.0
    upper = lower + 0.6
    bounded = BoundedModel(model, lower)
    graph = bounded.graph
    relu = next(n for n in graph.call_nodes() if graph.info(n).op == "aten.relu.default")
    z = relu.args[0]
    probe = BoundPropagation(graph, InputSet(lower, upper))
    probe.prepare(graph.output)
    interval = probe.interval(z)
    low, high = interval.lower.clone(), interval.upper.clone()
    unstable = ((low < 0) & (high > 0)).flatten().nonzero().flatten()
    for index in unstable[torch.randperm(len(unstable), generator=generator)[:4]].tolist():
        if torch.rand(1, generator=generator) < 0.5:
            high.view(-1)[index] = 0.0
        else:
            low.view(-1)[index] = 0.0
    splits = {z: Interval(low, high)}
    return bounded, BoundPropagation(graph, InputSet(lower, upper), splits=splits), z, (lower, upper), (low, high)


def test_adam_runs_one_bound_pass_per_iteration():
    model = _cnn(0)
    _, engine, _, _, _ = _split_engine(model, 0)
    output = engine.graph.output
    engine.prepare(output)
    calls = []
    original = engine.bound
    engine.bound = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    A = torch.eye(3)[:, None, :]
    never_stop = AlphaOptions(iterations=5, patience=100, tolerance=-1.0)
    optimize_alpha_beta(engine, output, A, never_stop)
    assert len(calls) == 5
    calls.clear()
    optimize_alpha_beta(engine, output, A, AlphaOptions(iterations=0))
    assert len(calls) == 1


def test_bounds_hold_on_every_sample_of_the_split_region():
    """Over random CNNs and random splits, the optimised bound of every output row is below the row's value at
    each sampled input whose split pre-activations lie on the split's side; never looser than no Adam."""
    checked = 0
    for seed in range(6):
        model = _cnn(seed)
        bounded, engine, z, (lower, upper), (low, high) = _split_engine(model, seed)
        output = engine.graph.output
        engine.prepare(output)
        A = torch.cat([torch.eye(3), -torch.eye(3)])[:, None, :]
        bound, _, _ = optimize_alpha_beta(engine, output, A, AlphaOptions(iterations=15))
        start, _, _ = optimize_alpha_beta(engine, output, A, AlphaOptions(iterations=0))
        assert (bound >= start - 1e-5).all()
        generator = torch.Generator().manual_seed(100 + seed)
        x = lower + (upper - lower) * torch.rand((4000, *SHAPE[1:]), generator=generator)
        values = _node_values(bounded, x)[z.name].reshape(len(x), -1)
        inside = ((values >= low.reshape(1, -1) - 1e-6) & (values <= high.reshape(1, -1) + 1e-6)).all(1)
        with torch.no_grad():
            y = model(x[inside])
        rows = torch.cat([y, -y], 1)  # [inside samples, 6]
        assert (rows >= bound[:, 0][None, :] - 1e-4).all()
        checked += int(inside.sum())
    assert checked > 1000
