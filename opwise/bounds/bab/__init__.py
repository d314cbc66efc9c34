"""Branch-and-bound: complete verification by splitting the input box (and, elsewhere, neurons)."""

from opwise.bounds.bab.input_split import BabResult, BoundFunction, input_split_bab

__all__ = ["BabResult", "BoundFunction", "input_split_bab"]
