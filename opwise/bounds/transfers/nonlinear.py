"""Elementwise nonlinear operators through their relaxations (opwise.bounds.relaxations).

Every relaxation family module in that package registers itself on import; this module imports them
all, so an operator is bounded as soon as a relaxation for it exists. Backward for a lower bound uses
the lower line where the coefficient is positive and the upper line where it is negative.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch
from torch import fx

import opwise.bounds.relaxations as relaxations_package
from opwise.bounds.relaxations.registry import RELAXATIONS, relaxation_for
from opwise.bounds.transfers.registry import Interval, Step


def load_relaxation_families() -> None:
    """Import every module of opwise.bounds.relaxations so that each registers its operators."""
    for module in pkgutil.iter_modules(relaxations_package.__path__):
        importlib.import_module(f"{relaxations_package.__name__}.{module.name}")


def has_relaxation(op: str) -> bool:
    return op in RELAXATIONS


def node_relaxation(op: str, node: fx.Node):
    """The relaxation object of one node: the factory gets the node's arguments after the input."""
    return relaxation_for(op, tuple(node.args[1:]), dict(node.kwargs))


class Elementwise:
    """y = f(x) elementwise, bounded by the relaxation's lines on the interval of x."""

    def needs_bounds(self, step: Step) -> list[fx.Node]:
        return [step.inputs[0]]

    def ibp(self, step: Step, intervals: list[Interval]) -> Interval:
        (x,) = intervals
        relaxation = step.relaxation
        if getattr(relaxation, "monotone", False):
            return Interval(relaxation.function(x.lower), relaxation.function(x.upper))
        if hasattr(relaxation, "image"):
            return Interval(*relaxation.image(x.lower, x.upper))
        lines = relaxation.relax(x.lower, x.upper)
        # the lines bound f on [l, u]; a line's extremes on an interval are at its ends
        low = torch.minimum(lines.lower_slope * x.lower, lines.lower_slope * x.upper) + lines.lower_intercept
        high = torch.maximum(lines.upper_slope * x.lower, lines.upper_slope * x.upper) + lines.upper_intercept
        return Interval(low, high)

    def backward(self, step: Step, A: torch.Tensor):
        x = step.bounds(step.inputs[0])
        lines = step.relaxation.relax(x.lower, x.upper, step.alpha)
        # one selection per line instead of splitting A into its positive and negative parts (same values,
        # half the passes over the [specs, ...] tensors that dominate intermediate bounds)
        positive = A > 0
        coefficient = A * torch.where(positive, lines.lower_slope, lines.upper_slope)
        bias = A * torch.where(positive, lines.lower_intercept, lines.upper_intercept)
        return [coefficient], bias


ELEMENTWISE = Elementwise()
load_relaxation_families()
