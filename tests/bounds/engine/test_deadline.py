"""The engine's deadline hook (opwise/bounds/engine/deadline.py): a pass past its deadline raises
TimeLimitReached between nodes, in CROWN, forward mode and the refinement of intermediate bounds; nested
deadlines keep the earlier one; without a deadline nothing changes."""

import time

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.engine.deadline import check_deadline, deadline
from opwise.bounds.input_set import InputSet
from opwise.errors import TimeLimitReached
from opwise.tracing import trace


def _engine(intermediate: str) -> tuple[BoundPropagation, object]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 2))
    graph = trace(model, torch.zeros(1, 3))
    return BoundPropagation(graph, InputSet.ball(torch.zeros(1, 3), 0.5), intermediate), graph


@pytest.mark.parametrize("intermediate", ["crown", "forward"])
def test_a_pass_past_its_deadline_stops(intermediate):
    engine, graph = _engine(intermediate)
    with deadline(0.0), pytest.raises(TimeLimitReached):
        engine.bound(graph.output, torch.eye(2)[:, None, :])
    fresh, graph = _engine(intermediate)
    with deadline(60.0):
        within = fresh.bound(graph.output, torch.eye(2)[:, None, :]).lower
    plain, graph = _engine(intermediate)
    assert torch.equal(within, plain.bound(graph.output, torch.eye(2)[:, None, :]).lower)


def test_compute_bounds_and_alpha_crown_stop_at_the_deadline():
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    bounded = BoundedModel(model, torch.zeros(1, 3))
    for method in ("crown", "alpha-crown"):
        with deadline(0.0), pytest.raises(TimeLimitReached):
            bounded.compute_bounds(x_lower=-torch.ones(1, 3), x_upper=torch.ones(1, 3), method=method)


def test_nested_deadlines_keep_the_earlier_one():
    with deadline(0.0):
        with deadline(60.0) as at:
            assert at <= time.monotonic()
            with pytest.raises(TimeLimitReached):
                check_deadline()
    check_deadline()  # none outside
