"""Operators that produce or convert constants: Constant, Shape, Size, ConstantOfShape, Range, Cast, NonZero.

Graphs are shape-specialized, so Shape of any value is a constant; with the constant folding in
`GraphBuilder.call`, whole shape subgraphs (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) vanish.
"""

from __future__ import annotations

import numpy
import torch
from torch import fx

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


@converter("Constant", since=1)
def _constant(builder, node):
    if node.attr("value") is not None:
        return node.attr("value")
    for name, dtype in (("value_float", torch.float32), ("value_floats", torch.float32), ("value_int", torch.int64),
                        ("value_ints", torch.int64), ("value_string", None), ("value_strings", None),
                        ("sparse_value", None)):
        if node.attr(name) is not None:
            if dtype is None:
                raise ModelLoadError(f"Constant '{node.name}' holds strings or a sparse tensor, which opwise does not import")
            return torch.tensor(node.attr(name), dtype=dtype)
    raise ModelLoadError(f"Constant '{node.name}' has no value attribute")


@converter("Shape", since=1)
def _shape(builder, node, x):
    shape = builder.shape(x)
    return torch.tensor(shape[node.attr("start", 0) : node.attr("end", len(shape))], dtype=torch.int64)


@converter("Size", since=1)
def _size(builder, node, x):
    return torch.tensor(builder.example(x).numel(), dtype=torch.int64)


@converter("ConstantOfShape", since=9)
def _constant_of_shape(builder, node, shape):
    value = node.attr("value")
    value = torch.zeros(1) if value is None else value
    return torch.full([int(s) for s in _constant_input(node, shape).tolist()], value.reshape(-1)[0].item(), dtype=value.dtype)


@converter("Range", since=11)
def _range(builder, node, start, limit, delta):
    start, limit, delta = (_constant_input(node, v) for v in (start, limit, delta))
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@converter("NonZero", since=9)
def _nonzero(builder, node, x):
    return torch.nonzero(_constant_input(node, x)).t().contiguous()


@converter("Cast", since=1)
def _cast(builder, node, x):
    from onnx import helper

    to = node.attr("to")
    numpy_type = helper.tensor_dtype_to_np_dtype(to) if isinstance(to, int) else numpy.dtype(to.lower())
    dtype = torch.from_numpy(numpy.zeros(0, dtype=numpy_type)).dtype
    if builder.example(x).dtype == dtype:
        return x
    return builder.call(aten._to_copy.default, x, dtype=dtype)


def _constant_input(node, value) -> torch.Tensor:
    if isinstance(value, fx.Node):
        raise ModelLoadError(
            f"ONNX node '{node.name}' ({node.op_type}) needs a constant input but got one that depends on the "
            "model input; opwise graphs are shape-specialized"
        )
    return value
