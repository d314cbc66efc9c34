"""Softmax's denominator carried back in one step (opwise/bounds/transfers/exp_sum.py): the same coefficients and
bias as the node-by-node walk through the grid of exp terms, recorded coefficients included, and sound bounds on
random attention layers."""

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.engine.propagation import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.relaxations.base import LinearRelaxation
from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.strategies.alpha_chain import optimize_bounds
from opwise.bounds.transfers.exp_sum import ExpSum, compose_lines, exp_sum_backward
from opwise.bounds.transfers.nonlinear import select_lines
from tests.bounds.helpers import assert_sound, randomize_
from tests.bounds.transfers.test_contraction import _Attention


def _lines(generator, shape, rising: bool) -> LinearRelaxation:
    slope = (lambda: torch.rand(*shape, generator=generator)) if rising else (lambda: torch.randn(*shape, generator=generator))
    return LinearRelaxation(slope(), torch.randn(*shape, generator=generator), slope(), torch.randn(*shape, generator=generator))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("per_spec", [False, True])
@pytest.mark.parametrize("clamped", [False, True])
def test_exp_sum_backward_equals_the_walk_through_the_grid(seed, per_spec, clamped):
    generator = torch.Generator().manual_seed(seed)
    heads, rows, specs = 2, 4, 5
    full = (heads, rows, rows)  # differences[h, i, j] = x[h, j] − x[h, i], summed over j
    lines_shape = (specs, *full) if per_spec else full
    exp, clamp = _lines(generator, lines_shape, rising=True), _lines(generator, lines_shape, rising=False)
    mask = (1 - torch.eye(rows)) * torch.rand(rows, rows, generator=generator)
    pattern = ExpSum(None, None, None, None, None, (None, None), ((heads, 1, rows), (heads, rows, 1)), full, 2)
    A = torch.randn(specs, heads, rows, generator=generator)
    composed = compose_lines(mask, exp, clamp if clamped else None)
    first, second, terms = exp_sum_backward(A, composed, pattern)
    grid = A.unsqueeze(3).expand(specs, *full) * mask
    (through_exp,), walk_terms = select_lines(grid, exp, True)
    if clamped:
        (through_exp,), clamp_terms = select_lines(through_exp, clamp, True)
        walk_terms = walk_terms + clamp_terms
    torch.testing.assert_close(first, through_exp.sum(2, keepdim=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, -through_exp.sum(3, keepdim=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.reshape(specs, -1).sum(-1), walk_terms.sum(-1), rtol=1e-4, atol=1e-4)


def test_compose_lines_refuses_a_negative_mask_or_falling_exp_lines():
    generator = torch.Generator().manual_seed(0)
    exp = _lines(generator, (3, 3), rising=True)
    assert compose_lines(-torch.ones(3, 3), exp, None) is None
    falling = LinearRelaxation(-exp.lower_slope, exp.lower_intercept, exp.upper_slope, exp.upper_intercept)
    assert compose_lines(torch.ones(3, 3), falling, None) is None


class _ColumnSoftmax(torch.nn.Module):
    """Softmax over a middle dim (the pattern's grid then has a trailing dim after the summed one); a large `scale`
    makes score differences pass the clamp's cap (MAX_EXPONENT in expand.py)."""

    def __init__(self, scale: float = 3.0):
        super().__init__()
        self.scale = scale
        self.first, self.last = torch.nn.Linear(4, 6), torch.nn.Linear(18, 3)

    def forward(self, x):
        scores = self.first(x).reshape(x.shape[0], 3, 2) * self.scale
        return self.last((torch.softmax(scores, dim=1) * x[:, :1, None]).repeat(1, 1, 3).reshape(x.shape[0], -1))


def _fused_and_walked(bounded, lower, upper, method, monkeypatch):
    fused = bounded.compute_bounds(x_lower=lower, x_upper=upper, method=method)
    with monkeypatch.context() as patch:
        patch.setattr(BoundPropagation, "_fused_exp_sum", lambda self, *args: None)
        walked = bounded.compute_bounds(x_lower=lower, x_upper=upper, method=method)
    return fused, walked


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("model_class, shape", [(_Attention, (1, 4, 8)), (_ColumnSoftmax, (2, 4))])
def test_softmax_bounds_are_the_walks_and_sound(seed, model_class, shape, monkeypatch):
    model = model_class().eval()
    randomize_(model, seed)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    lower, upper = x - 0.1, x + 0.1
    bounded = BoundedModel(model, x)
    for method in ("crown", "alpha-crown"):
        fused, walked = _fused_and_walked(bounded, lower, upper, method, monkeypatch)
        torch.testing.assert_close(fused.lower, walked.lower, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fused.upper, walked.upper, rtol=1e-4, atol=1e-4)
    assert_sound(model, lower, upper, methods=("crown", "alpha-crown"), samples=3000, seed=seed, attack=seed == 0,
                 bounded=bounded)


def test_the_fused_step_runs_and_records_exps_coefficients_as_the_walk_does(monkeypatch):
    model = _Attention().eval()
    randomize_(model, 1)
    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1))
    graph = BoundedModel(model, x).graph
    exps = [n.name for n in graph.call_nodes() if graph.info(n).op == "aten.exp.default"]
    A = torch.eye(3).unsqueeze(1)

    def bound():
        engine = BoundPropagation(graph, InputSet(x - 0.1, x + 0.1), "crown", record=exps)
        return engine.bound(graph.output, A)

    fused_calls = []
    original = BoundPropagation._fused_exp_sum
    with monkeypatch.context() as patch:
        patch.setattr(BoundPropagation, "_fused_exp_sum",
                      lambda self, *args: fused_calls.append(original(self, *args)) or fused_calls[-1])
        fused = bound()
    assert exps and any(call is not None for call in fused_calls)
    with monkeypatch.context() as patch:
        patch.setattr(BoundPropagation, "_fused_exp_sum", lambda self, *args: None)
        walked = bound()
    torch.testing.assert_close(fused.lower, walked.lower, rtol=1e-4, atol=1e-4)
    assert set(fused.recorded) == set(walked.recorded)
    for node, coefficient in walked.recorded.items():
        torch.testing.assert_close(fused.recorded[node], coefficient, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("model, shape, radius", [(_Attention(), (1, 4, 8), 0.1), (_ColumnSoftmax(100.0), (2, 4), 0.3)])
def test_alpha_on_every_intermediate_bound_takes_the_fused_step_to_the_walks_bound(seed, model, shape, radius, monkeypatch):
    # α-CROWN over the chain (GenBaB's root): α per spec on exp, and a sparse α on a clamp whose cap some differences pass
    randomize_(model.eval(), seed)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    graph = BoundedModel(model, x).graph
    A = torch.eye(3).unsqueeze(1).expand(3, shape[0], 3)
    original, fused_calls = BoundPropagation._fused_exp_sum, []

    def bound(fuse: bool) -> torch.Tensor:
        with monkeypatch.context() as patch:
            patch.setattr(BoundPropagation, "_fused_exp_sum", (lambda self, *args: fused_calls.append(original(self, *args))
                                                               or fused_calls[-1]) if fuse else (lambda self, *args: None))
            engine = BoundPropagation(graph, InputSet(x - radius, x + radius), "crown")
            engine.prepare(graph.output)
            return optimize_bounds(engine, graph.output, A, AlphaOptions(intermediate=True, iterations=5)).detach()

    fused, walked = bound(True), bound(False)
    assert any(call is not None for call in fused_calls)
    torch.testing.assert_close(fused, walked, rtol=1e-4, atol=1e-4)
