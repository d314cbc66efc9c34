"""Fill `node.meta["opwise"]` with a NodeInfo: op key, shape, dtype, module path, source, input dependence."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from opwise.tracing.graph import NodeInfo, op_key


def _tensor_meta(value: Any) -> tuple[tuple[int, ...] | None, torch.dtype | None]:
    if isinstance(value, torch.Tensor):
        return tuple(int(s) for s in value.shape), value.dtype
    return None, None


def _module_path(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path, _ = list(stack.values())[-1]
    return path or None


def annotate(module: fx.GraphModule, explained: list[bool], constant_sources: dict[str, str]) -> fx.GraphModule:
    """Needs `node.meta["val"]` (export and make_fx both set it) for shapes.

    `explained` has one flag per placeholder; a node depends on the input when any of its
    inputs does, so masks and position ids derived from constant inputs stay constants.
    """
    placeholders = iter(explained)
    dependent: set[fx.Node] = set()
    for node in module.graph.nodes:
        if node.op == "placeholder":
            depends = next(placeholders)
        elif node.op in ("call_function", "output"):
            depends = any(arg in dependent for arg in node.all_input_nodes)
        else:
            depends = False
        if depends:
            dependent.add(node)
        shape, dtype = _tensor_meta(node.meta.get("val"))
        source = constant_sources.get(node.target) if node.op == "get_attr" else None
        node.meta["opwise"] = NodeInfo(
            op=op_key(node),
            shape=shape,
            dtype=dtype,
            module_path=_module_path(node),
            source=source,
            depends_on_input=depends,
        )
    return module
