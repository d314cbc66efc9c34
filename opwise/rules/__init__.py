"""The per-operation LRP rule registry, the rules (Zennit names), composites and canonizers."""

from opwise.rules import elementwise, linear_ops, scatter, transformer  # noqa: F401 - register the op rules
from opwise.rules.canonizers import MergeBatchNorm
from opwise.rules.composites import COMPOSITES, Composite, first_layers, get_composite
from opwise.rules.linear import (
    AlphaBeta, Constant, Epsilon, Flat, Gamma, LinearOp, LinearRule, Norm, Pass, WSquare, ZBox, ZPlus,
)
from opwise.rules.registry import ROUTING, Coverage, coverage, register_routing, relevance_rule, rule_for, rule_name

__all__ = [
    "COMPOSITES", "ROUTING", "AlphaBeta", "Composite", "Constant", "Coverage", "Epsilon", "Flat", "Gamma", "LinearOp",
    "LinearRule", "MergeBatchNorm", "Norm", "Pass", "WSquare", "ZBox", "ZPlus", "coverage", "first_layers",
    "get_composite", "register_routing", "relevance_rule", "rule_for", "rule_name",
]
