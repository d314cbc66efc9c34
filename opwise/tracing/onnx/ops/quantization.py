"""QuantizeLinear and DequantizeLinear (QDQ-quantized models), per tensor, per axis and blocked.

Imported forms: opset 10 (per tensor), 13 (`axis`), 19 (`saturate`, which only float8 reads), 21 (`block_size`,
`output_dtype`) and 23 (`precision` float32, the default for float32 scales; DequantizeLinear's float32
`output_dtype`), and the com.microsoft contrib forms of the same ops; integer types uint8, int8, uint16, int16 (and
int32 into DequantizeLinear, as quantized biases are stored), float32 scales.

    QuantizeLinear(x, s, z)   = clamp(round(x / s) + z, qmin, qmax)   (round half to even, as ONNX)
    DequantizeLinear(q, s, z) = (q − z) · s

Constant inputs (int8 weights, int32 biases) fold at import in the integer arithmetic onnxruntime uses:
float32((int32(q) − int32(z))) · s. On an input-dependent value the graph stays in float32: `aten.div` by the
scale (a division, not a product with 1/s, which rounds differently; the scale is a 0-d tensor constant, not a
Python number, which CUDA would turn into a product with its reciprocal), `aten.round`, `aten.add` of the zero point,
`aten.clamp` to the type's range, then `aten.sub` / `aten.mul` for the dequantizer. This is exact: x / s is the
same correctly rounded float32 quotient onnxruntime computes, and every later value is an integer below 2^24
(exact in float32) until the final product, the one rounding onnxruntime also does. Every op is bounded (round
and clamp have relaxations) and has a relevance rule. The quantized value is an integer type in ONNX; it stays
float here when only DequantizeLinear or an integer op of integer.py reads it (directly or through ops that carry
its numbers unchanged, MaxPool, Flatten, Reshape, ...), and is otherwise cast (`aten._to_copy`) to its integer type
so that every other reader (Cast, Add, the graph output) sees the ONNX type and values.

Refused with ModelLoadError naming the node: an input-dependent scale or zero point (the decomposition divides
by a constant), scales, `precision` or DequantizeLinear `output_dtype` other than float32 (float16 / bfloat16
round the result differently), per-axis parameters along the batch axis at another batch size, float8 and int4
types (torch cannot hold or reproduce them exactly; so also `saturate=0`, which applies only to float8),
and malformed per-axis or blocked shapes. Integer ops that read quantized values (QLinearConv, MatMulInteger, ...)
are in integer.py.
"""

from __future__ import annotations

import math

import torch
from torch import fx

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten

#: quantized types imported, with their ONNX TensorProto codes (for `output_dtype`)
_INTEGER_TYPES = {2: torch.uint8, 3: torch.int8, 4: torch.uint16, 5: torch.int16}
_DEQUANTIZED_TYPES = (torch.uint8, torch.int8, torch.uint16, torch.int16, torch.int32)
#: ONNX ops that read a quantized value for its number only, so it may stay float32 for them (integer.py's and
#: contrib_quantized.py's included)
_QUANTIZED_READERS = frozenset({"DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                                "QGemm", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool",
                                "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax"})
#: ops that move or select a quantized value's numbers unchanged (onnxruntime runs them on uint8 between QLinear ops)
_CARRIERS = frozenset({"MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                       "Identity"})


def refusal(node, what: str) -> ModelLoadError:
    return ModelLoadError(f"ONNX node '{node.name}' ({node.op_type}, opset {node.opset}): {what}")


def _type_name(code: int) -> str:
    from onnx import helper

    try:
        return helper.tensor_dtype_to_string(code).removeprefix("TensorProto.").lower()
    except (KeyError, ValueError):
        return f"element type {code}"


def _form(node) -> tuple[int | None, int]:
    """(axis or None for a scalar-only form, block_size) as the node's opset defines them."""
    contrib = node.op_type.startswith("com.microsoft.")
    axis = node.attr("axis", 1) if contrib or node.opset >= 13 else None
    block_size = node.attr("block_size", 0) if contrib or node.opset >= 21 else 0
    return axis, block_size


def constant_parameter(node, value, what: str) -> torch.Tensor:
    if isinstance(value, fx.Node):
        raise refusal(node, f"its {what} depends on the model input; opwise imports constant scales and zero points "
                            "only (the quantizer is decomposed into a division by a constant)")
    return value


def scale_of(node, scale) -> torch.Tensor:
    scale = constant_parameter(node, scale, "scale")
    if scale.dtype != torch.float32:
        raise refusal(node, f"its scale is {str(scale.dtype).removeprefix('torch.')}; opwise imports float32 scales "
                            "only (other float types round the result differently)")
    return scale


def _broadcast(builder, node, x, parameter: torch.Tensor, what: str) -> torch.Tensor:
    """`parameter` (a scale or zero point) shaped to broadcast against x: a 0-d tensor per tensor, [n, 1, ...] per
    axis, the full extent along `axis` (each block's value repeated) for blocked quantization."""
    axis, block_size = _form(node)
    if parameter.numel() == 1 and parameter.dim() <= 1:
        return builder.call(aten.reshape.default, parameter, [])  # through the builder: keeps the initializer's name
    shape = builder.shape(x)
    if axis is None:
        raise refusal(node, f"its {what} has shape {list(parameter.shape)}; at opset {node.opset} only per-tensor "
                            "(one-element) scales and zero points exist (per-axis ones from opset 13 on)")
    if not -len(shape) <= axis < len(shape):
        raise refusal(node, f"attribute axis={axis} is outside the input's {len(shape)} axes")
    axis %= len(shape)
    if isinstance(x, fx.Node):
        builder.require_batch_kept([axis], len(shape), f"{node.op_type} with a {what} per index of axis {axis}")
    if block_size < 0:
        raise refusal(node, f"attribute block_size={block_size} is negative")
    if not block_size:
        if parameter.dim() != 1 or parameter.shape[0] != shape[axis]:
            raise refusal(node, f"its per-axis {what} has shape {list(parameter.shape)} but axis {axis} of the input "
                                f"has {shape[axis]} entries; a per-axis {what} is 1-D with one entry per index")
        return builder.call(aten.reshape.default, parameter, [shape[axis]] + [1] * (len(shape) - axis - 1))
    blocks = math.ceil(shape[axis] / block_size)
    if parameter.dim() != len(shape) or parameter.shape[axis] != blocks:
        raise refusal(node, f"attribute block_size={block_size}: its blocked {what} has shape {list(parameter.shape)}; "
                            f"opwise imports blocked quantization with a {what} of the input's rank ({len(shape)}) "
                            f"holding ceil({shape[axis]}/{block_size}) = {blocks} blocks along axis {axis}")
    return parameter.repeat_interleave(block_size, dim=axis).narrow(axis, 0, shape[axis])


def _quantized_type(node, zero_point) -> torch.dtype:
    """The output type: the zero point's, else the `output_dtype` attribute (opset 21), else uint8."""
    code = node.attr("output_dtype", 0) if node.opset >= 21 or node.op_type.startswith("com.") else 0
    if code and code not in _INTEGER_TYPES:
        raise refusal(node, f"attribute output_dtype={code} ({_type_name(code)}); opwise imports "
                            "uint8, int8, uint16 and int16 (float8 and int4 values are not reproduced exactly, "
                            "so saturate=0, which only float8 reads, is refused with them)")
    if zero_point is None:
        return _INTEGER_TYPES.get(code, torch.uint8)
    if zero_point.dtype not in _INTEGER_TYPES.values():
        raise refusal(node, f"its zero point is {str(zero_point.dtype).removeprefix('torch.')}; opwise imports "
                            "uint8, int8, uint16 and int16 quantization")
    if code and _INTEGER_TYPES[code] != zero_point.dtype:
        raise refusal(node, f"attribute output_dtype={code} ({_type_name(code)}) disagrees with its zero point's "
                            f"type {str(zero_point.dtype).removeprefix('torch.')}")
    return zero_point.dtype


def quantize_linear(builder, node, x, scale, zero_point=None):
    """clamp(round(x / s) + z, qmin, qmax) in float32; cast to the integer type unless only dequantizers read it."""
    scale = scale_of(node, scale)
    zero_point = None if zero_point is None else constant_parameter(node, zero_point, "zero point")
    dtype = _quantized_type(node, zero_point)
    if builder.example(x).dtype != torch.float32:
        raise refusal(node, f"its input is {str(builder.example(x).dtype).removeprefix('torch.')}; opwise imports "
                            "the quantization of float32 values")
    if node.attr("precision", 0) not in (0, 1):
        raise refusal(node, f"attribute precision={node.attr('precision')} ({_type_name(node.attr('precision'))}); "
                            "opwise divides in float32 (precision unset or float)")
    low, high = torch.iinfo(dtype).min, torch.iinfo(dtype).max
    quotient = builder.call(aten.div.Tensor, x, _broadcast(builder, node, x, scale, "scale"))
    rounded = builder.call(aten.round.default, quotient)
    if zero_point is not None and bool((zero_point != 0).any()):
        shift = _broadcast(builder, node, x, zero_point.to(torch.float32), "zero point")
        rounded = builder.call(aten.add.Tensor, rounded, shift.item() if shift.dim() == 0 else shift)
    quantized = builder.call(aten.clamp.default, rounded, float(low), float(high))
    if isinstance(quantized, fx.Node) and read_as_number(builder, node.outputs[0]):
        return quantized
    return builder.call(aten._to_copy.default, quantized, dtype=dtype)


def read_as_number(builder, name: str) -> bool:
    """Whether every reader of the ONNX value `name` reads it for its numbers only (a dequantizer, an integer op), or
    carries them unchanged to such readers (MaxPool, Flatten, ...): then it may stay float32, which keeps the graph
    differentiable for relevance and free of casts for the bounds."""
    for reader in builder.reading_nodes.get(name, []):
        if reader is not None and reader.op_type in _QUANTIZED_READERS:
            continue
        carried = reader is not None and reader.op_type in _CARRIERS and reader.input[0] == name
        if not (carried and all(read_as_number(builder, output) for output in reader.output if output)):
            return False
    return True


def _dequantize_linear(builder, node, x, scale, zero_point=None):
    """(q − z) · s: folded in onnxruntime's int32 arithmetic for constants, in exact float32 on the input path."""
    scale = scale_of(node, scale)
    zero_point = None if zero_point is None else constant_parameter(node, zero_point, "zero point")
    if node.attr("output_dtype", 0) not in (0, 1):
        raise refusal(node, f"attribute output_dtype={node.attr('output_dtype')} "
                            f"({_type_name(node.attr('output_dtype'))}); opwise imports float32 outputs only")
    dtype = builder.example(x).dtype
    if dtype not in _DEQUANTIZED_TYPES and not (isinstance(x, fx.Node) and dtype == torch.float32):
        raise refusal(node, f"its input is {str(dtype).removeprefix('torch.')}; opwise imports the dequantization of "
                            "uint8, int8, uint16, int16 and int32 values")
    if zero_point is not None and zero_point.dtype not in _DEQUANTIZED_TYPES:
        raise refusal(node, f"its zero point is {str(zero_point.dtype).removeprefix('torch.')}; opwise imports "
                            "uint8, int8, uint16, int16 and int32 zero points")
    if zero_point is not None and dtype != torch.float32 and zero_point.dtype != dtype:
        raise refusal(node, f"its zero point is {str(zero_point.dtype).removeprefix('torch.')} but its input is "
                            f"{str(dtype).removeprefix('torch.')}; ONNX requires one type")
    zero_point = None if zero_point is None else _broadcast(builder, node, x, zero_point, "zero point")
    return dequantize(builder, x, _broadcast(builder, node, x, scale, "scale"), zero_point)


def dequantize(builder, x, scale: torch.Tensor | None, zero_point: torch.Tensor | None):
    """(x − z) · s, with s and z shaped to broadcast against x (no product where s is None): a constant x folds in
    onnxruntime's int32 arithmetic, an input-dependent one stays in exact float32 (its integer-typed values cast)."""
    if isinstance(x, torch.Tensor):
        shifted = x.to(torch.int32)
        if zero_point is not None:
            shifted = shifted - zero_point.to(torch.int32)
        shifted = shifted.to(torch.float32)
        return builder.inherit_source(shifted if scale is None else shifted * scale, x)
    if builder.example(x).dtype != torch.float32:  # an integer-typed input (the model's own, or a cast quantized value)
        x = builder.call(aten._to_copy.default, x, dtype=torch.float32)
    if zero_point is not None and bool((zero_point != 0).any()):
        shift = zero_point.to(torch.float32)
        x = builder.call(aten.sub.Tensor, x, shift.item() if shift.dim() == 0 else shift)
    if scale is None:
        return x
    return builder.call(aten.mul.Tensor, x, scale.item() if scale.dim() == 0 else scale)


for _since in (10, 13, 19, 21, 23):
    converter("QuantizeLinear", since=_since)(quantize_linear)
    converter("DequantizeLinear", since=_since)(_dequantize_linear)
converter("com.microsoft.QuantizeLinear", since=1)(quantize_linear)
converter("com.microsoft.DequantizeLinear", since=1)(_dequantize_linear)
