"""Branch-and-bound: complete verification by splitting the input box (and, elsewhere, neurons)."""
