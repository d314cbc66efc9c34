"""Bound transfers, one operator family per file, registered by operator key (see registry.py)."""

from opwise.bounds.transfers import affine, cast, convolution, nonlinear, order, pooling, product, scatter  # noqa: F401  (registration)
from opwise.bounds.transfers.registry import TRANSFERS, BoundTransfer, Interval, Step, bound_transfer, transfer_for

__all__ = ["TRANSFERS", "BoundTransfer", "Interval", "Step", "bound_transfer", "transfer_for"]
