"""ReluChain: recognised only on affine–ReLU chains, equal to the graph, and its bounds sound and tight enough."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.bounds.strategies.input_split import input_split_bab
from opwise.bounds.strategies.relu_chain import ReluChain
from tests.bounds.strategies.bab_reference import interval_bounds, random_mlp
from tests.bounds.strategies.test_input_split import random_problem


class Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)


class Normalised(torch.nn.Module):
    """Input normalisation, flatten, and a chain: every non-ReLU node affine (as in the ACAS Xu ONNX files)."""

    def __init__(self):
        super().__init__()
        self.mlp = random_mlp(3, (4, 6, 6, 3)).float()

    def forward(self, x):
        return self.mlp(((x - 0.5) / 2).reshape(len(x), -1))


def test_chain_of_a_traced_mlp_matches_its_forward():
    model = Normalised()
    chain = ReluChain.of_graph(opwise.trace(model, torch.zeros(1, 1, 4)))
    assert chain is not None and len(chain.weights) == 3
    x = torch.randn(50, 1, 4)
    torch.testing.assert_close(chain(x), model(x).detach(), rtol=1e-5, atol=1e-5)


def test_chain_weights_are_the_network_weights_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        model[0].bias.mul_(1e3)  # a large bias must not cost the weights their low bits
    chain = ReluChain.of_graph(opwise.trace(model, torch.zeros(1, 3)))
    for weight, bias, linear in zip(chain.weights, chain.biases, (model[0], model[2])):
        assert torch.equal(weight, linear.weight.detach().double()) and torch.equal(bias, linear.bias.detach().double())


@pytest.mark.parametrize("model", [Residual(), torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 2))])
def test_other_graphs_are_not_chains(model):
    assert ReluChain.of_graph(opwise.trace(model, torch.zeros(1, 3))) is None


def chain_of(model: torch.nn.Sequential, intermediate: str) -> ReluChain:
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    return ReluChain([m.weight for m in layers], [m.bias for m in layers], (1, layers[0].in_features), intermediate)


@pytest.mark.parametrize("intermediate", ["forward", "backward"])
def test_bounds_are_sound_and_beat_interval_arithmetic(intermediate):
    for seed in range(10):
        model = random_mlp(seed, (3, 12, 12, 12, 4))
        chain = chain_of(model, intermediate)
        generator = torch.Generator().manual_seed(seed)
        lower = torch.rand(16, 3, generator=generator, dtype=torch.float64) * 2 - 1
        upper = lower + torch.rand(16, 3, generator=generator, dtype=torch.float64)
        C = torch.randn(5, 4, generator=generator, dtype=torch.float64)
        bound, coefficients, _ = chain.bound(lower, upper, C)
        assert bound.shape == (16, 5) and coefficients.shape == (16, 5, 3)
        samples = lower[:, None] + (upper - lower)[:, None] * torch.rand(16, 400, 3, generator=generator, dtype=torch.float64)
        values = model(samples.reshape(-1, 3)).detach().reshape(16, 400, 4) @ C.T
        assert (values.amin(dim=1) >= bound - 1e-9).all()
        low, high = interval_bounds(model, lower, upper)[-1]
        interval = (low + high) / 2 @ C.T - (high - low) / 2 @ C.abs().T
        assert (bound >= interval - 1e-9).all() and (bound > interval + 1e-6).any()


def test_parallel_chains_bound_as_their_dense_block_diagonal_chain_and_hold_on_samples():
    """Two chains on one input (the second reading it permuted), as `parallel` builds them: bounded block by block,
    the same bounds as the dense block-diagonal chain (whose off-block weights are zero), and sound on samples."""
    for seed in range(4):
        first, second = random_mlp(seed, (3, 10, 10, 10, 2)), random_mlp(50 + seed, (3, 10, 10, 10, 2))
        chains = [chain_of(first, "backward"), chain_of(second, "backward")]
        joint = ReluChain.parallel(chains, [torch.tensor([0, 1, 2]), torch.tensor([2, 0, 3])], 4)
        dense = ReluChain(joint.weights, joint.biases, joint.input_shape, "backward")
        generator = torch.Generator().manual_seed(seed)
        lower = torch.rand(8, 4, generator=generator, dtype=torch.float64) - 1
        upper = lower + torch.rand(8, 4, generator=generator, dtype=torch.float64)
        C = torch.randn(3, 4, generator=generator, dtype=torch.float64)
        blocked, _, hidden = joint.bound(lower, upper, C)
        plain, _, dense_hidden = dense.bound(lower, upper, C)
        assert torch.allclose(blocked, plain, atol=1e-9) and torch.allclose(hidden, dense_hidden, atol=1e-9)
        x = lower[:, None] + (upper - lower)[:, None] * torch.rand(8, 300, 4, generator=generator, dtype=torch.float64)
        flat = x.reshape(-1, 4)
        outputs = torch.cat([first(flat[:, [0, 1, 2]]), second(flat[:, [2, 0, 3]])], dim=1).detach()
        assert (outputs.reshape(8, 300, 4) @ C.T).amin(dim=1).ge(blocked - 1e-9).all()


def test_backward_intermediate_bounds_are_at_least_as_tight():
    model = random_mlp(5, (5, 20, 20, 20, 20, 3))
    lower = torch.rand(64, 5, dtype=torch.float64) - 1
    upper = lower + 0.5
    C = torch.eye(3, dtype=torch.float64)
    forward, _, _ = chain_of(model, "forward").bound(lower, upper, C)
    backward, _, _ = chain_of(model, "backward").bound(lower, upper, C)
    assert backward.mean() > forward.mean() and (backward >= forward - 1e-9).float().mean() > 0.9


@pytest.mark.parametrize("branching, smear", [("auto", False), ("auto", True), ("widest", False), ("bound", False)])
def test_input_splitting_with_chain_bounds_matches_milp(branching, smear):
    for seed in range(12):
        model, spec, exact = random_problem(seed)
        chain = chain_of(model, "backward")
        bound_fn = chain.bound_and_smear if smear else chain.bound
        result = input_split_bab(bound_fn, chain, spec, timeout=30, branching=branching, batch_size=64)
        assert result.status == ("verified" if exact > 0 else "falsified"), (seed, exact, result)
        if result.status == "falsified":
            assert spec.contains(result.counterexample)
            assert float(spec.margin(model(result.counterexample).detach())) <= 0


def test_parent_bounds_passed_to_children_keep_them_sound_and_tighter():
    model = random_mlp(7, (3, 16, 16, 16, 2))
    chain = chain_of(model, "backward")
    generator = torch.Generator().manual_seed(7)
    lower = torch.rand(8, 3, generator=generator, dtype=torch.float64) - 1
    upper = lower + 0.8
    C = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    _, _, parent = chain.bound(lower, upper, C)
    middle = (lower + upper) / 2
    halves = [(lower, torch.cat([middle[:, :1], upper[:, 1:]], 1)), (torch.cat([middle[:, :1], lower[:, 1:]], 1), upper)]
    for low, high in halves:
        bound, _, child = chain.bound(low, high, C, parent)
        assert (child[:, 0] >= parent[:, 0]).all() and (child[:, 1] <= parent[:, 1]).all()
        samples = low[:, None] + (high - low)[:, None] * torch.rand(8, 500, 3, generator=generator, dtype=torch.float64)
        values = model(samples.reshape(-1, 3)).detach().reshape(8, 500, 2) @ C.T
        assert (values.amin(dim=1) >= bound - 1e-9).all()
        hidden, pre_activations = samples.reshape(-1, 3), []
        for layer in model[:-1]:
            hidden = layer(hidden)
            if isinstance(layer, torch.nn.Linear):
                pre_activations.append(hidden.detach().reshape(8, 500, -1))
        pre_activations = torch.cat(pre_activations, dim=2)
        assert (pre_activations >= child[:, None, 0] - 1e-9).all() and (pre_activations <= child[:, None, 1] + 1e-9).all()


def test_gradient_intervals_hold_every_sampled_gradient_and_the_centre_gradient_is_exact():
    for seed in range(8):
        model = random_mlp(seed, (4, 10, 10, 10, 3))
        chain = chain_of(model, "backward")
        generator = torch.Generator().manual_seed(seed)
        lower = torch.rand(6, 4, generator=generator, dtype=torch.float64) * 2 - 1
        upper = lower + torch.rand(6, 4, generator=generator, dtype=torch.float64) * (0.05 + seed / 4)
        C = torch.randn(2, 3, generator=generator, dtype=torch.float64)
        bound, coefficients, pre_activation = chain.bound(lower, upper, C)
        low, high, at_centre = chain._gradient_intervals(C, pre_activation, (lower + upper) / 2)
        samples = (lower[:, None] + (upper - lower)[:, None] * torch.rand(6, 300, 4, generator=generator,
                                                                          dtype=torch.float64)).requires_grad_(True)
        centre = ((lower + upper) / 2).requires_grad_(True)
        for row in range(2):
            (gradient,) = torch.autograd.grad((model(samples) @ C[row]).sum(), samples)
            assert (gradient >= low[:, None, row] - 1e-9).all() and (gradient <= high[:, None, row] + 1e-9).all()
            (exact,) = torch.autograd.grad((model(centre) @ C[row]).sum(), centre)
            torch.testing.assert_close(at_centre[:, row], exact)
        # the linear bound's slopes are products of relaxation slopes in the same intervals
        assert (coefficients >= low - 1e-9).all() and (coefficients <= high + 1e-9).all()
        answer = chain.bound_and_smear(lower, upper, C)
        weighted, weights = answer.lower, answer.weights
        assert torch.equal(weighted, bound) and (weights >= 0).all() and weights.shape == (6, 2, 4)


def test_an_input_whose_centre_gradient_is_zero_still_gets_a_branching_weight():
    """f(x) = relu(x0) + relu(x1) on [-1, 0.5] x [-1, 0.5]: at the centre (-0.25, -0.25) both ReLUs are off, so the
    centre gradient is 0, yet f bends along both inputs. Each input's weight stays positive (a share of its gradient
    smear): with a weight of 0 an input was never split."""
    chain = ReluChain([torch.eye(2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)],
                      [torch.zeros(2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)], (1, 2))
    answer = chain.bound_and_smear(torch.full((1, 2), -1.0, dtype=torch.float64), torch.full((1, 2), 0.5, dtype=torch.float64),
                                   torch.ones(1, 1, dtype=torch.float64))
    assert (answer.weights > 0).all(), answer.weights


def test_an_affine_network_is_a_chain_of_one_layer_bounded_exactly():
    """y = x0 + 2 x1 (no ReLU): the chain of one affine layer bounds it exactly (a linear ONNX network crashed input
    splitting: the chain concatenated an empty list of pre-activation bounds)."""
    chain = ReluChain([torch.tensor([[1.0, 2.0]], dtype=torch.float64)], [torch.zeros(1, dtype=torch.float64)], (1, 2))
    lower, upper = torch.full((1, 2), -1.0, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    answer = chain.bound_and_smear(lower, upper, torch.ones(1, 1, dtype=torch.float64))
    assert float(answer.lower) == pytest.approx(-3.0) and answer.state.shape == (1, 2, 0)


def test_a_chain_whose_matrices_would_be_too_large_is_no_chain(monkeypatch):
    """The chain is read off one evaluation per input element into dense matrices: a convolutional net of CIFAR
    size took 25 s and 200 MB to read. Above `MAX_MATRIX_ENTRIES` a graph is no chain (the engine bounds it)."""
    from opwise.bounds.strategies import relu_chain
    from opwise.tracing import trace

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32, 2))
    graph = trace(model, torch.zeros(1, 1, 4, 4))
    assert relu_chain.ReluChain.of_graph(graph) is not None  # 16 x 32 and 32 x 2 entries
    evaluated = []
    monkeypatch.setattr(relu_chain, "_evaluate", lambda *args: evaluated.append(1))
    monkeypatch.setattr(relu_chain, "MAX_MATRIX_ENTRIES", 16 * 32 - 1)
    graph = trace(model, torch.zeros(1, 1, 4, 4))  # a new graph: chains are read once per graph
    assert relu_chain.ReluChain.of_graph(graph) is None and not evaluated  # refused before reading any matrix
