"""Intermediate bounds only where the output specifications reach (opwise/bounds/engine/reach.py): the same
bounds as refining every position, from fewer refined positions, on convolutional nets with and without
residual sums, and sound."""

from __future__ import annotations

import pytest
import torch

from opwise.bounds.engine import BoundPropagation
from opwise.bounds.engine.reach import reach
from opwise.bounds.input_set import InputSet
from opwise.tracing import trace
from tests.bounds.helpers import assert_sound


class _Detector(torch.nn.Module):
    """A fully convolutional net whose outputs are a map (a detector's head): a spec reads a few positions."""

    def __init__(self, residual: bool):
        super().__init__()
        self.residual = residual
        self.first, self.second = torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut, self.head = torch.nn.Conv2d(2, 4, 1), torch.nn.Conv2d(4, 3, 1)

    def forward(self, x):
        y = self.second(torch.relu(self.first(x)))
        y = torch.relu(y + self.shortcut(x) if self.residual else y)
        return self.head(torch.nn.functional.avg_pool2d(torch.relu(self.second(y)), 2)).flatten(1)


def _refined(monkeypatch) -> list[int]:
    counts = []
    original = BoundPropagation.refine

    def counting(self, node, base, selected, *args, **kwargs):
        counts.append(int(selected.sum()) if selected.dtype == torch.bool else selected.numel())
        return original(self, node, base, selected, *args, **kwargs)

    monkeypatch.setattr(BoundPropagation, "refine", counting)
    return counts


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("seed", range(2))
def test_bounds_where_the_specs_reach_equal_bounds_everywhere_from_fewer_positions(residual, seed, monkeypatch):
    torch.manual_seed(seed)
    model = _Detector(residual).eval()
    x = torch.rand(2, 2, 10, 10)
    graph = trace(model, x)
    outputs = model(x).shape[1]
    generator = torch.Generator().manual_seed(seed)
    A = torch.zeros(3, 2, outputs)
    for row in range(3):  # each spec reads two outputs at one corner of the map
        A[row, :, torch.randint(0, outputs, (2,), generator=generator)] = torch.randn(2, generator=generator)
    box = InputSet(x - 0.1, x + 0.1)
    counts = _refined(monkeypatch)
    everywhere = BoundPropagation(graph, box).bound(graph.output, A).lower
    all_positions = sum(counts)
    counts.clear()
    engine = BoundPropagation(graph, box, output_specs=A)
    reached = engine.bound(graph.output, A).lower
    torch.testing.assert_close(reached, everywhere, rtol=1e-5, atol=1e-5)
    assert 0 < sum(counts) < all_positions
    methods = ("crown", "alpha-crown") if seed == 0 else ("crown",)
    assert_sound(model, x - 0.1, x + 0.1, methods=methods, samples=1_000, seed=seed)


def test_reach_follows_the_receptive_field_and_all_inputs_of_a_transfer_it_cannot_follow():
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 1, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool1d(2),
                                torch.nn.Conv1d(1, 1, 3, padding=1))
    graph = trace(model, torch.zeros(1, 1, 16))
    engine = BoundPropagation(graph, InputSet(-torch.ones(1, 1, 16), torch.ones(1, 1, 16)))
    rows = torch.zeros(1, 1, 1, 8)
    rows[..., 0] = 1.0
    masks = {node.name: mask for node, mask in reach(engine, graph.output, rows).items()}
    pool = next(name for name in masks if "max_pool" in name and "getitem" not in name)
    assert masks[pool].flatten().tolist() == [True, True] + [False] * 6  # the last conv's window at the first output
    relu = next(name for name in masks if name.startswith("relu"))
    assert bool(masks[relu].all())  # max pooling needs its input's bounds: every position is reached
