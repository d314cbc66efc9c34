"""Linear relaxations of nonlinear operators, one family per file (see base.py for the contract).

Importing this package registers every family in `registry.RELAXATIONS`; products of two bounded
tensors are not elementwise functions and are relaxed by `bilinear.relax_bilinear`.
"""

from opwise.bounds.relaxations import elementary, gelu_silu, sshaped, step, trig  # noqa: F401
