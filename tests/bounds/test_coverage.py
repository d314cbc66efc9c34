"""coverage(graph): which input-dependent operations have bound transfers."""

import torch

from opwise.bounds import coverage
from opwise.tracing import trace


class _WithNorm(torch.nn.Module):
    """Ends in an operator without a bound transfer (sort, then logcumsumexp were ones until they got transfers)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.special.bessel_j0(torch.relu(self.linear(x)))


def test_fully_covered_model():
    graph = trace(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten()), torch.zeros(1, 1, 5, 5))
    report = coverage(graph)
    assert report.fraction == 1.0 and report.missing == []


def test_missing_operator_is_listed_by_node_and_op():
    report = coverage(trace(_WithNorm(), torch.zeros(1, 3)))
    assert 0 < report.fraction < 1
    assert any("special_bessel_j0" in op for _, op in report.missing)
