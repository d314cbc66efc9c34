"""Every engine path on a CUDA device against the same path on the CPU: bounds equal to 1e-4 relative,
the same verdicts. Skipped without a GPU; `scripts/run_cuda_checks.sh` runs them with the GPU benchmarks."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.bounds import AlphaOptions, BoundedModel
from opwise.bounds.attack import pgd_attack
from opwise.bounds.spec import Specification, robustness_disjuncts
from opwise.bounds.strategies.genbab.search import branch_and_bound
from opwise.bounds.vnncomp import verify_instance
from tests.bounds.vnncomp.test_instance import _axis_zero_network, vnnlib_text

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none is visible)")]


def conv_net(seed: int = 0) -> torch.nn.Module:
    """A CIFAR-shaped conv net (3×32×32), random weights."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()


def sigmoid_mlp(seed: int = 0, inputs: int = 6) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(inputs, 16), torch.nn.Sigmoid(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3)).eval()


def assert_close_bounds(cuda: torch.Tensor, cpu: torch.Tensor) -> None:
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown", "forward-crown", "alpha-crown"])
def test_bounds_of_a_cpu_model_on_cuda_match_the_cpu(method):
    model, x = conv_net(), torch.rand(2, 3, 32, 32)
    alpha = AlphaOptions(iterations=5, tolerance=0.0)
    cpu = BoundedModel(model, x).compute_bounds(x, eps=2 / 255, method=method, target=3, alpha=alpha)
    cuda = BoundedModel(model, x, device="cuda").compute_bounds(x, eps=2 / 255, method=method, target=3, alpha=alpha)
    assert_close_bounds(cuda.lower, cpu.lower)
    assert_close_bounds(cuda.upper, cpu.upper)
    assert next(model.parameters()).device.type == "cpu"  # the user's model stays where it was


def test_a_model_already_on_cuda_is_bounded_there():
    model, x = conv_net(), torch.rand(1, 3, 32, 32)
    cpu = opwise.compute_bounds(model, x, eps=1 / 255, method="alpha-crown", target=0)
    on_device = opwise.compute_bounds(model.cuda(), x.cuda(), eps=1 / 255, method="alpha-crown", target=0)
    assert_close_bounds(on_device.lower, cpu.lower)


def test_pgd_on_cuda_finds_what_the_cpu_finds():
    model = sigmoid_mlp()
    x = torch.zeros(1, 6)
    spec = Specification(x - 1, x + 1, robustness_disjuncts(3, int(model(x).argmax())))
    cpu = pgd_attack(lambda z: model(z), spec, seed=0)
    cuda_model = sigmoid_mlp().cuda()
    cuda = pgd_attack(lambda z: cuda_model(z), spec.to("cuda"), seed=0)
    assert cpu.found == cuda.found
    if cuda.found:
        assert cuda.counterexample.device.type == "cuda"


@pytest.mark.parametrize("eps", [0.05, 0.3, 2.0])
def test_verify_with_branch_and_bound_gives_the_cpu_verdict(eps):
    model, x = sigmoid_mlp(1), torch.rand(1, 6)
    cpu = opwise.verify(model, x, eps=eps, bab={"timeout": 30.0})
    cuda = opwise.verify(model, x, eps=eps, bab={"timeout": 30.0}, device="cuda")
    assert cuda.status == cpu.status
    if cuda.status == "falsified":
        assert cuda.counterexample.device.type == "cuda"
        assert int(model(cuda.counterexample.cpu()).argmax()) != cuda.target


@pytest.mark.parametrize("branching", ["bbps", "fsb"])  # fsb: candidates bounded by DomainBounder.evaluate
def test_genbab_domains_bound_alike_on_both_devices(branching):
    model = sigmoid_mlp(2, inputs=2)
    grid = torch.cartesian_prod(torch.linspace(-1, 1, 101), torch.linspace(-1, 1, 101))
    with torch.no_grad():
        floor = float((model(grid)[:, 0] - model(grid)[:, 1]).min())
    C = torch.tensor([[1.0, -1.0, 0.0]])
    from opwise.bounds.spec import Disjunct

    # 0.001 below the grid's minimum: the root bound leaves it open, and both devices branch (65 domains on the CPU)
    spec = Specification(-torch.ones(1, 2), torch.ones(1, 2), [Disjunct(C, torch.tensor([floor - 0.001]))])
    for device in ("cpu", "cuda"):
        result = branch_and_bound(BoundedModel(model, torch.zeros(1, 2), device=device), spec, timeout=60,
                                  branching=branching)
        assert result.status == "verified" and result.stats["branching_decisions"] > 0, (device, result.stats)


@pytest.mark.parametrize("inputs", [3, 20])  # input splitting (forward-mode bounds), then GenBaB
def test_vnncomp_instances_give_the_cpu_answer(tmp_path, inputs):
    path = tmp_path / "net.onnx"
    model = _axis_zero_network(path, inputs, seed=inputs)
    lower, upper = [0.0] * inputs, [0.1] * inputs
    with torch.no_grad():
        margin = model(torch.rand(5000, inputs) * 0.1) @ torch.tensor([1.0, -1.0])
    for threshold in (float(margin.min()) - 0.2, float(margin.max())):
        vnnlib = tmp_path / "p.vnnlib"
        vnnlib.write_text(vnnlib_text(lower, upper, [[1.0, -1.0]], [threshold], 2))
        cpu = verify_instance(path, vnnlib, 60)
        cuda = verify_instance(path, vnnlib, 60, device="cuda")
        assert cuda.status == cpu.status and cpu.status in ("sat", "unsat")


def test_the_relu_chain_fast_path_runs_on_cuda(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    torch.manual_seed(0)
    arrays = {"W1": torch.randn(16, 5), "b1": torch.randn(16), "W2": torch.randn(2, 16), "b2": torch.randn(2)}
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(t.numpy(), name) for name, t in arrays.items()])
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    vnnlib = tmp_path / "p.vnnlib"
    vnnlib.write_text(vnnlib_text([0.0] * 5, [0.2] * 5, [[1.0, -1.0]], [-100.0], 2))
    cpu, cuda = verify_instance(path, vnnlib, 30), verify_instance(path, vnnlib, 30, device="cuda")
    assert cuda.status == cpu.status == "unsat"


def test_explain_on_cuda_matches_the_cpu_and_follows_a_moved_model():
    model, x = conv_net(), torch.rand(2, 3, 32, 32)
    cpu = opwise.explain(model, x, target=1, composite="epsilon-plus-flat")
    model.cuda()
    cuda = opwise.explain(model, x.cuda(), target=1, composite="epsilon-plus-flat")
    assert cuda.relevance.device.type == "cuda"
    torch.testing.assert_close(cuda.relevance.cpu(), cpu.relevance, rtol=1e-4, atol=1e-5)
