"""ONNX integer ops reading quantized values (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger): hand-built
graphs and onnxruntime's own QOperator models match onnxruntime (the integer ops exactly, the QLinear ones within
one quantization step), are bounded soundly and explained; DynamicQuantizeLinear and what is not imported are refused
by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import opwise  # noqa: E402
from opwise.bounds import BoundedModel  # noqa: E402
from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.bounds.helpers import assert_sound  # noqa: E402
from tests.tracing.test_onnx_import import ops_of, run_onnxruntime, run_opwise  # noqa: E402
from tests.tracing.test_onnx_quantization import _assert_exact, _model  # noqa: E402

_TYPES = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


def _steps(path, x: np.ndarray) -> int:
    """max |opwise − onnxruntime| over the outputs (in quantization steps: the outputs are the quantized integers),
    imported at batch 1 and at the batch of x, onnxruntime run one sample at a time; the types agree."""
    expected = np.concatenate([run_onnxruntime(path, [x[i : i + 1]]) for i in range(len(x))])
    worst = 0
    for batch in (1, len(x)):
        graph = load_onnx(path, batch_size=batch)
        got = np.concatenate([run_opwise(graph, [x[i : i + batch]]) for i in range(0, len(x), batch)])
        assert got.dtype == expected.dtype
        worst = max(worst, int(np.abs(got.astype(np.int64) - expected.astype(np.int64)).max()))
    return worst


def _quantizer(dtype) -> tuple[dict, int]:
    """The input quantizer's parameters (scale 0.05, a zero point off the middle) and its ONNX type."""
    return {"xs": np.float32(0.05), "xz": np.asarray(20 if dtype == np.uint8 else -7, dtype)}, _TYPES[dtype]


def _inputs(shape, seed=0) -> np.ndarray:
    """Three samples that fill the 8-bit range of the input quantizer (scale 0.05) and saturate it."""
    return (np.random.default_rng(seed).standard_normal([3] + list(shape[1:])) * 4).astype(np.float32)


def _weights(rng, dtype, shape, channels: int | None) -> dict:
    """Random 8-bit weights "w" with scales "ws" and zero points "wz" (off the middle for uint8) per tensor, or per
    output channel where `channels` is given."""
    low, high = (0, 256) if dtype == np.uint8 else (-127, 128)
    count, shaped = channels or 1, -1 if channels else ()
    zero_points = rng.integers(100, 150, count) if dtype == np.uint8 else np.zeros(count)
    return {"w": rng.integers(low, high, shape).astype(dtype),
            "ws": (rng.random(count) * 0.02 + 0.005).astype(np.float32).reshape(shaped),
            "wz": np.asarray(zero_points, dtype).reshape(shaped)}


# ----------------------------------------------------------------- QLinearConv
QLINEAR_CONV_CASES = {  # name: (activation type, weight type, per channel, bias, attributes)
    "uint8 per tensor bias pads": (np.uint8, np.int8, False, True, {"pads": [1, 1, 1, 1]}),
    "int8 per channel bias strides groups": (np.int8, np.int8, True, True, {"strides": [2, 2], "group": 2,
                                                                             "pads": [0, 1, 1, 0]}),
    "uint8 weights no bias dilations": (np.uint8, np.uint8, True, False, {"dilations": [2, 1]}),
    "uint8 same upper": (np.uint8, np.int8, False, True, {"auto_pad": "SAME_UPPER", "strides": [2, 1]}),
}


@pytest.mark.parametrize("case", sorted(QLINEAR_CONV_CASES))
def test_qlinear_conv_matches_onnxruntime_within_one_step(tmp_path, case):
    act, weight_type, per_channel, with_bias, attributes = QLINEAR_CONV_CASES[case]
    rng = np.random.default_rng(1)
    inits, output_type = _quantizer(act)
    inits.update(_weights(rng, weight_type, (4, 2 if attributes.get("group") else 4, 3, 3), 4 if per_channel else None))
    inits["ys"], inits["yz"] = np.float32(0.1), np.asarray(128 if act == np.uint8 else 0, act)
    names = ["q", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if with_bias:
        inits["b"] = rng.integers(-3000, 3000, 4).astype(np.int32)
        names.append("b")
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("QLinearConv", names, ["y"], **attributes)]
    path = _model(tmp_path, nodes, [1, 4, 7, 6], inits, output_type)
    assert _steps(path, _inputs([1, 4, 7, 6])) <= 1
    ops = ops_of(load_onnx(path))
    assert ops.count("aten.round.default") == 2 and ops.count("aten._to_copy.default") == 1  # only the output's


# ----------------------------------------------------------------- QLinearMatMul
QLINEAR_MATMUL_CASES = {  # name: (activation type, weight type, per column, input shape, opset)
    "uint8 per tensor": (np.uint8, np.int8, False, [1, 6], 10),
    "int8 per column": (np.int8, np.int8, True, [1, 6], 13),
    "uint8 weights per column 3-D": (np.uint8, np.uint8, True, [1, 2, 6], 13),
    "opset 21": (np.uint8, np.int8, True, [1, 6], 21),
}


@pytest.mark.parametrize("case", sorted(QLINEAR_MATMUL_CASES))
def test_qlinear_matmul_matches_onnxruntime_within_one_step(tmp_path, case):
    act, weight_type, per_column, shape, opset = QLINEAR_MATMUL_CASES[case]
    rng = np.random.default_rng(2)
    inits, output_type = _quantizer(act)
    inits.update(_weights(rng, weight_type, (6, 5), 5 if per_column else None))
    inits.update(ys=np.float32(0.07), yz=np.asarray(100 if act == np.uint8 else -3, act))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("QLinearMatMul", ["q", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])]
    path = _model(tmp_path, nodes, shape, inits, output_type, opset=max(opset, 10))
    assert _steps(path, _inputs(shape)) <= 1
    assert "aten.linear.default" in ops_of(load_onnx(path))  # the weight folded into a constant


def test_qlinear_matmul_of_two_quantized_activations(tmp_path):
    """The right side depends on the input too (the quantized value transposed, which keeps it float32): dequantized
    in the graph, multiplied by bmm. Its scales make exact ties common (s_a·s_b / s_y = 1/200): one step apart."""
    inits, _ = _quantizer(np.uint8)
    inits.update(ys=np.float32(0.5), yz=np.uint8(10))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("Transpose", ["q"], ["t"], perm=[0, 2, 1]),
             helper.make_node("QLinearMatMul", ["q", "xs", "xz", "t", "xs", "xz", "ys", "yz"], ["y"])]
    path = _model(tmp_path, nodes, [1, 3, 4], inits, TensorProto.UINT8)
    assert _steps(path, _inputs([1, 3, 4])) <= 1
    ops = ops_of(load_onnx(path))
    assert "aten.bmm.default" in ops and ops.count("aten._to_copy.default") == 1  # only the output's


def test_quantized_value_carried_to_the_output_is_cast_before(tmp_path):
    """MaxPool carries a quantized value unchanged, but to the graph output: it is cast to uint8 before MaxPool,
    whose uneven pads then hold uint8's least value, 0 (-inf before: a regression test)."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("MaxPool", ["q"], ["y"], kernel_shape=[2, 2], pads=[1, 0, 0, 1])]
    path = _model(tmp_path, nodes, [1, 2, 5, 4], _quantizer(np.uint8)[0], TensorProto.UINT8)
    _assert_exact(path, _inputs([1, 2, 5, 4]))
    assert ops_of(load_onnx(path))[-3:] == ["aten._to_copy.default", "aten.constant_pad_nd.default",
                                           "aten.max_pool2d.default"]


# ----------------------------------------------------------------- MatMulInteger, ConvInteger
def _integer_model(tmp_path, op, act, weight, zero_points, attributes=(), x_shape=(1, 6), cast=True, name="m.onnx"):
    """x → QuantizeLinear → `op`(q, weight, zero points) → Cast to float32 → Mul by a scale (what onnxruntime's
    quantizer writes), or the int32 result itself (`cast` False)."""
    inits, _ = _quantizer(act)
    inits["w"] = weight
    inputs = ["q", "w"]
    for index, value in enumerate(zero_points):
        inputs.append(f"z{index}" if value is not None else "")
        if value is not None:
            inits[f"z{index}"] = value
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node(op, inputs, ["i" if cast else "y"], name="integer", **dict(attributes))]
    if cast:
        inits["scale"] = np.float32(0.001)
        nodes += [helper.make_node("Cast", ["i"], ["c"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["c", "scale"], ["y"])]
    return _model(tmp_path, nodes, list(x_shape), inits, TensorProto.FLOAT if cast else TensorProto.INT32, name=name)


MATMUL_INTEGER_CASES = {  # name: (activation type, weight type, (activation zero point, weight zero point))
    "uint8 x int8": (np.uint8, np.int8, (np.uint8(20), np.int8(3))),
    "uint8 x uint8 per column": (np.uint8, np.uint8, (np.uint8(20), np.arange(120, 125, dtype=np.uint8))),
    "int8 x int8 no zero points": (np.int8, np.int8, (None, None)),
}


@pytest.mark.parametrize("case", sorted(MATMUL_INTEGER_CASES))
def test_matmul_integer_is_exact(tmp_path, case):
    act, weight_type, zero_points = MATMUL_INTEGER_CASES[case]
    low, high = (0, 256) if weight_type == np.uint8 else (-128, 128)
    weight = np.random.default_rng(3).integers(low, high, (6, 5)).astype(weight_type)
    for cast in (True, False):
        path = _integer_model(tmp_path, "MatMulInteger", act, weight, zero_points, cast=cast, name=f"{cast}.onnx")
        _assert_exact(path, _inputs([1, 6]))
        ops = ops_of(load_onnx(path))
        assert ops.count("aten._to_copy.default") == (0 if cast else 1)  # int32 only for the integer output


CONV_INTEGER_CASES = {  # name: (weight type, weight zero point, attributes)
    "int8 pads strides": (np.int8, np.int8(-2), {"pads": [1, 2, 0, 1], "strides": [2, 1]}),
    "uint8 groups dilations": (np.uint8, np.uint8(128), {"group": 2, "dilations": [1, 2], "pads": [1, 1, 1, 1]}),
}


@pytest.mark.parametrize("case", sorted(CONV_INTEGER_CASES))
def test_conv_integer_is_exact(tmp_path, case):
    weight_type, weight_zero_point, attributes = CONV_INTEGER_CASES[case]
    low, high = (0, 256) if weight_type == np.uint8 else (-128, 128)
    weight = np.random.default_rng(4).integers(low, high, (4, 2 if "group" in attributes else 4, 3, 3))
    path = _integer_model(tmp_path, "ConvInteger", np.uint8, weight.astype(weight_type),
                          (np.uint8(20), weight_zero_point), attributes, x_shape=(1, 4, 6, 7))
    _assert_exact(path, _inputs([1, 4, 6, 7]))


def test_conv_integer_with_a_zero_point_per_output_channel_matches_the_integer_sum(tmp_path):
    """ONNX allows it, onnxruntime refuses it: compared with the int64 convolution of the shifted integers."""
    rng = np.random.default_rng(5)
    weight, weight_zero_point = rng.integers(-128, 128, (3, 2, 2, 2)).astype(np.int8), np.array([0, 5, -9], np.int8)
    path = _integer_model(tmp_path, "ConvInteger", np.uint8, weight, (np.uint8(20), weight_zero_point), cast=False,
                          x_shape=(1, 2, 4, 4))
    x = _inputs([1, 2, 4, 4])
    q = np.clip(np.round(x / np.float32(0.05)) + 20, 0, 255) - 20
    shifted = (weight.astype(np.int64) - weight_zero_point.reshape(3, 1, 1, 1)).astype(np.float64)
    expected = torch.nn.functional.conv2d(torch.from_numpy(q.astype(np.float64)), torch.from_numpy(shifted))
    np.testing.assert_array_equal(run_opwise(load_onnx(path, batch_size=3), [x]), expected.numpy().astype(np.int32))


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_integer_matmul_graph_is_bounded_soundly(tmp_path, method):
    weight = np.random.default_rng(3).integers(-128, 128, (6, 5)).astype(np.int8)
    graph = load_onnx(_integer_model(tmp_path, "MatMulInteger", np.uint8, weight, (np.uint8(20), np.int8(3))))
    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(0))
    assert_sound(lambda z: graph.for_batch(z.shape[0])(z), x - 0.3, x + 0.3, methods=(method,), samples=2000,
                 attack=False, bounded=BoundedModel(graph, x))


# ----------------------------------------------------------------- onnxruntime's quantizer
class _ConvNet(torch.nn.Module):
    """Conv → Relu → MaxPool → grouped strided Conv → Relu → Flatten → MatMul: QOperator writes QLinearConv,
    MaxPool and Flatten on uint8, QLinearMatMul (a Linear would be the contrib QGemm, tested in
    test_onnx_contrib_quantized.py)."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.second = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2)
        self.weight = torch.nn.Parameter(torch.randn(16, 3) * 0.3)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.first(x)), 2)
        return torch.relu(self.second(x)).flatten(1) @ self.weight


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Parameter(torch.randn(6, 8)), torch.nn.Parameter(torch.randn(8, 3))

    def forward(self, x):
        return torch.relu(x @ self.first) @ self.second


def _quantized(tmp_path, module, shape, dynamic=False, per_channel=False, activation="QUInt8"):
    """`module` (seeded weights) exported to ONNX with a symbolic batch, quantized by onnxruntime: statically in the
    QOperator format (four random calibration samples) or dynamically."""
    quantization = pytest.importorskip("onnxruntime.quantization", reason="onnxruntime.quantization is not importable")
    torch.manual_seed(0)
    float_path, path = tmp_path / "float.onnx", tmp_path / f"quantized_{dynamic}_{per_channel}_{activation}.onnx"
    torch.onnx.export(module().eval(), torch.randn(shape), str(float_path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    if dynamic:
        quantization.quantize_dynamic(str(float_path), str(path))
        return path
    samples = iter([{"x": np.random.default_rng(i).standard_normal(shape).astype(np.float32)} for i in range(4)])

    class Reader(quantization.CalibrationDataReader):
        def get_next(self):
            return next(samples, None)

    # reduce_range: 7-bit weights, as onnxruntime advises for x86 CPUs without VNNI, whose uint8 x int8 kernel adds
    # products in pairs saturated to int16 (255 * -127 + 85 * -114 clips): onnxruntime's answer then depends on the CPU
    quantization.quantize_static(str(float_path), str(path), Reader(), quant_format=quantization.QuantFormat.QOperator,
                                 per_channel=per_channel, activation_type=getattr(quantization.QuantType, activation),
                                 weight_type=quantization.QuantType.QInt8, reduce_range=True)
    return path


@pytest.mark.parametrize("per_channel,activation", [(False, "QUInt8"), (True, "QUInt8"), (True, "QInt8")])
def test_conv_net_quantized_by_onnxruntime_matches_it(tmp_path, per_channel, activation):
    path = _quantized(tmp_path, _ConvNet, (1, 2, 8, 8), per_channel=per_channel, activation=activation)
    assert {node.op_type for node in onnx.load(str(path)).graph.node} >= {"QLinearConv", "QLinearMatMul"}
    _assert_exact(path, np.random.default_rng(6).standard_normal((3, 2, 8, 8)).astype(np.float32) * 2)
    assert "aten._to_copy.default" not in ops_of(load_onnx(path))  # uint8 through MaxPool and Flatten: kept float


def test_mlp_quantized_by_onnxruntime_matches_it(tmp_path):
    path = _quantized(tmp_path, _Mlp, (1, 6))
    assert [node.op_type for node in onnx.load(str(path)).graph.node].count("QLinearMatMul") == 2
    _assert_exact(path, np.random.default_rng(7).standard_normal((3, 6)).astype(np.float32) * 2)


@pytest.mark.parametrize("module,shape", [(_Mlp, (1, 6)), (_ConvNet, (1, 2, 8, 8))], ids=["mlp", "conv"])
def test_dynamically_quantized_models_are_refused_in_one_line(tmp_path, module, shape):
    path = _quantized(tmp_path, module, shape, dynamic=True)
    with pytest.raises(ModelLoadError, match=r"\(DynamicQuantizeLinear, opset \d+\): its scale and zero point are "
                                             r"computed at run time.*quantize the model statically") as error:
        load_onnx(path)
    assert "\n" not in str(error.value)


def test_quantized_conv_net_is_bounded_soundly_and_explained(tmp_path):
    graph = load_onnx(_quantized(tmp_path, _ConvNet, (1, 2, 8, 8), per_channel=True))
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    bounds = assert_sound(lambda z: graph.for_batch(z.shape[0])(z), x - 0.05, x + 0.05, methods=("ibp", "crown"),
                          samples=2000, attack=False, bounded=BoundedModel(graph, x))
    assert all(torch.isfinite(b.lower).all() and torch.isfinite(b.upper).all() for b in bounds.values())
    explanation = opwise.explain(graph, x)
    assert explanation.relevance.shape == x.shape and torch.isfinite(explanation.relevance).all()


# ----------------------------------------------------------------- refusals
def _refused(tmp_path, nodes, inits, pattern, x_shape=(1, 6)):
    with pytest.raises(ModelLoadError, match=pattern):
        load_onnx(_model(tmp_path, nodes, list(x_shape), inits, TensorProto.UINT8))


def test_input_dependent_weights_and_zero_points_are_refused(tmp_path):
    inits = {**_quantizer(np.uint8)[0], "ys": np.float32(0.1), "yz": np.uint8(0), "ws": np.float32(0.1),
             "wz": np.int8(0)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("Cast", ["x"], ["w"], to=TensorProto.INT8),
             helper.make_node("QLinearConv", ["q", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="qconv")]
    _refused(tmp_path, nodes, inits, r"'qconv' \(QLinearConv, opset 13\): its weight depends on the model input; "
                                     r"opwise imports QLinearConv with constant weights", x_shape=(1, 1, 3, 3))
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("ReduceMax", ["q"], ["z"], keepdims=0),
             helper.make_node("MatMulInteger", ["q", "w", "z"], ["y"], name="integer")]
    _refused(tmp_path, nodes, {**inits, "w": np.ones((6, 2), np.int8)},
             r"'integer' \(MatMulInteger.*left input zero point depends on the model input")


def test_per_channel_parameters_along_other_axes_are_refused(tmp_path):
    inits = {**_quantizer(np.uint8)[0], "ys": np.float32(0.1), "yz": np.uint8(0), "w": np.ones((6, 2), np.int8),
             "ws": np.float32(0.1), "wz": np.int8(0), "rows": np.full(6, 0.05, np.float32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("QLinearMatMul", ["q", "rows", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="per_row")]
    _refused(tmp_path, nodes, inits, r"'per_row' \(QLinearMatMul, opset 13\): its left input scale has shape \[6\]; "
                                     r"opwise imports a per-tensor left input scale")
    nodes[1] = helper.make_node("QLinearMatMul", ["q", "xs", "xz", "w", "rows", "wz", "ys", "yz"], ["y"], name="rows")
    _refused(tmp_path, nodes, inits, r"'rows' .*weight scale has shape \[6\]; opwise imports a weight scale per tensor "
                                     r"or one per output channel \(1-D, 2 entries along axis 1 of the weight\)")


def test_other_integer_types_and_disagreeing_zero_points_are_refused(tmp_path):
    inits = {**_quantizer(np.uint8)[0], "w": np.ones((6, 2), np.int16), "wz": np.int8(0)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"]),
             helper.make_node("MatMulInteger", ["q", "w"], ["y"], name="wide")]
    _refused(tmp_path, nodes, inits, r"'wide' \(MatMulInteger, opset 13\): its right input is int16; opwise imports "
                                     r"uint8 and int8 MatMulInteger inputs")
    inits["w"] = np.ones((6, 2), np.uint8)
    nodes[1] = helper.make_node("MatMulInteger", ["q", "w", "", "wz"], ["y"], name="mixed")
    _refused(tmp_path, nodes, inits, r"'mixed' .*right input's zero point is int8 but the right input is uint8")
    inits.update(ys=np.float32(0.1), yz=np.uint8(0), ws=np.float32(0.1), w=np.ones((2, 1, 1, 1), np.int8),
                 b=np.ones(2, np.float32))
    nodes[1] = helper.make_node("QLinearConv", ["q", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], name="bias")
    _refused(tmp_path, nodes, inits, r"'bias' .*its bias is float32 of shape \[2\]; ONNX's QLinearConv bias is int32",
             x_shape=(1, 1, 2, 2))


def test_integer_sums_float32_cannot_hold_are_refused(tmp_path):
    """600 products of up to 255 · 128: sums up to 19,584,000 > 2^24; 500 of them fit (16,320,000)."""
    for size, refused in [(500, False), (600, True)]:
        weight = np.full((size, 2), -128, np.int8)
        path = _integer_model(tmp_path, "MatMulInteger", np.uint8, weight, (np.uint8(0), None), x_shape=(1, size),
                              name=f"{size}.onnx")
        if not refused:
            load_onnx(path)
            continue
        with pytest.raises(ModelLoadError, match=r"'integer' \(MatMulInteger, opset 13\): its integer sums may reach "
                                                 r"19,584,000 \(600 products per output\), beyond 2\^24 = 16,777,216"):
            load_onnx(path)
