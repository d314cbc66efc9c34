"""Operators that produce or convert constants: Constant, Shape, Size, ConstantOfShape, Range, Cast, CastLike,
NonZero, EyeLike (an identity of the input's shape: a constant, refused at another batch size when the batch
axis is one of its two axes).

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


def onnx_dtype(to) -> torch.dtype:
    """The torch dtype of an ONNX element type (a TensorProto code, or a numpy type name)."""
    from onnx import helper

    numpy_type = helper.tensor_dtype_to_np_dtype(to) if isinstance(to, int) else numpy.dtype(to.lower())
    return torch.from_numpy(numpy.zeros(0, dtype=numpy_type)).dtype


@converter("Cast", since=1)
def _cast(builder, node, x):
    return cast_to(builder, x, onnx_dtype(node.attr("to")))


@converter("CastLike", since=15)
def _cast_like(builder, node, x, target):
    """Cast to the element type of `target` (only its type is read), as Cast does."""
    return cast_to(builder, x, builder.example(target).dtype)


@converter("EyeLike", since=9)
def _eye_like(builder, node, x):
    """Ones on diagonal k of a 2-D tensor of x's shape, of type `dtype` (default x's)."""
    rows, columns = builder.shape(x)
    if isinstance(x, fx.Node):
        builder.require_batch_kept([0], 2, "EyeLike of a batched input (its rows are samples)")
    dtype = builder.example(x).dtype if node.attr("dtype") is None else onnx_dtype(node.attr("dtype"))
    diagonal = torch.arange(columns)[None, :] - torch.arange(rows)[:, None] == node.attr("k", 0)
    return diagonal.to(dtype)


def cast_to(builder, x, dtype: torch.dtype):
    """`x` as `dtype` (`aten._to_copy`), or `x` itself where it has that dtype already."""
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
