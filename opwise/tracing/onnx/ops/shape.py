"""Operators that move values without computing new ones: Reshape, Flatten, Transpose, Concat, Slice,
Squeeze, Unsqueeze, Pad, Split, Expand, Gather, Tile, CenterCropPad; to view, permute, cat, slice, constant_pad_nd, ...

Axis arguments that opsets moved from attributes to inputs (Squeeze/Unsqueeze at 13, Slice at 10,
Pad at 11, Split at 13) must be constants; every converter reads them through `constant_ints`.
"""

from __future__ import annotations

import math

import torch
from torch import fx

from opwise.errors import InputDependentArgument, ModelLoadError
from opwise.tracing.onnx.registry import converter

aten = torch.ops.aten


def constant_ints(node, value, what: str) -> list[int] | None:
    """The integers of a constant input (None when omitted); an input-dependent one cannot be specialized."""
    if value is None:
        return None
    if isinstance(value, fx.Node):
        raise InputDependentArgument(
            f"ONNX node '{node.name}' ({node.op_type}): its {what} depend on the model input; opwise graphs are "
            "shape-specialized and need them constant"
        )
    return [int(v) for v in value.reshape(-1).tolist()]


def _dynamic(value) -> bool:
    return isinstance(value, fx.Node)


def _attribute_then_input(op_type: str, moved_at: int, name: str):
    """Register `function(builder, node, x, ints)` for both forms: `name` an attribute, then an input."""

    def register(function):
        def from_attribute(builder, node, x):
            value = node.attr(name)
            return function(builder, node, x, None if value is None else list(value))

        def from_input(builder, node, x, value=None):
            return function(builder, node, x, constant_ints(node, value, name))

        converter(op_type, since=1)(from_attribute)
        converter(op_type, since=moved_at)(from_input)
        return function

    return register


@_attribute_then_input("Reshape", 5, "shape")
def _reshape(builder, node, x, target: list[int]):
    """0 copies the input's dim (unless allowzero), -1 is inferred; the leading dim follows the batch."""
    shape = builder.shape(x)
    if not node.attr("allowzero", 0):
        target = [shape[i] if t == 0 else t for i, t in enumerate(target)]
    batched = builder.rebatched and _dynamic(x) and shape and shape[0] == builder.batch_size
    if batched and target and target[0] == builder.declared_batch:
        target[0] = builder.batch_size
    if -1 in target:
        known = math.prod(t for t in target if t != -1)
        target[target.index(-1)] = math.prod(shape) // known if known else 0
    if math.prod(target) != math.prod(shape):
        if batched:
            raise builder.batch_error(f"Reshape of shape {shape} to {target} does not keep the batch axis")
        raise ModelLoadError(f"Reshape '{node.name}' cannot reshape {shape} to {target}")
    if batched and target[0] != builder.batch_size:
        raise builder.batch_error(f"Reshape of shape {shape} to {target} does not keep the batch axis")
    return builder.view(x, target)


@converter("Flatten", since=1)
def _flatten(builder, node, x):
    shape = builder.shape(x)
    axis = node.attr("axis", 1) % (len(shape) + 1) if shape else 0
    if _dynamic(x) and axis == 0:
        builder.require_batch_kept([0], len(shape), "Flatten with axis=0")
    return builder.view(x, [math.prod(shape[:axis]), math.prod(shape[axis:])])


@converter("Transpose", since=1)
def _transpose(builder, node, x):
    rank = len(builder.shape(x))
    perm = list(node.attr("perm", list(reversed(range(rank)))))
    if _dynamic(x) and perm and perm[0] != 0:
        builder.require_batch_kept([0], rank, f"Transpose with perm {perm}")
    return builder.call(aten.permute.default, x, perm)


@converter("Concat", since=1)
def concat(builder, node, *values):
    values = [v for v in values if v is not None]
    rank = len(builder.shape(values[0]))
    axis = node.attr("axis", 1) % rank
    if any(_dynamic(v) for v in values):
        builder.require_batch_kept([axis], rank, "Concat")
    return builder.call(aten.cat.default, list(values), axis)


@converter("Slice", since=1)
def _slice_attributes(builder, node, x):
    return _slice(builder, node, x, list(node.attr("starts")), list(node.attr("ends")), node.attr("axes"), None)


@converter("Slice", since=10)
def _slice_inputs(builder, node, x, starts, ends, axes=None, steps=None):
    read = lambda value, what: constant_ints(node, value, what)  # noqa: E731
    return _slice(builder, node, x, read(starts, "starts"), read(ends, "ends"), read(axes, "axes"), read(steps, "steps"))


def _slice(builder, node, x, starts, ends, axes, steps):
    shape = builder.shape(x)
    axes = list(range(len(starts))) if axes is None else [a % len(shape) for a in axes]
    steps = steps or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = builder.shape(x)[axis]
        kept = range(size)[slice(start, end, step)]
        if len(kept) == size and step == 1:
            continue
        if _dynamic(x):
            builder.require_batch_kept([axis], len(shape), "Slice")
        if step > 0:
            x = builder.call(aten.slice.Tensor, x, axis, kept.start, kept.stop if len(kept) else kept.start, step)
        else:
            x = builder.call(aten.index_select.default, x, axis, torch.tensor(list(kept), dtype=torch.long))
    return x


@_attribute_then_input("Squeeze", 13, "axes")
def _squeeze(builder, node, x, axes):
    shape = builder.shape(x)
    if axes is None:
        if _dynamic(x) and builder.rebatched and builder.declared_batch == 1:
            raise builder.batch_error("Squeeze without axes drops the batch axis of the declared batch size 1")
        axes = [axis for axis, size in enumerate(shape) if size == 1]
    axes = sorted(a % len(shape) for a in axes)
    if _dynamic(x):
        builder.require_batch_kept(axes, len(shape), "Squeeze")
    return builder.call(aten.squeeze.dims, x, axes)


@_attribute_then_input("Unsqueeze", 13, "axes")
def _unsqueeze(builder, node, x, axes):
    rank = len(builder.shape(x)) + len(axes)
    axes = sorted(a % rank for a in axes)
    if _dynamic(x):
        builder.require_batch_kept(axes, rank, "Unsqueeze")
    for axis in axes:
        x = builder.call(aten.unsqueeze.default, x, axis)
    return x


@converter("Pad", since=2)
def _pad_attributes(builder, node, x):
    return _pad(builder, node, x, list(node.attr("pads")), node.attr("value", 0.0), None)


@converter("Pad", since=11)
def _pad_inputs(builder, node, x, pads, value=None, axes=None):
    value = 0.0 if value is None else value.item()
    return _pad(builder, node, x, constant_ints(node, pads, "pads"), value, constant_ints(node, axes, "axes"))


def _pad(builder, node, x, pads, value, axes):
    rank = len(builder.shape(x))
    if node.attr("mode", "constant") != "constant":
        raise ModelLoadError(f"Pad '{node.name}' uses mode '{node.attr('mode')}'; opwise imports only mode 'constant'")
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    begins, ends = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[i], pads[i + len(axes)]
    if _dynamic(x) and (begins[0] or ends[0]):
        builder.require_batch_kept([0], rank, "Pad")
    torch_pads = []
    for begin, end in reversed(list(zip(begins, ends))):
        torch_pads += [begin, end]
    return builder.call(aten.constant_pad_nd.default, x, torch_pads, value)


@converter("Split", since=1)
def _split_attribute(builder, node, x, split=None):
    sizes = node.attr("split") or constant_ints(node, split, "split sizes")
    return _split(builder, node, x, sizes)


@converter("Split", since=13)
def _split_input(builder, node, x, split=None):
    return _split(builder, node, x, constant_ints(node, split, "split sizes"))


def _split(builder, node, x, sizes):
    shape = builder.shape(x)
    axis = node.attr("axis", 0) % len(shape)
    if sizes is None:
        count = len(node.outputs)
        sizes = [math.ceil(shape[axis] / count)] * count
        sizes[-1] = shape[axis] - sum(sizes[:-1])
    if _dynamic(x):
        builder.require_batch_kept([axis], len(shape), "Split")
    parts, start = [], 0
    for size in sizes:
        parts.append(builder.call(aten.slice.Tensor, x, axis, start, start + size))
        start += size
    return tuple(parts)


@converter("Expand", since=8)
def _expand(builder, node, x, shape):
    target = list(torch.broadcast_shapes(tuple(builder.shape(x)), tuple(constant_ints(node, shape, "target shape"))))
    if _dynamic(x) and len(target) > len(builder.shape(x)):
        builder.require_batch_kept([0], len(target), "Expand adding leading axes (moving the batch axis)")
    return builder.expand(x, target)


@converter("Tile", since=6)
def _tile(builder, node, x, repeats):
    repeats = constant_ints(node, repeats, "repeats")
    if _dynamic(x) and repeats[0] != 1:
        builder.require_batch_kept([0], len(repeats), "Tile")
    return builder.call(aten.repeat.default, x, repeats)


def _wrapped(indices: torch.Tensor, size: int) -> torch.Tensor:
    """ONNX's negative indices count from the end of an axis of `size`; as non-negative int64."""
    return torch.where(indices < 0, indices + size, indices).long()


@converter("Gather", since=1)
def _gather(builder, node, data, indices):
    shape = builder.shape(data)
    axis = node.attr("axis", 0) % len(shape)
    if _dynamic(indices):
        if axis == 0 and len(shape) == 2 and not _dynamic(data):
            return builder.call(aten.embedding.default, data, indices)
        raise InputDependentArgument(f"Gather '{node.name}': input-dependent indices are imported only as an embedding lookup")
    if _dynamic(data):
        builder.require_batch_kept([axis], len(shape), "Gather")
    indices = _wrapped(indices, shape[axis])
    if indices.dim() == 0:
        return builder.call(aten.select.int, data, axis, int(indices))
    picked = builder.call(aten.index_select.default, data, axis, indices.reshape(-1))
    return builder.view(picked, shape[:axis] + list(indices.shape) + shape[axis + 1 :])


@converter("DepthToSpace", since=1)
def _depth_to_space(builder, node, x):
    """[N, C·b², H, W] to [N, C, H·b, W·b]: DCR (the default) reads the block offsets before the channels, CRD after."""
    _, channels, height, width = builder.shape(x)
    block = int(node.attr("blocksize"))
    if node.attr("mode", b"DCR") in (b"CRD", "CRD"):
        split, order = [-1, channels // block**2, block, block, height, width], [0, 1, 4, 2, 5, 3]
    else:
        split, order = [-1, block, block, channels // block**2, height, width], [0, 3, 4, 1, 5, 2]
    moved = builder.call(aten.permute.default, builder.view(x, split), order)  # -1: any batch
    return builder.view(moved, [-1, channels // block**2, height * block, width * block])


@converter("SpaceToDepth", since=1)
def _space_to_depth(builder, node, x):
    """[N, C, H, W] to [N, C·b², H/b, W/b], the block offsets before the channels (DepthToSpace's DCR inverse)."""
    _, channels, height, width = builder.shape(x)
    block = int(node.attr("blocksize"))
    split = builder.view(x, [-1, channels, height // block, block, width // block, block])  # -1: any batch
    moved = builder.call(aten.permute.default, split, [0, 3, 5, 1, 2, 4])
    return builder.view(moved, [-1, channels * block * block, height // block, width // block])


@converter("GatherElements", since=11)
def _gather_elements(builder, node, data, indices):
    """out[i][j] = data[indices[i][j]][j] along `axis` (torch.gather); the indices must be constants."""
    shape = builder.shape(data)
    axis = node.attr("axis", 0) % len(shape)
    if _dynamic(indices):
        raise InputDependentArgument(f"GatherElements '{node.name}': input-dependent indices cannot be imported (the graph would "
                             "route values by the input); only constant indices are")
    if _dynamic(data):
        builder.require_batch_kept([axis], len(shape), "GatherElements")
        if builder.rebatched and indices.shape[0] != builder.batch_size:  # the same indices for every sample
            if indices.shape[0] != 1:
                raise builder.batch_error(f"GatherElements indices of shape {list(indices.shape)} name samples")
            indices = indices.expand(builder.batch_size, *indices.shape[1:])
    indices = _wrapped(indices, shape[axis])
    return builder.call(aten.gather.default, data, axis, indices)


@converter("CenterCropPad", since=18)
def _center_crop_pad(builder, node, x, target):
    """x cropped to the centre (the extra element on the right cut off) or padded with zeros around it (the extra
    element on the right added) to `target` along `axes` (default every axis)."""
    shape = builder.shape(x)
    sizes = constant_ints(node, target, "shape")
    axes = [a % len(shape) for a in node.attr("axes", range(len(shape)))]
    if len(axes) != len(sizes):
        raise ModelLoadError(f"ONNX node '{node.name}' (CenterCropPad, opset {node.opset}): shape {sizes} for axes "
                             f"{axes}; ONNX requires one size per axis")
    pads = [0] * (2 * len(shape))
    for axis, size in zip(axes, sizes):
        if size == shape[axis]:
            continue
        if _dynamic(x):
            builder.require_batch_kept([axis], len(shape), "CenterCropPad")
        if size < shape[axis]:
            start = (shape[axis] - size) // 2
            x = builder.call(aten.slice.Tensor, x, axis, start, start + size)
        else:
            before = (size - shape[axis]) // 2
            last_first = 2 * (len(shape) - 1 - axis)  # torch lists the pads of the last axis first
            pads[last_first], pads[last_first + 1] = before, size - shape[axis] - before
    if any(pads):
        x = builder.call(aten.constant_pad_nd.default, x, pads, 0)
    return x
