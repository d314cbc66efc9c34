"""Control flow: If whose condition is known at import time (it depends on no graph input).

Exporters emit If for decisions about shapes: `torch.onnx.export` writes `squeeze(x, dim)` on a value whose
size it cannot prove is 1 (e.g. in `nn.LocalResponseNorm`) as If(Shape(x)[dim] == 1, Squeeze, Identity).
opwise graphs are shape-specialized, so such a condition folds to a constant and the chosen branch is
inlined: its nodes are converted as if they stood in the outer graph (they may read outer values). An If
whose condition depends on the model input is refused: the graph would branch on data.
"""

from __future__ import annotations

from torch import fx

from opwise.errors import ModelLoadError
from opwise.tracing.onnx.registry import converter


@converter("If", since=1)
def _if(builder, node, condition):
    if isinstance(condition, fx.Node):
        raise ModelLoadError(
            f"ONNX node '{node.name}' (If, opset {node.opset}) branches on a condition that depends on the model "
            "input; opwise imports If only when the condition is known at import time (e.g. computed from shapes)"
        )
    if condition.numel() != 1:
        raise ModelLoadError(f"ONNX node '{node.name}' (If): its condition has {condition.numel()} elements, not 1")
    branch = node.attr("then_branch") if bool(condition.reshape(-1)[0]) else node.attr("else_branch")
    if branch is None:
        raise ModelLoadError(f"ONNX node '{node.name}' (If) has no then_branch or else_branch attribute")
    results = builder.inline(branch)
    if len(results) != len(node.outputs):
        raise ModelLoadError(f"ONNX node '{node.name}' (If): the chosen branch has {len(results)} output(s), "
                             f"the node {len(node.outputs)}")
    return tuple(results)
