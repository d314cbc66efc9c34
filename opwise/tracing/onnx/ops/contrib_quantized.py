"""onnxruntime's contrib (com.microsoft) quantized operators, which its QOperator quantizer writes: QGemm (a Gemm,
e.g. a torch Linear), QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat,
QLinearSigmoid and QLinearLeakyRelu.

Each becomes the ops a QDQ model imports to (quantization.py): its quantized inputs dequantized, (q − z)·s, the float
op, and the output quantized, clamp(round(y / s_y) + z_y); so they are bounded and explained by the same rules.
QGemm computes alpha · A'·B' + C with A' and B' dequantized, transB folded into the constant weight, and its int32
bias C dequantized with scale alpha·s_a·s_b (onnxruntime adds C to the int32 sum before scaling it); without
y_scale its output is that float32 value, not quantized.

onnxruntime computes these ops in integer or mixed arithmetic (an int32 sum requantized by one float32 product,
s_a/s_y ratios, lookup tables for the activations), which rounds the same real number a few float32 ulps apart: a
quantized output may differ by one step where it lies within those ulps of a tie. Measured against onnxruntime 1.32
(CPU, x86-64) on the hand-built cases of tests/tracing/test_onnx_contrib_quantized.py (batch 1 and 3, both
counted): QGemm, QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearConcat, QLinearSigmoid and
QLinearLeakyRelu differ on none of their 90, 720, 720, 36, 720, 1,512 and 1,512 quantized outputs;
QLinearAveragePool by one step on 6 of 2,448. QGemm's float output (no y_scale) differs by at most
9.6e-7 (1.4e-5 relative) on 10 of 15 outputs: onnxruntime scales the exact int32 sum once, opwise sums dequantized
products in float32. The MLP and residual net onnxruntime's quantize_static writes (QGemm, QLinearAdd,
QLinearGlobalAveragePool) match it bit for bit. The tests check the one-step bound, a 1e-5 tolerance for the float
output and bit-exactness for the networks.

Refused with ModelLoadError naming the node: what integer.py refuses (input-dependent weights, scales and zero
points, types other than uint8 and int8, per-channel parameters other than per output channel of a weight), QGemm's
transA on the input-dependent A (it would transpose the batch axis) and biases other than one per output column,
and channels_last=1 (the NHWC layout onnxruntime's quantizer does not write).

A QGemm without y_scale, x quantized with scale 0.5: [1, 0.5] · [2, −1] = 1.5, a float:

>>> import tempfile, numpy, onnx, torch
>>> from onnx import TensorProto, helper, numpy_helper
>>> from opwise.tracing.onnx import load_onnx
>>> parameters = {"s": numpy.float32(0.5), "z": numpy.uint8(0), "w": numpy.array([[2], [-1]], numpy.int8),
...               "ws": numpy.float32(1.0), "wz": numpy.int8(0)}
>>> nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
...          helper.make_node("QGemm", ["q", "s", "z", "w", "ws", "wz"], ["y"], domain="com.microsoft")]
>>> graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
...                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
...                           [numpy_helper.from_array(numpy.asarray(v), k) for k, v in parameters.items()])
>>> opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
>>> path = tempfile.mkdtemp() + "/qgemm.onnx"
>>> onnx.save(helper.make_model(graph, opset_imports=opsets), path)
>>> load_onnx(path)(torch.tensor([[1.0, 0.5]]))
tensor([[1.5000]])
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.tracing.onnx.ops.conv import average_pool
from opwise.tracing.onnx.ops.elementwise import binary
from opwise.tracing.onnx.ops.integer import (dequantized_input, dequantized_weight, dtype_name, per_tensor,
                                             quantized_output)
from opwise.tracing.onnx.ops.linear import gemm
from opwise.tracing.onnx.ops.quantization import constant_parameter, refusal
from opwise.tracing.onnx.ops.shape import concat
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


def _channels_first(node) -> None:
    if node.attr("channels_last", 0):
        raise refusal(node, "attribute channels_last=1; opwise imports the NCHW layout (channels_last=0), the one "
                            "onnxruntime's quantizer writes")


@converter("com.microsoft.QGemm", since=1)
def _qgemm(builder, node, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None,
           y_zero_point=None):
    """Gemm of the dequantized A and B, the int32 bias dequantized with alpha·s_a·s_b; quantized where y_scale is
    given, float32 otherwise."""
    if node.attr("transA", 0) and isinstance(a, fx.Node):
        raise refusal(node, "attribute transA=1 transposes the input-dependent A, whose first axis is the batch; "
                            "opwise imports QGemm with transA=0")
    a = dequantized_input(builder, node, a, a_scale, a_zero_point, "input A")
    if isinstance(b, fx.Node):
        raise refusal(node, "its weight B depends on the model input; opwise imports QGemm with a constant B")
    columns = b.shape[0] if node.attr("transB", 0) else b.shape[1]
    b = dequantized_weight(builder, node, b, b_scale, b_zero_point, axis=0 if node.attr("transB", 0) else 1)
    if c is not None:
        c = constant_parameter(node, c, "bias C")
        if c.dtype != torch.int32 or c.numel() not in (1, columns) or (c.dim() == 2 and c.shape[0] != 1):
            raise refusal(node, f"its bias C is {dtype_name(c.dtype)} of shape {list(c.shape)}; opwise imports an int32 "
                                f"bias per output column ({columns}) or one for all")
        scale = node.attr("alpha", 1.0) * per_tensor(node, a_scale, "input A scale") * b_scale.reshape(-1)
        c = builder.inherit_source(c.reshape(-1).to(torch.float32) * scale, c)
    y = gemm(builder, node, a, b, c)
    if y_scale is None:
        if y_zero_point is not None:
            raise refusal(node, "it has an output zero point but no output scale")
        return y
    return quantized_output(builder, node, y, y_scale, y_zero_point)


def _qlinear_binary(builder, node, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point, op):
    """`op` of the dequantized operands (either may be a constant), the output quantized."""
    a = dequantized_input(builder, node, a, a_scale, a_zero_point, "input A")
    b = dequantized_input(builder, node, b, b_scale, b_zero_point, "input B")
    return quantized_output(builder, node, binary(builder, node, a, b, op, commutative=True), y_scale, y_zero_point)


@converter("com.microsoft.QLinearAdd", since=1)
def _qlinear_add(builder, node, *inputs):
    return _qlinear_binary(builder, node, *inputs, op=aten.add.Tensor)


@converter("com.microsoft.QLinearMul", since=1)
def _qlinear_mul(builder, node, *inputs):
    return _qlinear_binary(builder, node, *inputs, op=aten.mul.Tensor)


@converter("com.microsoft.QLinearGlobalAveragePool", since=1)
def _qlinear_global_average_pool(builder, node, x, x_scale, x_zero_point, y_scale, y_zero_point):
    _channels_first(node)
    x = dequantized_input(builder, node, x, x_scale, x_zero_point, "input")
    y = builder.call(aten.mean.dim, x, list(range(2, len(builder.shape(x)))), True)
    return quantized_output(builder, node, y, y_scale, y_zero_point)


@converter("com.microsoft.QLinearAveragePool", since=1)
def _qlinear_average_pool(builder, node, x, x_scale, x_zero_point, y_scale, y_zero_point):
    """AveragePool's attributes read from `node`; padding averages in dequantized zeros, as onnxruntime does."""
    _channels_first(node)
    x = dequantized_input(builder, node, x, x_scale, x_zero_point, "input")
    return quantized_output(builder, node, average_pool(builder, node, x), y_scale, y_zero_point)


@converter("com.microsoft.QLinearConcat", since=1)
def _qlinear_concat(builder, node, y_scale, y_zero_point, *inputs):
    """Inputs come in triples (value, scale, zero point), each dequantized."""
    values = [dequantized_input(builder, node, x, scale, zero_point, f"input {index}")
              for index, (x, scale, zero_point) in enumerate(zip(inputs[0::3], inputs[1::3], inputs[2::3]))]
    return quantized_output(builder, node, concat(builder, node, *values), y_scale, y_zero_point)


def _qlinear_activation(builder, node, x, x_scale, x_zero_point, y_scale, y_zero_point, op, *arguments):
    x = dequantized_input(builder, node, x, x_scale, x_zero_point, "input")
    return quantized_output(builder, node, builder.call(op, x, *arguments), y_scale, y_zero_point)


@converter("com.microsoft.QLinearSigmoid", since=1)
def _qlinear_sigmoid(builder, node, *inputs):
    return _qlinear_activation(builder, node, *inputs, aten.sigmoid.default)


@converter("com.microsoft.QLinearLeakyRelu", since=1)
def _qlinear_leaky_relu(builder, node, *inputs):
    return _qlinear_activation(builder, node, *inputs, aten.leaky_relu.default, node.attr("alpha", 0.01))
