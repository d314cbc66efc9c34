"""verify(): falsified only with a counterexample a forward pass confirms, verified only with a positive
proven margin that sampling agrees with, and clear errors for bad requests."""

import pytest
import torch

import opwise
from opwise.bounds import BoundedModel
from opwise.bounds.spec import Specification
from opwise.errors import InputError
from tests.bounds.helpers import randomize_


def _model(seed):
    return randomize_(torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3)), seed)


def test_statuses_agree_with_forward_passes():
    model = _model(0)
    bounded = BoundedModel(model, torch.zeros(1, 4))
    seen = set()
    for seed in range(12):
        x = torch.randn(1, 4, generator=torch.Generator().manual_seed(seed))
        eps = [0.01, 0.1, 0.5][seed % 3]
        result = opwise.verify(bounded, x, eps=eps)
        seen.add(result.status)
        target = int(model(x).argmax())
        assert result.target == target
        if result.status == "falsified":
            counter = result.counterexample
            assert ((counter - x).abs() <= eps + 1e-6).all()
            assert int(model(counter).argmax()) != target or float(model(counter)[0, target]) <= float(
                model(counter).topk(2).values[0, 1])
        else:
            samples = x + eps * (2 * torch.rand(5000, 4) - 1)
            with torch.no_grad():
                y = model(samples)
            margins = y[:, target:target + 1] - y
            if result.status == "verified":
                assert result.margin_lower > 0
                margins[:, target] = float("inf")
                assert (margins.amin(1) >= result.margin_lower - 1e-5).all()
    assert {"verified", "falsified"} <= seen


def test_methods_and_stats_are_reported():
    x = torch.randn(1, 4)
    result = opwise.verify(_model(1), x, eps=1e-4, method="crown")
    assert result.status == "verified" and result.stats["methods"] == ["crown"] and result.stats["seconds"] >= 0


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": -1.0}, "nonnegative"),
    ({"eps": 0.1, "target": 3}, "out of range"),
    ({"eps": 0.1, "method": "nope"}, "unknown method"),
])
def test_bad_requests(kwargs, message):
    with pytest.raises(InputError, match=message):
        opwise.verify(_model(0), torch.zeros(1, 4), **kwargs)


def test_more_than_one_sample_is_refused():
    with pytest.raises(InputError, match="one sample"):
        opwise.verify(_model(0), torch.zeros(2, 4), eps=0.1)


def test_complete_search_on_few_inputs_splits_them_and_agrees_with_a_grid():
    """Two inputs: the orchestrator picks input splitting (the affine–ReLU chain fast path); every verdict
    agrees with a dense grid of the box, and a counterexample is real."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(2, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12), torch.nn.ReLU(),
                                torch.nn.Linear(12, 2)).eval()
    bounded = BoundedModel(model, torch.zeros(1, 2))
    grid = torch.cartesian_prod(torch.linspace(-1, 1, 301), torch.linspace(-1, 1, 301))
    with torch.no_grad():
        margin = model(grid)[:, 0] - model(grid)[:, 1]
    from opwise.bounds.spec import Disjunct
    from opwise.bounds.verify import verify_specification

    spread = float(margin.max() - margin.min())
    crown = bounded.compute_bounds(x_lower=-torch.ones(1, 2), x_upper=torch.ones(1, 2), C=torch.tensor([[1.0, -1.0]]))
    assert float(crown.lower) < float(margin.min()) - 0.002 * spread  # CROWN alone cannot prove the first threshold
    for threshold, expected in ((float(margin.min()) - 0.002 * spread, "verified"), (float(margin.min()) + 0.02 * spread, "falsified")):
        spec = Specification(-torch.ones(1, 2), torch.ones(1, 2), [Disjunct(torch.tensor([[1.0, -1.0]]), torch.tensor([threshold]))])
        result = verify_specification(bounded, spec, methods=("crown",), complete=True, timeout=60)
        assert result.status == expected
        if expected == "verified":
            assert result.stats["search"] == "input-split" and result.margin_lower is None
        else:
            y = model(result.counterexample)
            assert float(y[0, 0] - y[0, 1]) <= threshold
    with pytest.raises(InputError, match="does not take"):
        verify_specification(bounded, spec, methods=("crown",), attack=False,
                             complete={"strategy": "input-split", "split_point": "table"})


def test_the_time_limit_holds_with_branch_and_bound():
    """A property just below the true minimum on a 20-input net: the answer comes within the time limit
    (bound passes are interrupted between layers), as 'timeout' or a decision."""
    import time

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 3)).eval()
    x = torch.rand(1, 20)
    start = time.monotonic()
    result = opwise.verify(model, x, eps=0.3, bab=True, timeout=2.0)
    elapsed = time.monotonic() - start
    assert result.status in ("verified", "falsified", "timeout", "unknown")
    assert elapsed < 2.0 + max(0.2, 1.0) + 1.0, f"{elapsed:.2f} s for a 2 s limit"  # tracing once, then within 1 s
