"""Fill `node.meta["opwise"]` with a NodeInfo: op key, shape, dtype, module path, source, input dependence."""

from __future__ import annotations

import dataclasses
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


def reannotate(module: fx.GraphModule, explained: list[bool]) -> fx.GraphModule:
    """Annotate a rewritten module: shapes by running zeros shaped like its placeholders through it
    (`meta["val"]` becomes a meta tensor of the result's shape), module paths and constant sources kept
    where a node already had them, operator keys and input dependence recomputed."""
    values: dict[fx.Node, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            values[node] = super().run_node(node)
            return values[node]

    inputs = []
    for node in module.graph.nodes:
        if node.op == "placeholder":
            example = node.meta.get("val")
            if example is None:
                info = node.meta["opwise"]
                example = torch.empty(info.shape, dtype=info.dtype)
            inputs.append(torch.zeros(example.shape, dtype=example.dtype, device=_device(module, example)))
    with torch.no_grad():
        Recorder(module).run(*inputs)
    old = {node: node.meta.get("opwise") for node in module.graph.nodes}
    for node, value in values.items():
        if isinstance(value, torch.Tensor):
            node.meta["val"] = torch.empty(value.shape, dtype=value.dtype, device="meta")
    sources = {node.target: info.source for node, info in old.items() if info is not None and node.op == "get_attr"}
    annotate(module, explained, sources)
    for node, info in old.items():
        if info is not None and info.module_path is not None and node.meta["opwise"].module_path is None:
            node.meta["opwise"] = dataclasses.replace(node.meta["opwise"], module_path=info.module_path)
    return module


def _device(module: fx.GraphModule, example: Any) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    device = getattr(example, "device", None)
    return torch.device("cpu") if device is None or device.type == "meta" else device
