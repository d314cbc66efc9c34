"""Model -> Graph: torch.export front-end, make_fx fallback, ONNX import, model loading."""

from opwise.tracing.graph import Graph, NodeInfo, op_key, op_packet_key
from opwise.tracing.trace import trace

__all__ = ["Graph", "NodeInfo", "op_key", "op_packet_key", "trace"]
