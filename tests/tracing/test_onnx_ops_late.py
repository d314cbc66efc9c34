"""ONNX operators of opsets 18 to 26 beyond the transformer ones (test_onnx_attention.py): CumProd, LpPool,
GlobalLpPool, ReverseSequence, BitShift and the Bitwise operators, TensorScatter, CenterCropPad and MaxUnpool. Each
matches onnxruntime (onnx's reference evaluator where onnxruntime has no kernel for the opset), also at another batch
size where the operator keeps samples apart, real-valued ones are bounded soundly, and refusals name the node."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.tracing.test_onnx_attention import _matches, _model, _refused  # noqa: E402
from tests.tracing.test_onnx_import import ops_of  # noqa: E402
from tests.tracing.test_onnx_ops_breadth import _bounded_per_sample  # noqa: E402
from tests.tracing.test_onnx_ops_more import _bounded_soundly  # noqa: E402


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("axis", [1, -1])
def test_cumulative_product(tmp_path, exclusive, reverse, axis):
    nodes = [helper.make_node("CumProd", ["x", "a"], ["y"], exclusive=exclusive, reverse=reverse)]
    path = _model(tmp_path, nodes, {"x": [1, 4, 3]}, {"a": np.array(axis, np.int64)}, opset=26)
    graph = _matches(path, {"x": [1, 4, 3]}, batch_sizes=(None, 3), reference=True)  # onnxruntime has no CumProd
    assert "aten.cumprod.default" in ops_of(graph)
    _bounded_soundly(graph, [1, 4, 3], eps=0.1)


LP_POOL_CASES = {
    # name: (input shape, attributes)
    "p2": ([1, 2, 5, 5], {"kernel_shape": [2, 2]}),
    "p1_strided": ([1, 2, 5, 5], {"kernel_shape": [3, 2], "strides": [2, 1], "p": 1}),
    "p3_padded": ([1, 2, 5, 5], {"kernel_shape": [3, 3], "pads": [1, 0, 2, 1], "p": 3}),
    "p2_same_upper": ([1, 2, 5, 6], {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "p2_dilated": ([1, 2, 6, 6], {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    "1d": ([1, 3, 7], {"kernel_shape": [3], "p": 2}),
}


@pytest.mark.parametrize("case", sorted(LP_POOL_CASES))
def test_lp_pool(tmp_path, case):
    shape, attributes = LP_POOL_CASES[case]
    nodes = [helper.make_node("LpPool", ["x"], ["y"], **attributes)]
    graph = _matches(_model(tmp_path, nodes, {"x": shape}, opset=22), {"x": shape}, batch_sizes=(None, 3))
    assert "aten.convolution.default" in ops_of(graph)
    _bounded_soundly(graph, shape, eps=0.1)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_global_lp_pool(tmp_path, p):
    nodes = [helper.make_node("GlobalLpPool", ["x"], ["y"], p=p)]
    # onnxruntime runs GlobalLpPool up to opset 2's form, which opset 22 only widens to more types
    graph = _matches(_model(tmp_path, nodes, {"x": [1, 3, 4, 5]}, opset=2), {"x": [1, 3, 4, 5]}, batch_sizes=(None, 2))
    _bounded_soundly(graph, [1, 3, 4, 5], eps=0.1)


def test_lp_pool_refusals_name_the_node(tmp_path):
    nodes = [helper.make_node("LpPool", ["x"], ["y"], name="n", kernel_shape=[2, 2], ceil_mode=1)]
    _refused(_model(tmp_path, nodes, {"x": [1, 1, 5, 5]}, opset=22), "ceil_mode")


@pytest.mark.parametrize("batch_axis,time_axis", [(0, 1), (1, 0)])
def test_reverse_sequence(tmp_path, batch_axis, time_axis):
    shape = [3, 4, 2] if batch_axis == 0 else [4, 3, 2]
    lengths = np.array([4, 1, 3], np.int64)
    nodes = [helper.make_node("ReverseSequence", ["x", "l"], ["y"], name="n", batch_axis=batch_axis,
                              time_axis=time_axis)]
    path = _model(tmp_path, nodes, {"x": shape}, {"l": lengths}, opset=10)
    graph = _matches(path, {"x": shape})
    assert ops_of(graph) == ["aten.gather.default"]
    if batch_axis == 0:  # time_axis 0 reverses along opwise's batch axis, which the bound engine refuses
        _bounded_per_sample(graph, shape)
    with pytest.raises(ModelLoadError, match="'n'.*(sequence_lens has 3 entries for 5 samples|axis 0)"):
        load_onnx(path, batch_size=5)


def test_reverse_sequence_of_one_sample_serves_every_sample(tmp_path):
    nodes = [helper.make_node("ReverseSequence", ["x", "l"], ["y"], batch_axis=0, time_axis=1)]
    path = _model(tmp_path, nodes, {"x": [1, 4]}, {"l": np.array([3], np.int64)}, opset=10)
    _matches(path, {"x": [1, 4]}, batch_sizes=(None, 3))


@pytest.mark.parametrize("op_type", ["BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitShiftLeft",
                                     "BitShiftRight"])
@pytest.mark.parametrize("dtype", [TensorProto.INT32, TensorProto.UINT8, TensorProto.INT64])
def test_bitwise_operators_on_integer_inputs(tmp_path, op_type, dtype):
    """On an integer input, cast to float for opwise's float output (integer ops are usually folded shapes)."""
    if op_type.startswith("BitShift"):
        if dtype != TensorProto.UINT8:
            pytest.skip("ONNX's BitShift takes unsigned integers")
        node = helper.make_node("BitShift", ["i", "b"], ["r"], direction=op_type.removeprefix("BitShift").upper())
        inits = {"b": np.array([1, 2, 0, 3], np.uint8)}
    elif op_type == "BitwiseNot":
        node, inits = helper.make_node(op_type, ["i"], ["r"]), {}
    else:
        node = helper.make_node(op_type, ["i", "b"], ["r"])
        inits = {"b": np.array([5, 3, 12, 7], helper.tensor_dtype_to_np_dtype(dtype))}
    nodes = [node, helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)]
    path = _model(tmp_path, nodes, {"i": [1, 4]}, inits, opset=18, types={"i": dtype})
    numpy_type = helper.tensor_dtype_to_np_dtype(dtype)
    values = np.array([[9, 6, 255 if dtype == TensorProto.UINT8 else -7, 12]]).astype(numpy_type)
    expected = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"i": values})[0]
    np.testing.assert_array_equal(load_onnx(path)(torch.from_numpy(values)).numpy(), expected)


def test_bitwise_operators_fold_on_constants(tmp_path):
    """Shape arithmetic with bit operators folds to a constant: x · ((shape(x) & ([2, 6] >> 1)) ^ [0, 1])."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("BitShift", ["u", "one"], ["h"], direction="RIGHT"),
             helper.make_node("Cast", ["h"], ["hi"], to=TensorProto.INT64),
             helper.make_node("BitwiseAnd", ["s", "hi"], ["m"]),
             helper.make_node("BitwiseXor", ["m", "flip"], ["k"]),
             helper.make_node("Cast", ["k"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "f"], ["y"])]
    inits = {"u": np.array([2, 6], np.uint64), "one": np.array([1, 1], np.uint64), "flip": np.array([0, 1], np.int64)}
    graph = _matches(_model(tmp_path, nodes, {"x": [1, 2]}, inits, opset=18), {"x": [1, 2]})
    assert ops_of(graph) == ["aten.mul.Tensor"]
    assert graph.constant(next(n for n in graph.nodes if n.op == "get_attr")).tolist() == [1.0, 3.0]


TENSOR_SCATTER_CASES = {
    # name: (cache shape, update shape, attributes, write indices or None)
    "prefill": ([1, 2, 5, 3], [1, 2, 2, 3], {}, None),
    "decode": ([1, 2, 5, 3], [1, 2, 1, 3], {}, [3]),
    "per_sample": ([2, 2, 5, 3], [2, 2, 2, 3], {}, [0, 3]),
    "circular": ([1, 2, 5, 3], [1, 2, 3, 3], {"mode": "circular"}, [4]),
    "axis_1": ([1, 5, 3], [1, 2, 3], {"axis": 1}, [2]),
}


@pytest.mark.parametrize("case", sorted(TENSOR_SCATTER_CASES))
def test_tensor_scatter(tmp_path, case):
    cache, update, attributes, starts = TENSOR_SCATTER_CASES[case]
    inits = {} if starts is None else {"w": np.array(starts, np.int64)}
    nodes = [helper.make_node("TensorScatter", ["c", "u"] + list(inits), ["y"], **attributes)]
    path = _model(tmp_path, nodes, {"c": cache, "u": update}, inits, opset=24)
    _matches(path, {"c": cache, "u": update}, batch_sizes=(None,) if starts and len(starts) > 1 else (None, 3))


def test_tensor_scatter_refusals_name_the_node(tmp_path):
    nodes = [helper.make_node("TensorScatter", ["c", "u", "w"], ["y"], name="n")]
    _refused(_model(tmp_path, nodes, {"c": [1, 2, 4, 3], "u": [1, 2, 2, 3]}, {"w": np.array([3])}, opset=24), "passes")


CENTER_CROP_PAD_CASES = {
    # name: (input shape, target, axes or None)
    "crop_even": ([1, 3, 6, 6], [4, 4], [2, 3]),
    "crop_odd": ([1, 3, 6, 7], [3, 4], [-2, -1]),
    "pad_odd": ([1, 3, 3, 4], [6, 5], [2, 3]),
    "mixed_all_axes": ([1, 3, 5, 4], [1, 3, 2, 7], None),
}


@pytest.mark.parametrize("case", sorted(CENTER_CROP_PAD_CASES))
def test_center_crop_pad(tmp_path, case):
    shape, target, axes = CENTER_CROP_PAD_CASES[case]
    nodes = [helper.make_node("CenterCropPad", ["x", "s"], ["y"], **({} if axes is None else {"axes": axes}))]
    path = _model(tmp_path, nodes, {"x": shape}, {"s": np.array(target, np.int64)}, opset=18)
    graph = _matches(path, {"x": shape}, batch_sizes=(None,) if axes is None else (None, 2))
    _bounded_soundly(graph, shape)


@pytest.mark.parametrize("size", [4, 5])
def test_max_unpool_with_constant_indices(tmp_path, size):
    """The indices MaxPool gives for a [1, 2, size, size] input (flat over the whole tensor); size 5 needs
    output_shape to say so."""
    original = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 2, size, size)).astype(np.float32))
    _, indices = torch.nn.functional.max_pool2d(original, 2, 2, return_indices=True)
    flat = (indices + torch.arange(2).reshape(1, 2, 1, 1) * size * size).numpy()
    inits = {"i": flat} | ({} if size == 4 else {"s": np.array([1, 2, size, size], np.int64)})
    nodes = [helper.make_node("MaxUnpool", ["x", "i"] + (["s"] if size == 5 else []), ["y"], kernel_shape=[2, 2],
                              strides=[2, 2])]
    graph = _matches(_model(tmp_path, nodes, {"x": [1, 2, 2, 2]}, inits, opset=11), {"x": [1, 2, 2, 2]})
    assert "aten.index_put.default" in ops_of(graph)
    _bounded_per_sample(graph, [1, 2, 2, 2])
