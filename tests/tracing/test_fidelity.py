"""check_fidelity (opwise/tracing/fidelity.py): explain, BoundedModel, compute_bounds and verify refuse a model whose traced
graph computes another function on the request's inputs, and accept faithful graphs."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import opwise
from opwise.bounds import BoundedModel
from opwise.tracing.fidelity import GraphMismatch, check_fidelity


class PythonNoise(nn.Module):
    """A factor drawn outside torch on every call: the trace fixes the one its own call drew."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)
        self.draws = random.Random(0)

    def forward(self, x):
        return self.layer(x) * (1 + self.draws.random())


REQUESTS = {
    "BoundedModel": lambda model, x: BoundedModel(model, x),
    "explain": lambda model, x: opwise.explain(model, x),
    "compute_bounds": lambda model, x: opwise.compute_bounds(model, x, eps=0.1),
    "verify": lambda model, x: opwise.verify(model, x, eps=0.1),
}


@pytest.mark.parametrize("request_name", sorted(REQUESTS))
def test_a_graph_that_differs_from_the_model_is_refused(request_name):
    model, x = PythonNoise(), torch.randn(1, 3)
    with pytest.raises(GraphMismatch, match="computes another function than the model"):
        REQUESTS[request_name](model, x)


def test_a_traced_graph_is_its_own_reference():
    model, x = PythonNoise(), torch.randn(1, 3)
    graph = opwise.trace(model, x)
    check_fidelity(graph, graph, x)
    assert opwise.compute_bounds(graph, x, eps=0.1).lower.shape == (1, 2)


class Structured(nn.Module):
    """Keyword mask, dropout (the model arrives in training mode) and a dict output."""

    def __init__(self):
        super().__init__()
        self.layer, self.dropout = nn.Linear(3, 3), nn.Dropout(0.5)

    def forward(self, x, mask=None):
        h = self.dropout(self.layer(x)) * mask
        return {"hidden": h, "logits": h.sum(-1, keepdim=True)}


@pytest.mark.filterwarnings("ignore:relevance is not conserved")
def test_faithful_graphs_pass_with_keywords_training_mode_and_structured_outputs():
    model, x, mask = Structured().train(), torch.randn(2, 3), torch.tensor([1.0, 0.0, 1.0])
    graph = opwise.trace(model, x, mask=mask, output="hidden")
    check_fidelity(graph, model, x, output="hidden", mask=mask)
    assert model.training
    explanation = opwise.explain(model, x, mask=mask, composite="epsilon")
    assert explanation.relevance.shape == (2, 3)


class AmplifiesRounding(nn.Module):
    """sin(1e5 · h) after a batch norm: the last float bits of h decide the output (as in a deep random network
    whose normalisation is not calibrated), and explain folds the batch norm into the convolution."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-1, 1)
            self.norm.running_var.uniform_(0.1, 2)

    def forward(self, x):
        return self.head(torch.sin(1e5 * self.norm(self.conv(x))).mean((2, 3)))


def test_a_model_that_amplifies_rounding_is_refused_as_such():
    """Such a model's graph was refused as depending on 'something the trace fixed (Python state, ...)', which
    sent its user looking for state it does not have; the refusal now says the model amplifies rounding."""
    torch.manual_seed(0)
    model, x = AmplifiesRounding().eval(), torch.rand(1, 1, 6, 6)
    with pytest.raises(GraphMismatch, match="amplifies float rounding"):
        opwise.explain(model, x)
    assert not model.training
