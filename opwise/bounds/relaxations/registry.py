"""Relaxations by operator key. Each family module registers a factory taking the node's arguments.

The factory receives the node's non-input arguments (e.g. the exponent of `pow`, the slope of
`leaky_relu`, `approximate` of `gelu`) and returns an object following `base.Relaxation`.
"""

from __future__ import annotations

from typing import Any, Callable

from opwise.bounds.relaxations.base import Relaxation

RelaxationFactory = Callable[[tuple[Any, ...], dict[str, Any]], Relaxation]

RELAXATIONS: dict[str, RelaxationFactory] = {}


def register_relaxation(*op_keys: str) -> Callable[[RelaxationFactory], RelaxationFactory]:
    """Decorator: `@register_relaxation("aten.sigmoid.default")` on a factory `(args, kwargs) -> Relaxation`."""

    def add(factory: RelaxationFactory) -> RelaxationFactory:
        for key in op_keys:
            RELAXATIONS[key] = factory
        return factory

    return add


def relaxation_for(op_key: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Relaxation | None:
    """The relaxation of one node, or None when the operator has no registered relaxation."""
    factory = RELAXATIONS.get(op_key)
    return None if factory is None else factory(args, kwargs or {})
