"""Choosing one output from structured model outputs, including nested ones."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.errors import TraceError


class Structured(torch.nn.Module):
    def forward(self, x):
        return {"logits": x + 1, "hidden": (x * 2, [x * 3, x * 4])}


@pytest.mark.parametrize("output, factor", [(None, None), ("hidden.0", 2), ("hidden.1.1", 4), ("hidden.1.-2", 3)])
def test_dotted_paths_pick_nested_outputs(output, factor):
    x = torch.randn(2, 3)
    graph = opwise.trace(Structured(), x, output=output)
    expected = x + 1 if factor is None else x * factor
    assert torch.allclose(graph(x), expected)


@pytest.mark.parametrize("output", ["hidden.5", "missing", "hidden.1"])
def test_bad_paths_say_what_exists(output):
    with pytest.raises(TraceError, match="output="):
        opwise.trace(Structured(), torch.randn(2, 3), output=output)
