"""ONNX operators added for breadth: Einsum, DepthToSpace / SpaceToDepth, GatherElements, CumSum, ReduceL1 / L2 /
SumSquare / LogSumExp, Softsign and InstanceNormalization. Each matches onnxruntime (also at another batch size where
the operator keeps samples apart) and, where the result is bounded, is bounded soundly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402

import opwise  # noqa: E402
from opwise.bounds import BoundedModel  # noqa: E402
from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.bounds.helpers import assert_sound  # noqa: E402
from tests.tracing.test_onnx_import import assert_matches, ops_of, save_model  # noqa: E402


def _bounded_soundly(graph, shape, eps=0.3):
    """Sampled outputs inside the IBP and CROWN bounds (the samples run through the graph imported at their batch)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    run = lambda z: graph.for_batch(z.shape[0])(z)  # noqa: E731
    assert_sound(run, x - eps, x + eps, methods=("ibp", "crown"), samples=500, attack=False, bounded=BoundedModel(graph, x))


EINSUM_CASES = {
    # equation: (input shape, constant operand shape or None for a second input-dependent operand, output shape)
    "bi,ij->bj": ([2, 3], [3, 4]),
    "bij,jk->bik": ([2, 3, 4], [4, 5]),
    "ij,bj->bi": ([2, 3], [4, 3]),  # the constant first
    "bhid,bhjd->bhij": ([1, 2, 3, 4], None),  # attention scores: two input-dependent operands
    "...ij,jk->...ik": ([2, 3, 4], [4, 2]),
    "bij->bji": ([2, 3, 4], "single"),
    "bij->bi": ([2, 3, 4], "single"),
    "bi,bi->b": ([2, 3], None),
    "bi,j->bij": ([2, 3], [4]),  # an outer product
}


@pytest.mark.parametrize("equation", sorted(EINSUM_CASES))
def test_einsum_matches_onnxruntime_and_is_bounded(tmp_path, equation):
    shape, other = EINSUM_CASES[equation]
    rng = np.random.default_rng(0)
    inputs, inits = {"x": shape}, {}
    if other == "single":
        operands = ["x"]
    elif other is None:
        operands = ["x", "x2"]
        inputs["x2"] = shape
    else:
        inits["w"] = rng.standard_normal(other).astype(np.float32)
        operands = ["w", "x"] if equation.startswith("ij,") else ["x", "w"]
    nodes = [helper.make_node("Einsum", operands, ["y"], equation=equation)]
    path = save_model(tmp_path, nodes, inputs, None, inits, opset=12)
    graph = assert_matches(path, [inputs[name] for name in inputs])
    assert not any("einsum" in op for op in ops_of(graph))
    if equation in ("bi,ij->bj", "bij,jk->bik"):
        assert "aten.linear.default" in ops_of(graph)
    if len(inputs) == 1:
        _bounded_soundly(graph, shape)


DIAGONAL_CASES = {
    # equation: (input shape, constant operand shape or None)
    "bii->bi": ([1, 3, 3], None),  # a diagonal
    "bii->b": ([1, 3, 3], None),  # a trace
    "bijj->bji": ([1, 2, 3, 3], None),  # the diagonal moved among other letters
    "biij->bij": ([1, 3, 3, 2], None),
    "bij,jj->bi": ([1, 3, 3], [3, 3]),  # a constant's diagonal scales the columns
    "biii->bi": ([1, 3, 3, 3], None),  # a letter three times
}


@pytest.mark.parametrize("equation", sorted(DIAGONAL_CASES))
def test_einsum_with_a_diagonal_matches_onnxruntime_and_is_bounded(tmp_path, equation):
    """A letter repeated within an operand (once refused) takes that operand's diagonal."""
    shape, other = DIAGONAL_CASES[equation]
    inits = {} if other is None else {"w": np.random.default_rng(0).standard_normal(other).astype(np.float32)}
    nodes = [helper.make_node("Einsum", ["x"] + list(inits), ["y"], equation=equation)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": shape}, None, inits, opset=12), [shape],
                           batch_sizes=(None, 3))
    assert "aten.diagonal.default" in ops_of(graph) or other is not None
    _bounded_soundly(graph, [1, *shape[1:]])
    single = graph.for_batch(1)
    relevance = opwise.explain(single, torch.randn(1, *shape[1:]), target=lambda y: y.reshape(len(y), -1).sum(1)).relevance
    assert relevance.shape == (1, *shape[1:]) and torch.isfinite(relevance).all()


def test_einsum_with_a_diagonal_across_samples_is_refused_naming_the_equation(tmp_path):
    nodes = [helper.make_node("Einsum", ["x"], ["y"], equation="bbi->bi")]
    with pytest.raises(ModelLoadError, match="repeats on the batch axis"):
        load_onnx(save_model(tmp_path, nodes, {"x": [3, 3, 2]}, None, opset=12))


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_and_back(tmp_path, mode):
    nodes = [helper.make_node("DepthToSpace", ["x"], ["d"], blocksize=2, mode=mode),
             helper.make_node("SpaceToDepth", ["d"], ["y"], blocksize=2)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 8, 2, 3]}, None, opset=13), [[1, 8, 2, 3]], batch_sizes=(None, 3))
    _bounded_soundly(graph, [1, 8, 2, 3])


def test_gather_elements_with_constant_indices(tmp_path):
    indices = np.array([[[2, 0], [1, 1], [0, 2]]], dtype=np.int64)  # [1, 3, 2] along axis 2 of [1, 3, 3]
    nodes = [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=2)]
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 3, 3]}, None, {"i": indices}, opset=13), [[1, 3, 3]],
                           batch_sizes=(None, 2))
    _bounded_soundly(graph, [1, 3, 3])


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumulative_sum(tmp_path, exclusive, reverse):
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)]
    path = save_model(tmp_path, nodes, {"x": [1, 5]}, None, {"axis": np.array(1, dtype=np.int64)}, opset=13)
    graph = assert_matches(path, [[1, 5]], batch_sizes=(None, 3))
    _bounded_soundly(graph, [1, 5])


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"])
@pytest.mark.parametrize("opset,keepdims", [(13, 1), (13, 0), (18, 1)])
def test_norm_reductions(tmp_path, op, opset, keepdims):
    if opset >= 18:
        nodes, inits = [helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)], {"axes": np.array([-1], dtype=np.int64)}
    else:
        nodes, inits = [helper.make_node(op, ["x"], ["y"], axes=[-1], keepdims=keepdims)], {}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 3, 4]}, None, inits, opset=opset), [[1, 3, 4]], batch_sizes=(None, 2))
    if op != "ReduceL2":  # √ of a sum of squares across 0 has no lines (its slope is infinite there)
        _bounded_soundly(graph, [1, 3, 4])


def test_softsign_and_instance_normalization(tmp_path):
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["n"], epsilon=1e-3),
             helper.make_node("Softsign", ["n"], ["y"])]
    inits = {"s": rng.standard_normal(2).astype(np.float32), "b": rng.standard_normal(2).astype(np.float32)}
    graph = assert_matches(save_model(tmp_path, nodes, {"x": [1, 2, 3, 3]}, None, inits, opset=13), [[1, 2, 3, 3]],
                           batch_sizes=(None, 2))
    _bounded_soundly(graph, [1, 2, 3, 3], eps=0.05)
