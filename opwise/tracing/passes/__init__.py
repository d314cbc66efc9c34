"""Graph passes: each annotates or rewrites an `fx.GraphModule` in place and returns it (torch.fx ShapeProp style)."""

from opwise.tracing.passes.cleanup import remove_no_op_nodes
from opwise.tracing.passes.metadata import annotate
from opwise.tracing.passes.single_output import fold_single_output_ops

__all__ = ["annotate", "fold_single_output_ops", "remove_no_op_nodes"]
