"""Elementwise ONNX operators: arithmetic with broadcasting, activations (Swish as a scaled silu), comparisons,
Softmax; also Xor, Mod
(`aten.remainder` for fmod=0, `aten.fmod` for fmod=1; fmod=0 on floats, which ONNX forbids, is refused), Round,
IsInf, IsNaN and Trilu (a constant triangular mask applied with `aten.where`, so it is bounded); the integer
operators BitShift, BitwiseAnd / Or / Xor / Not (usually on constants and shapes, where they fold). Round is
bounded (`bounds/relaxations/step.py`), Mod by a constant divisor too (`bounds/transfers/modulo.py`), and so is a
comparison that only selects with Where (a binarized layer `Where(Greater(x, 0), 1, -1)`: a step,
bounds/expand.py); otherwise comparisons, logic, Mod by an input-dependent divisor and the tests give integer- or
bool-valued or discontinuous results: imported for the forward pass, refused by the bound engine.

A constant operand with one element that does not widen the result becomes a Python scalar argument
(`aten.sub.Tensor(x, 0.1307)`), the form export gives for `x - 0.1307`; Max and Min with one become
`aten.clamp_min` and `aten.clamp_max` (ReLU6 written as Min(Max(x, 0), 6)); other constants become
`get_attr` nodes. Commutative ops put the input-dependent operand first.
"""

from __future__ import annotations

import functools

import torch
from torch import fx

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.ops.linear import fuse_bias
from opwise.tracing.onnx.ops.shape import constant_ints
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


def _as_scalar_for(builder, tensor_value, constant):
    """`constant` as a Python number when broadcasting it against `tensor_value` changes no shape."""
    if not isinstance(constant, torch.Tensor) or constant.numel() != 1:
        return constant
    if constant.dim() > len(builder.shape(tensor_value)):
        return constant
    return constant.item()


#: overloads that take a Python number as the second operand, for ops whose `.Tensor` form does not
_SCALAR_FORMS = {aten.eq.Tensor: aten.eq.Scalar, aten.lt.Tensor: aten.lt.Scalar, aten.gt.Tensor: aten.gt.Scalar,
                 aten.le.Tensor: aten.le.Scalar, aten.ge.Tensor: aten.ge.Scalar,
                 aten.remainder.Tensor: aten.remainder.Scalar, aten.fmod.Tensor: aten.fmod.Scalar,
                 aten.maximum.default: aten.clamp_min.default, aten.minimum.default: aten.clamp_max.default}
#: ops without a form that takes a number: their one-element constants stay tensors
_TENSOR_ONLY = (aten.logical_and.default, aten.logical_or.default, aten.logical_xor.default)


def binary(builder, node, a, b, op, commutative: bool):
    if commutative and isinstance(a, torch.Tensor) and isinstance(b, fx.Node):
        a, b = b, a
    if isinstance(a, fx.Node) and op not in _TENSOR_ONLY:
        b = _as_scalar_for(builder, a, b)
        if isinstance(b, (int, float, bool)):  # a number, not another node
            op = _SCALAR_FORMS.get(op, op)
    return builder.call(op, a, b)


for _op_type, _op, _commutative in [
    ("Sub", aten.sub.Tensor, False),
    ("Mul", aten.mul.Tensor, True),
    ("Div", aten.div.Tensor, False),
    ("Equal", aten.eq.Tensor, True),
    ("Less", aten.lt.Tensor, False),
    ("Greater", aten.gt.Tensor, False),
    ("LessOrEqual", aten.le.Tensor, False),
    ("GreaterOrEqual", aten.ge.Tensor, False),
    ("And", aten.logical_and.default, True),
    ("Or", aten.logical_or.default, True),
    ("Xor", aten.logical_xor.default, True),
]:
    converter(_op_type, since=7)(functools.partial(binary, op=_op, commutative=_commutative))


@converter("Add", since=7)
def _add(builder, node, a, b):
    fused = fuse_bias(builder, node, a, b)
    return fused if fused is not None else binary(builder, node, a, b, aten.add.Tensor, commutative=True)


@converter("Add", "Sub", "Mul", "Div", since=1)
def _legacy_binary(builder, node, a, b):
    """Opsets 1-6 broadcast only with `broadcast=1`, aligning `b` at `axis`; numpy rules otherwise."""
    if node.attr("broadcast", 0) and node.attr("axis") is not None:
        rank_a, rank_b = len(builder.shape(a)), len(builder.shape(b))
        trailing = rank_a - node.attr("axis") % rank_a - rank_b
        b = builder.call(aten.view.default, b, builder.shape(b) + [1] * trailing)
    op = {"Add": aten.add.Tensor, "Sub": aten.sub.Tensor, "Mul": aten.mul.Tensor, "Div": aten.div.Tensor}
    return binary(builder, node, a, b, op[node.op_type], node.op_type in ("Add", "Mul"))


@converter("Pow", since=1)
def _pow(builder, node, base, exponent):
    if isinstance(base, fx.Node) and isinstance(exponent, torch.Tensor) and exponent.numel() == 1:
        return builder.call(aten.pow.Tensor_Scalar, base, exponent.item())
    return builder.call(aten.pow.Tensor_Tensor, base, exponent)


@converter("Max", "Min", "Sum", "Mean", since=1)
def _variadic(builder, node, *values):
    op = {"Max": aten.maximum.default, "Min": aten.minimum.default}.get(node.op_type, aten.add.Tensor)
    result = values[0]
    for value in values[1:]:
        result = binary(builder, node, result, value, op, commutative=True)
    if node.op_type == "Mean" and len(values) > 1:
        result = builder.call(aten.div.Tensor, result, float(len(values)))
    return result


_UNARY = {
    "Relu": aten.relu.default,
    "Sigmoid": aten.sigmoid.default,
    "Tanh": aten.tanh.default,
    "Exp": aten.exp.default,
    "Log": aten.log.default,
    "Sqrt": aten.sqrt.default,
    "Neg": aten.neg.default,
    "Abs": aten.abs.default,
    "Sin": aten.sin.default,
    "Cos": aten.cos.default,
    "Reciprocal": aten.reciprocal.default,
    "Erf": aten.erf.default,
    "Atan": aten.atan.default,
    "Asinh": aten.asinh.default,
    "Sinh": aten.sinh.default,
    "Cosh": aten.cosh.default,
    "Tan": aten.tan.default,
    "Asin": aten.asin.default,
    "Acos": aten.acos.default,
    "Atanh": aten.atanh.default,
    "Acosh": aten.acosh.default,
    "Floor": aten.floor.default,
    "Ceil": aten.ceil.default,
    "Sign": aten.sign.default,
    "Not": aten.logical_not.default,
    "Softplus": aten.softplus.default,
    "HardSwish": aten.hardswish.default,
    "Mish": aten.mish.default,
    "Round": aten.round.default,  # halves to even, as ONNX
    "IsNaN": aten.isnan.default,
}


def _unary(builder, node, x, op):
    return builder.call(op, x)


for _op_type, _op in _UNARY.items():
    converter(_op_type, since=1)(functools.partial(_unary, op=_op))


@converter("Mod", since=10)
def _mod(builder, node, a, b):
    """fmod=0: the remainder with the divisor's sign (integers only, per ONNX); fmod=1: C's fmod (dividend's sign)."""
    if not node.attr("fmod", 0):
        if builder.example(a).is_floating_point() or builder.example(b).is_floating_point():
            raise ModelLoadError(f"Mod '{node.name}': fmod=0 on floating-point inputs, which ONNX does not allow; "
                                 "opwise imports fmod=0 for integers and fmod=1 for any type")
        return binary(builder, node, a, b, aten.remainder.Tensor, commutative=False)
    return binary(builder, node, a, b, aten.fmod.Tensor, commutative=False)


@converter("IsInf", since=10)
def _is_inf(builder, node, x):
    """+inf where detect_positive (default 1), −inf where detect_negative (default 1)."""
    positive, negative = node.attr("detect_positive", 1), node.attr("detect_negative", 1)
    if positive and negative:
        return builder.call(aten.isinf.default, x)
    if positive or negative:
        return builder.call(aten.eq.Scalar, x, float("inf") if positive else float("-inf"))
    return builder.call(aten.full_like.default, builder.example(x), False, dtype=torch.bool)


@converter("Trilu", since=14)
def _trilu(builder, node, x, k=None):
    """The upper (upper=1, the default) or lower triangle of the last two axes from diagonal k, zeros elsewhere:
    `aten.where` with a constant mask (exact for infinities and NaN, which a product with 0 would not be)."""
    diagonal = 0 if k is None else constant_ints(node, k, "k")[0]
    rows, columns = builder.shape(x)[-2:]
    ones = torch.ones(rows, columns, dtype=torch.bool)
    mask = ones.triu(diagonal) if node.attr("upper", 1) else ones.tril(diagonal)
    return builder.call(aten.where.self, mask, x, torch.zeros((), dtype=builder.example(x).dtype))


def scaled_silu(builder, x, alpha: float):
    """x · σ(alpha·x) (Swish, QuickGelu) as silu(alpha·x) / alpha, so the silu relaxation bounds it; silu itself where
    alpha is 1, x / 2 where it is 0."""
    if alpha == 0.0:
        return builder.call(aten.mul.Tensor, x, 0.5)
    if alpha == 1.0:
        return builder.call(aten.silu.default, x)
    return builder.call(aten.div.Tensor, builder.call(aten.silu.default, builder.call(aten.mul.Tensor, x, alpha)),
                        alpha)


@converter("Swish", since=24)
def _swish(builder, node, x):
    return scaled_silu(builder, x, float(node.attr("alpha", 1.0)))


_BITWISE = {"BitwiseAnd": aten.bitwise_and.Tensor, "BitwiseOr": aten.bitwise_or.Tensor,
            "BitwiseXor": aten.bitwise_xor.Tensor}


#: unsigned types torch's CPU kernels lack bit operations for: computed in int64 and cast back (same bits modulo
#: 2^width, the cast wrapping)
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def _bit_operation(builder, op, *values):
    dtype = builder.example(values[0]).dtype
    if dtype not in _WIDE_UNSIGNED:
        return builder.call(op, *values)
    wide = [builder.call(aten._to_copy.default, value, dtype=torch.int64) for value in values]
    return builder.call(aten._to_copy.default, builder.call(op, *wide), dtype=dtype)


@converter(*_BITWISE, since=18)
def _bitwise(builder, node, a, b):
    return _bit_operation(builder, _BITWISE[node.op_type], a, b)


@converter("BitwiseNot", since=18)
def _bitwise_not(builder, node, x):
    return _bit_operation(builder, aten.bitwise_not.default, x)


@converter("BitShift", since=11)
def _bit_shift(builder, node, x, amount):
    """x shifted left or right (`direction`, required) by `amount` bits, elementwise with broadcasting."""
    direction = node.attr("direction")
    ops = {"LEFT": aten.bitwise_left_shift.Tensor, "RIGHT": aten.bitwise_right_shift.Tensor}
    if direction not in ops:
        raise ModelLoadError(f"ONNX node '{node.name}' (BitShift, opset {node.opset}): direction {direction!r}; ONNX's "
                             "is 'LEFT' or 'RIGHT'")
    return _bit_operation(builder, ops[direction], x, amount)


@converter("LeakyRelu", since=1)
def _leaky_relu(builder, node, x):
    return builder.call(aten.leaky_relu.default, x, node.attr("alpha", 0.01))


@converter("Elu", since=1)
def _elu(builder, node, x):
    return builder.call(aten.elu.default, x, node.attr("alpha", 1.0))


@converter("Selu", since=1)
def _selu(builder, node, x):
    return builder.call(aten.elu.default, x, node.attr("alpha", 1.67326319217681884765625),
                        node.attr("gamma", 1.05070102214813232421875))


@converter("Celu", since=12)
def _celu(builder, node, x):
    return builder.call(aten.celu.default, x, node.attr("alpha", 1.0))


@converter("Softsign", since=1)
def _softsign(builder, node, x):
    """x / (1 + |x|), as torch.nn.Softsign traces."""
    return builder.call(aten.div.Tensor, x, builder.call(aten.add.Tensor, builder.call(aten.abs.default, x), 1.0))


@converter("HardSigmoid", since=1)
def _hard_sigmoid(builder, node, x):
    """max(0, min(1, alpha·x + beta)), alpha 0.2 and beta 0.5 by default (torch's hardsigmoid is 1/6, 1/2)."""
    alpha, beta = node.attr("alpha", 0.2), node.attr("beta", 0.5)
    scaled = builder.call(aten.add.Tensor, builder.call(aten.mul.Tensor, x, alpha), beta)
    return builder.call(aten.clamp.default, scaled, 0.0, 1.0)


@converter("ThresholdedRelu", since=10)
def _thresholded_relu(builder, node, x):
    """x where x > alpha, else 0 (alpha 1 by default): torch's threshold with value 0."""
    return builder.call(aten.threshold.default, x, float(node.attr("alpha", 1.0)), 0.0)


@converter("Shrink", since=9)
def _shrink(builder, node, x):
    """x − bias where x > lambd, x + bias where x < −lambd, else 0. bias 0 is hardshrink and bias = lambd softshrink;
    any other bias is their mix (bias/lambd)·softshrink + (1 − bias/lambd)·hardshrink, both 0 inside ±lambd and
    x ∓ bias outside; with lambd 0 it is x − bias·sign(x)."""
    bias, lambd = float(node.attr("bias", 0.0)), float(node.attr("lambd", 0.5))
    if lambd == 0:
        return builder.call(aten.sub.Tensor, x, builder.call(aten.mul.Tensor, builder.call(aten.sign.default, x), bias))
    if bias == 0:
        return builder.call(aten.hardshrink.default, x, lambd)
    soft = builder.call(aten.softshrink.default, x, lambd)
    if bias == lambd:
        return soft
    share = bias / lambd
    hard = builder.call(aten.hardshrink.default, x, lambd)
    return builder.call(aten.add.Tensor, builder.call(aten.mul.Tensor, soft, share),
                        builder.call(aten.mul.Tensor, hard, 1.0 - share))


@converter("PRelu", since=1)
def _prelu(builder, node, x, slope):
    return builder.call(aten._prelu_kernel.default, x, slope)


@converter("Gelu", since=20)
def _gelu(builder, node, x):
    return builder.call(aten.gelu.default, x, approximate=node.attr("approximate", "none"))


@converter("Clip", since=1)
def _clip_attributes(builder, node, x):
    return builder.call(aten.clamp.default, x, node.attr("min"), node.attr("max"))


@converter("Clip", since=11)
def _clip(builder, node, x, low=None, high=None):
    low = None if low is None else low.item()
    high = None if high is None else high.item()
    return builder.call(aten.clamp.default, x, low, high)


@converter("Identity", since=1)
def _identity(builder, node, x):
    return x


@converter("Dropout", since=1)
def _dropout(builder, node, x, *training):
    if len(node.outputs) > 1 and node.outputs[1]:
        mask = builder.call(aten.ones_like.default, builder.example(x), dtype=torch.bool)
        return x, mask
    return x


@converter("Where", since=9)
def _where(builder, node, condition, x, y):
    return builder.call(aten.where.self, condition, x, y)


def softmax(builder, node, x, axis: int, op, coerce_2d: bool):
    """`op` (softmax or log-softmax) along `axis`; with `coerce_2d` (ONNX before opset 13) over the input flattened
    to 2-D at `axis`."""
    shape = builder.shape(x)
    axis %= max(len(shape), 1)
    if isinstance(x, fx.Node):
        builder.require_batch_kept([axis], len(shape), node.op_type)
    if not coerce_2d or axis == len(shape) - 1:
        return builder.call(op, x, axis, False)
    inner = 1
    for size in shape[axis:]:
        inner *= size
    flat = builder.call(aten.view.default, x, [-1, inner])
    return builder.call(aten.view.default, builder.call(op, flat, 1, False), shape)


@converter("Softmax", "LogSoftmax", since=1)
def _softmax_2d(builder, node, x):
    """Before opset 13, Softmax flattens the input to 2-D at `axis` (default 1) and normalizes rows."""
    op = aten._softmax.default if node.op_type == "Softmax" else aten._log_softmax.default
    return softmax(builder, node, x, node.attr("axis", 1), op, coerce_2d=True)


@converter("Softmax", "LogSoftmax", since=13)
def _softmax_axis(builder, node, x):
    op = aten._softmax.default if node.op_type == "Softmax" else aten._log_softmax.default
    return softmax(builder, node, x, node.attr("axis", -1), op, coerce_2d=False)
