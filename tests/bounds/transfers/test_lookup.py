"""Lookups with a bounded index (lookup.py): gather, index_select and indexing by an argmax; every output at sampled
grid points (ties between the candidates everywhere) lies in the bounds, and a decided index picks its value exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from opwise.bounds import BoundedModel
from opwise.errors import UnsupportedOperation
from tests.bounds.transfers.test_comparison import _assert_sound_on_grid, _grid_box


class Lookups(torch.nn.Module):
    """One argmax per row [1, rows, 3], used as the index of every lookup: from a constant table, from the bounded
    input itself, from a one-hot, by index_select and by indexing (along the first and the second axis)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)  # [rows, 3]

    def forward(self, x):
        index = x.argmax(2, keepdim=True)  # [1, rows, 1]
        from_table = self.table[None].gather(2, index).flatten(1)
        from_input = x.gather(2, index).flatten(1)  # the row's max
        hot = F.one_hot(x[:, :, :2].argmax(2), 2).gather(2, index.clamp(max=1)).flatten(1).float()
        flat = index.flatten()  # batch 1: one index per row
        selected = self.table.T.index_select(0, flat).flatten()[None]
        indexed = self.table.T[flat].flatten()[None] + self.table[:, flat].flatten()[None]
        return torch.cat([from_table, from_input, hot, selected, indexed], 1)


@pytest.mark.parametrize("trial", range(8))
def test_lookups_with_a_bounded_index_are_sound_with_ties(trial):
    generator = torch.Generator().manual_seed(300 + trial)
    lower, upper = _grid_box(generator, (1, 3, 3))
    table = torch.randint(-5, 6, (3, 3), generator=generator).float()
    model = Lookups(table)
    one_at_a_time = lambda z: torch.cat([model(z[i:i + 1]) for i in range(len(z))])  # noqa: E731 (batch-1 lookups)
    results = _assert_sound_on_grid(model, lower, upper, generator, samples=1500, run=one_at_a_time)
    fixed = (lower == upper).all(2)[0]  # a row whose values are fixed: its argmax, and so its lookups, exactly
    for bounds in results.values():
        exact = model(lower)[0, :3][fixed]
        assert torch.allclose(bounds.lower[0, :3][fixed], exact) and torch.allclose(bounds.upper[0, :3][fixed], exact)


def test_a_negative_bounded_index_is_refused_naming_the_node():
    class Back(torch.nn.Module):
        def forward(self, x):
            return torch.arange(4.0).index_select(0, x.argmax(1) - 2)[None]

    x = torch.tensor([[0.0, 1.0, 0.5]])
    with pytest.raises(UnsupportedOperation, match=r"index_select.*may be negative.*nonnegative"):
        BoundedModel(Back(), x).compute_bounds(x_lower=x - 0.6, x_upper=x + 0.6, method="ibp")
