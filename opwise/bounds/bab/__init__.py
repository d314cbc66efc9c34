"""Branch-and-bound: complete verification by splitting the input box, or nonlinear neurons' inputs (GenBaB)."""

from opwise.bounds.bab.genbab import BabResult, branch_and_bound

__all__ = ["BabResult", "branch_and_bound"]
