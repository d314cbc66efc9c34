"""Indexed reads and writes with constant indices: GatherND to `aten.index.Tensor`, ScatterND to
`aten.index_put` (reduction none or add) or `aten.scatter_reduce` over the indexed axes flattened (mul, max, min),
ScatterElements (and its opset 9 name Scatter) to `aten.scatter` / `aten.scatter_add` / `aten.scatter_reduce`,
OneHot to a comparison with `arange` and `aten.where`, Compress to `aten.index_select`; ReverseSequence to
`aten.gather` along the time axis, TensorScatter (opset 24's KV-cache write) to `aten.index_select` (`aten.gather`
where samples write at different positions) of the cache and the update joined, MaxUnpool to `aten.index_put` of the
values into zeros (its indices run over the whole tensor, as MaxPool's; with `output_shape`, over a tensor of that
shape, as onnxruntime and torch read them, where onnx's reference evaluator places the unpooled tensor in a corner).

The indices (GatherND, ScatterND, ScatterElements, MaxUnpool), the condition (Compress), ReverseSequence's lengths,
TensorScatter's write indices and OneHot's depth and values must be
constants: indices that depend on the model input would route values by the input, which neither the bound engine
nor LRP can follow, so they are refused. Reads and writes that pick along axis 0 (the batch axis) are refused when
importing at another batch size than the model declares. The bound engine bounds gathers, replacing writes and
summing writes; writes that multiply or keep a maximum are imported for the forward pass only (the bound engine
refuses `scatter_reduce` with reduce 'prod', 'amax' or 'amin').
"""

from __future__ import annotations

import math

import torch
from torch import fx

from opwise.errors import InputDependentArgument, ModelLoadError
from opwise.tracing.onnx.ops.shape import constant_ints
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten

#: ONNX reduction attribute -> torch's scatter_reduce name (None: a plain write)
_REDUCTIONS = {"none": None, "add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _dynamic(value) -> bool:
    return isinstance(value, fx.Node)


def _constant_indices(node, indices, what: str = "indices") -> torch.Tensor:
    if _dynamic(indices):
        raise InputDependentArgument(f"{node.op_type} '{node.name}': its {what} depend on the model input, which would route "
                             f"values by the input; opwise imports only constant {what}")
    return indices


def _reduction(node) -> str | None:
    reduction = node.attr("reduction", "none")
    if reduction not in _REDUCTIONS:
        raise ModelLoadError(f"{node.op_type} '{node.name}': reduction {reduction!r} is not imported; opwise imports "
                             "reduction none, add, mul, max and min")
    return _REDUCTIONS[reduction]


def _wrapped(indices: torch.Tensor, sizes) -> torch.Tensor:
    """Negative indices count from the end of the axis (`sizes` broadcasts against `indices`)."""
    sizes = torch.as_tensor(sizes, dtype=torch.long)
    return torch.where(indices < 0, indices + sizes, indices).long()


def _per_sample(builder, node, indices: torch.Tensor) -> torch.Tensor:
    """Indices whose leading axis walks the batch, for the batch size being imported: the declared batch's
    indices when it is 1 (every sample reads as the one sample did), else refused."""
    if not builder.rebatched or indices.shape[0] == builder.batch_size:
        return indices
    if indices.shape[0] != 1:
        raise builder.batch_error(f"{node.op_type} indices of shape {list(indices.shape)} name samples")
    return indices.expand(builder.batch_size, *indices.shape[1:])


@converter("GatherND", since=11)
def _gather_nd(builder, node, data, indices):
    """out[b.., i..] = data[b.., indices[b.., i.., :]..] with the first `batch_dims` axes shared by data and
    indices: one `aten.index.Tensor` with aranges over the batch axes and a column of the indices per indexed axis."""
    indices = _constant_indices(node, indices)
    shape = builder.shape(data)
    batch_dims = int(node.attr("batch_dims", 0))
    depth = indices.shape[-1]
    if batch_dims + depth > len(shape) or batch_dims >= indices.dim():
        raise ModelLoadError(f"GatherND '{node.name}': indices of shape {list(indices.shape)} with batch_dims "
                             f"{batch_dims} do not fit data of shape {shape}")
    if _dynamic(data):
        if batch_dims == 0:
            if depth:
                builder.require_batch_kept([0], len(shape), "GatherND with batch_dims=0")
        else:
            indices = _per_sample(builder, node, indices)
    indices = _wrapped(indices, shape[batch_dims:batch_dims + depth])
    lead = list(indices.shape[:-1])
    columns = []
    for axis in range(batch_dims):
        reshaped = [1] * len(lead)
        reshaped[axis] = lead[axis]
        columns.append(torch.arange(lead[axis]).reshape(reshaped).expand(lead).contiguous())
    columns += [indices[..., axis].contiguous() for axis in range(depth)]
    if not columns:
        return data
    return builder.call(aten.index.Tensor, data, columns)


@converter("ScatterND", since=11)
def _scatter_nd(builder, node, data, indices, updates):
    """A copy of data with data[indices[i.., :]] written (or combined by `reduction`) from updates[i..]."""
    indices = _constant_indices(node, indices)
    reduce = _reduction(node)
    shape = builder.shape(data)
    depth = indices.shape[-1]
    if depth > len(shape):
        raise ModelLoadError(f"ScatterND '{node.name}': indices of shape {list(indices.shape)} do not fit data "
                             f"of shape {shape}")
    if (_dynamic(data) or _dynamic(updates)) and depth:
        builder.require_batch_kept([0], len(shape), "ScatterND (its indices pick along axis 0)")
    indices = _wrapped(indices, shape[:depth])
    columns = [indices[..., axis].reshape(-1) for axis in range(depth)]
    rows = math.prod(indices.shape[:-1])
    updates = builder.view(updates, [rows] + shape[depth:])
    if reduce in (None, "sum"):
        return builder.call(aten.index_put.default, data, columns, updates, reduce == "sum")
    flat = torch.zeros(rows, dtype=torch.long)
    for column, size in zip(columns, shape[:depth]):
        flat = flat * size + column
    flat = flat.reshape([rows] + [1] * (len(shape) - depth)).expand([rows] + shape[depth:]).contiguous()
    flat_data = builder.view(data, [math.prod(shape[:depth])] + shape[depth:])
    written = builder.call(aten.scatter_reduce.two, flat_data, 0, flat, updates, reduce, include_self=True)
    return builder.view(written, shape)


@converter("Scatter", since=9)
@converter("ScatterElements", since=11)
def _scatter_elements(builder, node, data, indices, updates):
    """out = data with out[..., indices[i, j], ...] = updates[i, j] along `axis` (combined by `reduction`)."""
    indices = _constant_indices(node, indices)
    reduce = _reduction(node)
    shape = builder.shape(data)
    axis = node.attr("axis", 0) % len(shape)
    if _dynamic(data) or _dynamic(updates):
        builder.require_batch_kept([axis], len(shape), node.op_type)
        indices = _per_sample(builder, node, indices)
        data, updates = (v if _dynamic(v) else _per_sample(builder, node, v) for v in (data, updates))
        shape = builder.shape(data)
    indices = _wrapped(indices, shape[axis])
    if reduce is None:
        return builder.call(aten.scatter.src, data, axis, indices, updates)
    if reduce == "sum":
        return builder.call(aten.scatter_add.default, data, axis, indices, updates)
    return builder.call(aten.scatter_reduce.two, data, axis, indices, updates, reduce, include_self=True)


@converter("OneHot", since=9)
def _one_hot(builder, node, indices, depth, values):
    """values[1] where the position along the new `axis` equals the index (negative ones counted from depth),
    values[0] elsewhere; an index outside [-depth, depth) gives a row of values[0]."""
    depth = constant_ints(node, depth, "depth")[0]
    if _dynamic(values):
        raise InputDependentArgument(f"OneHot '{node.name}': its values depend on the model input; opwise imports only "
                             "constant values")
    rank = len(builder.shape(indices)) + 1
    axis = node.attr("axis", -1) % rank
    if _dynamic(indices) and axis == 0:
        builder.require_batch_kept([0], rank, "OneHot with axis=0")
    positions = torch.arange(depth).reshape([depth] + [1] * (rank - 1 - axis))
    wrapped = builder.call(aten.remainder.Scalar, indices, depth)
    inside = builder.call(aten.logical_and.default, builder.call(aten.ge.Scalar, indices, -depth),
                          builder.call(aten.lt.Scalar, indices, depth))
    hot = builder.call(aten.eq.Tensor, builder.call(aten.unsqueeze.default, wrapped, axis), positions)
    hot = builder.call(aten.logical_and.default, hot, builder.call(aten.unsqueeze.default, inside, axis))
    values = values.reshape(-1)
    return builder.call(aten.where.self, hot, values[1].clone(), values[0].clone())


@converter("Compress", since=9)
def _compress(builder, node, x, condition):
    """The slices along `axis` where the condition is true (the flattened elements without `axis`)."""
    condition = _constant_indices(node, condition, "condition")
    kept = torch.nonzero(condition.reshape(-1).bool()).reshape(-1)
    axis = node.attr("axis")
    shape = builder.shape(x)
    if axis is None:
        if _dynamic(x) and len(shape) > 1:
            builder.require_batch_kept([0], len(shape), "Compress without axis (it flattens the batch axis)")
        x, axis = builder.view(x, [math.prod(shape)]), 0
    else:
        axis %= len(shape)
        if _dynamic(x):
            builder.require_batch_kept([axis], len(shape), "Compress")
    return builder.call(aten.index_select.default, x, axis, kept)


def _per_sample_constant(builder, node, values: torch.Tensor, count: int, what: str, along_batch: bool) -> torch.Tensor:
    """A constant with one entry per sample (`count` of them), refused where it has another number of entries; where
    the samples are the batch (`along_batch`) and the model declares one, its entry serves every sample imported."""
    values = values.reshape(-1).to(torch.int64)
    if along_batch and builder.rebatched and builder.declared_batch == 1 and values.numel() == 1:
        values = values.expand(count)
    if values.numel() != count:
        raise ModelLoadError(f"ONNX node '{node.name}' ({node.op_type}, opset {node.opset}): its {what} has "
                             f"{values.numel()} entries for {count} samples; import the model with "
                             f"batch_size={values.numel()}, the batch size it was written for")
    return values


@converter("ReverseSequence", since=10)
def _reverse_sequence(builder, node, x, sequence_lens):
    """Sample b's first sequence_lens[b] steps along `time_axis` reversed, the rest kept: a gather along the time
    axis with the positions lens − 1 − t (t < lens) or t."""
    shape = builder.shape(x)
    batch_axis, time_axis = int(node.attr("batch_axis", 1)), int(node.attr("time_axis", 0))
    if {batch_axis, time_axis} != {0, 1}:
        raise ModelLoadError(f"ONNX node '{node.name}' (ReverseSequence, opset {node.opset}): batch_axis={batch_axis}, "
                             f"time_axis={time_axis}; ONNX requires one to be 0 and the other 1")
    lengths = _per_sample_constant(builder, node, _constant_indices(node, sequence_lens, "sequence_lens"),
                                   shape[batch_axis], "sequence_lens", along_batch=batch_axis == 0)
    if _dynamic(x):
        builder.require_batch_kept([time_axis], len(shape), "ReverseSequence (it reverses along axis 0)")
    steps = torch.arange(shape[time_axis]).reshape(1, -1)
    reversed_positions = torch.where(steps < lengths.reshape(-1, 1), lengths.reshape(-1, 1) - 1 - steps, steps)
    if time_axis == 0:
        reversed_positions = reversed_positions.t()
    index = reversed_positions.reshape(shape[:2] + [1] * (len(shape) - 2)).expand(shape).contiguous()
    return builder.call(aten.gather.default, x, time_axis, index)


@converter("TensorScatter", since=24)
def _tensor_scatter(builder, node, past_cache, update, write_indices=None):
    """The cache with update written along `axis` from each sample's write index on (wrapping around in mode
    'circular'): the positions of [cache, update] joined along the axis that the result reads."""
    shape, mode = builder.shape(past_cache), node.attr("mode", "linear")
    axis = int(node.attr("axis", -2)) % len(shape)
    length, capacity = builder.shape(update)[axis], shape[axis]
    if mode not in ("linear", "circular") or axis == 0:
        raise ModelLoadError(f"ONNX node '{node.name}' (TensorScatter, opset {node.opset}): mode {mode!r}, axis "
                             f"{axis}; ONNX's modes are 'linear' and 'circular', on an axis other than 0")
    starts = torch.zeros(shape[0], dtype=torch.int64) if write_indices is None else _per_sample_constant(
        builder, node, _constant_indices(node, write_indices, "write_indices"), shape[0], "write_indices", True)
    if mode == "linear" and int((starts + length).max()) > capacity:
        raise ModelLoadError(f"ONNX node '{node.name}' (TensorScatter, opset {node.opset}): writing {length} steps from "
                             f"{starts.tolist()} passes the cache's {capacity} in mode 'linear'")
    sources = torch.arange(capacity).repeat(shape[0], 1)  # per sample, the position of [cache, update] each reads
    for sample, start in enumerate(starts.tolist()):
        for step in range(length):
            sources[sample, (start + step) % capacity] = capacity + step
    joined = builder.call(aten.cat.default, [past_cache, update], axis)
    if bool((sources == sources[0]).all()):
        return builder.call(aten.index_select.default, joined, axis, sources[0].contiguous())
    index_shape = [shape[0]] + [1] * (len(shape) - 1)
    index_shape[axis] = capacity
    index = sources.reshape(index_shape).expand(shape).contiguous()
    return builder.call(aten.gather.default, joined, axis, index)


@converter("MaxUnpool", since=9)
def _max_unpool(builder, node, x, indices, output_shape=None):
    """Zeros of the unpooled shape (`output_shape` where given, as onnxruntime and torch read it) with x written at
    `indices`, flat positions in that whole tensor (as MaxPool's)."""
    indices = _constant_indices(node, indices)
    shape = builder.shape(x)
    kernel = list(node.attr("kernel_shape"))
    rank = len(kernel)
    strides = list(node.attr("strides", [1] * rank))
    pads = list(node.attr("pads", [0] * 2 * rank))
    unpooled = shape[:2] + [(size - 1) * stride - (pads[axis] + pads[rank + axis]) + k
                            for axis, (size, stride, k) in enumerate(zip(shape[2:], strides, kernel))]
    target = constant_ints(node, output_shape, "output_shape")
    if target is not None:
        if len(target) != len(shape) or target[:2] != shape[:2]:
            raise ModelLoadError(f"ONNX node '{node.name}' (MaxUnpool, opset {node.opset}): output_shape {target} for "
                                 f"an input of shape {shape}; ONNX requires the input's batch and channels")
        unpooled = list(target)
    if _dynamic(x):
        builder.require_batch_kept([0], len(shape), "MaxUnpool (its indices run over the whole tensor, samples too)")
    zeros = torch.zeros(math.prod(unpooled), dtype=builder.example(x).dtype)
    flat = builder.call(aten.index_put.default, zeros, [indices.reshape(-1).to(torch.int64)],
                        builder.view(x, [math.prod(shape)]))
    return builder.view(flat, unpooled)
