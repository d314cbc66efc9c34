"""Input elements fixed at import (opwise/tracing/onnx/fixed.py): a slice start and a gather index read from the
input fold to constants when those elements are fixed, the folded graph equals the network on every input that
holds them, and an argument computed from a free element is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opwise.errors import InputDependentArgument, InputError
from opwise.tracing.onnx import load_onnx
from opwise.tracing.onnx.fixed import FixedElements

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _ints(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _scalar(name, value):
    return helper.make_tensor(name, TensorProto.INT64, [], [value])


def windowed_net(path, start_from="Identity") -> str:
    """x [1, 7]: four data values, a window start at x[4], a gather index at x[5], x[6] a spare.

    y [1, 2] = relu(0.5 * data[start:start + 2]) + data[index] (data[3] for start 1, index 3), where the start is
    `start_from`(x[4:6]) cast to int64 (Identity: x[4]; ReduceSum: x[4] + x[5], which depends on both)."""
    nodes = [
        helper.make_node("Slice", ["x", "zero", "four", "axis1"], ["data"]),
        helper.make_node("Slice", ["x", "four", "five_list", "axis1"], ["start_control"]),
        helper.make_node("Slice", ["x", "five_list", "six", "axis1"], ["index_control"]),
        helper.make_node("Concat", ["start_control", "index_control"], ["controls"], axis=1),
        helper.make_node("Gather", ["controls", "first"], ["start_value"], axis=1),
        helper.make_node("Cast", ["start_value"], ["start"], to=TensorProto.INT64),
        helper.make_node("Add", ["start", "two"], ["end"]),
        helper.make_node("Slice", ["data", "start", "end", "axis1"], ["window"]),
        helper.make_node("Mul", ["window", "half"], ["scaled"]),
        helper.make_node("Relu", ["scaled"], ["rectified"]),
        helper.make_node("Gather", ["x", "five"], ["index_value"], axis=1),
        helper.make_node("Cast", ["index_value"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["data", "index"], ["picked"], axis=1),
        helper.make_node("Add", ["rectified", "picked"], ["y"]),
    ]
    if start_from == "ReduceSum":
        at = [node.output[0] for node in nodes].index("start_value")
        nodes[at:at + 2] = [helper.make_node("ReduceSum", ["controls"], ["start_value"], keepdims=0),
                            helper.make_node("Cast", ["start_value"], ["start_scalar"], to=TensorProto.INT64),
                            helper.make_node("Unsqueeze", ["start_scalar", "axis0"], ["start"])]
    initializers = [_ints("zero", [0]), _ints("four", [4]), _ints("six", [6]), _ints("five_list", [5]), _ints("axis1", [1]),
                    _ints("two", [2]), _scalar("first", 0), _scalar("five", 5), _ints("axis0", [0]),
                    helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])]
    graph = helper.make_graph(nodes, "windowed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _fixed(start=1.0, index=3.0, start_fixed=True, index_fixed=True):
    values = torch.tensor([0.0, 0.0, 0.0, 0.0, start, index, 0.0])
    mask = torch.tensor([False] * 4 + [start_fixed, index_fixed, False])
    return FixedElements(mask, values)


def _reference(x: torch.Tensor) -> torch.Tensor:
    data, start, index = x[:, :4], int(x[0, 4]), int(x[0, 5])
    return torch.relu(0.5 * data[:, start:start + 2]) + data[:, index:index + 1]


def test_a_slice_start_and_a_gather_index_read_from_fixed_elements_fold_to_constants(tmp_path):
    graph = load_onnx(windowed_net(tmp_path / "w.onnx"), fixed={"x": _fixed()})
    ops = {graph.info(node).op for node in graph.call_nodes()}
    assert not any("_to_copy" in op for op in ops)  # the casts of the fixed elements folded away
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.cat([torch.rand(1, 4, generator=generator) * 2 - 1, torch.tensor([[1.0, 3.0]]),
                       torch.rand(1, 1, generator=generator)], dim=1)
        torch.testing.assert_close(graph(x), _reference(x))


def test_folded_graph_equals_onnxruntime_on_the_box(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = windowed_net(tmp_path / "w.onnx")
    graph = load_onnx(path, fixed={0: _fixed(start=2.0, index=0.0)})
    session = ort.InferenceSession(path)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        x = torch.rand(1, 7, generator=generator) * 4 - 2
        x[0, 4], x[0, 5] = 2.0, 0.0
        expected = session.run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(graph(x).detach().numpy(), expected, rtol=1e-6, atol=1e-6)


def test_fixed_elements_given_flat_for_a_batched_input_stand_for_every_sample(tmp_path):
    graph = load_onnx(windowed_net(tmp_path / "w.onnx"), fixed={"x": _fixed()}).for_batch(3)
    x = torch.rand(3, 7)
    x[:, 4], x[:, 5] = 1.0, 3.0
    torch.testing.assert_close(graph(x), torch.cat([_reference(row[None]) for row in x]))


@pytest.mark.parametrize("start_fixed, index_fixed, node", [(False, True, "Slice"), (True, False, "Gather")])
def test_an_argument_read_from_a_free_element_is_refused_by_name(tmp_path, start_fixed, index_fixed, node):
    path = windowed_net(tmp_path / "w.onnx")
    with pytest.raises(InputDependentArgument, match=f"{node}.*not fixed.*lower bound == upper bound"):
        load_onnx(path, fixed={"x": _fixed(start_fixed=start_fixed, index_fixed=index_fixed)})
    with pytest.raises(InputDependentArgument, match="load_onnx\\(..., fixed="):
        load_onnx(path)


def test_a_value_mixing_a_free_element_through_an_unfollowed_operator_is_not_folded(tmp_path):
    """ReduceSum(x[4:6]) depends on x[5] as well as x[4]: with x[5] free the start is refused, not folded."""
    path = windowed_net(tmp_path / "w.onnx", start_from="ReduceSum")
    with pytest.raises(InputDependentArgument, match="Slice"):
        load_onnx(path, fixed={"x": _fixed(index_fixed=False)})
    graph = load_onnx(path, fixed={"x": _fixed(start=0.0, index=1.0)})  # both fixed: start 1
    x = torch.tensor([[0.2, -0.4, 0.6, -0.8, 0.0, 1.0, 5.0]])
    torch.testing.assert_close(graph(x), torch.relu(0.5 * x[:, 1:3]) + x[:, 1:2])


def test_fixed_elements_of_the_wrong_size_or_input_are_refused(tmp_path):
    path = windowed_net(tmp_path / "w.onnx")
    with pytest.raises(InputError, match="5 elements"):
        load_onnx(path, fixed={"x": FixedElements(torch.ones(5, dtype=torch.bool), torch.zeros(5))})
    with pytest.raises(InputError, match="'y'"):
        load_onnx(path, fixed={"y": _fixed()})
