"""Device hygiene without a GPU: every engine path of tests/cuda/test_device.py, run on the CPU inside StrayDevice,
so that a tensor opwise makes without the model's device fails here as it would on CUDA (see stray_device.py).
These run everywhere; `pytest --stray-device` runs the whole suite the same way."""

from __future__ import annotations

import pytest
import torch

import opwise
from opwise.bounds import AlphaOptions, BoundedModel
from opwise.bounds.attack import pgd_attack
from opwise.bounds.spec import Disjunct, Specification, robustness_disjuncts
from opwise.bounds.strategies.genbab.search import branch_and_bound
from tests.cuda.stray_device import PACKAGE, MixedDevices, StrayDevice, StrayTensor
from tests.cuda.test_device import conv_net, sigmoid_mlp


def _package_function(source: str, name: str):
    """A function compiled as if it were opwise's code (the harness checks only what opwise's code runs)."""
    namespace = {"torch": torch}
    exec(compile(source, PACKAGE + "stray_probe.py", "exec"), namespace)
    return namespace[name]


def test_a_tensor_made_without_a_device_and_combined_with_the_models_is_caught():
    forgetful = _package_function("def f(x):\n    return x + torch.zeros(3).double()\n", "f")
    with StrayDevice(), pytest.raises(MixedDevices, match=r"stray_probe.py:2"):
        forgetful(torch.ones(3, dtype=torch.float64))


def test_what_cuda_allows_passes():
    careful = _package_function(
        "def f(x):\n"
        "    made = torch.zeros(3)\n"
        "    here = torch.ones(3, device=made.device)\n"        # made where a stray tensor lives: stray too
        "    summed = (made + here).to(x.device)\n"             # moved to the model's device
        "    index = torch.tensor([0, 2])\n"                    # a CPU index into a device tensor
        "    return x + summed + torch.tensor(1.0) + x.new_zeros(3), x[index], made.device\n", "f")
    with StrayDevice():
        out, picked, stray_device = careful(torch.ones(3))
    assert type(out) is not StrayTensor and out.tolist() == [3.0, 3.0, 3.0] and picked.tolist() == [1.0, 1.0]
    assert stray_device.type == "meta"  # a stray tensor says it lives elsewhere


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown", "forward-crown", "alpha-crown"])
def test_bound_methods_keep_to_the_models_device(method):
    model, x = conv_net(), torch.rand(2, 3, 32, 32)
    with StrayDevice():
        bounds = BoundedModel(model, x).compute_bounds(x, eps=2 / 255, method=method, target=3,
                                                       alpha=AlphaOptions(iterations=3, tolerance=0.0))
    assert torch.isfinite(bounds.lower).all()


def test_a_softmax_network_is_expanded_on_its_device():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Softmax(dim=-1), torch.nn.Linear(6, 3)).eval()
    x = torch.rand(1, 4)
    with StrayDevice():
        bounds = opwise.compute_bounds(model, x, eps=0.01, method="crown")
    assert torch.isfinite(bounds.lower).all()


@pytest.mark.parametrize("eps", [0.05, 2.0])
def test_verify_with_branch_and_bound_keeps_to_the_models_device(eps):
    model, x = sigmoid_mlp(1), torch.rand(1, 6)
    with StrayDevice():
        result = opwise.verify(model, x, eps=eps, bab={"timeout": 10.0})
    assert result.status in ("verified", "falsified", "unknown", "timeout")


def test_pgd_takes_a_specification_whose_rows_were_made_apart():
    model = sigmoid_mlp()
    x = torch.zeros(1, 6)
    with StrayDevice():
        spec = Specification(x - 1, x + 1, robustness_disjuncts(3, int(model(x).argmax())))
        pgd_attack(lambda z: model(z), spec, seed=0)
    assert all(type(d.C) is not StrayTensor and type(d.d) is not StrayTensor for d in spec.unsafe)  # on the box's device


@pytest.mark.parametrize("branching", ["bbps", "fsb"])
def test_genbab_keeps_to_the_models_device(branching):
    model = sigmoid_mlp(2, inputs=2)
    C = torch.tensor([[1.0, -1.0, 0.0]])
    with torch.no_grad():
        grid = torch.cartesian_prod(torch.linspace(-1, 1, 41), torch.linspace(-1, 1, 41))
        floor = float((model(grid) @ C[0]).min())
    spec = Specification(-torch.ones(1, 2), torch.ones(1, 2), [Disjunct(C, torch.tensor([floor - 0.001]))])
    with StrayDevice():
        result = branch_and_bound(BoundedModel(model, torch.zeros(1, 2)), spec, timeout=30, branching=branching)
    assert result.status == "verified"


def test_explain_and_pixel_flipping_keep_to_the_models_device():
    from opwise.attribution.faithfulness import pixel_flipping

    model, x = conv_net(), torch.rand(2, 3, 32, 32)
    with StrayDevice():
        explanation = opwise.explain(model, x, target=[1, 2], composite="epsilon-plus-flat")
        curve = pixel_flipping(model, x, explanation.relevance, [1, 2], patch_size=8, steps=4, baseline="blur")
    assert curve.shape == (2, 5)


def test_a_certified_map_keeps_its_bookkeeping_apart_from_the_models_device():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    x = torch.rand(1, 1, 4, 4)
    with StrayDevice():
        result = opwise.certified_map(model, x, patch=2, eps_max=0.2, steps=2)
        result.relevance_correlation(torch.rand(1, 1, 4, 4))
    assert result.radius.shape == (4,)


def test_example_inputs_and_input_files_go_where_the_model_is(tmp_path):
    import argparse

    import numpy as np

    from opwise.cli.explain import model_inputs
    from opwise.tracing.loading import LoadedModel, example_inputs

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    np.save(tmp_path / "x.npy", np.full((1, 1, 4, 4), 0.5, dtype="float32"))
    with StrayDevice():
        made = example_inputs(LoadedModel(model, None), [(1, 1, 4, 4)])
        read = model_inputs("net.py:make", model, made, argparse.Namespace(input=str(tmp_path / "x.npy"), input_shape=None))
    assert type(made[0]) is not StrayTensor and type(read[0]) is not StrayTensor
