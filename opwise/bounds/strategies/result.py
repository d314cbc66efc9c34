"""The answer of a branch-and-bound run, shared by input splitting and neuron splitting (GenBaB)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from typing import Callable

import torch

from opwise.bounds.engine.deadline import deadline
from opwise.errors import TimeLimitReached


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


def within_timeout(search: Callable[..., BabResult]) -> Callable[..., BabResult]:
    """Run a search under the engine's deadline, its `timeout` plus the larger of 1 s and 10%: the search's
    own clock checks between rounds end it (with its counts) first; a bound pass still running past that
    (a CROWN pass over a large network takes seconds) ends it as 'timeout' instead of overrunning.

    >>> @within_timeout
    ... def search(*, timeout: float = 1.0) -> BabResult:
    ...     from opwise.bounds.engine.deadline import check_deadline
    ...     time.sleep(timeout); check_deadline(); return BabResult("verified")
    >>> search(timeout=0.01).status   # sleeps 0.01 s, within its slack: the search ends by itself
    'verified'
    >>> @within_timeout
    ... def stuck(*, timeout: float = 1.0) -> BabResult:
    ...     from opwise.bounds.engine.deadline import check_deadline
    ...     time.sleep(timeout + 1.1); check_deadline(); return BabResult("verified")
    >>> stuck(timeout=0.01).status
    'timeout'
    """
    default = inspect.signature(search).parameters["timeout"].default

    @functools.wraps(search)
    def run(*args, **kwargs) -> BabResult:
        timeout = kwargs.get("timeout", default)
        if not isinstance(timeout, (int, float)):  # missing (the search says so) or None: no deadline
            return search(*args, **kwargs)
        start = time.monotonic()
        with deadline(timeout + max(1.0, 0.1 * timeout)):
            try:
                return search(*args, **kwargs)
            except TimeLimitReached:
                return BabResult("timeout", None, {"reason": "the time limit was reached during a bound pass",
                                                   "seconds": time.monotonic() - start})

    return run
