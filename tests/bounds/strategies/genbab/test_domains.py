"""Domains: splitting one neuron's interval, whatever memory layout the interval has."""

from __future__ import annotations

import pytest
import torch

from opwise.bounds.strategies.genbab.domains import Domain
from opwise.bounds.transfers.registry import Interval


@pytest.mark.parametrize("isolate", [False, True])
def test_split_narrows_the_flat_index_of_a_permuted_interval(isolate):
    """An interval a pass left channels-last (a permuted view) is split at its row-major flat index, as a contiguous
    one is; the split once failed with "view size is not compatible" (marabou-cifar10's small conv net)."""
    lower = -torch.rand(1, 4, 3, 2) - 0.5
    upper = torch.rand(1, 4, 3, 2) + 0.5
    channels_last = Interval(lower.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
                             upper.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))
    assert not channels_last.lower.is_contiguous()
    index = 7                                                   # channel 1, row 0, column 1
    children = Domain({"z": channels_last}).split("z", index, 0.0, isolate=isolate)
    expected = Domain({"z": Interval(lower, upper)}).split("z", index, 0.0, isolate=isolate)
    assert len(children) == len(expected) == (3 if isolate else 2)
    for child, reference in zip(children, expected):
        assert torch.equal(child.intervals["z"].lower, reference.intervals["z"].lower)
        assert torch.equal(child.intervals["z"].upper, reference.intervals["z"].upper)
    assert children[0].intervals["z"].upper[0, 1, 0, 1] <= 0 <= children[-1].intervals["z"].lower[0, 1, 0, 1]
    changed = (children[0].intervals["z"].upper != upper).sum()
    assert changed == 1                                         # only that neuron is narrowed
