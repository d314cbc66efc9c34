"""Branch-and-bound: complete verification by splitting the input box, or nonlinear neurons' inputs (GenBaB)."""

from opwise.bounds.bab.genbab import branch_and_bound
from opwise.bounds.bab.input_split import BoundFunction, input_split_bab
from opwise.bounds.bab.result import BabResult

__all__ = ["BabResult", "BoundFunction", "branch_and_bound", "input_split_bab"]
