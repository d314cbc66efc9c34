"""Fallback front-end: `make_fx` on the flattened call, for models `torch.export` rejects.

Python control flow on shapes, parameters and constants is specialized to the example; on values computed
from the inputs it is refused (`control_flow`), since the graph would then compute another function on
other inputs. Parameters become `get_attr` constants.
Module paths are not recorded by this tracer. The call is functionalized (no in-place operators in
the graph) and runs with torch's "compiling/exporting" flags
set, as `torch.export` does, so libraries that check `torch.compiler.is_compiling()` (Hugging Face
mask builders) take their traceable path instead of reading tensor values with `.item()`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx
from torch._export.utils import _compiling_state_context
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode

from opwise.tracing.control_flow import RefuseDataDependentControlFlow, refuse_input_dependent_reads
from opwise.tracing.decompositions import attention_as_matmuls, make_fx_table, roll_as_slices
from opwise.tracing.inputs import InputLayout
from opwise.tracing.outputs import OutputChoice, select_output


class _OurDecompositions(TorchFunctionMode):
    """Routes attention and roll to our decompositions at the Python level: `make_fx` sees their
    composite kernels already expanded by the dispatcher, so a decomposition table cannot catch them."""

    _REPLACEMENTS = {
        torch.nn.functional.scaled_dot_product_attention: attention_as_matmuls,
        torch.roll: roll_as_slices,
        torch.Tensor.roll: roll_as_slices,
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self._REPLACEMENTS.get(func, func)(*args, **(kwargs or {}))


class _RecordValues(fx.Interpreter):
    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        node.meta["val"] = value
        return value


def functional_to_fx(
    model: torch.nn.Module, layout: InputLayout, args: tuple, kwargs: dict, output: OutputChoice
) -> tuple[fx.GraphModule, dict[str, str]]:
    leaves = list(layout.leaves)

    def call(*tensors: torch.Tensor) -> torch.Tensor:
        for position, tensor in zip(layout.tensor_positions, tensors):
            leaves[position] = tensor
        call_args, call_kwargs = pytree.tree_unflatten(leaves, layout.spec)
        result = model(*call_args, **call_kwargs)
        flat, out_spec = pytree.tree_flatten(result)
        return flat[select_output(pytree.tree_unflatten(list(range(len(flat))), out_spec), output)]

    tensors = [layout.leaves[i] for i in layout.tensor_positions]
    with torch.no_grad(), _compiling_state_context(), RefuseDataDependentControlFlow(), _OurDecompositions():
        module = make_fx(
            torch.func.functionalize(call),
            decomposition_table=make_fx_table(),
            tracing_mode="real",
            _error_on_data_dependent_ops=False,
        )(*tensors)
    refuse_input_dependent_reads(module)
    _RecordValues(module).run(*tensors)
    names = {id(t): name for name, t in [*model.named_parameters(), *model.named_buffers()]}
    sources = {}
    for node in module.graph.nodes:
        if node.op == "get_attr":
            tensor = getattr(module, node.target)
            if id(tensor) in names:
                sources[node.target] = names[id(tensor)]
    return module, sources
