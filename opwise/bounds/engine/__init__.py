"""The bound engine: one pass over one Graph and input set (`BoundPropagation`), and what it applies
(β split constraints). Strategies (α, β, input splitting, GenBaB) use it through its methods only."""

from opwise.bounds.engine.propagation import CROWN_LIMIT, POLICIES, SPEC_CHUNK, BoundPropagation, LinearBound

__all__ = ["CROWN_LIMIT", "POLICIES", "SPEC_CHUNK", "BoundPropagation", "LinearBound"]
