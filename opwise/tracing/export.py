"""Front-end: `torch.export` (non-strict) to the canonical Graph form.

Parameters and buffers become `get_attr` nodes sharing storage with the model; user tensor inputs
become placeholders; the one selected output is returned.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx
from torch.export.graph_signature import InputKind, OutputKind

from opwise.tracing.decompositions import autograd_decompositions_lifted
from opwise.tracing.export_decomposition import decompose
from opwise.tracing.inputs import InputLayout
from opwise.tracing.outputs import OutputChoice, index_structure, select_output


def _attr_name(target: str, taken: set[str]) -> str:
    name = "c_" + target.replace(".", "_")
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _require_static_shapes(graph: fx.Graph) -> None:
    """Graphs are shape-specialized; a data-dependent shape (nonzero, masked select) cannot be, so the
    caller falls back to the tracer that specializes it to the example."""
    for node in graph.nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor) and not all(isinstance(size, int) for size in value.shape):
            raise ValueError(f"node '{node.name}' ({node.target}) has a data-dependent shape {tuple(value.shape)}")


def export_to_fx(
    model: torch.nn.Module, layout: InputLayout, args: tuple, kwargs: dict, output: OutputChoice
) -> tuple[fx.GraphModule, dict[str, str]]:
    """Returns the canonical GraphModule and, per constant attribute, the model name it came from."""
    with autograd_decompositions_lifted():
        program = torch.export.export(model, tuple(args), dict(kwargs), strict=False)
        program = decompose(program)
    _require_static_shapes(program.graph)
    signature = program.graph_signature

    root = torch.nn.Module()
    graph = fx.Graph()
    env: dict[fx.Node, Any] = {}
    sources: dict[str, str] = {}
    taken: set[str] = set()
    user_leaves = iter(layout.leaves)

    for spec, node in zip(signature.input_specs, [n for n in program.graph.nodes if n.op == "placeholder"]):
        if spec.kind == InputKind.USER_INPUT:
            leaf = next(user_leaves)
            if isinstance(leaf, torch.Tensor):
                new = graph.placeholder(node.name)
                new.meta = dict(node.meta)
                env[node] = new
            else:
                env[node] = leaf
            continue
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            value = program.state_dict.get(spec.target)
            if value is None:
                value = program.constants[spec.target]
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            value = program.constants[spec.target]
        else:
            raise NotImplementedError(f"export input kind {spec.kind} is not supported")
        name = _attr_name(spec.target, taken)
        if isinstance(value, torch.nn.Parameter):
            root.register_parameter(name, value)
        else:
            root.register_buffer(name, value)
        new = graph.get_attr(name)
        new.meta = dict(node.meta)
        sources[name] = spec.target
        env[node] = new

    output_node = None
    for node in program.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            output_node = node
            break
        env[node] = graph.node_copy(node, lambda n: env[n])

    user_outputs = [
        value
        for spec, value in zip(signature.output_specs, output_node.args[0])
        if spec.kind == OutputKind.USER_OUTPUT
    ]
    chosen = select_output(index_structure(program.call_spec.out_spec), output)
    graph.output(env[user_outputs[chosen]])
    return fx.GraphModule(root, graph), sources
