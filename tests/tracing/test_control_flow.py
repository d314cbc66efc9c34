"""Python control flow on input-dependent tensors is refused with the model's line (opwise/tracing/control_flow.py);
control flow on shapes, parameters and constants still traces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import opwise
from opwise.tracing.control_flow import DataDependentControlFlow


class SignFlip(nn.Module):
    """The issue's reproducer: the example takes one branch, other inputs the other."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x):
        if x.sum() > 0:
            return -self.layer(x)
        return self.layer(x)


REQUESTS = {
    "trace": lambda model, x: opwise.trace(model, x),
    "explain": lambda model, x: opwise.explain(model, x),
    "compute_bounds": lambda model, x: opwise.compute_bounds(model, x, eps=0.1),
    "verify": lambda model, x: opwise.verify(model, x, eps=0.1),
}


@pytest.mark.parametrize("request_name", sorted(REQUESTS))
def test_a_branch_on_the_input_is_refused_by_every_request(request_name):
    """Regression (issue 15): the traced branch stood in for the model; bounds were for the other function."""
    with pytest.raises(DataDependentControlFlow, match=r"test_control_flow.py:\d+ \(`if x.sum\(\) > 0:`\).*torch.where"):
        REQUESTS[request_name](SignFlip(), torch.ones(1, 3))


class Reads(nn.Module):
    def __init__(self, read):
        super().__init__()
        self.read = read

    def forward(self, x):
        return x * self.read(x)


@pytest.mark.parametrize("read", [
    lambda x: x.max().item(),
    lambda x: float(x.sum()),
    lambda x: int(x.argmax()),
    lambda x: x.shape[1] if bool((x > 0).all()) else 1,
    lambda x: torch.ones(int(x.abs().sum() > 1) + 1).sum(),
], ids=["item", "float", "int", "bool", "size"])
def test_python_values_read_from_the_input_are_refused(read):
    with pytest.raises(DataDependentControlFlow, match="reads a Python value from an input-dependent tensor"):
        opwise.trace(Reads(read), torch.randn(2, 3), strategy="fx")


class Fixed(nn.Module):
    """Control flow on shapes, a parameter's value, a constant tensor and a buffer: the same for every input."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 3)
        self.register_buffer("on", torch.tensor(True))

    def forward(self, x):
        h = self.layer(x)
        if x.shape[1] > 2 and self.on:
            h = torch.relu(h)
        if self.layer.weight.abs().max().item() > 0:
            h = h * 2
        if torch.tensor([1.0, 2.0]).sum() > 0:
            h = h + 1
        return h


@pytest.mark.parametrize("strategy", ["auto", "fx"])
def test_control_flow_that_does_not_depend_on_the_input_traces(strategy):
    model = Fixed()
    graph = opwise.trace(model, torch.randn(2, 3), strategy=strategy)
    for _ in range(3):
        other = torch.randn(2, 3) * 5
        torch.testing.assert_close(graph(other), model(other))
