"""opwise: trace any PyTorch model to one operation-level graph; explain it (LRP) and verify it (bounds)."""

from opwise.errors import (
    InputError,
    ModelLoadError,
    OpwiseError,
    SpecError,
    TraceError,
    UnsupportedOperation,
)
from opwise import models
from opwise.tracing import Graph, trace
from opwise.tracing.loading import LoadedModel, load_model
from opwise.attribution import Explanation, explain
from opwise.bounds import AlphaOptions, Bounds, VerificationResult, compute_bounds, verify
from opwise.combined import CertifiedMap, CounterexampleExplanation, certified_map, explain_counterexample, report

__version__ = "0.1.0"

__all__ = [
    "AlphaOptions",
    "Bounds",
    "CertifiedMap",
    "CounterexampleExplanation",
    "Explanation",
    "Graph",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "OpwiseError",
    "SpecError",
    "TraceError",
    "UnsupportedOperation",
    "VerificationResult",
    "certified_map",
    "compute_bounds",
    "explain_counterexample",
    "explain",
    "load_model",
    "models",
    "report",
    "trace",
    "verify",
]
