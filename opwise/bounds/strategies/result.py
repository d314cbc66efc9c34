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


def queue_limit(queue, max_domains: int, max_memory: int | None) -> str | None:
    """Why a search must give up ('unknown') with this queue of open domains, or None: more than `max_domains`
    of them, or their tensors holding more than `max_memory` bytes (`queue.nbytes`, read only when set).

    >>> class Queue(list): nbytes = 800
    >>> queue_limit(Queue([1, 2, 3]), 2, None), queue_limit(Queue([1]), 2, 400), queue_limit(Queue([1]), 2, 1000)
    ('more than 2 open domains', 'open domains hold 800 bytes, more than max_memory=400', None)
    """
    if len(queue) > max_domains:
        return f"more than {max_domains} open domains"
    if max_memory is not None and queue.nbytes > max_memory:
        return f"open domains hold {queue.nbytes} bytes, more than max_memory={max_memory}"
    return None
