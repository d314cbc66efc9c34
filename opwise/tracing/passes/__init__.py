"""Graph passes: each annotates or rewrites an `fx.GraphModule` in place and returns it (torch.fx ShapeProp style)."""

from opwise.tracing.passes.cleanup import remove_no_op_nodes
from opwise.tracing.passes.constant_folding import fold_constants
from opwise.tracing.passes.linear_form import rewrite_linear_forms
from opwise.tracing.passes.metadata import annotate
from opwise.tracing.passes.single_output import fold_single_output_ops

__all__ = ["annotate", "fold_constants", "fold_single_output_ops", "remove_no_op_nodes", "rewrite_linear_forms"]
