"""A stand-in for the engine's OpCall so op rules can be tested one call at a time."""

from __future__ import annotations

import torch


class Call:
    """Arguments, output and rule of one op call, as a rule function sees them."""

    def __init__(self, target, args, explained=None, rule=None, kwargs=None):
        self.target, self.args, self.rule, self.kwargs = target, tuple(args), rule, kwargs or {}
        self.explained = tuple(explained if explained is not None else [isinstance(a, torch.Tensor) for a in args])
        self.output = target(*self.args, **self.kwargs)
        self.node = "node"
        self.cache = {}

    def constant(self, index):
        """Arguments after the first count as parameters here, so rules may cache what they build from them."""
        return index > 0

    def arg(self, index):
        return self.args[index]
