"""opwise: trace any PyTorch model to one operation-level graph; explain it (LRP) and verify it (bounds)."""

from opwise.errors import (
    InputError,
    ModelLoadError,
    OpwiseError,
    SpecError,
    TraceError,
    UnsupportedOperation,
)
from opwise.tracing import Graph, trace
from opwise.attribution import Explanation, explain

__version__ = "0.1.0"

__all__ = [
    "Explanation",
    "Graph",
    "InputError",
    "ModelLoadError",
    "OpwiseError",
    "SpecError",
    "TraceError",
    "UnsupportedOperation",
    "explain",
    "trace",
]
