"""opwise's own ONNX importer: ONNX operators (per opset) to ATen calls in the canonical Graph.

`load_onnx(path, batch_size=None)` is the entry point; `converter` registers a converter for an
operator opwise does not map yet, and `supported_op_types()` lists the mapped ones.
"""

from opwise.tracing.onnx.importer import load_onnx
from opwise.tracing.onnx.registry import OnnxNode, converter, supported_op_types

__all__ = ["OnnxNode", "converter", "load_onnx", "supported_op_types"]
