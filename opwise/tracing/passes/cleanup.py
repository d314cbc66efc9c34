"""Drop nodes that compute nothing the output needs (runtime asserts, metadata checks, copies, dead code)."""

from __future__ import annotations

import torch
from torch import fx

aten = torch.ops.aten

_NO_OP_TARGETS = {
    aten._assert_tensor_metadata.default,
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
    aten._assert_async.msg,
}

_IDENTITY_TARGETS = {aten.alias.default, aten.lift_fresh_copy.default, aten.detach.default}


def _is_plain_clone(node: fx.Node) -> bool:
    """A `clone` of a contiguous tensor (eval-mode dropout); one that makes a permuted tensor contiguous
    stays, since a later `view` needs that layout."""
    if node.target is not aten.clone.default:
        return False
    source = node.args[0].meta.get("val")
    return isinstance(source, torch.Tensor) and source.is_contiguous()


def _is_same_type_copy(node: fx.Node) -> bool:
    """`_to_copy` that changes neither dtype nor device (HF casts to the dtype a tensor already has)."""
    if node.target is not aten._to_copy.default:
        return False
    source, result = node.args[0].meta.get("val"), node.meta.get("val")
    if not isinstance(source, torch.Tensor) or not isinstance(result, torch.Tensor):
        return False
    return source.dtype == result.dtype and source.device == result.device


def _is_identity_restride(node: fx.Node) -> bool:
    """`as_strided(_)` keeping the size and, on every dimension longer than one, the stride: the
    fx fallback gets one after the mean in a 1x1 adaptive average pool, to mark channels-last."""
    if node.target not in (aten.as_strided.default, aten.as_strided_.default):
        return False
    source = node.args[0].meta.get("val")
    size, stride = node.args[1], node.args[2]
    offset = node.args[3] if len(node.args) > 3 else node.kwargs.get("storage_offset")
    if not isinstance(source, torch.Tensor) or list(source.shape) != list(size) or offset not in (None, 0):
        return False
    return all(length == 1 or a == b for length, a, b in zip(size, stride, source.stride()))


def remove_no_op_nodes(module: fx.GraphModule) -> fx.GraphModule:
    """Remove asserts, copies (`clone` of contiguous tensors, same-type `_to_copy`, size-keeping
    `as_strided`: the graph is functional, values are equal) and dead code, so engines see only real operations.

    >>> import torch, opwise
    >>> graph = opwise.trace(torch.nn.Dropout(), torch.randn(2, 3))  # eval-mode dropout is a clone
    >>> len(list(graph.call_nodes()))
    0
    """
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _NO_OP_TARGETS:
            graph.erase_node(node)
        elif node.target in _IDENTITY_TARGETS or any(
            test(node) for test in (_is_plain_clone, _is_same_type_copy, _is_identity_restride)
        ):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    graph.eliminate_dead_code()
    module.recompile()
    return module
