"""Free input elements read only through integer casts (opwise/tracing/onnx/cases.py): the network evaluated at
one point per cell equals onnxruntime there and at every other point of the cell; a free element read otherwise
is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opwise.tracing.onnx.cases import CasePoints, integer_cells

pytest.importorskip("onnx")
from tests.tracing.test_onnx_fixed import windowed_net  # noqa: E402

DATA = [0.2, -0.4, 1.0, 0.3]


def _box(start=(0.0, 2.5)):
    lower = torch.tensor(DATA + [start[0], 3.0, 0.5], dtype=torch.float64)
    upper = torch.tensor(DATA + [start[1], 3.0, 0.5], dtype=torch.float64)
    return lower, upper


def test_one_point_per_integer_a_cast_gives_on_the_box():
    lower, upper = _box((0.5, 2.5))
    points = integer_cells(lower, upper, lower != upper)
    assert points[:, 4].tolist() == [0.5, 1.0, 2.0] and (points[:, :4] == lower[:4]).all()
    assert integer_cells(lower, upper, lower != upper, max_cases=2) is None
    below = torch.tensor([-1.5], dtype=torch.float64)
    assert integer_cells(below, below + 1.0, torch.tensor([True])).flatten().tolist() == [-1.0, -0.5]  # trunc -1, 0


def test_points_evaluated_in_parts_equal_onnxruntime_on_every_cell(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = windowed_net(tmp_path / "w.onnx")
    lower, upper = _box()
    discrete = lower != upper
    points = integer_cells(lower, upper, discrete)
    evaluator = CasePoints.open(path, points[0], discrete)
    assert not isinstance(evaluator, str), evaluator
    outputs = evaluator.outputs(points, chunk=2)
    session = ort.InferenceSession(path)
    run = lambda x: session.run(None, {"x": x.float().numpy()[None]})[0].reshape(-1)  # noqa: E731
    for point, output in zip(points, outputs):
        np.testing.assert_allclose(output.numpy(), run(point), rtol=1e-6, atol=1e-6)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # any point of a cell gives its point's outputs
        x = lower + torch.rand(len(lower), generator=generator, dtype=torch.float64) * (upper - lower)
        np.testing.assert_allclose(run(x), outputs[int(x[4])].numpy(), rtol=1e-6, atol=1e-6)


def test_a_free_element_read_other_than_through_an_integer_cast_is_named(tmp_path):
    path = windowed_net(tmp_path / "w.onnx", start_from="ReduceSum")  # ReduceSum(x[4:6]) before the cast
    lower, upper = _box()
    discrete = lower != upper
    reason = CasePoints.open(path, integer_cells(lower, upper, discrete)[0], discrete)
    assert isinstance(reason, str) and "other than through an integer cast" in reason and "ReduceSum" in reason


def test_a_node_with_subgraphs_is_not_followed_when_elements_are_discrete(tmp_path):
    """An If's branches may read any value by name (here the picked element): the cells are not trusted."""
    import onnx
    from onnx import TensorProto, helper

    path = windowed_net(tmp_path / "w.onnx")
    model = onnx.load(path)
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["picked"], [f"{name}_out"])], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 1])])
    model.graph.initializer.append(helper.make_tensor("yes", TensorProto.BOOL, [], [True]))
    output = next(node for node in model.graph.node if node.output[0] == "y")
    output.output[0] = "y_before"
    model.graph.node.extend([
        helper.make_node("If", ["yes"], ["chosen"], then_branch=branch("then"), else_branch=branch("else")),
        helper.make_node("Add", ["y_before", "chosen"], ["y"]),
    ])
    onnx.save(model, path)
    lower, upper = _box()
    discrete = lower != upper
    reason = CasePoints.open(path, integer_cells(lower, upper, discrete)[0], discrete)
    assert isinstance(reason, str) and "If" in reason
