"""Registry of ONNX operator converters, keyed by op type and the opset version each form starts at.

An ONNX operator changes meaning across opsets (Squeeze takes `axes` as an attribute before opset 13
and as an input after); each form is one converter registered with the version it appeared in, and
`lookup` picks the newest form not newer than the model's opset.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

Converter = Callable[..., Any]

_CONVERTERS: dict[str, list[tuple[int, Converter]]] = {}


@dataclasses.dataclass(frozen=True)
class OnnxNode:
    """One ONNX node with its attributes decoded to Python values (tensors as torch tensors)."""

    name: str
    op_type: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any]

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attributes.get(name, default)


def converter(*op_types: str, since: int = 1) -> Callable[[Converter], Converter]:
    """Register `function(builder, node, *inputs)` for `op_types` from opset `since` on.

    Inputs arrive as `torch.Tensor` (constants, folded at import time), `fx.Node` (values that depend
    on a graph input) or None (an omitted optional input); the function returns one value or a tuple.

    >>> @converter("MyIdentity", since=7)
    ... def _identity(builder, node, x):
    ...     return x
    >>> lookup("MyIdentity", 13) is _identity, lookup("MyIdentity", 6)
    (True, None)
    """

    def register(function: Converter) -> Converter:
        for op_type in op_types:
            forms = _CONVERTERS.setdefault(op_type, [])
            forms.append((since, function))
            forms.sort(key=lambda form: form[0])
        return function

    return register


def lookup(op_type: str, opset: int) -> Converter | None:
    """The converter for `op_type` as defined at `opset`, or None when there is none."""
    chosen = None
    for since, function in _CONVERTERS.get(op_type, []):
        if since <= opset:
            chosen = function
    return chosen


def supported_op_types() -> list[str]:
    """Every ONNX op type with at least one registered form, sorted."""
    return sorted(_CONVERTERS)
