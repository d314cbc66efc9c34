"""Drop nodes that compute nothing the output needs (runtime asserts, metadata checks, dead code)."""

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


def remove_no_op_nodes(module: fx.GraphModule) -> fx.GraphModule:
    """Remove asserts and identity copies, then dead code, so engines see only real operations."""
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _NO_OP_TARGETS:
            graph.erase_node(node)
        elif node.target in _IDENTITY_TARGETS:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    graph.eliminate_dead_code()
    module.recompile()
    return module
