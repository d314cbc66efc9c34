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
from opwise.bounds import Bounds, VerificationResult, compute_bounds, verify  # noqa: E402  (needs tracing first)

__version__ = "0.1.0"

__all__ = [
    "Bounds",
    "compute_bounds",
    "Graph",
    "InputError",
    "ModelLoadError",
    "OpwiseError",
    "SpecError",
    "TraceError",
    "UnsupportedOperation",
    "trace",
    "VerificationResult",
    "verify",
]
