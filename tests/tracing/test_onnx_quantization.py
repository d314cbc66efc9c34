"""ONNX QuantizeLinear / DequantizeLinear: QDQ models match onnxruntime exactly, and are explained, bounded soundly
(IBP, CROWN, α-CROWN, also where the quantizer saturates) and verified; what is not imported is refused by name.
The integer ops that read quantized values (QLinearConv, MatMulInteger, ...) are tested in test_onnx_integer.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import opwise  # noqa: E402
from opwise.bounds import BoundedModel  # noqa: E402
from opwise.errors import ModelLoadError  # noqa: E402
from opwise.tracing.onnx import load_onnx  # noqa: E402
from tests.bounds.helpers import assert_sound  # noqa: E402
from tests.tracing.test_onnx_import import assert_matches, ops_of, run_onnxruntime, run_opwise, save_model  # noqa: E402


def _model(tmp_path, nodes, x_shape, initializers, output_type=TensorProto.FLOAT, opset=13, name="model.onnx",
           domains=()):
    """A model with one float input 'x' and one output 'y' of `output_type` (save_model's output is float)."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", output_type, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(domain, 1) for domain in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10 if opset >= 21 else 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _assert_exact(path, x: np.ndarray) -> None:
    """Bit-exact agreement with onnxruntime, imported at the declared batch (1) and at the batch of x (one sample
    at a time through onnxruntime), output types included."""
    expected = np.concatenate([run_onnxruntime(path, [x[i : i + 1]]) for i in range(len(x))])
    for batch in (1, len(x)):
        graph = load_onnx(path, batch_size=batch)
        got = np.concatenate([run_opwise(graph, [x[i : i + batch]]) for i in range(0, len(x), batch)])
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def _activations(scale, shape, seed=0) -> np.ndarray:
    """Values that round, fall on k + ½ steps of the smallest scale (exact ties where it is a power of two, near
    ties otherwise) and saturate both ends."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32) * 40 * float(np.max(scale))
    flat = x.reshape(-1)
    ties = np.arange(-4, 4, dtype=np.float32) + 0.5
    flat[: ties.size] = ties * np.float32(np.min(scale))
    flat[ties.size : ties.size + 2] = [1e4, -1e4]
    return x


QDQ_CASES = {  # name: (zero point type, scale, zero point, axis)
    "uint8 zp 0": (np.uint8, 0.0625, 0, None),
    "uint8 zp 128": (np.uint8, 0.0625, 128, None),
    "uint8 zp 250": (np.uint8, 0.037, 250, None),
    "int8 zp 0": (np.int8, 0.125, 0, None),
    "int8 zp -100": (np.int8, 0.03, -100, None),
    "uint8 per axis": (np.uint8, [0.0625, 0.25, 0.01], [0, 128, 255], 1),
    "int8 per axis -1": (np.int8, [0.5, 0.0625, 0.02, 0.125], [-128, 0, 7, 127], -1),
}


@pytest.mark.parametrize("case", sorted(QDQ_CASES))
def test_quantize_dequantize_of_activations_is_exact(tmp_path, case):
    dtype, scale, zero_point, axis = QDQ_CASES[case]
    scale, zero_point = np.asarray(scale, np.float32), np.asarray(zero_point, dtype)
    attributes = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attributes),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attributes)]
    shape = [1, 3, 4] if axis is not None else [1, 5, 6]
    path = save_model(tmp_path, nodes, {"x": shape}, None, {"s": scale, "z": zero_point})
    x = np.concatenate([_activations(scale, [1] + shape[1:], seed) for seed in range(3)])
    if axis is not None:  # ties per channel: (k + ½) times the channel's own scale
        channel_scale = scale.reshape(3, 1) if axis == 1 else scale
        x[0] = ((np.arange(12).reshape(3, 4) % 9 - 4 + 0.5) * channel_scale).astype(np.float32)
    _assert_exact(path, x)
    ops = ops_of(load_onnx(path))
    assert "aten.round.default" in ops and "aten.clamp.default" in ops and "aten._to_copy.default" not in ops


@pytest.mark.parametrize("opset,dtype", [(21, np.uint16), (21, np.int16), (23, np.uint8)])
def test_sixteen_bit_and_newer_opset_quantization_is_exact(tmp_path, opset, dtype):
    zero_point = np.asarray({np.uint16: 30000, np.int16: -7, np.uint8: 77}[dtype], dtype)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    path = _model(tmp_path, nodes, [1, 40], {"s": np.float32(2.0**-10), "z": zero_point}, opset=opset)
    x = _activations(np.float32(2.0**-10), [3, 40]) * 100
    _assert_exact(path, x)


def test_contrib_domain_quantizers_are_exact(tmp_path):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], domain="com.microsoft")]
    path = _model(tmp_path, nodes, [1, 30], {"s": np.float32(0.05), "z": np.uint8(10)}, domains=("com.microsoft",))
    _assert_exact(path, _activations(np.float32(0.05), [2, 30]))


def test_blocked_quantization_of_activations_and_weights_is_exact(tmp_path):
    rng = np.random.default_rng(5)
    scale = (rng.random((1, 3, 2)) * 0.1 + 0.01).astype(np.float32)  # blocks of 4 along axis 2 (size 6: 4 + 2)
    zero_point = rng.integers(-20, 20, (1, 3, 2)).astype(np.int8)
    weight = rng.integers(-128, 128, (6, 5)).astype(np.int8)
    weight_scale = (rng.random((3, 5)) * 0.1).astype(np.float32)  # blocks of 2 along axis 0
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=2, block_size=4),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], axis=2, block_size=4),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"], axis=0, block_size=2),
             helper.make_node("MatMul", ["d", "wd"], ["y"])]
    path = _model(tmp_path, nodes, [1, 3, 6], {"s": scale, "z": zero_point, "w": weight, "ws": weight_scale}, opset=21)
    graph = assert_matches(path, [[1, 3, 6]])
    assert "aten.linear.default" in ops_of(graph)  # the dequantized weight folded into a constant


def test_quantized_value_read_by_another_op_keeps_its_integer_type(tmp_path):
    """ONNX's QuantizeLinear output is an integer: read by anything but DequantizeLinear it is cast to that type."""
    x = _activations(np.float32(0.0625), [2, 12])
    quantize = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    path = _model(tmp_path, [quantize], [1, 12], {"s": np.float32(0.0625), "z": np.int8(3)}, TensorProto.INT8)
    _assert_exact(path, x)
    assert ops_of(load_onnx(path))[-1] == "aten._to_copy.default"
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("Cast", ["q"], ["c"], to=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]), helper.make_node("Add", ["c", "d"], ["y"])]
    path = _model(tmp_path, nodes, [1, 12], {"s": np.float32(0.0625), "z": np.uint8(200)}, name="cast.onnx")
    _assert_exact(path, x)


# ----------------------------------------------------------------- a QDQ network
def _qdq_network(tmp_path, opset=13):
    """input → Q/DQ (uint8, zero point 128) → MatMul with per-channel int8 weights + int32 bias → Relu →
    Q/DQ → Gemm with per-tensor int8 weights and a float bias: the pattern onnxruntime's quantizer writes."""
    rng = np.random.default_rng(0)
    weight_scale = (rng.random(16) * 0.02 + 0.01).astype(np.float32)
    inits = {"s0": np.float32(0.02), "z0": np.uint8(128),
             "w1": rng.integers(-127, 128, (8, 16)).astype(np.int8), "s1": weight_scale, "z1": np.zeros(16, np.int8),
             "b1": rng.integers(-200, 200, 16).astype(np.int32), "sb1": weight_scale * np.float32(0.02),
             "s2": np.float32(0.05), "z2": np.uint8(0),
             "w2": rng.integers(-127, 128, (16, 3)).astype(np.int8), "sw2": np.float32(0.01), "zw2": np.int8(0),
             "b2": rng.standard_normal(3).astype(np.float32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s0", "z0"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s0", "z0"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w1", "s1", "z1"], ["w1d"], axis=1),
             helper.make_node("DequantizeLinear", ["b1", "sb1"], ["b1d"], axis=0),
             helper.make_node("MatMul", ["xd", "w1d"], ["m"]),
             helper.make_node("Add", ["m", "b1d"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s2", "z2"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "s2", "z2"], ["rd"]),
             helper.make_node("DequantizeLinear", ["w2", "sw2", "zw2"], ["w2d"]),
             helper.make_node("Gemm", ["rd", "w2d", "b2"], ["y"])]
    return save_model(tmp_path, nodes, {"x": [1, 8]}, [1, 3], inits, opset=opset)


def test_qdq_network_matches_onnxruntime(tmp_path):
    path = _qdq_network(tmp_path)
    graph = assert_matches(path, [[1, 8]], batch_sizes=(None, 3))
    assert ops_of(graph).count("aten.linear.default") == 2  # int8 weights and the int32 bias folded at import
    weight = next(n for n in graph.nodes if n.op == "get_attr" and graph.info(n).source == "w1")
    model = onnx.load(str(path))
    stored = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    w1, s1 = stored["w1"], stored["s1"]
    np.testing.assert_array_equal(graph.constant(weight).numpy(), (w1.astype(np.float32) * s1).T)


@pytest.mark.parametrize("eps", [0.01, 0.2, 3.0])
def test_qdq_network_is_bounded_soundly(tmp_path, eps):
    graph = load_onnx(_qdq_network(tmp_path))
    x = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    if eps == 3.0:  # the input quantizer (scale 0.02, zero point 128) saturates beyond ±2.56
        assert ((x.abs() + eps) / 0.02 > 128).all()
    run = lambda z: graph.for_batch(z.shape[0])(z)  # noqa: E731
    bounds = assert_sound(run, x - eps, x + eps, methods=("ibp", "crown", "alpha-crown"), samples=500, attack=False,
                          bounded=BoundedModel(graph, x))
    assert all(torch.isfinite(b.lower).all() and torch.isfinite(b.upper).all() for b in bounds.values())


def test_qdq_network_is_explained(tmp_path):
    graph = load_onnx(_qdq_network(tmp_path))
    x = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    explanation = opwise.explain(graph, x)
    assert explanation.relevance.shape == x.shape and torch.isfinite(explanation.relevance).all()


def test_qdq_network_is_verified_or_falsified(tmp_path):
    path = _qdq_network(tmp_path)
    graph = load_onnx(path)
    x = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    assert opwise.verify(graph, x, eps=0.01).status == "verified"
    result = opwise.verify(graph, x, eps=3.0)
    assert result.status == "falsified"
    counterexample = result.counterexample.numpy()
    assert np.abs(counterexample - x.numpy()).max() <= 3.0 + 1e-6
    predicted = run_onnxruntime(path, [x.numpy()]).argmax()
    assert run_onnxruntime(path, [counterexample]).argmax() != predicted


# ----------------------------------------------------------------- onnxruntime's own quantizer
def test_a_conv_net_quantized_by_onnxruntime_matches_it(tmp_path):
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError as error:
        pytest.skip(f"onnxruntime.quantization is not importable ({error}); nothing to quantize with")
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.3,
             "b": rng.standard_normal(4).astype(np.float32) * 0.1, "shape": np.array([1, 64], np.int64),
             "fw": rng.standard_normal((64, 3)).astype(np.float32) * 0.2, "fb": np.zeros(3, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]), helper.make_node("Gemm", ["f", "fw", "fb"], ["y"])]
    float_path = save_model(tmp_path, nodes, {"x": [1, 2, 8, 8]}, [1, 3], inits, name="float.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.standard_normal((1, 2, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    for per_channel in (False, True):
        path = tmp_path / f"quantized_{per_channel}.onnx"
        # reduce_range (7-bit weights): without VNNI, onnxruntime's fused uint8 x int8 kernels saturate pairs of
        # products to int16 and its answer depends on the CPU (test_onnx_integer's _quantized)
        quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
        assert {node.op_type for node in onnx.load(str(path)).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
        graph = load_onnx(path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for x in rng.standard_normal((10, 1, 2, 8, 8)).astype(np.float32):
            np.testing.assert_allclose(run_opwise(graph, [x]), session.run(None, {"x": x})[0], atol=1e-5, rtol=1e-5)
        assert "aten.round.default" in ops_of(graph)


# ----------------------------------------------------------------- refusals
def _quantizer(tmp_path, initializers, inputs=("x", "s", "z"), opset=13, op="QuantizeLinear", x_shape=(1, 4), **attrs):
    return _model(tmp_path, [helper.make_node(op, list(inputs), ["y"], name="quant", **attrs)], list(x_shape),
                  initializers, TensorProto.UINT8 if op == "QuantizeLinear" else TensorProto.FLOAT, opset=opset)


def test_input_dependent_scale_or_zero_point_is_refused(tmp_path):
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("QuantizeLinear", ["x", "m"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "m"], ["y"])]
    with pytest.raises(ModelLoadError, match=r"'quant' \(QuantizeLinear.*scale depends on the model input"):
        load_onnx(save_model(tmp_path, nodes, {"x": [1, 4]}, None))
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=TensorProto.UINT8),
             helper.make_node("ReduceMax", ["c"], ["z"], keepdims=0),
             helper.make_node("DequantizeLinear", ["c", "s", "z"], ["y"], name="dequant")]
    with pytest.raises(ModelLoadError, match=r"'dequant' \(DequantizeLinear.*zero point depends on the model input"):
        load_onnx(save_model(tmp_path, nodes, {"x": [1, 4]}, None, {"s": np.float32(0.1)}, name="zp.onnx"))


@pytest.mark.parametrize("code,name", [(TensorProto.FLOAT8E4M3FN, "float8e4m3fn"), (TensorProto.INT4, "int4"),
                                       (TensorProto.UINT4, "uint4")])
def test_float8_and_int4_outputs_are_refused(tmp_path, code, name):
    path = _quantizer(tmp_path, {"s": np.float32(0.1)}, inputs=("x", "s"), opset=21, output_dtype=code, saturate=0)
    with pytest.raises(ModelLoadError, match=rf"'quant' \(QuantizeLinear, opset 21\): attribute output_dtype={code} "
                                             rf"\({name}\).*uint8, int8, uint16 and int16"):
        load_onnx(path)


def test_other_float_scales_and_malformed_shapes_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match=r"'quant' .*scale is float16; opwise imports float32 scales"):
        load_onnx(_quantizer(tmp_path, {"s": np.float16(0.1), "z": np.uint8(0)}, opset=19))
    with pytest.raises(ModelLoadError, match=r"'quant' .*per-axis scale has shape \[3\] but axis 1 .* 4 entries"):
        load_onnx(_quantizer(tmp_path, {"s": np.ones(3, np.float32), "z": np.zeros(3, np.uint8)}, axis=1))
    with pytest.raises(ModelLoadError, match=r"'quant' .*at opset 10 only per-tensor"):
        load_onnx(_quantizer(tmp_path, {"s": np.ones(4, np.float32), "z": np.zeros(4, np.uint8)}, opset=10))
    with pytest.raises(ModelLoadError, match=r"'quant' .*block_size=3: its blocked scale has shape \[1, 1\]"):
        load_onnx(_quantizer(tmp_path, {"s": np.ones((1, 1), np.float32)}, inputs=("x", "s"), opset=21, axis=1,
                             block_size=3))
    with pytest.raises(ModelLoadError, match=r"'quant' \(QuantizeLinear, opset 23\): attribute precision=10 "
                                             r"\(float16\)"):
        load_onnx(_quantizer(tmp_path, {"s": np.float32(1), "z": np.uint8(0)}, opset=23, precision=10))
    with pytest.raises(ModelLoadError, match=r"'quant' \(DequantizeLinear.*output_dtype=10 \(float16\); opwise "
                                             r"imports float32 outputs only"):
        load_onnx(_quantizer(tmp_path, {"s": np.float32(1)}, ("x", "s"), opset=23, op="DequantizeLinear",
                             output_dtype=10))
    with pytest.raises(ModelLoadError, match=r"'quant' .*output_dtype=3 \(int8\) disagrees with its zero point's "
                                             r"type uint8"):
        load_onnx(_quantizer(tmp_path, {"s": np.float32(1), "z": np.uint8(0)}, opset=21, output_dtype=3))


@pytest.mark.parametrize("code,name", [(TensorProto.FLOAT8E4M3FN, "float8e4m3fn"),
                                       (TensorProto.FLOAT8E5M2, "float8e5m2"), (TensorProto.INT4, "int4")])
def test_float8_and_int4_initializers_are_refused_by_the_node_that_reads_them(tmp_path, code, name):
    """torch cannot hold them: the refusal comes from the reading node (a zero point, a weight), not the file."""
    zero_point = helper.make_tensor("z", code, [], [0])
    path = _quantizer(tmp_path, {"s": np.float32(0.1)}, opset=21, saturate=0)
    model = onnx.load(str(path))
    model.graph.initializer.append(zero_point)
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match=rf"'quant' \(QuantizeLinear, opset 21\) reads an initializer it cannot "
                                             rf"use: tensor 'z' is {name}, which torch cannot hold"):
        load_onnx(path)
    weight = helper.make_tensor("w", code, [4, 2], [1] * 8)
    nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["wd"], name="weights"),
             helper.make_node("MatMul", ["x", "wd"], ["y"])]
    path = _model(tmp_path, nodes, [1, 4], {"s": np.float32(0.1)}, opset=21, name="weights.onnx")
    model = onnx.load(str(path))
    model.graph.initializer.append(weight)
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match=rf"'weights' \(DequantizeLinear.*tensor 'w' is {name}"):
        load_onnx(path)


def test_per_axis_parameters_along_the_batch_axis_are_refused_at_another_batch_size(tmp_path):
    inits = {"s": np.array([0.1, 0.2], np.float32), "z": np.zeros(2, np.uint8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=0, name="per_sample"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0)]
    path = save_model(tmp_path, nodes, {"x": [2, 3]}, None, inits)
    assert_matches(path, [[2, 3]])
    with pytest.raises(ModelLoadError, match=r"batch_size=3: node 'per_sample' \(QuantizeLinear\).*axis 0"):
        load_onnx(path, batch_size=3)
