"""A deadline the bound engine checks between layers and chunks, so a caller's time limit can interrupt one
long pass (a CROWN pass over a large network takes seconds to minutes). Set with `deadline(seconds)` around
any computation; a pass that reaches it raises TimeLimitReached. Nested deadlines keep the earlier one."""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Iterator

from opwise.errors import TimeLimitReached

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("opwise_bound_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Within the block, bound passes raise TimeLimitReached once `seconds` from now have passed (or an
    enclosing deadline, if that is earlier). Yields the deadline on the `time.monotonic()` clock.

    >>> with deadline(0.0):
    ...     check_deadline()
    Traceback (most recent call last):
    ...
    opwise.errors.TimeLimitReached: the time limit was reached during a bound pass
    """
    at = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(at if outer is None else min(at, outer))
    try:
        yield _DEADLINE.get()
    finally:
        _DEADLINE.reset(token)


def check_deadline() -> None:
    """Raise TimeLimitReached if the current deadline has passed (a no-op without one).

    >>> check_deadline()
    """
    at = _DEADLINE.get()
    if at is not None and time.monotonic() >= at:
        raise TimeLimitReached("the time limit was reached during a bound pass")
