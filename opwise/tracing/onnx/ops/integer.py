"""ONNX's integer operators, which read quantized values (onnxruntime's QOperator format): QLinearConv,
QLinearMatMul, ConvInteger and MatMulInteger; DynamicQuantizeLinear is refused.

QLinearConv and QLinearMatMul become the ops a QDQ model imports to (quantization.py): the inputs dequantized,
(q − z)·s, the float convolution or product, and the output quantized, clamp(round(y / s_y) + z_y). The int32 bias
of QLinearConv is dequantized with scale s_x·s_w, as onnxruntime's quantizer writes it in the QDQ format. Constant
weights fold at import in int32 arithmetic, so the graph is the one of the same model quantized to QDQ: bounded and
explained by the same rules.

onnxruntime computes these two ops differently: it sums Σ (q_x − z_x)(q_w − z_w) + bias exactly in int32 and
requantizes with one float32 product by s_x·s_w / s_y. Both round the same real number, a few float32 ulps apart, so
where it lies within those ulps of a tie (k + ½ steps) they may round to neighbouring integers: an output differs by
at most one quantization step, and rarely. Measured against onnxruntime 1.32 (CPU, x86-64) on random inputs: with
constant weights (the QLinearConv and QLinearMatMul cases of tests/tracing/test_onnx_integer.py, 144,000 outputs) no
output differs, nor do the networks onnxruntime's quantize_static writes; QLinearMatMul of two quantized activations
with s_a·s_b / s_y = 1/200, where exact ties are common, differs by 1 step on 24 of 3,600 outputs. The tests check
the one-step bound (and bit-exactness for the networks).

ConvInteger and MatMulInteger: (a − z_a)·(b − z_b) summed in float32, which is exact while every partial sum is an
integer of magnitude at most 2^24. That is checked at import, per output, from the constant weights:
Σ |b − z_b| · max |a − z_a| (the activation's largest distance from its zero point its type allows), and refused
beyond. ONNX types the result int32; it stays float32 where only Casts to float32 read it (what onnxruntime's
quantizer writes: Cast, then Mul by the scales), and is cast to int32 otherwise.

DynamicQuantizeLinear (what `quantize_dynamic` writes before MatMulInteger and ConvInteger) is refused: its scale and
zero point are computed at run time from the minimum and maximum of the whole input tensor, so they mix the samples
of a batch and put an input-dependent division, by a scale that reaches 0, in front of every bound.

Refused with ModelLoadError naming the node: input-dependent convolution weights, scales, zero points or biases;
input or weight types other than uint8 and int8 (the types onnxruntime runs these ops with), zero points of
another type than their input; per-channel parameters other than per output channel of a weight (axis 0 of a
convolution's, the last axis of a product's right side), as onnxruntime (per-row parameters of a product's left
side are in the ONNX standard but onnxruntime refuses them); and integer sums float32 cannot hold exactly.

A QLinearMatMul of x quantized with scale 0.5: [1, 0.5] · [2, −1] = 1.5, three steps of the output's scale 0.5:

>>> import tempfile, numpy, onnx, torch
>>> from onnx import TensorProto, helper, numpy_helper
>>> from opwise.tracing.onnx import load_onnx
>>> parameters = {"s": numpy.float32(0.5), "z": numpy.uint8(0), "w": numpy.array([[2], [-1]], numpy.int8),
...               "ws": numpy.float32(1.0), "wz": numpy.int8(0)}
>>> nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
...          helper.make_node("QLinearMatMul", ["q", "s", "z", "w", "ws", "wz", "s", "z"], ["y"])]
>>> graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
...                           [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1])],
...                           [numpy_helper.from_array(numpy.asarray(v), k) for k, v in parameters.items()])
>>> path = tempfile.mkdtemp() + "/qlinear.onnx"
>>> onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
>>> load_onnx(path)(torch.tensor([[1.0, 0.5]]))
tensor([[3]], dtype=torch.uint8)
"""

from __future__ import annotations

import torch
from torch import fx

from opwise.tracing.onnx.ops.conv import convolution
from opwise.tracing.onnx.ops.linear import matmul
from opwise.tracing.onnx.ops.quantization import constant_parameter, quantize_linear, refusal, scale_of, dequantize
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten

_TYPES = (torch.uint8, torch.int8)
#: float32 holds every integer of magnitude up to 2^24, so sums that stay within it are exact
_EXACT_LIMIT = 2**24


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _integer_type(builder, node, value, zero_point, what: str) -> torch.dtype | None:
    """The 8-bit type of a quantized input (None where it is a float32 quantized value whose type is unknown),
    its zero point's type checked against it."""
    dtype = builder.example(value).dtype
    if dtype == torch.float32 and isinstance(value, fx.Node):  # a quantized value kept float (quantization.py)
        dtype = None
    elif dtype not in _TYPES:
        raise refusal(node, f"its {what} is {dtype_name(dtype)}; opwise imports uint8 and int8 {node.op_type} inputs, "
                            "the types onnxruntime runs it with")
    if zero_point is not None:
        if zero_point.dtype not in _TYPES:
            raise refusal(node, f"its {what}'s zero point is {dtype_name(zero_point.dtype)}; opwise imports uint8 and "
                                "int8 zero points")
        if dtype is not None and zero_point.dtype != dtype:
            raise refusal(node, f"its {what}'s zero point is {dtype_name(zero_point.dtype)} but the {what} is "
                                f"{dtype_name(dtype)}; ONNX requires one type")
    return dtype


def per_tensor(node, parameter, what: str) -> torch.Tensor | None:
    """A constant scale or zero point with one element, as a 0-d tensor."""
    if parameter is None:
        return None
    parameter = constant_parameter(node, parameter, what)
    if parameter.numel() != 1:
        raise refusal(node, f"its {what} has shape {list(parameter.shape)}; opwise imports a per-tensor {what} (one "
                            "element) there, as onnxruntime does")
    return parameter.reshape(())


def _per_channel(node, parameter, weight: torch.Tensor, axis: int, what: str) -> torch.Tensor | None:
    """A constant weight scale or zero point, shaped to broadcast along `axis` of the weight: per tensor or one per
    index of that axis (an output channel)."""
    if parameter is None or parameter.numel() == 1:
        return per_tensor(node, parameter, what)
    parameter = constant_parameter(node, parameter, what)
    count = weight.shape[axis]
    if parameter.dim() != 1 or parameter.shape[0] != count:
        raise refusal(node, f"its {what} has shape {list(parameter.shape)}; opwise imports a {what} per tensor or "
                            f"one per output channel (1-D, {count} entries along axis {axis % weight.dim()} of the "
                            "weight), as onnxruntime does")
    return parameter.reshape([count] + [1] * (weight.dim() - axis % weight.dim() - 1))


def _weight_zero_point(builder, node, weight, zero_point, axis: int) -> torch.Tensor | None:
    """The zero point of a constant 8-bit weight, per tensor or per output channel (`axis`), checked."""
    if isinstance(weight, fx.Node):
        raise refusal(node, f"its weight depends on the model input; opwise imports {node.op_type} with constant "
                            "weights")
    zero_point = _per_channel(node, zero_point, weight, axis, "weight zero point")
    _integer_type(builder, node, weight, zero_point, "weight")
    return zero_point


def quantized_output(builder, node, y, scale, zero_point):
    """clamp(round(y / s) + z) as QuantizeLinear, per tensor; float32 where only quantized readers read it."""
    scale = scale_of(node, per_tensor(node, scale, "output scale"))
    zero_point = per_tensor(node, zero_point, "output zero point")
    if zero_point is not None and zero_point.dtype not in _TYPES:
        raise refusal(node, f"its output zero point is {dtype_name(zero_point.dtype)}; opwise imports uint8 and int8 "
                            "outputs")
    return quantize_linear(builder, node, y, scale, zero_point)


# ----------------------------------------------------------------- QLinearConv, QLinearMatMul
def dequantized_input(builder, node, x, scale, zero_point, what: str):
    zero_point = per_tensor(node, zero_point, f"{what} zero point")
    _integer_type(builder, node, x, zero_point, what)
    return dequantize(builder, x, scale_of(node, per_tensor(node, scale, f"{what} scale")), zero_point)


def dequantized_weight(builder, node, weight, scale, zero_point, axis: int):
    zero_point = _weight_zero_point(builder, node, weight, zero_point, axis)
    scale = _per_channel(node, scale_of(node, constant_parameter(node, scale, "weight scale")), weight, axis, "weight scale")
    return dequantize(builder, weight, scale, zero_point)


@converter("QLinearConv", since=10)
def _qlinear_conv(builder, node, x, x_scale, x_zero_point, weight, w_scale, w_zero_point, y_scale, y_zero_point,
                  bias=None):
    """Conv on the dequantized input and weight, the bias dequantized with scale s_x·s_w, the output quantized."""
    x = dequantized_input(builder, node, x, x_scale, x_zero_point, "input")
    weight_float = dequantized_weight(builder, node, weight, w_scale, w_zero_point, axis=0)
    if bias is not None:
        bias = constant_parameter(node, bias, "bias")
        if bias.dtype != torch.int32 or list(bias.shape) != [weight.shape[0]]:
            raise refusal(node, f"its bias is {dtype_name(bias.dtype)} of shape {list(bias.shape)}; ONNX's QLinearConv "
                                f"bias is int32, one per output channel ({weight.shape[0]})")
        bias_scale = per_tensor(node, x_scale, "input scale") * w_scale.reshape(-1)
        bias = builder.inherit_source(bias.to(torch.float32) * bias_scale, bias)
    y = convolution(builder, node, x, weight_float, bias)
    return quantized_output(builder, node, y, y_scale, y_zero_point)


@converter("QLinearMatMul", since=10)
def _qlinear_matmul(builder, node, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    """MatMul of the dequantized operands, the output quantized; b may be per column where it is constant."""
    a = dequantized_input(builder, node, a, a_scale, a_zero_point, "left input")
    if isinstance(b, fx.Node):
        b = dequantized_input(builder, node, b, b_scale, b_zero_point, "right input")
    else:
        b = dequantized_weight(builder, node, b, b_scale, b_zero_point, axis=-1)
    return quantized_output(builder, node, matmul(builder, a, b), y_scale, y_zero_point)


# ----------------------------------------------------------------- ConvInteger, MatMulInteger
def _largest_distance(builder, node, x, zero_point, what: str) -> int:
    """max |x − z| over the values x's type allows (uint8's, the wider, where x is a quantized value kept float)."""
    dtype = _integer_type(builder, node, x, zero_point, what)
    dtype = dtype or (zero_point.dtype if zero_point is not None else torch.uint8)
    z = int(zero_point) if zero_point is not None else 0
    return max(z - torch.iinfo(dtype).min, torch.iinfo(dtype).max - z)


def _require_exact(node, worst: torch.Tensor, reduced: str) -> None:
    """Refuse where a sum of products may leave the integers float32 holds exactly; `worst` bounds Σ |products| per
    output (the weights' |w − z_w| summed, times the input's largest |x − z_x|)."""
    largest = int(worst.max()) if worst.numel() else 0
    if largest > _EXACT_LIMIT:
        raise refusal(node, f"its integer sums may reach {largest:,} ({reduced}), beyond 2^24 = {_EXACT_LIMIT:,}, "
                            "where float32 stops holding every integer; opwise sums integer products in float32 and "
                            "cannot reproduce the int32 result exactly")


def _integer_result(builder, node, result):
    """Keep the int32 result float32 where only Casts to float32 read it, else give it ONNX's type."""
    readers = builder.reading_nodes.get(node.outputs[0], [])
    if isinstance(result, fx.Node) and all(_casts_to_float(reader) for reader in readers):
        return result
    return builder.call(aten._to_copy.default, result, dtype=torch.int32)


def _casts_to_float(reader) -> bool:
    from onnx import TensorProto

    return (reader is not None and reader.op_type == "Cast"
            and any(a.name == "to" and a.i == TensorProto.FLOAT for a in reader.attribute))


@converter("ConvInteger", since=10)
def _conv_integer(builder, node, x, weight, x_zero_point=None, w_zero_point=None):
    """Conv of (x − z_x) and (w − z_w) in exact float32 (padding adds zeros, as onnxruntime pads with z_x)."""
    x_zero_point = per_tensor(node, x_zero_point, "input zero point")
    largest = _largest_distance(builder, node, x, x_zero_point, "input")
    w_zero_point = _weight_zero_point(builder, node, weight, w_zero_point, axis=0)
    weight = dequantize(builder, weight, None, w_zero_point)
    _require_exact(node, weight.abs().flatten(1).sum(1) * largest, f"{weight[0].numel()} products per output")
    x = dequantize(builder, x, None, x_zero_point)
    return _integer_result(builder, node, convolution(builder, node, x, weight))


@converter("MatMulInteger", since=10)
def _matmul_integer(builder, node, a, b, a_zero_point=None, b_zero_point=None):
    """MatMul of (a − z_a) and (b − z_b) in exact float32."""
    a_zero_point = per_tensor(node, a_zero_point, "left input zero point")
    largest = _largest_distance(builder, node, a, a_zero_point, "left input")
    reduced = -2 if len(builder.shape(b)) > 1 else 0  # the axis of b the product sums over
    if isinstance(b, fx.Node):
        b_zero_point = per_tensor(node, b_zero_point, "right input zero point")
        b_largest = _largest_distance(builder, node, b, b_zero_point, "right input")
        sums = torch.tensor(builder.shape(b)[reduced] * b_largest)
    else:
        b_zero_point = _per_channel(node, b_zero_point, b, -1, "right input zero point")
        _integer_type(builder, node, b, b_zero_point, "right input")
        b = dequantize(builder, b, None, b_zero_point)
        sums = b.abs().sum(reduced)
    _require_exact(node, sums * largest, f"{builder.shape(b)[reduced]} products per output")
    return _integer_result(builder, node, matmul(builder, dequantize(builder, a, None, a_zero_point), b))


@converter("DynamicQuantizeLinear", since=11)
def _dynamic_quantize_linear(builder, node, x):
    raise refusal(node, "its scale and zero point are computed at run time from the minimum and maximum of the whole "
                        "input, which mixes the samples of a batch and makes every bound divide by an input-dependent "
                        "scale; opwise imports constant quantization only: quantize the model statically "
                        "(onnxruntime.quantization.quantize_static, QDQ or QOperator format)")
