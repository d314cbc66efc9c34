"""Bound transfers, one operator family per file, registered by operator key (see registry.py)."""

from opwise.bounds.transfers import (  # noqa: F401  (registration)
    affine, angle, cast, comparison, convolution, lookup, modulo, nonlinear, order, pooling, position, product, scatter)
from opwise.bounds.transfers.registry import TRANSFERS, BoundTransfer, Interval, Step, bound_transfer, transfer_for

__all__ = ["TRANSFERS", "BoundTransfer", "Interval", "Step", "bound_transfer", "transfer_for"]
