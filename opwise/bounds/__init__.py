"""Verification: bound propagation (IBP, CROWN, α-CROWN), specifications, attacks, branch-and-bound."""

from opwise.bounds import allocator
from opwise.bounds.api import compute_bounds
from opwise.bounds.bounded_model import METHODS, BoundedModel, Bounds
from opwise.bounds.coverage import Coverage, coverage
from opwise.bounds.strategies.alpha import AlphaOptions
from opwise.bounds.verify import VerificationResult, verify

__all__ = ["METHODS", "AlphaOptions", "allocator", "Coverage", "coverage", "BoundedModel", "Bounds", "VerificationResult", "compute_bounds", "verify"]
