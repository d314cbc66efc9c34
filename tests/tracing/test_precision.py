"""Models in float64, float16 or bfloat16: explained and bounded through a float32 copy (float64) or refused for
bounds with the fix named (half precision), instead of failing inside a rule or transfer on a dtype mismatch."""

from __future__ import annotations

import warnings

import pytest
import torch

import opwise
from opwise.errors import InputError
from opwise.tracing.precision import as_float32


def _mlp(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).to(dtype).eval()


def test_a_float32_model_is_used_as_it_is():
    model = _mlp(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_float32(model, "bounds") is model


def test_the_float32_copy_is_made_once_with_a_warning_and_again_after_the_weights_change():
    model = _mlp(torch.float64)
    with pytest.warns(RuntimeWarning, match="float64.*float32 copy"):
        first = as_float32(model, "bounds")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_float32(model, "bounds") is first  # no second copy, no second warning
    assert first.parameters().__next__().dtype == torch.float32 and model[0].weight.dtype == torch.float64
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.warns(RuntimeWarning):
        second = as_float32(model, "bounds")
    assert second is not first and torch.allclose(second[0].weight, model[0].weight.float())


@pytest.mark.filterwarnings("ignore:the model's parameters")
def test_a_float64_model_is_bounded_soundly_and_verified():
    model = _mlp(torch.float64)
    x = torch.rand(1, 6, dtype=torch.float64)
    bounds = opwise.compute_bounds(model, x, eps=0.05, method="crown")
    points = x + 0.05 * (2 * torch.rand(4000, 6, dtype=torch.float64) - 1)
    with torch.no_grad():
        outputs = model(points).float()
    assert (outputs >= bounds.lower - 1e-5).all() and (outputs <= bounds.upper + 1e-5).all()
    assert opwise.verify(model, x, eps=1e-4).status == "verified"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_is_refused_for_bounds_naming_the_fix(dtype):
    model, x = _mlp(dtype), torch.rand(1, 6).to(dtype)
    for call in (lambda: opwise.compute_bounds(model, x, eps=0.01), lambda: opwise.verify(model, x, eps=0.01)):
        with pytest.raises(InputError, match=r"computes in (b?float16).*model\.float\(\)"):
            call()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_other_precisions_are_explained_as_their_float32_copy(dtype):
    model, x = _mlp(dtype), torch.rand(1, 6)
    with pytest.warns(RuntimeWarning, match="float32 copy"):
        explanation = opwise.explain(model, x.to(dtype))
    reference = opwise.explain(_mlp(dtype).float(), x.to(dtype).float())
    assert explanation.relevance.dtype == torch.float32
    assert torch.allclose(explanation.relevance, reference.relevance, rtol=1e-5, atol=1e-6)


def test_a_graph_computing_in_half_precision_is_refused_naming_its_nodes(tmp_path):
    """An ONNX file exported in float16 (a cast in, a float16 MatMul, a cast out) failed with a dtype mismatch inside
    a rule; a Graph cannot be copied to float32 as a module is, so it is refused, naming the node. A float16 cast
    alone (cast back at once) stays bounded: its rounding is (tests/bounds/transfers/test_cast.py)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from opwise.tracing.onnx import load_onnx

    weight = numpy_helper.from_array(torch.randn(8, 4).half().numpy(), "W")
    nodes = [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
             helper.make_node("MatMul", ["xh", "W"], ["yh"]),
             helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(tmp_path / "half.onnx"))
    imported, x = load_onnx(tmp_path / "half.onnx"), torch.rand(1, 8)
    for call in (lambda: opwise.compute_bounds(imported, x, eps=0.1), lambda: opwise.explain(imported, x)):
        with pytest.raises(InputError, match=r"compute in half precision, e\.g\. linear_default \(aten\.linear"):
            call()


def test_a_model_that_cannot_be_copied_is_refused_naming_the_fix():
    import threading

    model = _mlp(torch.float64)
    model.lock = threading.Lock()  # deepcopy cannot copy a lock
    with pytest.raises(InputError, match=r"could not copy it to float32.*model\.float\(\)"):
        as_float32(model, "bounds")


def test_a_float64_graph_is_bounded_and_verified_in_float64():
    """A traced (or DOUBLE ONNX) float64 Graph is bounded in its own arithmetic: no float32 copy of its weights,
    bounds in float64 that hold for its float64 outputs, and verify's attack and specification in float64 too."""
    model = _mlp(torch.float64)
    x = torch.rand(1, 6, dtype=torch.float64)
    graph = opwise.trace(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no copy, no warning
        bounds = opwise.compute_bounds(graph, x, eps=0.05, method="crown")
        assert bounds.lower.dtype == torch.float64
        points = x + 0.05 * (2 * torch.rand(4000, 6, dtype=torch.float64) - 1)
        with torch.no_grad():
            outputs = model(points)
        assert (outputs >= bounds.lower - 1e-12).all() and (outputs <= bounds.upper + 1e-12).all()
        assert opwise.verify(graph, x, eps=1e-4).status == "verified"
        result = opwise.verify(graph, x, eps=5.0)
        assert result.status == "falsified" and result.counterexample.dtype == torch.float64
        with torch.no_grad():
            assert model(result.counterexample).argmax() != model(x).argmax()
