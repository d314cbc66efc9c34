"""Verification: bound propagation (IBP, CROWN, α-CROWN), specifications, attacks, branch-and-bound."""

from opwise.bounds.api import compute_bounds
from opwise.bounds.bounded_model import METHODS, BoundedModel, Bounds

__all__ = ["METHODS", "BoundedModel", "Bounds", "compute_bounds"]
