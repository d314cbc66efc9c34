"""Sparse α (opwise/bounds/relaxations/sparse_alpha.py): stored at the neurons a ramp's lines depend on, it gives
the intermediate bounds and gradients of the dense α with the same entries, in windows and on whole nodes."""

import pytest
import torch

from opwise.bounds import BoundedModel
from opwise.bounds.engine import BoundPropagation
from opwise.bounds.input_set import InputSet
from opwise.bounds.relaxations.sparse_alpha import SparseAlpha
from opwise.bounds.strategies.alpha import clamp_alphas, initial_alphas
from opwise.bounds.strategies.alpha_chain import intermediate_bounds
from opwise.bounds.transfers.nonlinear import Elementwise
from opwise.bounds.transfers.patches import Patches
from tests.bounds.helpers import randomize_


def _cnn(activation):
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), activation(), torch.nn.Conv2d(4, 4, 3, stride=2, padding=1),
                               activation(), torch.nn.Conv2d(4, 3, 3, padding=1), activation(), torch.nn.Flatten(),
                               torch.nn.Linear(48, 2))


def _mlp(activation):
    return torch.nn.Sequential(torch.nn.Linear(4, 10), activation(), torch.nn.Linear(10, 10), activation(), torch.nn.Linear(10, 10),
                               activation(), torch.nn.Linear(10, 2))


CASES = {
    "cnn_relu": (lambda: _cnn(torch.nn.ReLU), (2, 8, 8), 0.4, Patches),
    "cnn_hardtanh": (lambda: _cnn(lambda: torch.nn.Hardtanh(-0.3, 0.4)), (2, 8, 8), 0.4, Patches),
    "mlp_leaky_relu": (lambda: _mlp(lambda: torch.nn.LeakyReLU(0.1)), (4,), 0.8, torch.Tensor),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_sparse_alpha_gives_the_dense_alphas_bounds_and_gradients(name, monkeypatch):
    build, shape, eps, kind = CASES[name]
    model = randomize_(build().eval(), 1)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    graph = BoundedModel(model, x).graph
    engine = BoundPropagation(graph, InputSet(x - eps, x + eps))
    engine.backward(graph.output, torch.eye(2).reshape(2, 1, 2).expand(2, 2, 2))
    link = [link for link in intermediate_bounds(engine, graph.output, 10**9) if link.alphas][-1]
    specs, generator = 2 * link.selected.numel(), torch.Generator().manual_seed(2)
    sparse = link.alphas
    assert len(sparse) == 2 and all(isinstance(pair, SparseAlpha) for pair in sparse.values())
    dense = initial_alphas(engine, link.node, specs)
    for node, pair in sparse.items():
        with torch.no_grad():  # entries away from CROWN's, inside their range
            for side in ("lower", "upper"):
                entries = getattr(pair, side)
                if entries is not None:
                    entries.add_(torch.rand(entries.shape, generator=generator) - 0.5)
        clamp_alphas(engine, {node: pair})
        assert 0 < pair.positions.numel()
        with torch.no_grad():
            for side in ("lower", "upper"):
                entries, full = getattr(pair, side), getattr(dense[node], side)
                if entries is not None:
                    full.view(specs, full.shape[1], -1)[:, :, pair.positions] = entries
    assert any(pair.positions.numel() < pair.lookup.numel() for pair in sparse.values())  # stable neurons are left out
    seen = []
    original = Elementwise.sparse_lines
    monkeypatch.setattr(Elementwise, "sparse_lines", lambda self, step, A: seen.append(type(A)) or original(self, step, A))
    results = {}
    for label, alphas in (("sparse", sparse), ("dense", dense)):
        bound = engine.refine(link.node, link.open, link.selected, alphas)
        (bound.lower.sum() - bound.upper.sum()).backward()
        results[label] = bound
    assert seen and set(seen) == {kind}
    torch.testing.assert_close(results["sparse"].lower, results["dense"].lower, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results["sparse"].upper, results["dense"].upper, rtol=1e-5, atol=1e-6)
    assert not torch.equal(results["dense"].lower, link.crown.lower)  # the moved α changed the bound
    for node, pair in sparse.items():
        for side in ("lower", "upper"):
            entries, full = getattr(pair, side), getattr(dense[node], side)
            if entries is None:  # a side the lines never read
                assert full.grad is None or not full.grad.any()
                continue
            gradient = full.grad.reshape(specs, full.shape[1], -1)
            torch.testing.assert_close(entries.grad, gradient[:, :, pair.positions], rtol=1e-5, atol=1e-6)
            outside = torch.ones(gradient.shape[-1], dtype=torch.bool)
            outside[pair.positions] = False
            assert entries.grad.abs().sum() > 0 and not gradient[:, :, outside].any()


@pytest.mark.parametrize("sparse", [True, False])
def test_alphas_over_a_limit_are_counted_before_any_is_stored(sparse, monkeypatch):
    """`initial_alphas(limit=...)` counts what it would store first: over the limit it stores nothing (carvana_unet's
    160,709 intermediate bounds asked for tens of GB before the budget was checked); within it, the count is what
    it stores."""
    from opwise.bounds.strategies.alpha_chain import _alpha_size

    model = randomize_(_cnn(torch.nn.ReLU).eval(), 2)
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    bounded = BoundedModel(model, x)
    engine = BoundPropagation(bounded.graph, InputSet(x - 0.4, x + 0.4), "crown")
    output = bounded.graph.output
    engine.prepare(output)
    stored = initial_alphas(engine, output, 7, sparse=sparse)
    size = _alpha_size(stored)
    assert size > 0
    assert _alpha_size(initial_alphas(engine, output, 7, sparse=sparse, limit=size)) == size
    built = []
    monkeypatch.setattr(SparseAlpha, "around", lambda *a, **k: built.append(a))
    assert initial_alphas(engine, output, 7, sparse=sparse, limit=size - 1) is None
    assert built == []
