"""The answer of a branch-and-bound run, shared by input splitting and neuron splitting (GenBaB)."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class BabResult:
    """`status`: "verified", "falsified", "timeout" or "unknown" (nothing left to split, or a domain limit).
    `counterexample`: an input a forward pass confirmed, only when falsified. `margin_lower`: the proven lower
    bound of the property margin where the method tracks one (the worst open domain's when not verified).
    `stats`: domains visited, branching decisions, seconds, depth."""

    status: str
    counterexample: torch.Tensor | None = None
    stats: dict = dataclasses.field(default_factory=dict)
    margin_lower: float | None = None
