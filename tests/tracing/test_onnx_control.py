"""ONNX If with a condition known at import time (e.g. from shapes, as torch.onnx.export writes for
nn.LocalResponseNorm) is inlined; one that depends on the input is refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.tracing.test_onnx_import import assert_matches, ops_of, save_model  # noqa: E402


def _branch(name, nodes, output, shape):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)])


def _squeeze_if(dim_size_test: int):
    """If(Shape(x)[1] == dim_size_test, Squeeze(x, 1), Identity(x)) then Relu, as torch exports squeeze."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    then_branch = _branch("then", [helper.make_node("Constant", [], ["a"], value=axes),
                                   helper.make_node("Squeeze", ["x", "a"], ["s"])], "s", None)
    else_branch = _branch("else", [helper.make_node("Identity", ["x"], ["i"])], "i", None)
    return [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.INT64, [], [1])),
        helper.make_node("Gather", ["shape", "one"], ["size"], axis=0),
        helper.make_node("Constant", [], ["k"], value=helper.make_tensor("k", TensorProto.INT64, [], [dim_size_test])),
        helper.make_node("Equal", ["size", "k"], ["cond"]),
        helper.make_node("If", ["cond"], ["chosen"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Relu", ["chosen"], ["y"]),
    ]


@pytest.mark.parametrize("taken", ["then", "else"])
def test_if_with_a_shape_condition_inlines_the_chosen_branch(tmp_path, taken):
    output = [None, 4] if taken == "then" else [None, 1, 4]
    path = save_model(tmp_path, _squeeze_if(1 if taken == "then" else 2), {"x": [None, 1, 4]}, output)
    graph = assert_matches(path, [[2, 1, 4]], batch_sizes=(None, 3))
    assert "aten.relu.default" in ops_of(graph)
    assert (graph.info(graph.output_node.args[0]).shape[1:] == (4,)) == (taken == "then")


def test_if_branch_reads_outer_values_and_its_own_initializers(tmp_path):
    """A branch may read outer values by name and hold initializers; the outer Gemm's bias fusion still sees the
    branch's read of the MatMul result (a use), so the result is exact."""
    rng = np.random.default_rng(0)
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [3], rng.standard_normal(3).astype(np.float32).tolist())
    then_branch = helper.make_graph([helper.make_node("Add", ["m", "bias"], ["t"])], "then", [],
                                    [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)], [bias])
    else_branch = _branch("else", [helper.make_node("Identity", ["m"], ["e"])], "e", None)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["c"], ["chosen"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["chosen", "m"], ["y"]),
    ]
    path = save_model(tmp_path, nodes, {"x": [2, 4]}, [2, 3], {"w": rng.standard_normal((4, 3)).astype(np.float32)})
    assert_matches(path, [[2, 4]])


def test_if_on_an_input_dependent_condition_is_refused(tmp_path):
    nodes = _squeeze_if(1)
    nodes[4] = helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)
    nodes.insert(5, helper.make_node("Greater", ["total", "k"], ["cond"]))
    path = save_model(tmp_path, nodes, {"x": [2, 1, 4]}, [2, 4])
    with pytest.raises(ModelLoadError, match="condition that depends on the model input"):
        load_onnx(path)


def test_torch_exported_local_response_norm_imports(tmp_path):
    """torch.onnx.export writes nn.LocalResponseNorm with an If (squeeze of a size it cannot prove is 1)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.LocalResponseNorm(3), torch.nn.ReLU()).eval()
    x = torch.rand(1, 2, 6, 6)
    path = tmp_path / "lrn.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    assert "If" in [node.op_type for node in onnx.load(str(path)).graph.node]
    graph = load_onnx(path, batch_size=2)
    x2 = torch.rand(2, 2, 6, 6)
    torch.testing.assert_close(graph(x2), model(x2).detach(), rtol=1e-5, atol=1e-6)
